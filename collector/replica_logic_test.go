package collector

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// serverRow stands in for serverSQL's row.
type serverRow []any

func (r serverRow) Scan(dest ...any) error {
	for i, d := range dest {
		switch p := d.(type) {
		case *int64:
			*p = r[i].(int64)
		case *bool:
			*p = r[i].(bool)
		case **float64:
			*p, _ = r[i].(*float64)
		case **bool:
			*p, _ = r[i].(*bool)
		}
	}
	return nil
}

func TestScanServer(t *testing.T) {
	t.Parallel()
	f := func(v float64) *float64 { return &v }
	b := func(v bool) *bool { return &v }
	for _, tc := range []struct {
		name string
		row  serverRow // active, max, standby, since, replayed all, paused, receiving, up
		want Replication
	}{
		{"primary", serverRow{int64(3), int64(100), false, (*float64)(nil), (*bool)(nil), false, false, (*float64)(nil)},
			Replication{Known: true}},
		{"standby keeping up", serverRow{int64(1), int64(150), true, f(0.2), b(true), false, true, f(3600)},
			Replication{Known: true, Standby: true, SinceReplay: 200 * time.Millisecond, Receiving: true}},
		// The primary wrote nothing for 10 minutes: the last replay is old,
		// the data is not.
		{"standby of an idle primary", serverRow{int64(1), int64(150), true, f(600), b(true), false, true, f(3600)},
			Replication{Known: true, Standby: true, SinceReplay: 10 * time.Minute, Receiving: true}},
		{"replay paused behind", serverRow{int64(1), int64(150), true, f(75), b(false), true, true, f(3600)},
			Replication{Known: true, Standby: true, Lag: 75 * time.Second, SinceReplay: 75 * time.Second, Paused: true, Receiving: true}},
		// Paused with nothing new received: what it has is current.
		{"replay paused, nothing new", serverRow{int64(1), int64(150), true, f(30), b(true), true, true, f(3600)},
			Replication{Known: true, Standby: true, SinceReplay: 30 * time.Second, Paused: true, Receiving: true}},
		// No receiver: nothing says the primary is idle.
		{"receiver gone", serverRow{int64(1), int64(150), true, f(40), b(true), false, false, f(3600)},
			Replication{Known: true, Standby: true, Lag: 40 * time.Second, SinceReplay: 40 * time.Second}},
		// Restarted an hour ago and behind, nothing replayed since: the
		// data is at least as old as the start, whatever it holds.
		{"nothing replayed since start", serverRow{int64(1), int64(150), true, (*float64)(nil), (*bool)(nil), false, false, f(3600)},
			Replication{Known: true, Standby: true, SinceReplay: -1, Lag: time.Hour}},
		// Restarted, nothing replayed, but everything received is replayed
		// and the receiver runs: the primary has been idle.
		{"nothing replayed since start, caught up", serverRow{int64(1), int64(150), true, (*float64)(nil), b(true), false, true, f(3600)},
			Replication{Known: true, Standby: true, SinceReplay: -1, Receiving: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c HealthCounts
			var r Replication
			if err := scanServer(tc.row, &c, &r); err != nil {
				t.Fatal(err)
			}
			if r != tc.want {
				t.Errorf("got %+v, want %+v", r, tc.want)
			}
			if c.MaxConnections != tc.row[1].(int64) {
				t.Errorf("max connections %d", c.MaxConnections)
			}
		})
	}
}

func TestVerdictOf(t *testing.T) {
	t.Parallel()
	busy := HealthCounts{ActiveConnections: 95, MaxConnections: 100, TotalTasks: 10}
	failing := HealthCounts{ActiveConnections: 1, MaxConnections: 100, TotalTasks: 10, ErrorTasks: 6}
	standby := Replication{Known: true, Standby: true}
	for _, tc := range []struct {
		name           string
		snap           Snapshot
		healthy, judge bool
		util           float64
	}{
		{"primary, busy", Snapshot{Counts: busy}, false, true, 95},
		{"standby, its own connections busy", Snapshot{Counts: busy, Replication: standby}, true, false, 95},
		{"standby, most tasks in error", Snapshot{Counts: failing, Replication: standby}, false, false, 1},
	} {
		healthy, util, judged := VerdictOf(&tc.snap)
		if healthy != tc.healthy || judged != tc.judge || util != tc.util {
			t.Errorf("%s: healthy %v, utilization %v, judged %v; want %v %v %v", tc.name, healthy, util, judged, tc.healthy, tc.util, tc.judge)
		}
	}
}

func TestRetryRecoveryConflict(t *testing.T) {
	conflict := &pgconn.PgError{Code: "40001", Message: "canceling statement due to conflict with recovery"}
	other := errors.New("boom")
	for _, tc := range []struct {
		name         string
		fails        []error // what each attempt returns; nil after the list
		wantAttempts int
		wantErr      error
		retried      float64
		failed       float64
	}{
		{"succeeds", nil, 1, nil, 0, 0},
		{"one conflict, then succeeds", []error{conflict}, 2, nil, 1, 0},
		{"another error is not retried", []error{other}, 1, other, 0, 0},
		{"always conflicting, bounded", []error{conflict, conflict, conflict, conflict, conflict}, conflictRetries + 1, conflict, conflictRetries, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			retried := testutil.ToFloat64(conflictCounter.WithLabelValues("retried"))
			failed := testutil.ToFloat64(conflictCounter.WithLabelValues("failed"))
			attempts := 0
			err := RetryRecoveryConflict(context.Background(), func(context.Context) error {
				attempts++
				if attempts <= len(tc.fails) {
					return tc.fails[attempts-1]
				}
				return nil
			})
			if !errors.Is(err, tc.wantErr) || attempts != tc.wantAttempts {
				t.Errorf("err %v after %d attempts; want %v after %d", err, attempts, tc.wantErr, tc.wantAttempts)
			}
			// Other tests of the package may conflict on a real standby
			// meanwhile: at least.
			if d := testutil.ToFloat64(conflictCounter.WithLabelValues("retried")) - retried; d < tc.retried {
				t.Errorf("retried counted %v, want %v", d, tc.retried)
			}
			if d := testutil.ToFloat64(conflictCounter.WithLabelValues("failed")) - failed; d < tc.failed {
				t.Errorf("failed counted %v, want %v", d, tc.failed)
			}
		})
	}
	// A cancelled context ends the waiting.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	attempts := 0
	err := RetryRecoveryConflict(ctx, func(context.Context) error { attempts++; return conflict })
	if attempts != 1 || !IsRecoveryConflict(err) {
		t.Errorf("with a cancelled context: %d attempts, %v", attempts, err)
	}
}

// The refresh age metric includes the lag the counts were read with.
func TestRefresherAgeIncludesLag(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	r := &Refresher{now: clock.Now, created: clock.Now()}
	r.state = RefreshState{LastSuccess: clock.Now().Add(-5 * time.Second),
		Last: &Snapshot{Replication: Replication{Known: true, Standby: true, Lag: 40 * time.Second}}}
	if got := r.age(); got != 45 {
		t.Errorf("age = %v, want 45 (5 s since the refresh + 40 s of lag)", got)
	}
}
