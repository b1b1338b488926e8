package readiness

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/healthtest"
	"github.com/tasker-systems/tasker-sidecar/internal/rubyjson"
)

func ptr[T any](v T) *T { return &v }

// The shared stand-ins (internal/healthtest) under this package's names.
type fakeSource = healthtest.Source

var (
	testNow    = healthtest.Now
	errRefused = healthtest.ErrRefused
)

func status(st collector.SchemaStatus) func() collector.SchemaStatus {
	return func() collector.SchemaStatus { return st }
}

func TestDatabaseCheck(t *testing.T) {
	ok := func(context.Context) (time.Duration, error) { return 1500 * time.Microsecond, nil }
	down := func(context.Context) (time.Duration, error) { return 0, errRefused }
	slow := func(ctx context.Context) (time.Duration, error) { <-ctx.Done(); return 0, ctx.Err() }
	tests := []struct {
		name        string
		ping        func(context.Context) (time.Duration, error)
		schema      func() collector.SchemaStatus
		wantStatus  string
		wantMessage string
		wantError   string
		wantDetails any
	}{
		{"healthy", ok, nil, StatusHealthy, "Database connection active", "", nil},
		{"healthy before any schema check", ok, status(collector.SchemaStatus{}), StatusHealthy, "Database connection active", "", nil},
		{"healthy on rails", ok, status(collector.SchemaStatus{Checked: true, Engine: engine.Rails(), Configured: engine.KindAuto}),
			StatusHealthy, "Database connection active", "", DatabaseDetails{Engine: "rails", ConfiguredEngine: "auto"}},
		{"healthy on core", ok, status(collector.SchemaStatus{Checked: true, Engine: engine.Core(), Configured: engine.KindCore}),
			StatusHealthy, "Database connection active", "", DatabaseDetails{Engine: "core", ConfiguredEngine: "core"}},
		{"healthy on a standby", ok, status(collector.SchemaStatus{Checked: true, Engine: engine.Rails(), Configured: engine.KindAuto,
			Replication: collector.Replication{Known: true, Standby: true, Lag: 1500 * time.Millisecond}}),
			StatusHealthy, "Database connection active (hot standby)", "",
			DatabaseDetails{Engine: "rails", ConfiguredEngine: "auto", Role: "standby", ReplicationLagSeconds: ptr(rubyjson.PlainFloat(1.5))}},
		{"healthy on a primary", ok, status(collector.SchemaStatus{Checked: true, Engine: engine.Core(), Configured: engine.KindCore,
			Replication: collector.Replication{Known: true}}),
			StatusHealthy, "Database connection active", "", DatabaseDetails{Engine: "core", ConfiguredEngine: "core", Role: "primary"}},
		{"down", down, nil, StatusUnhealthy, "Database connection failed: collect health counts: dial tcp 10.0.0.5:5432: connection refused",
			"connection: collect health counts", nil},
		{"timeout", slow, nil, StatusUnhealthy, "Database connection failed: context deadline exceeded", "timeout: context deadline exceeded", nil},
		{"missing tables", ok, status(collector.SchemaStatus{Checked: true, Configured: engine.KindAuto,
			Missing: []string{"tasker_tasks", "tasker_named_tasks"}, Err: errors.New("no Tasker tables")}), StatusUnhealthy,
			"Tasker tables missing: tasker_tasks, tasker_named_tasks", "schema: missing tables",
			DatabaseDetails{ConfiguredEngine: "auto", MissingTables: []string{"tasker_tasks", "tasker_named_tasks"}}},
		{"both engines", ok, status(collector.SchemaStatus{Checked: true, Configured: engine.KindAuto,
			Err: fmt.Errorf("Tasker schema: found %w (...)", engine.ErrBothEngines)}), StatusUnhealthy,
			"Tasker engine not settled: Tasker schema: found both the Rails engine's tables and tasker-core's (...)",
			"schema: Tasker schema: found both", DatabaseDetails{ConfiguredEngine: "auto"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewDatabaseCheck(tc.ping, tc.schema, nil)
			if c.Name() != "database" {
				t.Errorf("name = %q", c.Name())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			res := c.Check(ctx)
			if res.Status != tc.wantStatus || res.Message != tc.wantMessage || !strings.HasPrefix(res.Error, tc.wantError) {
				t.Errorf("got %+v", res)
			}
			if !reflect.DeepEqual(res.Details, tc.wantDetails) {
				t.Errorf("details = %#v, want %#v", res.Details, tc.wantDetails)
			}
			if res.ResponseTimeMs <= 0 {
				t.Errorf("response_time_ms = %v, want > 0 even on failure", res.ResponseTimeMs)
			}
		})
	}
	if res := NewDatabaseCheck(ok, nil, nil).Check(context.Background()); res.ResponseTimeMs != 1.5 {
		t.Errorf("ping's own round trip not used: %v", res.ResponseTimeMs)
	}
}

func TestRefreshCheck(t *testing.T) {
	interval := 30 * time.Second
	at := func(age time.Duration) *collector.Snapshot { return &collector.Snapshot{TakenAt: testNow.Add(-age)} }
	lagging := func(age, lag time.Duration) *collector.Snapshot {
		return &collector.Snapshot{TakenAt: testNow.Add(-age),
			Replication: collector.Replication{Known: true, Standby: true, Lag: lag, SinceReplay: lag}}
	}
	tests := []struct {
		name       string
		state      collector.RefreshState
		wantStatus string
		wantMsg    string
	}{
		{"pending", collector.RefreshState{}, StatusUnhealthy, "First refresh pending"},
		{"first failed", collector.RefreshState{LastError: errRefused, Failures: 1}, StatusUnhealthy, "First refresh failed"},
		{"fresh", collector.RefreshState{Last: at(5 * time.Second)}, StatusHealthy, "Data refreshed"},
		{"exactly two intervals", collector.RefreshState{Last: at(2 * interval)}, StatusHealthy, "Data refreshed"},
		{"one failure, data fresh", collector.RefreshState{Last: at(40 * time.Second), LastError: errRefused, Failures: 1},
			StatusDegraded, "Last refresh failed; serving data from 40s ago"},
		{"failing past two intervals", collector.RefreshState{Last: at(2*interval + time.Millisecond), LastError: errRefused, Failures: 2},
			StatusUnhealthy, "Last successful refresh 1m0.001s ago, more than 1m0s"},
		{"stuck past two intervals", collector.RefreshState{Last: at(90 * time.Second)}, StatusUnhealthy, "Last successful refresh 1m30s ago, more than 1m0s"},
		// A lagging standby degrades readiness, never fails it: the sidecar works, its source lags.
		{"standby within the bound", collector.RefreshState{Last: lagging(5*time.Second, 50*time.Second)}, StatusHealthy, "Data refreshed"},
		{"standby lagging past the bound", collector.RefreshState{Last: lagging(5*time.Second, 80*time.Second)},
			StatusDegraded, "Serving data 1m25s old: the hot standby is 1m20s behind its primary, more than 1m0s"},
		{"stuck and lagging", collector.RefreshState{Last: lagging(90*time.Second, 80*time.Second)}, StatusUnhealthy,
			"Last successful refresh 1m30s ago, more than 1m0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{}
			src.Set(tc.state)
			c := NewRefreshCheck(src, interval)
			c.(*refreshCheck).now = func() time.Time { return testNow }
			res := c.Check(context.Background())
			if res.Status != tc.wantStatus || res.Message != tc.wantMsg {
				t.Errorf("got %s %q, want %s %q", res.Status, res.Message, tc.wantStatus, tc.wantMsg)
			}
			if (tc.state.LastError != nil) != (res.Details.(RefreshDetails).LastError != "") {
				t.Errorf("last_error detail = %v", res.Details.(RefreshDetails).LastError)
			}
			if res.Status != StatusHealthy && res.Error == "" {
				t.Errorf("no error on %s", res.Status)
			}
		})
	}
}

