package exporters

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/collector"
)

// Check statuses, as Tasker's readiness checker reports them.
const (
	StatusHealthy   = "healthy"
	StatusDegraded  = "degraded"
	StatusUnhealthy = "unhealthy"
)

// HealthSource is what the endpoints and the domain collector read: the
// refresher's view of its last attempts. It never touches the database.
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
	// Details are merged into the check's JSON object; the keys above win.
	Details map[string]any
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

type databaseCheck struct {
	ping        func(context.Context) (time.Duration, error)
	missing     func() []string
	unreachable func(error)
}

// NewDatabaseCheck reports the "database" check. ping runs a trivial query
// and returns its round-trip time; missing (may be nil) lists the Tasker
// tables the sidecar needs but did not find, so that a sidecar pointed at the
// wrong database is not ready even though the connection works.
//
// unreachable (may be nil; collector.Refresher.ReportUnreachable) is told
// when the ping finds the database unreachable, so that the status endpoint
// turns at once instead of at the next refresh. Only connection failures
// count, and only while ctx is live: a ping that waited out the deadline
// for a pool connection busy with analytics, or whose caller went away,
// says nothing about the database.
func NewDatabaseCheck(ping func(ctx context.Context) (time.Duration, error), missing func() []string, unreachable func(error)) Checker {
	return databaseCheck{ping: ping, missing: missing, unreachable: unreachable}
}

func (databaseCheck) Name() string { return "database" }

func (d databaseCheck) Check(ctx context.Context) CheckResult {
	start := time.Now()
	rtt, err := d.ping(ctx)
	if rtt <= 0 {
		rtt = time.Since(start)
	}
	ms := float64(rtt) / float64(time.Millisecond)
	if err != nil {
		if d.unreachable != nil && ctx.Err() == nil && errorClass(err) == collector.ReasonConnection {
			d.unreachable(err)
		}
		return CheckResult{
			Status:         StatusUnhealthy,
			Message:        "Database connection failed: " + errorText(err),
			Error:          errorClass(err) + ": " + errorText(err),
			ResponseTimeMs: ms,
		}
	}
	if d.missing != nil {
		if m := d.missing(); len(m) > 0 {
			return CheckResult{
				Status:         StatusUnhealthy,
				Message:        "Tasker tables missing: " + strings.Join(m, ", "),
				Error:          "schema: missing tables",
				ResponseTimeMs: ms,
				Details:        map[string]any{"missing_tables": m},
			}
		}
	}
	return CheckResult{Status: StatusHealthy, Message: "Database connection active", ResponseTimeMs: ms}
}

type refreshCheck struct {
	src      HealthSource
	interval time.Duration
	now      func() time.Time
}

// NewRefreshCheck reports the "refresh" check: unhealthy until the first
// refresh succeeded and whenever the last success is older than two
// intervals, so readiness drops within two intervals of the database going
// away. A failed attempt with still-fresh data is only degraded.
func NewRefreshCheck(src HealthSource, interval time.Duration) Checker {
	return &refreshCheck{src: src, interval: interval, now: time.Now}
}

func (*refreshCheck) Name() string { return "refresh" }

func (r *refreshCheck) Check(context.Context) CheckResult {
	st := r.src.State()
	details := map[string]any{
		"refresh_interval_seconds": seconds(r.interval),
		"consecutive_failures":     st.Failures,
	}
	if st.LastError != nil {
		details["last_error"] = errorText(st.LastError)
	}
	if st.Last == nil {
		res := CheckResult{Status: StatusUnhealthy, Message: "First refresh pending", Error: ClassPending, Details: details}
		if st.LastError != nil {
			res.Message = "First refresh failed"
			res.Error = errorClass(st.LastError) + ": " + errorText(st.LastError)
		}
		return res
	}
	age := max(r.now().Sub(st.Last.TakenAt), 0)
	details["last_success_at"] = railsTime(st.Last.TakenAt)
	details["age_seconds"] = seconds(age)
	limit := 2 * r.interval
	switch {
	case age > limit:
		res := CheckResult{
			Status:  StatusUnhealthy,
			Message: fmt.Sprintf("Last successful refresh %s ago, more than %s", age.Round(time.Millisecond), limit),
			Error:   ClassStale,
			Details: details,
		}
		if st.LastError != nil {
			res.Error = errorClass(st.LastError) + ": " + errorText(st.LastError)
		}
		return res
	case st.LastError != nil:
		what := "Last refresh failed"
		var unreachable *collector.UnreachableError
		if errors.As(st.LastError, &unreachable) {
			what = "Database unreachable"
		}
		return CheckResult{
			Status:  StatusDegraded,
			Message: fmt.Sprintf("%s; serving data from %s ago", what, age.Round(time.Millisecond)),
			Error:   errorClass(st.LastError) + ": " + errorText(st.LastError),
			Details: details,
		}
	}
	return CheckResult{Status: StatusHealthy, Message: "Data refreshed", Details: details}
}

type saturationCheck struct {
	name string
	fn   func() (bool, string)
}

// NewSaturationCheck reports name as degraded while fn says the sidecar is
// saturated (its queues for expensive work are full), with fn's message,
// and healthy otherwise.
//
// Degraded, never unhealthy: readiness stays true. A sidecar in Tasker's
// own pod shares the pod's readiness, and a failing readiness probe takes
// the whole pod, Tasker included, out of its Service; shedding analytics
// load must not cost Tasker its traffic. Saturation is visible in the check,
// in tasker_sidecar_readiness_check{status="degraded"} and in the 503s with
// Retry-After that the saturated routes answer.
func NewSaturationCheck(name string, fn func() (saturated bool, message string)) Checker {
	return saturationCheck{name: name, fn: fn}
}

func (c saturationCheck) Name() string { return c.name }

func (c saturationCheck) Check(context.Context) CheckResult {
	saturated, msg := c.fn()
	if saturated {
		return CheckResult{Status: StatusDegraded, Message: msg}
	}
	if msg == "" {
		msg = "Not saturated"
	}
	return CheckResult{Status: StatusHealthy, Message: msg}
}
