package analytics

import (
	"reflect"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

// perfFixture builds the tasks whose expected numbers are worked out in
// TestPerformanceOnFixture. Offsets are from NOW().
func perfFixture(f *fixture) {
	const (
		min  = time.Minute
		hour = time.Hour
		s    = time.Second
	)
	charge1 := f.namedTask("pay", "charge", "1.0.0")
	charge2 := f.namedTask("pay", "charge", "2.0.0")
	send := f.namedTask("ship", "send", "1.0.0")
	done := stepOpts{attempts: i32(1), processed: true}
	withCreated := func(o stepOpts, ago time.Duration) stepOpts { o.createdAgo = ago; return o }

	// T1, 10 min old: one step complete after 120.002 s, one created a
	// minute later and complete after 180 s (240 s after the task), one in
	// error. It counts as completed and as failed.
	t1 := f.task(charge1, 10*min, at("pending", 10*min), at("in_progress", 10*min-s))
	f.step(t1, "s1", withCreated(done, 10*min), at("in_progress", 9*min), at("complete", 10*min-120002*time.Millisecond))
	f.step(t1, "s2", withCreated(done, 9*min), at("complete", 6*min))
	f.step(t1, "s3", stepOpts{attempts: i32(1), createdAgo: 10 * min}, at("error", 5*min))
	// T2, 20 min old, no task transition: a step without transitions, a
	// pending one (active) and a resolved one (not a completion).
	t2 := f.task(send, 20*min)
	f.step(t2, "s4", stepOpts{createdAgo: 20 * min})
	f.step(t2, "s5", stepOpts{attempts: i32(0), createdAgo: 20 * min}, at("pending", 19*min))
	f.step(t2, "s6", stepOpts{attempts: i32(3), createdAgo: 20 * min}, at("error", 18*min), at("resolved_manually", 17*min))
	// T3, created exactly an hour ago: outside the last hour (strict >).
	t3 := f.task(charge2, hour, at("in_progress", hour-s), at("complete", 50*min))
	f.step(t3, "s7", withCreated(done, hour), at("complete", 50*min))
	// T4, an hour less a microsecond ago: inside. Its cancelled step makes
	// it active in Tasker's count.
	t4 := f.task(charge1, hour-time.Microsecond, at("cancelled", 30*min))
	f.step(t4, "s8", stepOpts{attempts: i32(0), createdAgo: hour - time.Microsecond}, at("cancelled", 30*min))
	// T5, 3 h old, complete after 60 s.
	t5 := f.task(send, 3*hour, at("in_progress", 3*hour-s), at("complete", 3*hour-60*s))
	f.step(t5, "s9", withCreated(done, 3*hour), at("complete", 3*hour-60*s))
	// T6, 30 h old: outside every window but active all time.
	t6 := f.task(send, 30*hour, at("error", 29*hour))
	f.step(t6, "s10", stepOpts{attempts: i32(0), createdAgo: 30 * hour}, at("pending", 29*hour))
	// T7, 2 h old, no steps.
	f.task(charge1, 2*hour, at("error", 2*hour-s))
}

func TestPerformanceOnFixture(t *testing.T) {
	db := pgtest.NewTasker(t)
	installYardsticks(t, db)
	f := newFixture(t, db)
	perfFixture(f)
	now := f.now()
	since := now.Add(-150 * time.Minute)

	p, err := performance(f.ctx, f.tx, &since)
	if err != nil {
		t.Fatal(err)
	}

	wantOverview := SystemOverview{ActiveTasks: 3, TotalNamespaces: 2, UniqueTaskTypes: 2, SystemHealthScore: "0.500"}
	if !reflect.DeepEqual(p.SystemOverview, wantOverview) {
		t.Errorf("overview %+v, want %+v", p.SystemOverview, wantOverview)
	}
	zeroDur := DurationStats{Avg: "0", P50: "0", P95: "0", P99: "0"}
	fourHours := Trend{
		TaskThroughput: 6, CompletionRate: "50.00", ErrorRate: "16.67",
		// (120.002 + 240 + 600 + 60) / 4 = 255.0005, rounded half up.
		AvgTaskDuration: "255.001",
		// (120.002 + 180 + 600 + 60) / 4 = 240.0005.
		AvgStepDuration: "240.001", StepThroughput: 9,
		CompletionCount: 3, ErrorCount: 1,
		TasksByState:       TaskStates{InProgress: 1, Complete: 2, Error: 1, Cancelled: 1, NoTransitions: 1},
		TaskCompletionRate: "33.33", TaskErrorRate: "16.67",
		// Runtimes 60 and 600: linear interpolation.
		TaskDuration: DurationStats{Count: 2, Avg: "330.000", P50: "330.000", P95: "573.000", P99: "594.600"},
	}
	tests := []struct {
		name  string
		got   Trend
		want  Trend
		start time.Time
	}{
		{"last_hour", p.PerformanceTrends.LastHour, Trend{
			TaskThroughput: 3, CompletionRate: "33.33", ErrorRate: "33.33",
			AvgTaskDuration: "180.001", AvgStepDuration: "150.001", StepThroughput: 7,
			CompletionCount: 1, ErrorCount: 1,
			TasksByState:       TaskStates{InProgress: 1, Cancelled: 1, NoTransitions: 1},
			TaskCompletionRate: "0.00", TaskErrorRate: "0.00", TaskDuration: zeroDur,
		}, now.Add(-time.Hour)},
		{"last_4_hours", p.PerformanceTrends.Last4Hours, fourHours, now.Add(-4 * time.Hour)},
		{"last_24_hours", p.PerformanceTrends.Last24Hours, fourHours, now.Add(-24 * time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.WindowStart = Time(tc.start)
			if !tc.got.WindowStart.Std().Equal(tc.start) {
				t.Errorf("window start %v, want %v", tc.got.WindowStart.Std(), tc.start)
			}
			tc.got.WindowStart = tc.want.WindowStart
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("\n got  %+v\n want %+v", tc.got, tc.want)
			}
		})
	}
	if p.Period == nil {
		t.Fatal("no period block")
	}
	pd := *p.Period
	if pd.TaskThroughput != 5 || pd.CompletionCount != 2 || pd.ErrorCount != 1 || pd.CompletionRate != "40.00" ||
		pd.ErrorRate != "20.00" || pd.AvgTaskDuration != "320.001" || pd.AvgStepDuration != "300.001" ||
		pd.StepThroughput != 8 || pd.SystemHealthScore != "0.500" || pd.ActiveTasksCount != 3 ||
		!pd.AnalysisPeriodStart.Std().Equal(since) || !pd.CalculatedAt.Std().Equal(now) {
		t.Errorf("period %+v", pd)
	}
	assertPerformanceMatchesYardstick(t, f, p, &since)
}

