package analytics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestNonUTCServer runs the service against a database whose default time
// zone is Tokyo. The pool forces UTC sessions; without that every window
// would be nine hours off (facts §1.5), which the raw Tokyo session below
// demonstrates on Tasker's own function.
func TestNonUTCServer(t *testing.T) {
	db := pgtest.NewTasker(t)
	installYardsticks(t, db)
	admin := pgtest.DB{URL: pgtest.AdminURL()}.Conn(t)
	if _, err := admin.Exec(testCtx(t), "ALTER DATABASE "+pgx.Identifier{db.Name}.Sanitize()+" SET timezone TO 'Asia/Tokyo'"); err != nil {
		t.Fatal(err)
	}
	var task int64
	commit(t, db, func(f *fixture) {
		nt := f.namedTask("ns", "wf", "1.0.0")
		task = f.task(nt, 10*time.Minute, at("in_progress", 9*time.Minute))
		f.step(task, "a", stepOpts{attempts: i32(1), processed: true, createdAgo: 10 * time.Minute}, at("complete", 8*time.Minute))
		f.step(task, "b", stepOpts{attempts: i32(0), createdAgo: 10 * time.Minute})
	})

	tokyo := db.Conn(t)
	var zone string
	var naiveThroughput int64
	if err := tokyo.QueryRow(testCtx(t), "SELECT current_setting('TimeZone'), task_throughput FROM get_analytics_metrics_v01()").
		Scan(&zone, &naiveThroughput); err != nil {
		t.Fatal(err)
	}
	if zone != "Asia/Tokyo" || naiveThroughput != 0 {
		t.Fatalf("the test database does not exercise the zone problem: zone %s, throughput %d", zone, naiveThroughput)
	}

	svc := New(servicePool(t, db.URL), Config{}, nil)
	ctx := testCtx(t)
	p, err := svc.Performance(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h := p.PerformanceTrends.LastHour; h.TaskThroughput != 1 || h.CompletionCount != 1 || h.AvgTaskDuration != "120.000" {
		t.Errorf("last hour through a non-UTC server: %+v", h)
	}
	b, err := svc.Bottlenecks(ctx, BottleneckQuery{PeriodHours: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b.ScopeSummary.TotalTasks != 1 || len(b.BottleneckAnalysis.SlowestSteps) != 1 {
		t.Errorf("bottlenecks through a non-UTC server: %+v", b)
	}

	contexts, missing, err := svc.TaskContexts(ctx, []int64{task, task + 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(contexts) != 1 || contexts[0].ReadySteps != 1 || len(missing) != 1 || missing[0] != task+100 {
		t.Errorf("contexts %+v missing %v", contexts, missing)
	}
	steps, _, err := svc.TaskSteps(ctx, []int64{task})
	if err != nil || len(steps) != 1 || len(steps[0].Steps) != 2 {
		t.Errorf("steps %+v, %v", steps, err)
	}
	graphs, _, err := svc.TaskGraphs(ctx, []int64{task})
	if err != nil || len(graphs) != 1 || len(graphs[0].DependencyGraph.Nodes) != 2 {
		t.Errorf("graphs %+v, %v", graphs, err)
	}
}

// TestStatementTimeout: a query over its budget fails with the server's
// cancellation, not by hanging the endpoint.
func TestStatementTimeout(t *testing.T) {
	db := pgtest.NewTasker(t)
	svc := New(servicePool(t, db.URL), Config{StatementTimeout: 50 * time.Millisecond}, nil)
	err := svc.read(testCtx(t), ClassLookup, "test", func(q querier) error {
		_, err := q.Exec(context.Background(), "SELECT pg_sleep(1)")
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "statement timeout") {
		t.Errorf("got %v, want a statement timeout", err)
	}
	// The transaction is read-only even where the pool would not be.
	err = svc.read(testCtx(t), ClassLookup, "test", func(q querier) error {
		_, err := q.Exec(context.Background(), "CREATE TABLE nope (x int)")
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("got %v, want a read-only transaction error", err)
	}
}

func TestMetrics(t *testing.T) {
	db := pgtest.NewTasker(t)
	commit(t, db, func(f *fixture) {
		const s = time.Second
		charge := f.namedTask("pay", "charge", "1.0.0")
		f.task(charge, 600*s, at("in_progress", 599*s), at("complete", 580*s)) // 20 s
		f.task(charge, 300*s, at("in_progress", 299*s), at("complete", 260*s)) // 40 s
		f.task(charge, 120*s, at("error", 100*s))
		send := f.namedTask("ship", "send", "1.0.0")
		active := f.task(send, 1200*s, at("in_progress", 1199*s))
		ready := f.step(active, "r1", stepOpts{attempts: i32(0)})
		f.edge(ready, f.step(active, "r2", stepOpts{attempts: i32(0)}))
		f.step(active, "r3", stepOpts{attempts: i32(1), lastAttemptedAgo: dur(0), backoff: i32(3600)}, at("pending", s))
		f.step(active, "r4", stepOpts{attempts: i32(3)}, at("error", 100*s))
		// A failed task two days old: outside the window, and its steps are
		// not counted because the engine does not run them.
		old := f.task(send, 48*time.Hour, at("error", 47*time.Hour))
		f.step(old, "o1", stepOpts{attempts: i32(0)})
	})
	svc := New(servicePool(t, db.URL), Config{}, nil)

	m := NewMetrics(svc, 0, nil, nil)
	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) > 0 {
		t.Fatalf("lint before refresh: %v %v", problems, err)
	}
	if n := testutil.CollectAndCount(m, "tasker_analytics_tasks_created"); n != 0 {
		t.Errorf("%d series before the first refresh", n)
	}
	if err := m.Refresh(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	want := `
# HELP tasker_analytics_steps_blocked Pending unprocessed steps of active tasks whose parents are not all complete or resolved.
# TYPE tasker_analytics_steps_blocked gauge
tasker_analytics_steps_blocked{namespace="pay",task="charge"} 0
tasker_analytics_steps_blocked{namespace="ship",task="send"} 1
# HELP tasker_analytics_steps_in_backoff Unprocessed steps of active tasks with retries left whose explicit or failure backoff has not yet elapsed.
# TYPE tasker_analytics_steps_in_backoff gauge
tasker_analytics_steps_in_backoff{namespace="pay",task="charge"} 0
tasker_analytics_steps_in_backoff{namespace="ship",task="send"} 1
# HELP tasker_analytics_steps_ready Unprocessed steps of active tasks (pending or in progress) that are ready for execution under Tasker's readiness rules.
# TYPE tasker_analytics_steps_ready gauge
tasker_analytics_steps_ready{namespace="pay",task="charge"} 0
tasker_analytics_steps_ready{namespace="ship",task="send"} 1
# HELP tasker_analytics_task_duration_seconds Run time (creation to complete transition) of the window's complete tasks at the given percentile (linear interpolation); absent when none completed.
# TYPE tasker_analytics_task_duration_seconds gauge
tasker_analytics_task_duration_seconds{namespace="pay",percentile="p50",task="charge"} 30
tasker_analytics_task_duration_seconds{namespace="pay",percentile="p95",task="charge"} 39
tasker_analytics_task_duration_seconds{namespace="pay",percentile="p99",task="charge"} 39.8
# HELP tasker_analytics_tasks_created Tasks created within the analytics window (tasker_analytics_window_seconds), by namespace and task name.
# TYPE tasker_analytics_tasks_created gauge
tasker_analytics_tasks_created{namespace="pay",task="charge"} 3
tasker_analytics_tasks_created{namespace="ship",task="send"} 1
# HELP tasker_analytics_tasks_failed Tasks created within the analytics window whose own state is now error.
# TYPE tasker_analytics_tasks_failed gauge
tasker_analytics_tasks_failed{namespace="pay",task="charge"} 1
tasker_analytics_tasks_failed{namespace="ship",task="send"} 0
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want),
		"tasker_analytics_steps_blocked", "tasker_analytics_steps_in_backoff", "tasker_analytics_steps_ready",
		"tasker_analytics_task_duration_seconds", "tasker_analytics_tasks_created", "tasker_analytics_tasks_failed"); err != nil {
		t.Error(err)
	}

	// A cap of one keeps the busiest pair and folds the other.
	capped := NewMetrics(svc, 1, nil, nil)
	if err := capped.Refresh(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	want = `
# HELP tasker_analytics_tasks_created Tasks created within the analytics window (tasker_analytics_window_seconds), by namespace and task name.
# TYPE tasker_analytics_tasks_created gauge
tasker_analytics_tasks_created{namespace="other",task="other"} 1
tasker_analytics_tasks_created{namespace="pay",task="charge"} 3
# HELP tasker_sidecar_analytics_groups_dropped (namespace, task) pairs folded into namespace="other",task="other" by the cardinality cap.
# TYPE tasker_sidecar_analytics_groups_dropped gauge
tasker_sidecar_analytics_groups_dropped 1
`
	if err := testutil.CollectAndCompare(capped, strings.NewReader(want),
		"tasker_analytics_tasks_created", "tasker_sidecar_analytics_groups_dropped"); err != nil {
		t.Error(err)
	}

	// Stale data is withdrawn rather than shown as flat lines.
	capped.now = func() time.Time { return time.Now().Add(time.Hour) }
	if n := testutil.CollectAndCount(capped, "tasker_analytics_tasks_created"); n != 0 {
		t.Errorf("%d series from a stale refresh", n)
	}

	// A failed refresh counts and keeps the last good data.
	broken := NewMetrics(New(servicePool(t, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"), Config{}, nil), 0, nil, nil)
	if err := broken.Refresh(testCtx(t)); err == nil {
		t.Error("refresh against a dead server succeeded")
	}
	if v := testutil.ToFloat64(broken.refreshErrors); v != 1 {
		t.Errorf("refresh errors %v", v)
	}
	if _, err := broken.LastRefresh(); !errors.Is(err, errNoData) {
		t.Errorf("last refresh: %v", err)
	}
}

// Every computation is a span of the sidecar's own, failed ones with their
// error.
func TestComputationSpans(t *testing.T) {
	db := pgtest.NewTasker(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	svc := New(servicePool(t, db.URL), Config{StatementTimeout: 50 * time.Millisecond}, nil, WithTracerProvider(tp))
	if _, err := svc.Performance(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	_ = svc.read(testCtx(t), ClassLookup, "slow", func(q querier) error {
		_, err := q.Exec(context.Background(), "SELECT pg_sleep(1)")
		return err
	})
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	for i, want := range []struct {
		name string
		code codes.Code
	}{{"analytics.performance", codes.Unset}, {"analytics.slow", codes.Error}} {
		if s := spans[i]; s.Name() != want.name || s.Status().Code != want.code {
			t.Errorf("span %d = %s (%v), want %s (%v)", i, s.Name(), s.Status().Code, want.name, want.code)
		}
	}
}
