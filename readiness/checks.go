package readiness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/rubyjson"
)

type databaseCheck struct {
	ping        func(context.Context) (time.Duration, error)
	schema      func() collector.SchemaStatus
	unreachable func(error)
}

// DatabaseDetails are the database check's details: the Tasker engine the
// sidecar attached to ("rails" or "core"; absent until a schema check found
// one), database.engine as configured, and the Tasker tables it did not
// find.
//
// Role is "standby" when the server is a hot standby (pg_is_in_recovery),
// "primary" otherwise, absent before the server answered; on a standby
// ReplicationLagSeconds is how far behind its primary the data was at the
// last refresh (docs/operations.md#read-replicas).
type DatabaseDetails struct {
	Engine                string               `json:"engine,omitempty"`
	ConfiguredEngine      string               `json:"configured_engine,omitempty"`
	MissingTables         []string             `json:"missing_tables,omitempty"`
	Role                  string               `json:"role,omitempty"`
	ReplicationLagSeconds *rubyjson.PlainFloat `json:"replication_lag_seconds,omitempty"`
}

// NewDatabaseCheck reports the "database" check. ping runs a trivial query
// and returns its round-trip time; schema (may be nil; collector.DB's
// SchemaStatus) is what the last schema check found: the engine, or the
// tables missing or the engines found when it could not settle on one, so
// that a sidecar pointed at the wrong database is not ready even though the
// connection works.
//
// unreachable (may be nil; collector.Refresher.ReportUnreachable) is told
// when the ping finds the database unreachable, so that the status endpoint
// turns at once instead of at the next refresh. Only connection failures
// count, and only while ctx is live: a ping that waited out the deadline
// for a pool connection busy with analytics, or whose caller went away,
// says nothing about the database.
func NewDatabaseCheck(ping func(ctx context.Context) (time.Duration, error), schema func() collector.SchemaStatus, unreachable func(error)) Checker {
	return databaseCheck{ping: ping, schema: schema, unreachable: unreachable}
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
		if d.unreachable != nil && ctx.Err() == nil && ErrorClass(err) == collector.ReasonConnection {
			d.unreachable(err)
		}
		return CheckResult{
			Status:         StatusUnhealthy,
			Message:        "Database connection failed: " + ErrorText(err),
			Error:          ErrorClass(err) + ": " + ErrorText(err),
			ResponseTimeMs: ms,
		}
	}
	if d.schema == nil {
		return CheckResult{Status: StatusHealthy, Message: "Database connection active", ResponseTimeMs: ms}
	}
	st := d.schema()
	details := DatabaseDetails{Engine: string(st.Engine.Kind), ConfiguredEngine: string(st.Configured),
		MissingTables: st.Missing, Role: st.Replication.Role()}
	if st.Replication.Standby {
		lag := rubyjson.Seconds(st.Replication.Lag)
		details.ReplicationLagSeconds = &lag
	}
	switch {
	case len(st.Missing) > 0:
		return CheckResult{
			Status:         StatusUnhealthy,
			Message:        "Tasker tables missing: " + strings.Join(st.Missing, ", "),
			Error:          "schema: missing tables",
			ResponseTimeMs: ms,
			Details:        details,
		}
	case st.Err != nil:
		// Both engines' tables: the error names them.
		return CheckResult{
			Status:         StatusUnhealthy,
			Message:        "Tasker engine not settled: " + ErrorText(st.Err),
			Error:          "schema: " + ErrorText(st.Err),
			ResponseTimeMs: ms,
			Details:        details,
		}
	}
	res := CheckResult{Status: StatusHealthy, Message: "Database connection active", ResponseTimeMs: ms}
	if st.Replication.Standby {
		res.Message = "Database connection active (hot standby)"
	}
	if st.Engine.Kind != "" || st.Replication.Known {
		res.Details = details
	}
	return res
}

type refreshCheck struct {
	src      HealthSource
	interval time.Duration
	now      func() time.Time
}

// RefreshDetails are the refresh check's details, in Tasker's JSON
// conventions (internal/rubyjson).
type RefreshDetails struct {
	RefreshIntervalSeconds rubyjson.PlainFloat  `json:"refresh_interval_seconds"`
	ConsecutiveFailures    uint64               `json:"consecutive_failures"`
	LastError              string               `json:"last_error,omitempty"`
	LastSuccessAt          *rubyjson.Time       `json:"last_success_at,omitempty"`
	AgeSeconds             *rubyjson.PlainFloat `json:"age_seconds,omitempty"`
	// ReplicationLagSeconds is, on a hot standby, how far behind its
	// primary the data was when read; the data's age (as the status
	// endpoint reports it) is AgeSeconds plus this.
	ReplicationLagSeconds *rubyjson.PlainFloat `json:"replication_lag_seconds,omitempty"`
}

// NewRefreshCheck reports the "refresh" check: unhealthy until the first
// refresh succeeded and whenever the last success is older than two
// intervals, so readiness drops within two intervals of the database going
// away. A failed attempt with still-fresh data is only degraded, and so is
// data read on a hot standby more than two intervals behind its primary:
// the sidecar works, its source lags, and a sidecar in Tasker's pod must
// not take the pod out of its Service for that.
func NewRefreshCheck(src HealthSource, interval time.Duration) Checker {
	return &refreshCheck{src: src, interval: interval, now: time.Now}
}

func (*refreshCheck) Name() string { return "refresh" }

func (r *refreshCheck) Check(context.Context) CheckResult {
	st := r.src.State()
	details := RefreshDetails{
		RefreshIntervalSeconds: rubyjson.Seconds(r.interval),
		ConsecutiveFailures:    st.Failures,
		LastError:              ErrorText(st.LastError),
	}
	if st.Last == nil {
		res := CheckResult{Status: StatusUnhealthy, Message: "First refresh pending", Error: ClassPending, Details: details}
		if st.LastError != nil {
			res.Message = "First refresh failed"
			res.Error = ErrorClass(st.LastError) + ": " + ErrorText(st.LastError)
		}
		return res
	}
	age := max(r.now().Sub(st.Last.TakenAt), 0)
	at, ageS := rubyjson.Time(st.Last.TakenAt), rubyjson.Seconds(age)
	details.LastSuccessAt, details.AgeSeconds = &at, &ageS
	lag := st.Last.Replication.Lag
	if st.Last.Replication.Standby {
		lagS := rubyjson.Seconds(lag)
		details.ReplicationLagSeconds = &lagS
	}
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
			res.Error = ErrorClass(st.LastError) + ": " + ErrorText(st.LastError)
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
			Error:   ErrorClass(st.LastError) + ": " + ErrorText(st.LastError),
			Details: details,
		}
	case lag > limit:
		return CheckResult{
			Status: StatusDegraded,
			Message: fmt.Sprintf("Serving data %s old: the hot standby is %s behind its primary, more than %s",
				st.Last.Age(r.now()).Round(time.Millisecond), lag.Round(time.Millisecond), limit),
			Error:   ClassStale + ": replication lag",
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
