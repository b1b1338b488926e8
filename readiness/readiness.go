// Package readiness is what /tasker/health/ready and the readiness metrics
// report: the Checker interface, its typed result, the sidecar's own checks
// (database, refresh, saturation) and the evaluation of every check within
// the readiness timeout that both the route (package api) and the
// Prometheus collector (package exporters) use.
package readiness

import (
	"context"
	"fmt"
	"time"

	"github.com/tasker-systems/tasker-sidecar/collector"
)

// Check statuses, as Tasker's readiness checker reports them.
const (
	StatusHealthy   = "healthy"
	StatusDegraded  = "degraded"
	StatusUnhealthy = "unhealthy"
)

// Statuses are the valid statuses, healthiest first.
var Statuses = []string{StatusHealthy, StatusDegraded, StatusUnhealthy}

// HealthSource is the refresher's view of its last attempts
// (collector.Refresher). It never touches the database.
type HealthSource interface {
	State() collector.RefreshState
}

// Checker is one readiness dependency. Check must return once ctx is done;
// the readiness endpoint answers at its deadline either way, but a checker
// that ignores ctx keeps its goroutine alive.
type Checker interface {
	Name() string
	Check(ctx context.Context) CheckResult
}

// CheckResult is one entry of the readiness "checks" object.
type CheckResult struct {
	Status  string // StatusHealthy, StatusDegraded or StatusUnhealthy
	Message string
	Error   string
	// ResponseTimeMs is filled with the wall time of Check when left zero.
	ResponseTimeMs float64
	// Details is a value the check defines (a struct with json tags, or a
	// map), shown only to callers with credentials: its JSON object's
	// members are merged into the check's, and the fields above win.
	// nil for none.
	Details any
}

type funcCheck struct {
	name string
	fn   func(context.Context) CheckResult
}

func (f funcCheck) Name() string                          { return f.name }
func (f funcCheck) Check(ctx context.Context) CheckResult { return f.fn(ctx) }

// CheckFunc adapts a function to a Checker.
func CheckFunc(name string, fn func(ctx context.Context) CheckResult) Checker {
	return funcCheck{name: name, fn: fn}
}

// run contains a panicking check: it runs on its own goroutine, where a
// panic would take the whole process down.
func run(ctx context.Context, ch Checker) (res CheckResult) {
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			res = CheckResult{Status: StatusUnhealthy, Message: "Check panicked", Error: Redact(fmt.Sprint(v))}
		}
		if res.ResponseTimeMs <= 0 {
			res.ResponseTimeMs = float64(time.Since(start)) / float64(time.Millisecond)
		}
		switch res.Status {
		case StatusHealthy, StatusDegraded, StatusUnhealthy:
		default:
			res.Error = fmt.Sprintf("check returned unknown status %q", res.Status)
			res.Status = StatusUnhealthy
		}
	}()
	return ch.Check(ctx)
}