func TestCheckFunc(t *testing.T) {
	want := CheckResult{Status: StatusHealthy, Message: "cache ok"}
	c := CheckFunc("cache", func(context.Context) CheckResult { return want })
	if c.Name() != "cache" || c.Check(context.Background()).Message != "cache ok" {
		t.Error("CheckFunc does not delegate")
	}
	if got := run(context.Background(), CheckFunc("x", func(context.Context) CheckResult { panic(errors.New("boom")) })); got.Status != StatusUnhealthy || got.Error != "boom" {
		t.Errorf("panic not contained: %+v", got)
	}
}

// The database check tells the refresher when the ping finds the database
// unreachable, and only then: not for timeouts, nor when its caller left.
func TestDatabaseCheckReportsUnreachable(t *testing.T) {
	refused := func(context.Context) (time.Duration, error) { return 0, errRefused }
	poolWait := func(ctx context.Context) (time.Duration, error) { <-ctx.Done(); return 0, ctx.Err() }
	ok := func(context.Context) (time.Duration, error) { return time.Millisecond, nil }
	cancelled := func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx
	}
	expired := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		t.Cleanup(cancel)
		<-ctx.Done()
		return ctx
	}
	for _, tc := range []struct {
		name string
		ping func(context.Context) (time.Duration, error)
		ctx  func() context.Context
		want bool
	}{
		{"connection refused", refused, context.Background, true},
		{"healthy", ok, context.Background, false},
		{"waited out the deadline", poolWait, expired, false},
		{"refused after the caller left", refused, cancelled, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []error
			c := NewDatabaseCheck(tc.ping, nil, func(err error) { got = append(got, err) })
			c.Check(tc.ctx())
			if reported := len(got) == 1 && errors.Is(got[0], errRefused); reported != tc.want || len(got) > 1 {
				t.Errorf("reported %v, want a report: %v", got, tc.want)
			}
		})
	}
}
