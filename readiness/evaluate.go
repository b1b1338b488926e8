package readiness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/rubyjson"
)

// Evaluator runs every check within the readiness timeout and logs each
// check's changes of status. The ready route and the readiness metrics
// share one, so that the log follows the checks whichever asked.
type Evaluator struct {
	checks  []Checker
	timeout time.Duration
	log     *slog.Logger

	mu     sync.Mutex
	status map[string]string // last status of each check, for logChanges
}

// NewEvaluator refuses nil checks and names that are empty or used twice.
// log may be nil.
func NewEvaluator(checks []Checker, timeout time.Duration, log *slog.Logger) (*Evaluator, error) {
	var errs []error
	seen := map[string]bool{}
	for i, c := range checks {
		if c == nil {
			errs = append(errs, fmt.Errorf("check %d is nil", i))
			continue
		}
		switch n := c.Name(); {
		case n == "":
			errs = append(errs, fmt.Errorf("check %d has no name", i))
		case seen[n]:
			errs = append(errs, fmt.Errorf("check name %q is used twice", n))
		default:
			seen[n] = true
		}
	}
	if timeout <= 0 {
		errs = append(errs, fmt.Errorf("readiness timeout must be positive, got %s", timeout))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Evaluator{checks: checks, timeout: timeout, log: log, status: map[string]string{}}, nil
}

// Checks are the evaluated checks, in their order.
func (e *Evaluator) Checks() []Checker { return e.checks }

// Timeout is the readiness timeout.
func (e *Evaluator) Timeout() time.Duration { return e.timeout }

// Result is one evaluation of every check: Results[i] belongs to Checks()[i]
// and is nil for a check that did not answer before the deadline.
type Result struct {
	Results  []*CheckResult
	TimedOut bool
}

// Ready reports whether every check answered and none is unhealthy.
func (r Result) Ready() bool {
	for _, res := range r.Results {
		if res == nil || res.Status == StatusUnhealthy {
			return false
		}
	}
	return true
}

// Evaluate runs the checks concurrently until ctx is done or the readiness
// timeout has passed, and logs the checks whose status changed.
func (e *Evaluator) Evaluate(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	r := e.run(ctx)
	// A probe whose client went away says nothing about the dependencies.
	if !errors.Is(ctx.Err(), context.Canceled) {
		e.logChanges(ctx, r)
	}
	return r
}

func (e *Evaluator) run(ctx context.Context) Result {
	type outcome struct {
		i   int
		res CheckResult
	}
	// Buffered so that checks finishing after the deadline do not block.
	results := make(chan outcome, len(e.checks))
	for i, ch := range e.checks {
		go func() { results <- outcome{i, run(ctx, ch)} }()
	}
	r := Result{Results: make([]*CheckResult, len(e.checks))}
	for range e.checks {
		select {
		case o := <-results:
			r.Results[o.i] = &o.res
		case <-ctx.Done():
			r.TimedOut = true
			return r
		}
	}
	return r
}

// TimeoutMessage is the message of a check, or of the whole answer, that
// did not answer in time. Tasker's interpolates a Ruby Float ("after 5.0
// seconds").
func (e *Evaluator) TimeoutMessage(what string) string {
	return what + " " + rubyjson.Float(e.timeout.Seconds()).String() + " seconds"
}

// logChanges logs each check once per change of its status, not once per
// probe: the kubelet probes every few seconds. This is where the details
// the public readiness answer leaves out are kept. A check first seen
// healthy is not logged.
func (e *Evaluator) logChanges(ctx context.Context, r Result) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, ch := range e.checks {
		res := CheckResult{Status: StatusUnhealthy, Message: e.TimeoutMessage("Check did not answer within")}
		if r.Results[i] != nil {
			res = *r.Results[i]
		}
		prev, seen := e.status[ch.Name()]
		if prev == res.Status || (!seen && res.Status == StatusHealthy) {
			e.status[ch.Name()] = res.Status
			continue
		}
		e.status[ch.Name()] = res.Status
		level := slog.LevelWarn
		if res.Status == StatusHealthy {
			level = slog.LevelInfo
		}
		attrs := []slog.Attr{
			slog.String("check", ch.Name()),
			slog.String("status", res.Status),
			slog.String("message", Redact(res.Message)),
		}
		if seen {
			attrs = append(attrs, slog.String("previous", prev))
		}
		if res.Error != "" {
			attrs = append(attrs, slog.String("error", Redact(res.Error)))
		}
		if d := detailsText(res.Details); d != "" {
			attrs = append(attrs, slog.String("details", Redact(d)))
		}
		e.log.LogAttrs(ctx, level, "readiness check changed", attrs...)
	}
}

// detailsText is the details as JSON, "" when there are none.
func detailsText(details any) string {
	if details == nil {
		return ""
	}
	b, err := json.Marshal(details)
	if err != nil {
		return fmt.Sprint(details)
	}
	if s := string(b); s != "{}" && s != "null" {
		return s
	}
	return ""
}
