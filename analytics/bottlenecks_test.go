package analytics

import (
	"reflect"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

// bottleneckFixture returns the step ids by name; see
// TestBottlenecksOnFixture for the expected numbers.
func bottleneckFixture(f *fixture) map[string]int64 {
	const s = time.Second
	ids := map[string]int64{}
	charge1 := f.namedTask("pay", "charge", "1.0.0")
	charge2 := f.namedTask("pay", "charge", "2.0.0")
	send := f.namedTask("ship", "send", "1.0.0")
	step := func(task int64, name string, o stepOpts, trans ...tr) int64 {
		ids[name] = f.step(task, name, o, trans...)
		return ids[name]
	}
	timeout := `{"error": "Net::ReadTimeout", "backtrace": "x", "error_class": "Faraday::TimeoutError"}`
	invalid := `{"error": "bad input", "backtrace": "x", "error_class": "ArgumentError"}`

	// B1, 2 h old, failed an hour ago: a completed after 30 s on its second
	// attempt (three transition rows, which Tasker's function would have
	// multiplied the counts by), b failed for good after 100 s, c waits on b.
	b1 := f.task(charge1, 7200*s, at("pending", 7200*s), at("in_progress", 7199*s), at("error", 3600*s))
	a := step(b1, "a", stepOpts{attempts: i32(2), processed: true, createdAgo: 7200 * s},
		at("in_progress", 7190*s), at("error", 7185*s), at("complete", 7170*s))
	b := step(b1, "b", stepOpts{attempts: i32(3), results: timeout, createdAgo: 7200 * s}, at("error", 7100*s))
	c := step(b1, "c", stepOpts{attempts: i32(0), createdAgo: 7200 * s}, at("pending", 7200*s))
	f.edge(a, b)
	f.edge(b, c)
	// B2, 1 h old: d complete after 10 s, e waits on d (satisfied), f waits
	// on g, which failed after 50 s with a retry left.
	b2 := f.task(charge2, 3600*s, at("in_progress", 3599*s))
	d := step(b2, "d", stepOpts{attempts: i32(1), processed: true, createdAgo: 3600 * s}, at("complete", 3590*s))
	e := step(b2, "e", stepOpts{createdAgo: 3600 * s})
	g := step(b2, "g", stepOpts{attempts: i32(2), results: invalid, createdAgo: 3600 * s}, at("error", 3550*s))
	ff := step(b2, "f", stepOpts{createdAgo: 3600 * s})
	f.edge(d, e)
	f.edge(g, ff)
	// B3, 30 min old, complete after 90 s.
	b3 := f.task(send, 1800*s, at("in_progress", 1799*s), at("complete", 1710*s))
	step(b3, "h", stepOpts{attempts: i32(1), processed: true, createdAgo: 1800 * s}, at("complete", 1710*s))
	// B4, 30 h old: outside the period.
	b4 := f.task(send, 30*time.Hour, at("error", 29*time.Hour))
	step(b4, "old", stepOpts{attempts: i32(3), results: timeout, createdAgo: 30 * time.Hour}, at("error", 29*time.Hour))
	// B5, 3 min old, nothing yet.
	f.task(charge1, 3*time.Minute)
	// B6 was created just before the period, its step 20 minutes later,
	// inside it: the step is among the slowest steps, the task is not in T.
	b6 := f.task(send, 24*time.Hour+10*time.Minute, at("complete", 23*time.Hour))
	step(b6, "late", stepOpts{attempts: i32(1), processed: true, createdAgo: 23*time.Hour + 50*time.Minute},
		at("complete", 23*time.Hour+50*time.Minute-5*s))
	return ids
}

func TestBottlenecksOnFixture(t *testing.T) {
	db := pgtest.NewTasker(t)
	installYardsticks(t, db)
	f := newFixture(t, db)
	ids := bottleneckFixture(f)
	now := f.now()

	b, err := bottlenecks(f.ctx, f.tx, BottleneckQuery{PeriodHours: 24}, 10, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.ScopeSummary; got.TotalTasks != 4 || got.UniqueTaskTypes != 2 || got.TimeSpanHours != 24 {
		t.Errorf("scope summary %+v", got)
	}
	var gotTasks []any
	for _, s := range b.BottleneckAnalysis.SlowestTasks {
		gotTasks = append(gotTasks, []any{s.TaskName, s.Version, string(s.DurationSeconds), s.StepCount, s.CompletedSteps, s.ErrorSteps})
	}
	wantTasks := []any{
		[]any{"charge", "1.0.0", "100.000", int64(3), int64(1), int64(1)},
		[]any{"send", "1.0.0", "90.000", int64(1), int64(1), int64(0)},
		[]any{"charge", "2.0.0", "50.000", int64(4), int64(1), int64(1)},
	}
	if !reflect.DeepEqual(gotTasks, wantTasks) {
		t.Errorf("slowest tasks\n got  %v\n want %v", gotTasks, wantTasks)
	}
	var gotSteps []any
	for _, s := range b.BottleneckAnalysis.SlowestSteps {
		gotSteps = append(gotSteps, []any{s.WorkflowStepID, string(s.DurationSeconds)})
	}
	wantSteps := []any{
		[]any{ids["h"], "90.000"}, []any{ids["a"], "30.000"}, []any{ids["d"], "10.000"}, []any{ids["late"], "5.000"},
	}
	if !reflect.DeepEqual(gotSteps, wantSteps) {
		t.Errorf("slowest steps\n got  %v\n want %v", gotSteps, wantSteps)
	}

	ep := b.BottleneckAnalysis.ErrorPatterns
	wantEP := ErrorPatterns{
		TotalErrors: 1, RecentErrorRate: "25.0",
		CommonErrorTypes: []string{"ArgumentError", "Faraday::TimeoutError"},
		// a, b and g were retried; only a completed.
		RetrySuccessRate: "33.3",
		ErrorTypes:       []ClassCount{{"ArgumentError", 1}, {"Faraday::TimeoutError", 1}},
		StepsInError:     2, ExhaustedRetrySteps: 1, RetriedSteps: 3,
	}
	if !reflect.DeepEqual(ep, wantEP) {
		t.Errorf("error patterns\n got  %+v\n want %+v", ep, wantEP)
	}
	db2 := b.BottleneckAnalysis.DependencyBottlenecks
	wantDB := DependencyBottlenecks{
		// c is the only step with a pending transition: one incoming edge,
		// waiting for two hours.
		BlockingDependencies: 1, AvgWaitTime: "7200.0", PendingSteps: 1,
		// c and f (no transition, counted as pending by the readiness rows).
		MostBlockedSteps: []string{"c", "f"}, BlockedSteps: 2,
		BlockedByStep: []Blocked{{"c", 1}, {"f", 1}},
		BlockingSteps: []Blocker{{"b", 1}, {"g", 1}},
	}
	if !reflect.DeepEqual(db2, wantDB) {
		t.Errorf("dependency bottlenecks\n got  %+v\n want %+v", db2, wantDB)
	}
	// Only B3 is itself complete (after 90 s). B1 (error) and B2 (in
	// progress) have complete steps, which Tasker's set would count with
	// the time to their last complete step.
	wantPD := PerformanceDistribution{
		Percentiles:         Percentiles{P50: "90.000", P95: "90.000", P99: "90.000"},
		DistributionBuckets: []Bucket{{"0-10s", 0}, {"10-30s", 0}, {"30s+", 1}},
		SampleSize:          1,
	}
	if !reflect.DeepEqual(b.PerformanceDistribution, wantPD) {
		t.Errorf("performance distribution\n got  %+v\n want %+v", b.PerformanceDistribution, wantPD)
	}
	wantRec := []string{
		"Consider optimizing long-running tasks (80.0s average)",
		"Review retry policies: 1 of the 4 slowest steps needed more than one attempt",
		"1 tasks (25.0%) ended in error; most common error class among failing steps: ArgumentError (1)",
		"1 failing steps have exhausted their retries and need manual resolution",
		"Only 33.3% of retried steps completed; retries are not fixing these failures",
	}
	if !reflect.DeepEqual(b.Recommendations, wantRec) {
		t.Errorf("recommendations\n got  %q\n want %q", b.Recommendations, wantRec)
	}
	if !b.GeneratedAt.Std().Equal(now) {
		t.Errorf("generated_at %v, want NOW() %v", b.GeneratedAt.Std(), now)
	}

	for _, tc := range []struct {
		name  string
		q     BottleneckQuery
		limit int
		tasks int64
		steps []int64
	}{
		{"limit 2", BottleneckQuery{PeriodHours: 24}, 2, 4, []int64{ids["h"], ids["a"]}},
		{"namespace", BottleneckQuery{PeriodHours: 24, Scope: Scope{Namespace: "pay"}}, 10, 3, []int64{ids["a"], ids["d"]}},
		{"name and version", BottleneckQuery{PeriodHours: 24, Scope: Scope{Name: "charge", Version: "2.0.0"}}, 10, 1, []int64{ids["d"]}},
		{"one hour", BottleneckQuery{PeriodHours: 1}, 10, 2, []int64{ids["h"]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bottlenecks(f.ctx, f.tx, tc.q, tc.limit, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			var steps []int64
			for _, s := range b.BottleneckAnalysis.SlowestSteps {
				steps = append(steps, s.WorkflowStepID)
			}
			if b.ScopeSummary.TotalTasks != tc.tasks || !reflect.DeepEqual(steps, tc.steps) {
				t.Errorf("total %d steps %v, want %d %v", b.ScopeSummary.TotalTasks, steps, tc.tasks, tc.steps)
			}
			assertSlowestMatchYardstick(t, f, tc.q, tc.limit, b)
		})
	}
	assertSlowestMatchYardstick(t, f, BottleneckQuery{PeriodHours: 24}, 10, b)
}

// assertSlowestMatchYardstick compares the slowest lists with the intended
// get_slowest_*_v01 functions, column for column.
func assertSlowestMatchYardstick(t *testing.T, f *fixture, q BottleneckQuery, limit int, b *Bottlenecks) {
	t.Helper()
	since := f.now().Add(-time.Duration(q.PeriodHours) * time.Hour)
	rows, err := f.tx.Query(f.ctx, `SELECT task_id, task_name, namespace_name, version, duration_seconds::text,
		step_count, completed_steps, error_steps, created_at, completed_at, initiator, source_system
		FROM get_slowest_tasks_v01($1, $2, $3, $4, $5)`,
		since, limit, nullable(q.Scope.Namespace), nullable(q.Scope.Name), nullable(q.Scope.Version))
	if err != nil {
		t.Fatal(err)
	}
	var want []SlowTask
	for rows.Next() {
		var s SlowTask
		var c, d time.Time
		if err := rows.Scan(&s.TaskID, &s.TaskName, &s.NamespaceName, &s.Version, &s.DurationSeconds, &s.StepCount,
			&s.CompletedSteps, &s.ErrorSteps, &c, &d, &s.Initiator, &s.SourceSystem); err != nil {
			t.Fatal(err)
		}
		s.CreatedAt, s.CompletedAt = Time(c.UTC()), Time(d.UTC())
		want = append(want, s)
	}
	rows.Close()
	got := b.BottleneckAnalysis.SlowestTasks
	if len(want) == 0 {
		want = []SlowTask{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("slowest tasks differ from get_slowest_tasks_v01:\n got  %+v\n want %+v", got, want)
	}

	rows, err = f.tx.Query(f.ctx, `SELECT workflow_step_id, task_id, step_name, task_name, namespace_name, version,
		duration_seconds::text, attempts, created_at, completed_at, retryable, step_status
		FROM get_slowest_steps_v01($1, $2, $3, $4, $5)`,
		since, limit, nullable(q.Scope.Namespace), nullable(q.Scope.Name), nullable(q.Scope.Version))
	if err != nil {
		t.Fatal(err)
	}
	var wantSteps []SlowStep
	for rows.Next() {
		var s SlowStep
		var c, d time.Time
		if err := rows.Scan(&s.WorkflowStepID, &s.TaskID, &s.StepName, &s.TaskName, &s.NamespaceName, &s.Version,
			&s.DurationSeconds, &s.Attempts, &c, &d, &s.Retryable, &s.StepStatus); err != nil {
			t.Fatal(err)
		}
		s.CreatedAt, s.CompletedAt = Time(c.UTC()), Time(d.UTC())
		wantSteps = append(wantSteps, s)
	}
	rows.Close()
	if len(wantSteps) == 0 {
		wantSteps = []SlowStep{}
	}
	if !reflect.DeepEqual(b.BottleneckAnalysis.SlowestSteps, wantSteps) {
		t.Errorf("slowest steps differ from get_slowest_steps_v01:\n got  %+v\n want %+v", b.BottleneckAnalysis.SlowestSteps, wantSteps)
	}
}
