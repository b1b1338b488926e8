package collector

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestRefresher wires a refresher to a fake clock that starts at a fixed
// instant, so timestamps and ages are exact.
func newTestRefresher(t *testing.T, db *DB, cfg RefreshConfig, opts ...RefresherOption) (*Refresher, *prometheus.Registry, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	r := NewRefresher(db, cfg, reg, testLogger(t), opts...)
	r.now = clock.Now
	r.created = clock.Now()
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	return r, reg, clock
}

func adminConn(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testCtx(t), pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestRefresherKeepsLastGoodAndRecovers(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	buildMixed(newFixture(t, pg))
	db, _ := openTest(t, pg.URL)
	r, reg, clock := newTestRefresher(t, db, RefreshConfig{Interval: time.Minute, Timeout: 20 * time.Second})
	ctx := testCtx(t)

	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("first refresh: %v", err)
	}
	good := r.State()
	if good.Last == nil || withoutConns(good.Last.Counts) != mixedCounts() || good.LastError != nil || good.Failures != 0 {
		t.Fatalf("after success: %+v", good)
	}
	firstSuccess := clock.Now()

	// A real outage: the database disappears under the pool.
	ident := pgx.Identifier{pg.Name}.Sanitize()
	admin := adminConn(t)
	if _, err := admin.Exec(ctx, "DROP DATABASE "+ident+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 2; i++ {
		clock.Advance(time.Minute)
		err := r.Refresh(ctx)
		if err == nil {
			t.Fatalf("refresh %d succeeded against a dropped database", i)
		}
		st := r.State()
		if st.Last != good.Last || st.LastError == nil || st.Failures != i ||
			!st.LastAttempt.Equal(clock.Now()) || !st.LastSuccess.Equal(firstSuccess) {
			t.Errorf("after failure %d: %+v", i, st)
		}
	}
	if got := testutil.ToFloat64(r.errs.WithLabelValues(ReasonConnection)); got != 2 {
		t.Errorf("errors_total{reason=connection} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(r.success); got != 0 {
		t.Errorf("success = %v, want 0", got)
	}
	if got := testutil.ToFloat64(r.lastSuccess); got != float64(firstSuccess.Unix()) {
		t.Errorf("last_success_timestamp = %v, want %v", got, firstSuccess.Unix())
	}
	wantAge := `
# HELP tasker_sidecar_refresh_age_seconds Seconds since the last successful refresh plus the replication lag its counts were read with (0 on a primary), computed at scrape time; before the first success, seconds since the refresher was created, so staleness alerts also fire for a sidecar that never succeeded.
# TYPE tasker_sidecar_refresh_age_seconds gauge
tasker_sidecar_refresh_age_seconds 120
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantAge), "tasker_sidecar_refresh_age_seconds"); err != nil {
		t.Error(err)
	}

	// The database comes back (empty); the pool reconnects by itself.
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		t.Fatal(err)
	}
	if err := schema.Apply(ctx, pg.Conn(t)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("refresh after recovery: %v", err)
	}
	st := r.State()
	if st.Last == good.Last || st.Last.Counts.TotalTasks != 0 || st.LastError != nil || st.Failures != 0 ||
		!st.LastSuccess.Equal(clock.Now()) {
		t.Errorf("after recovery: %+v", st)
	}
	if got := testutil.ToFloat64(r.success); got != 1 {
		t.Errorf("success = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(r.duration); got != 1 {
		t.Errorf("duration histogram series = %d", got)
	}
}

func TestRefresherSchemaError(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, pgtest.New(t).URL)
	r, _, _ := newTestRefresher(t, db, RefreshConfig{})
	err := r.Refresh(testCtx(t))
	var se *SchemaError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want *SchemaError", err)
	}
	for _, table := range schema.Required {
		if !strings.Contains(err.Error(), table) {
			t.Errorf("error %q does not name %s", err, table)
		}
	}
	if st := r.State(); st.Last != nil || st.LastError != err || st.Failures != 1 {
		t.Errorf("state = %+v", st)
	}
	if got := testutil.ToFloat64(r.errs.WithLabelValues(ReasonSchema)); got != 1 {
		t.Errorf("errors_total{reason=schema} = %v, want 1", got)
	}
}

// TestRefresherLockTimeout holds an exclusive lock, as a Tasker migration
// would, and expects the refresh to give up as a timeout instead of queueing.
func TestRefresherLockTimeout(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	db, err := Open(DBConfig{URL: secret.URL(pg.URL), lockTimeout: 50 * time.Millisecond}, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	r, _, _ := newTestRefresher(t, db, RefreshConfig{Timeout: 30 * time.Second})

	ctx := testCtx(t)
	locker := pg.Conn(t)
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE tasker_tasks IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	err = r.Refresh(ctx)
	if classify(err) != ReasonTimeout {
		t.Fatalf("err = %v (reason %s), want timeout", err, classify(err))
	}
	if got := testutil.ToFloat64(r.errs.WithLabelValues(ReasonTimeout)); got != 1 {
		t.Errorf("errors_total{reason=timeout} = %v, want 1", got)
	}
}

func TestRefresherCancelledAttemptIsNotAFailure(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, pgtest.NewTasker(t).URL)
	r, _, _ := newTestRefresher(t, db, RefreshConfig{})
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	if err := r.Refresh(ctx); err == nil {
		t.Fatal("refresh with a cancelled context succeeded")
	}
	if st := r.State(); st.Failures != 0 || !st.LastAttempt.IsZero() || st.LastError != nil {
		t.Errorf("state after shutdown-cancelled attempt = %+v, want untouched", st)
	}
	for _, reason := range Reasons() {
		if got := testutil.ToFloat64(r.errs.WithLabelValues(reason)); got != 0 {
			t.Errorf("errors_total{reason=%s} = %v, want 0", reason, got)
		}
	}
}

func TestRefresherMetrics(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, pgtest.NewTasker(t).URL)
	r, reg, clock := newTestRefresher(t, db, RefreshConfig{})

	// Before the first success the age counts from creation.
	clock.Advance(90 * time.Second)
	if got := r.age(); got != 90 {
		t.Errorf("age before first success = %v, want 90", got)
	}
	if err := r.Refresh(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Second)

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP tasker_sidecar_refresh_age_seconds Seconds since the last successful refresh plus the replication lag its counts were read with (0 on a primary), computed at scrape time; before the first success, seconds since the refresher was created, so staleness alerts also fire for a sidecar that never succeeded.
# TYPE tasker_sidecar_refresh_age_seconds gauge
tasker_sidecar_refresh_age_seconds 5
# HELP tasker_sidecar_refresh_errors_total Failed refreshes by reason (timeout, connection, query, schema).
# TYPE tasker_sidecar_refresh_errors_total counter
tasker_sidecar_refresh_errors_total{reason="connection"} 0
tasker_sidecar_refresh_errors_total{reason="query"} 0
tasker_sidecar_refresh_errors_total{reason="recovery_conflict"} 0
tasker_sidecar_refresh_errors_total{reason="schema"} 0
tasker_sidecar_refresh_errors_total{reason="timeout"} 0
# HELP tasker_sidecar_refresh_last_success_timestamp_seconds Unix time of the last successful refresh, 0 if none yet.
# TYPE tasker_sidecar_refresh_last_success_timestamp_seconds gauge
tasker_sidecar_refresh_last_success_timestamp_seconds 1.74877929e+09
# HELP tasker_sidecar_refresh_success 1 if the most recent refresh succeeded, 0 if it failed or none ran yet.
# TYPE tasker_sidecar_refresh_success gauge
tasker_sidecar_refresh_success 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"tasker_sidecar_refresh_age_seconds", "tasker_sidecar_refresh_errors_total",
		"tasker_sidecar_refresh_last_success_timestamp_seconds", "tasker_sidecar_refresh_success"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(r.duration, "tasker_sidecar_refresh_duration_seconds"); n != 1 {
		t.Errorf("duration histogram: %d series", n)
	}
}

// TestRefresherLoop drives the loop with an injected tick channel, so no
// test depends on wall-clock timing.
func TestRefresherLoop(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, pgtest.NewTasker(t).URL)
	r, _, _ := newTestRefresher(t, db, RefreshConfig{Interval: time.Hour})
	tick := make(chan time.Time)
	ran := make(chan struct{}, 10)
	r.tick = tick
	r.onRun = func() { ran <- struct{}{} }

	wait := func(what string) {
		t.Helper()
		select {
		case <-ran:
		case <-time.After(30 * time.Second):
			t.Fatalf("no refresh %s", what)
		}
	}
	_ = r.Start(testCtx(t))
	_ = r.Start(testCtx(t)) // second Start is a no-op: still one loop
	wait("immediately after Start")
	if st := r.State(); st.Last == nil {
		t.Fatalf("state after first run: %+v", st)
	}
	tick <- time.Time{}
	wait("after a tick")

	_ = r.Shutdown(context.Background())
	_ = r.Shutdown(context.Background())
	select {
	case tick <- time.Time{}:
		t.Error("loop still receiving ticks after Shutdown")
	default:
	}
	if len(ran) != 0 {
		t.Errorf("%d unexpected extra runs", len(ran))
	}
}

func TestRefresherStopBeforeStart(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, pgtest.NewTasker(t).URL)
	r, _, _ := newTestRefresher(t, db, RefreshConfig{})
	r.onRun = func() { t.Error("loop ran after Shutdown") }
	_ = r.Shutdown(context.Background())
	_ = r.Shutdown(context.Background())
	_ = r.Start(testCtx(t)) // no-op after Shutdown
	_ = r.Shutdown(context.Background())
	if r.loop.Done() != nil {
		t.Error("Start after Shutdown started a loop")
	}
}

func TestRefresherContextEndsLoop(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, pgtest.NewTasker(t).URL)
	r, _, _ := newTestRefresher(t, db, RefreshConfig{})
	r.tick = make(chan time.Time)
	ctx, cancel := context.WithCancel(testCtx(t))
	_ = r.Start(ctx)
	cancel()
	select {
	case <-r.loop.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("loop did not end with its context")
	}
	_ = r.Shutdown(context.Background())
}

// TestRefresherConcurrentReaders is for -race: handlers read State and
// scrape metrics while refreshes run.
func TestRefresherConcurrentReaders(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	buildMixed(newFixture(t, pg))
	db, reg := openTest(t, pg.URL)
	r := NewRefresher(db, RefreshConfig{}, reg, testLogger(t))
	ctx := testCtx(t)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if st := r.State(); st.Last != nil && st.Last.Counts.TotalTasks != 8 {
					t.Errorf("torn snapshot: %+v", st.Last.Counts)
				}
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	var rw sync.WaitGroup
	for range 3 {
		rw.Go(func() {
			for range 5 {
				if err := r.Refresh(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	rw.Wait()
	close(stop)
	wg.Wait()
}

// TestRefresherReportUnreachable drops the database under a refresher with
// a good snapshot: the ping's error marks the state failing at once, keeping
// the snapshot and its time, and only a successful refresh clears it.
func TestRefresherReportUnreachable(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	buildMixed(newFixture(t, pg))
	db, _ := openTest(t, pg.URL)
	r, _, clock := newTestRefresher(t, db, RefreshConfig{Interval: time.Minute})
	ctx := testCtx(t)
	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("first refresh: %v", err)
	}
	good := r.State()

	ident := pgx.Identifier{pg.Name}.Sanitize()
	admin := adminConn(t)
	if _, err := admin.Exec(ctx, "DROP DATABASE "+ident+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	_, pingErr := db.Ping(ctx)
	if pingErr == nil || classify(pingErr) != ReasonConnection {
		t.Fatalf("ping of a dropped database: %v (%s), want a connection error", pingErr, classify(pingErr))
	}
	r.ReportUnreachable(pingErr)
	r.ReportUnreachable(nil) // nothing to report: no change

	st := r.State()
	var unreachable *UnreachableError
	if !errors.As(st.LastError, &unreachable) || !errors.Is(st.LastError, pingErr) {
		t.Fatalf("LastError = %v, want an *UnreachableError wrapping the ping's error", st.LastError)
	}
	if !strings.HasPrefix(st.LastError.Error(), "database unreachable: ") || classify(st.LastError) != ReasonConnection {
		t.Errorf("LastError %q classified %s", st.LastError, classify(st.LastError))
	}
	// The snapshot and the refresh bookkeeping are the refreshes' own.
	if st.Last != good.Last || !st.LastSuccess.Equal(good.LastSuccess) || !st.LastAttempt.Equal(good.LastAttempt) || st.Failures != 0 {
		t.Errorf("state after the report = %+v, want the last refresh's snapshot and times", st)
	}

	// The database comes back; only a successful refresh clears the failure.
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		t.Fatal(err)
	}
	if err := schema.Apply(ctx, pg.Conn(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Ping(ctx); err != nil {
		t.Fatalf("ping after recovery: %v", err)
	}
	if st := r.State(); st.LastError == nil {
		t.Error("a successful ping cleared the failure; only a refresh may")
	}
	if err := r.Refresh(ctx); err != nil {
		t.Fatalf("refresh after recovery: %v", err)
	}
	if st := r.State(); st.LastError != nil || st.Last == good.Last {
		t.Errorf("after a successful refresh: %+v", st)
	}
}

// blockingSource answers each Refresh when told to, so a report can land
// while a refresh runs.
type blockingSource struct {
	entered chan struct{}
	release chan struct{}
}

func (b blockingSource) Refresh(ctx context.Context) (Snapshot, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
		return Snapshot{Counts: HealthCounts{TotalTasks: 1}}, nil
	case <-ctx.Done():
		return Snapshot{}, ctx.Err()
	}
}

// A refresh that began before the report may have read its counts before
// the database went away: its success must not clear the report.
func TestRefresherReportDuringRefresh(t *testing.T) {
	t.Parallel()
	src := blockingSource{entered: make(chan struct{}), release: make(chan struct{})}
	r, _, _ := newTestRefresher(t, nil, RefreshConfig{}, WithSource(src))
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() { done <- r.Refresh(ctx) }()
	<-src.entered
	r.ReportUnreachable(errors.New("connection refused"))
	src.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := r.State()
	if st.Last == nil || st.LastError == nil {
		t.Fatalf("after a refresh that overlapped a report: %+v, want the new snapshot and the report", st)
	}
	go func() { done <- r.Refresh(ctx) }()
	<-src.entered
	src.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := r.State(); st.LastError != nil {
		t.Errorf("a refresh begun after the report did not clear it: %v", st.LastError)
	}
}
