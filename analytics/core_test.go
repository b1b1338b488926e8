package analytics

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

//go:embed testdata/tasker_core_analytics.sql
var coreYardstickSQL string

// coreSimulated is a tasker-core database with a workload written the way
// the engine writes it (simulate.BulkCore) over the last 30 hours, and the
// yardstick functions in schema yardstick.
func coreSimulated(t *testing.T, tasks int) pgtest.DB {
	t.Helper()
	db := pgtest.NewCore(t)
	pool, err := pgxpool.New(context.Background(), db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := testCtx(t)
	if _, err := simulate.BulkCore(ctx, pool, tasks, simulate.Options{Seed: 7, History: 30 * time.Hour, ErrorRate: 0.15}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, coreYardstickSQL); err != nil {
		t.Fatalf("install yardsticks: %v", err)
	}
	return db
}

// coreTx is a REPEATABLE READ transaction on a UTC session: the code under
// test and the yardsticks share its snapshot and its now().
func coreTx(t *testing.T, db pgtest.DB) (context.Context, pgx.Tx) {
	t.Helper()
	ctx := testCtx(t)
	conn := db.Conn(t)
	if _, err := conn.Exec(ctx, "SET TIME ZONE 'UTC'"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return ctx, tx
}

// yardstickMetrics reads yardstick.get_analytics_metrics(since), numerics
// as text.
func yardstickMetrics(t *testing.T, ctx context.Context, tx pgx.Tx, since *time.Time) CoreMetrics {
	t.Helper()
	var m CoreMetrics
	var h, cr, er, at, as string
	if err := tx.QueryRow(ctx, `SELECT active_tasks_count, total_namespaces_count, unique_task_types_count,
	        system_health_score::text, task_throughput, completion_count, error_count, completion_rate::text,
	        error_rate::text, avg_task_duration::text, avg_step_duration::text, step_throughput,
	        analysis_period_start, calculated_at
	        FROM yardstick.get_analytics_metrics($1)`, since).Scan(&m.ActiveTasksCount, &m.TotalNamespacesCount,
		&m.UniqueTaskTypesCount, &h, &m.TaskThroughput, &m.CompletionCount, &m.ErrorCount, &cr, &er, &at, &as,
		&m.StepThroughput, &m.AnalysisPeriodStart, &m.CalculatedAt); err != nil {
		t.Fatal(err)
	}
	m.SystemHealthScore, m.CompletionRate, m.ErrorRate, m.AvgTaskDuration, m.AvgStepDuration =
		Decimal(h), Decimal(cr), Decimal(er), Decimal(at), Decimal(as)
	return m
}

// TestCoreMetricsMatchYardstick compares get_analytics_metrics(since), column
// by column and digit by digit, for the default window and several since.
func TestCoreMetricsMatchYardstick(t *testing.T) {
	db := coreSimulated(t, 800)
	ctx, tx := coreTx(t, db)
	var now time.Time
	if err := tx.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		t.Fatal(err)
	}
	for _, since := range []*time.Time{nil, ptr(now.Add(-90 * time.Minute)), ptr(now.Add(-24 * time.Hour)), ptr(now.Add(-72 * time.Hour)), ptr(now.Add(time.Hour))} {
		got, err := coreMetrics(ctx, tx, since)
		if err != nil {
			t.Fatal(err)
		}
		want := yardstickMetrics(t, ctx, tx, since)
		if got != want {
			t.Errorf("since %v:\n got  %+v\n want %+v", since, got, want)
		}
		if since != nil && since.Before(now) && (got.TaskThroughput == 0 || got.CompletionCount == 0 || got.ErrorCount == 0) {
			t.Errorf("since %v: the workload does not exercise the window: %+v", since, got)
		}
	}
}

func TestCoreHealthMatchesYardstick(t *testing.T) {
	db := coreSimulated(t, 300)
	ctx, tx := coreTx(t, db)
	got, err := coreHealth(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	want := yardstickHealth(t, ctx, tx)
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if got.TotalTasks != 300 || got.CompleteSteps == 0 {
		t.Errorf("unexpected workload: %+v", got)
	}
}

func yardstickHealth(t *testing.T, ctx context.Context, tx pgx.Tx) CoreSystemHealthCounts {
	t.Helper()
	var h CoreSystemHealthCounts
	if err := tx.QueryRow(ctx, `SELECT * FROM yardstick.get_system_health_counts()`).Scan(&h.PendingTasks,
		&h.InitializingTasks, &h.EnqueuingStepsTasks, &h.StepsInProcessTasks, &h.EvaluatingResultsTasks,
		&h.WaitingForDependenciesTasks, &h.WaitingForRetryTasks, &h.BlockedByFailuresTasks, &h.CompleteTasks,
		&h.ErrorTasks, &h.CancelledTasks, &h.ResolvedManuallyTasks, &h.TotalTasks, &h.PendingSteps, &h.EnqueuedSteps,
		&h.InProgressSteps, &h.EnqueuedForOrchestrationSteps, &h.EnqueuedAsErrorForOrchestrationSteps,
		&h.WaitingForRetrySteps, &h.CompleteSteps, &h.ErrorSteps, &h.CancelledSteps, &h.ResolvedManuallySteps,
		&h.TotalSteps); err != nil {
		t.Fatal(err)
	}
	return h
}

// servicePerformance is what tasker-core's
// AnalyticsQueryService::get_performance_metrics builds from its functions
// (here the yardsticks): the numerics through float8 (PostgreSQL's correctly
// rounded conversion, as BigDecimal::to_f64), the times through to_rfc3339.
func servicePerformance(t *testing.T, ctx context.Context, tx pgx.Tx, hours uint32) CorePerformanceMetrics {
	t.Helper()
	var p CorePerformanceMetrics
	var start, at time.Time
	var cr, er, avgT, avgS, health float64
	if err := tx.QueryRow(ctx, `SELECT h.total_tasks, m.active_tasks_count, m.completion_count, m.error_count,
	        m.completion_rate::float8, m.error_rate::float8, m.avg_task_duration::float8, m.avg_step_duration::float8,
	        m.task_throughput, m.step_throughput, m.system_health_score::float8, m.analysis_period_start, m.calculated_at
	        FROM yardstick.get_analytics_metrics(CASE WHEN $1::bigint > 0 THEN now() - $1::bigint * interval '1 hour' END) m,
	             yardstick.get_system_health_counts() h`, int64(hours)).Scan(&p.TotalTasks, &p.ActiveTasks,
		&p.CompletedTasks, &p.FailedTasks, &cr, &er, &avgT, &avgS, &p.TasksPerHour, &p.StepsPerHour, &health, &start, &at); err != nil {
		t.Fatal(err)
	}
	p.CompletionRate, p.ErrorRate, p.AverageTaskDurationSeconds = RustFloat(cr), RustFloat(er), RustFloat(avgT)
	p.AverageStepDurationSeconds, p.SystemHealthScore = RustFloat(avgS), RustFloat(health)
	p.AnalysisPeriodStart, p.CalculatedAt = ChronoRFC3339(start), ChronoRFC3339(at)
	return p
}

// yardstickSlowest is get_slowest_steps/tasks_aggregated(NULL, limit,
// min_executions) in the service's conversion.
func yardstickSlowest(t *testing.T, ctx context.Context, tx pgx.Tx, limit, minExec int32) ([]CoreSlowStep, []CoreSlowTask) {
	t.Helper()
	rows, err := tx.Query(ctx, `SELECT namespace_name, task_name, version, step_name, average_duration_seconds::float8,
	        max_duration_seconds::float8, execution_count, error_count, error_rate::float8, last_executed_at
	        FROM yardstick.get_slowest_steps_aggregated(NULL, $1, $2, NULL, NULL, NULL)`, limit, minExec)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CoreSlowStep, error) {
		var s CoreSlowStep
		var avg, mx, rate float64
		var last *time.Time
		err := row.Scan(&s.NamespaceName, &s.TaskName, &s.Version, &s.StepName, &avg, &mx, &s.ExecutionCount,
			&s.ErrorCount, &rate, &last)
		s.AverageDurationSeconds, s.MaxDurationSeconds, s.ErrorRate = RustFloat(avg), RustFloat(mx), RustFloat(rate)
		s.LastExecutedAt = chronoOpt(last)
		return s, err
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, err = tx.Query(ctx, `SELECT namespace_name, task_name, version, average_duration_seconds::float8,
	        max_duration_seconds::float8, execution_count, average_step_count::float8, total_error_steps,
	        error_rate::float8, last_executed_at
	        FROM yardstick.get_slowest_tasks_aggregated(NULL, $1, $2, NULL, NULL, NULL)`, limit, minExec)
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CoreSlowTask, error) {
		var s CoreSlowTask
		var avg, mx, steps, rate float64
		var last *time.Time
		err := row.Scan(&s.NamespaceName, &s.TaskName, &s.Version, &avg, &mx, &s.ExecutionCount, &steps,
			&s.ErrorCount, &rate, &last)
		s.AverageDurationSeconds, s.MaxDurationSeconds, s.AverageStepCount = RustFloat(avg), RustFloat(mx), RustFloat(steps)
		s.ErrorRate, s.LastExecutedAt = RustFloat(rate), chronoOpt(last)
		return s, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return steps, tasks
}

// The engine orders groups by their average only; the sidecar breaks ties
// on the names. The yardstick's full list, put in the sidecar's order and
// cut to the limit, is what any tie order of the engine's could give.
func sidecarOrderSteps(s []CoreSlowStep) {
	slices.SortStableFunc(s, func(a, b CoreSlowStep) int {
		return cmp.Or(cmp.Compare(b.AverageDurationSeconds, a.AverageDurationSeconds), cmp.Compare(a.NamespaceName, b.NamespaceName),
			cmp.Compare(a.TaskName, b.TaskName), cmp.Compare(a.Version, b.Version), cmp.Compare(a.StepName, b.StepName))
	})
}

func sidecarOrderTasks(s []CoreSlowTask) {
	slices.SortStableFunc(s, func(a, b CoreSlowTask) int {
		return cmp.Or(cmp.Compare(b.AverageDurationSeconds, a.AverageDurationSeconds), cmp.Compare(a.NamespaceName, b.NamespaceName),
			cmp.Compare(a.TaskName, b.TaskName), cmp.Compare(a.Version, b.Version))
	})
}

// TestCoreServiceMatchesYardstick compares the /v1 bodies, assembled as
// tasker-core's service assembles them, with the same assembly over the
// yardstick functions in the same snapshot.
func TestCoreServiceMatchesYardstick(t *testing.T) {
	db := coreSimulated(t, 800)
	ctx, tx := coreTx(t, db)
	for _, hours := range []uint32{0, 1, 4, 24, 72} {
		got, err := corePerformance(ctx, tx, hours)
		if err != nil {
			t.Fatal(err)
		}
		if want := servicePerformance(t, ctx, tx, hours); *got != want {
			t.Errorf("hours=%d:\n got  %+v\n want %+v", hours, *got, want)
		}
	}
	for _, tc := range []struct{ limit, minExec int32 }{{10, 5}, {3, 1}, {0, 5}, {1000, 0}, {1000, -3}, {5, 100000}} {
		got, err := coreBottlenecks(ctx, tx, nil, tc.limit, tc.minExec)
		if err != nil {
			t.Fatal(err)
		}
		steps, tasks := yardstickSlowest(t, ctx, tx, 100000, tc.minExec)
		sidecarOrderSteps(steps)
		sidecarOrderTasks(tasks)
		steps, tasks = steps[:min(len(steps), int(tc.limit))], tasks[:min(len(tasks), int(tc.limit))]
		if !reflect.DeepEqual(got.SlowSteps, steps) {
			t.Errorf("%+v: slow steps\n got  %s\n want %s", tc, js(got.SlowSteps), js(steps))
		}
		if !reflect.DeepEqual(got.SlowTasks, tasks) {
			t.Errorf("%+v: slow tasks\n got  %s\n want %s", tc, js(got.SlowTasks), js(tasks))
		}
		if tc.limit == 10 && (len(got.SlowSteps) < 3 || len(got.SlowTasks) < 3) {
			t.Errorf("the workload gives too few groups: %d steps, %d tasks", len(got.SlowSteps), len(got.SlowTasks))
		}
		if h := yardstickHealth(t, ctx, tx); got.ResourceUtilization.SystemHealth != h {
			t.Errorf("system_health %+v, want %+v", got.ResourceUtilization.SystemHealth, h)
		}
		// Tied averages at the limit could make the engine's page differ
		// from this one only in which tied group it shows; the yardstick's
		// own page must hold the same averages.
		ySteps, yTasks := yardstickSlowest(t, ctx, tx, tc.limit, tc.minExec)
		if len(ySteps) != len(got.SlowSteps) || len(yTasks) != len(got.SlowTasks) {
			t.Errorf("%+v: page sizes %d/%d, the engine's %d/%d", tc, len(got.SlowSteps), len(got.SlowTasks), len(ySteps), len(yTasks))
		}
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestCoreComputationsOffCore: on a Rails database the tasker-core
// computations fail with ErrNotCore, looked up in the catalogs or told by
// the attachment; on core the Rails ones are refused once the attachment
// says so.
func TestCoreComputationsOffCore(t *testing.T) {
	rails := pgtest.NewTasker(t)
	svc := New(servicePool(t, rails.URL), Config{}, nil)
	if _, err := svc.CorePerformanceMetrics(testCtx(t), 24); !errors.Is(err, ErrNotCore) {
		t.Errorf("performance on Rails: %v, want ErrNotCore", err)
	}
	if _, err := svc.CoreBottleneckAnalysis(testCtx(t), 10, 5); !errors.Is(err, ErrNotCore) {
		t.Errorf("bottlenecks on Rails: %v, want ErrNotCore", err)
	}

	core := pgtest.NewCore(t)
	att := &fixedAttachment{e: engine.Core()}
	svc = New(servicePool(t, core.URL), Config{}, nil, WithAttachment(att))
	p, err := svc.CorePerformanceMetrics(testCtx(t), 24)
	if err != nil {
		t.Fatalf("performance on core: %v", err)
	}
	if p.TotalTasks != 0 || p.SystemHealthScore != 1 {
		t.Errorf("empty core database: %+v", p)
	}
	if _, err := svc.Performance(testCtx(t), nil); !errors.Is(err, ErrEngineUnsupported) {
		t.Errorf("Rails performance on core: %v, want ErrEngineUnsupported", err)
	}
	att.e = engine.Rails()
	if _, err := svc.CorePerformanceMetrics(testCtx(t), 24); !errors.Is(err, ErrNotCore) {
		t.Errorf("attachment says Rails: %v, want ErrNotCore", err)
	}
}

type fixedAttachment struct{ e engine.Engine }

func (a *fixedAttachment) Engine() (engine.Engine, bool)                 { return a.e, true }
func (a *fixedAttachment) CheckSchema(context.Context) ([]string, error) { return nil, nil }

// TestCoreParams: limits PostgreSQL refuses are parameter errors, not
// database failures.
func TestCoreParams(t *testing.T) {
	core := pgtest.NewCore(t)
	svc := New(servicePool(t, core.URL), Config{}, nil)
	var pe *ParamError
	if _, err := svc.CoreBottleneckAnalysis(testCtx(t), -1, 5); !errors.As(err, &pe) || pe.Param != "limit" {
		t.Errorf("limit -1: %v", err)
	}
	for _, h := range []uint32{100_000_000, math.MaxUint32} {
		if _, err := svc.CorePerformanceMetrics(testCtx(t), h); !errors.As(err, &pe) || pe.Param != "hours" {
			t.Errorf("hours %d: %v", h, err)
		}
	}
	// 50 million hours (about 5,700 years) is still a time PostgreSQL has.
	if _, err := svc.CorePerformanceMetrics(testCtx(t), 50_000_000); err != nil {
		t.Errorf("hours 50000000: %v", err)
	}
}

func TestRustFloat(t *testing.T) {
	tenth := 0.1 // a variable: constant arithmetic would be exact
	// serde_json's (ryu's) renderings.
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0.0"}, {math.Copysign(0, -1), "-0.0"}, {1, "1.0"}, {100, "100.0"}, {33.33, "33.33"}, {0.25, "0.25"},
		{12.345, "12.345"}, {-1.5, "-1.5"}, {0.0001, "0.0001"}, {0.00001, "0.00001"}, {0.000001, "1e-6"}, {1.5e-7, "1.5e-7"},
		{1e15, "1000000000000000.0"}, {1e16, "1e16"}, {1.2345e17, "1.2345e17"}, {123456.789, "123456.789"},
		{tenth + 2*tenth, "0.30000000000000004"}, {math.NaN(), "null"}, {math.Inf(1), "null"},
	} {
		if got := formatRustFloat(tc.v); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestChronoRFC3339(t *testing.T) {
	base := time.Date(2026, 3, 21, 12, 34, 56, 0, time.UTC)
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{base, "2026-03-21T12:34:56+00:00"},
		{base.Add(120 * time.Millisecond), "2026-03-21T12:34:56.120+00:00"},
		{base.Add(123456 * time.Microsecond), "2026-03-21T12:34:56.123456+00:00"},
		{base.Add(100 * time.Microsecond), "2026-03-21T12:34:56.000100+00:00"},
		{base.Add(1), "2026-03-21T12:34:56.000000001+00:00"},
		{base.In(time.FixedZone("x", 3600)), "2026-03-21T12:34:56+00:00"},
	} {
		if got := ChronoRFC3339(tc.t); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.t, got, tc.want)
		}
	}
}

func TestCoreRecommendations(t *testing.T) {
	step := func(avg, rate float64) CoreSlowStep {
		return CoreSlowStep{NamespaceName: "processing", TaskName: "batch_job", Version: "v2", StepName: "slow",
			AverageDurationSeconds: RustFloat(avg), ErrorRate: RustFloat(rate)}
	}
	for _, tc := range []struct {
		name  string
		steps []CoreSlowStep
		pool  float64
		want  []string
	}{
		{"healthy", []CoreSlowStep{step(0.5, 0.005)}, 0.3, []string{}},
		{"none", nil, 0, []string{}},
		{"error rate", []CoreSlowStep{step(5, 0.1), step(1, 0.3)}, 0.5,
			[]string{"High error rate detected (30.0%). Review error handling and retry logic."}},
		{"error rate at the threshold", []CoreSlowStep{step(5, 0.2)}, 0.8, []string{}},
		{"pool", nil, 0.95,
			[]string{"Database pool utilization is high (95%). Consider increasing pool size or optimizing queries."}},
		{"slow step", []CoreSlowStep{step(45, 0.04)}, 0.3,
			[]string{"Step 'processing/batch_job@v2::slow' averages 45.0s. Consider optimization or timeout adjustment."}},
		{"all", []CoreSlowStep{step(30.06, 0.25)}, 1, []string{
			"High error rate detected (25.0%). Review error handling and retry logic.",
			"Database pool utilization is high (100%). Consider increasing pool size or optimizing queries.",
			"Step 'processing/batch_job@v2::slow' averages 30.1s. Consider optimization or timeout adjustment."}},
	} {
		if got := coreRecommendations(tc.steps, tc.pool); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestCorePerformanceReport: on tasker-core, /tasker/analytics/performance
// has get_analytics_metrics(start) in every window and in the period, every
// column in the function's order, and additions that equal a count done
// here task by task.
func TestCorePerformanceReport(t *testing.T) {
	db := coreSimulated(t, 600)
	ctx, tx := coreTx(t, db)
	var now time.Time
	if err := tx.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		t.Fatal(err)
	}
	since := now.Add(-3 * time.Hour)
	p, err := corePerformanceReport(ctx, tx, &since)
	if err != nil {
		t.Fatal(err)
	}
	tasks := coreTaskRows(t, ctx, tx)
	for _, w := range []struct {
		name  string
		start time.Time
		trend CoreTrend
	}{{"last_hour", now.Add(-time.Hour), p.PerformanceTrends.LastHour}, {"last_4_hours", now.Add(-4 * time.Hour), p.PerformanceTrends.Last4Hours},
		{"last_24_hours", now.Add(-24 * time.Hour), p.PerformanceTrends.Last24Hours}, {"period", since, periodTrend(p.Period)}} {
		m := yardstickMetrics(t, ctx, tx, &w.start)
		tr := w.trend
		if tr.TaskThroughput != m.TaskThroughput || tr.CompletionRate != m.CompletionRate || tr.ErrorRate != m.ErrorRate ||
			tr.AvgTaskDuration != m.AvgTaskDuration || tr.AvgStepDuration != m.AvgStepDuration || tr.StepThroughput != m.StepThroughput ||
			tr.CompletionCount != m.CompletionCount || tr.ErrorCount != m.ErrorCount || !tr.WindowStart.Std().Equal(m.AnalysisPeriodStart) {
			t.Errorf("%s: %+v, get_analytics_metrics %+v", w.name, tr, m)
		}
		want := expectedAdditions(tasks, w.start)
		if tr.TasksByState != want.states || tr.TaskCompletionRate != want.completionRate || tr.TaskErrorRate != want.errorRate ||
			!durationsClose(tr.TaskDuration, want.duration) {
			t.Errorf("%s additions:\n got  %+v %s %s %+v\n want %+v %s %s %+v", w.name, tr.TasksByState, tr.TaskCompletionRate,
				tr.TaskErrorRate, tr.TaskDuration, want.states, want.completionRate, want.errorRate, want.duration)
		}
		if w.name == "last_24_hours" && (tr.TasksByState.Complete == 0 || tr.TasksByState.Error+tr.TasksByState.BlockedByFailures == 0) {
			t.Errorf("the workload does not exercise the states: %+v", tr.TasksByState)
		}
	}
	m := yardstickMetrics(t, ctx, tx, &since)
	got := CoreMetrics{p.Period.ActiveTasksCount, p.Period.TotalNamespacesCount, p.Period.UniqueTaskTypesCount,
		p.Period.SystemHealthScore, p.Period.TaskThroughput, p.Period.CompletionCount, p.Period.ErrorCount,
		p.Period.CompletionRate, p.Period.ErrorRate, p.Period.AvgTaskDuration, p.Period.AvgStepDuration,
		p.Period.StepThroughput, p.Period.AnalysisPeriodStart.Std(), p.Period.CalculatedAt.Std()}
	if got != m {
		t.Errorf("period:\n got  %+v\n want %+v", got, m)
	}
	if p.SystemOverview.ActiveTasks != m.ActiveTasksCount || p.SystemOverview.SystemHealthScore != m.SystemHealthScore ||
		p.SystemOverview.TotalNamespaces != m.TotalNamespacesCount || p.SystemOverview.UniqueTaskTypes != m.UniqueTaskTypesCount {
		t.Errorf("system overview %+v, get_analytics_metrics %+v", p.SystemOverview, m)
	}
	// The period's JSON starts with the function's 14 columns, in order.
	raw, err := json.Marshal(p.Period)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	dec := json.NewDecoder(bytes.NewReader(raw))
	_, _ = dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var skip json.RawMessage
		_ = dec.Decode(&skip)
	}
	wantKeys := []string{"active_tasks_count", "total_namespaces_count", "unique_task_types_count", "system_health_score",
		"task_throughput", "completion_count", "error_count", "completion_rate", "error_rate", "avg_task_duration",
		"avg_step_duration", "step_throughput", "analysis_period_start", "calculated_at"}
	if len(keys) < len(wantKeys) || !reflect.DeepEqual(keys[:len(wantKeys)], wantKeys) {
		t.Errorf("period keys %v", keys)
	}
}

// durationsClose allows the last millisecond digit to differ: PostgreSQL
// averages and interpolates intervals in whole microseconds, this test in
// floats.
func durationsClose(a, b DurationStats) bool {
	if a.Count != b.Count {
		return false
	}
	for _, p := range [][2]Decimal{{a.Avg, b.Avg}, {a.P50, b.P50}, {a.P95, b.P95}, {a.P99, b.P99}} {
		x, err1 := strconv.ParseFloat(string(p[0]), 64)
		y, err2 := strconv.ParseFloat(string(p[1]), 64)
		if err1 != nil || err2 != nil || math.Abs(x-y) > 0.0011 {
			return false
		}
	}
	return true
}

func periodTrend(p *CorePeriod) CoreTrend {
	return CoreTrend{TaskThroughput: p.TaskThroughput, CompletionRate: p.CompletionRate, ErrorRate: p.ErrorRate,
		AvgTaskDuration: p.AvgTaskDuration, AvgStepDuration: p.AvgStepDuration, StepThroughput: p.StepThroughput,
		WindowStart: p.AnalysisPeriodStart, CompletionCount: p.CompletionCount, ErrorCount: p.ErrorCount,
		TasksByState: p.TasksByState, TaskCompletionRate: p.TaskCompletionRate, TaskErrorRate: p.TaskErrorRate,
		TaskDuration: p.TaskDuration}
}

type coreTaskRow struct {
	created time.Time
	state   *string
	runtime time.Duration // to the current transition
}

func coreTaskRows(t *testing.T, ctx context.Context, tx pgx.Tx) []coreTaskRow {
	t.Helper()
	rows, err := tx.Query(ctx, `SELECT t.created_at AT TIME ZONE 'UTC', x.to_state,
	        COALESCE(extract(epoch FROM x.created_at - t.created_at) * 1000000, 0)::bigint
	        FROM tasker.tasks t LEFT JOIN tasker.task_transitions x ON x.task_uuid = t.task_uuid AND x.most_recent`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (coreTaskRow, error) {
		var r coreTaskRow
		var us int64
		err := row.Scan(&r.created, &r.state, &us)
		r.runtime = time.Duration(us) * time.Microsecond
		return r, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// coreAdditions are the sidecar's numbers of one window.
type coreAdditions struct {
	states         CoreTaskStates
	completionRate Decimal
	errorRate      Decimal
	duration       DurationStats
}

// expectedAdditions counts the tasks created after start one by one, and
// interpolates the percentiles as percentile_cont does.
func expectedAdditions(tasks []coreTaskRow, start time.Time) coreAdditions {
	var a coreAdditions
	s := &a.states
	byState := map[string]*int64{"pending": &s.Pending, "initializing": &s.Initializing, "enqueuing_steps": &s.EnqueuingSteps,
		"steps_in_process": &s.StepsInProcess, "evaluating_results": &s.EvaluatingResults,
		"waiting_for_dependencies": &s.WaitingForDependencies, "waiting_for_retry": &s.WaitingForRetry,
		"blocked_by_failures": &s.BlockedByFailures, "complete": &s.Complete, "error": &s.Error,
		"cancelled": &s.Cancelled, "resolved_manually": &s.ResolvedManually}
	var n int64
	var runtimes []float64
	for _, tk := range tasks {
		if !tk.created.After(start) {
			continue
		}
		n++
		if tk.state == nil {
			s.NoTransitions++
			continue
		}
		*byState[*tk.state]++
		if *tk.state == "complete" {
			runtimes = append(runtimes, tk.runtime.Seconds())
		}
	}
	rate := func(k int64) Decimal {
		if n == 0 {
			return "0.0"
		}
		// round(k / n * 100, 2), half away from zero, in integers.
		h := (k*20000 + n) / (2 * n)
		return Decimal(fmt.Sprintf("%d.%02d", h/100, h%100))
	}
	a.completionRate, a.errorRate = rate(s.Complete), rate(s.Error)
	ms := func(v float64) Decimal {
		if len(runtimes) == 0 {
			return "0"
		}
		return Decimal(strconv.FormatFloat(math.Round(v*1000)/1000, 'f', 3, 64))
	}
	slices.Sort(runtimes)
	pct := func(p float64) float64 {
		if len(runtimes) == 0 {
			return 0
		}
		pos := p * float64(len(runtimes)-1)
		lo := math.Floor(pos)
		hi := math.Ceil(pos)
		return runtimes[int(lo)] + (runtimes[int(hi)]-runtimes[int(lo)])*(pos-lo)
	}
	var sum float64
	for _, r := range runtimes {
		sum += r
	}
	avg := 0.0
	if len(runtimes) > 0 {
		avg = sum / float64(len(runtimes))
	}
	a.duration = DurationStats{Count: s.Complete, Avg: ms(avg), P50: ms(pct(0.5)), P95: ms(pct(0.95)), P99: ms(pct(0.99))}
	return a
}