// assertPerformanceMatchesYardstick checks every compatible field against
// get_analytics_metrics_v01 called as Tasker's service calls it, in the
// same transaction (so the same NOW()).
func assertPerformanceMatchesYardstick(t *testing.T, f *fixture, p *Performance, since *time.Time) {
	t.Helper()
	now := f.now()
	call := func(arg *time.Time) Period {
		var r Period
		var start, calc time.Time
		err := f.tx.QueryRow(f.ctx, `SELECT active_tasks_count, total_namespaces_count, unique_task_types_count,
			system_health_score::text, task_throughput, completion_count, error_count, completion_rate::text,
			error_rate::text, avg_task_duration::text, avg_step_duration::text, step_throughput,
			analysis_period_start, calculated_at FROM get_analytics_metrics_v01($1)`, arg).Scan(
			&r.ActiveTasksCount, &r.TotalNamespacesCount, &r.UniqueTaskTypesCount, &r.SystemHealthScore,
			&r.TaskThroughput, &r.CompletionCount, &r.ErrorCount, &r.CompletionRate, &r.ErrorRate,
			&r.AvgTaskDuration, &r.AvgStepDuration, &r.StepThroughput, &start, &calc)
		if err != nil {
			t.Fatal(err)
		}
		r.AnalysisPeriodStart, r.CalculatedAt = Time(start), Time(calc)
		return r
	}
	ov := p.SystemOverview
	hour := call(nil)
	if ov.ActiveTasks != hour.ActiveTasksCount || ov.TotalNamespaces != hour.TotalNamespacesCount ||
		ov.UniqueTaskTypes != hour.UniqueTaskTypesCount || ov.SystemHealthScore != hour.SystemHealthScore {
		t.Errorf("system overview %+v differs from get_analytics_metrics_v01: %+v", ov, hour)
	}
	h4, h24 := now.Add(-4*time.Hour), now.Add(-24*time.Hour)
	for _, w := range []struct {
		name string
		got  Trend
		want Period
	}{
		{"last_hour", p.PerformanceTrends.LastHour, hour},
		{"last_4_hours", p.PerformanceTrends.Last4Hours, call(&h4)},
		{"last_24_hours", p.PerformanceTrends.Last24Hours, call(&h24)},
	} {
		g := []any{w.got.TaskThroughput, w.got.CompletionCount, w.got.ErrorCount, w.got.CompletionRate, w.got.ErrorRate,
			w.got.AvgTaskDuration, w.got.AvgStepDuration, w.got.StepThroughput, w.got.WindowStart.Std().UTC()}
		y := []any{w.want.TaskThroughput, w.want.CompletionCount, w.want.ErrorCount, w.want.CompletionRate, w.want.ErrorRate,
			w.want.AvgTaskDuration, w.want.AvgStepDuration, w.want.StepThroughput, w.want.AnalysisPeriodStart.Std().UTC()}
		if !reflect.DeepEqual(g, y) {
			t.Errorf("%s differs from get_analytics_metrics_v01:\n got  %v\n want %v", w.name, g, y)
		}
	}
	if since == nil {
		return
	}
	want := call(since)
	got := *p.Period
	got.TasksByState, got.TaskCompletionRate, got.TaskErrorRate, got.TaskDuration = TaskStates{}, "", "", DurationStats{}
	got.AnalysisPeriodStart = Time(got.AnalysisPeriodStart.Std().UTC())
	got.CalculatedAt = Time(got.CalculatedAt.Std().UTC())
	want.AnalysisPeriodStart = Time(want.AnalysisPeriodStart.Std().UTC())
	want.CalculatedAt = Time(want.CalculatedAt.Std().UTC())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("period differs from get_analytics_metrics_v01(since):\n got  %+v\n want %+v", got, want)
	}
}
