package exporters

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

func g(ns, task, state string, n int64) collector.GroupCount {
	return collector.GroupCount{Namespace: ns, TaskName: task, State: state, Count: n}
}

// domainSnapshot: 3 of the 10 tasks have no transition row, one is
// resolved_manually; the per-name groups add up to the same totals.
func domainSnapshot() *collector.Snapshot {
	return &collector.Snapshot{
		Counts: collector.HealthCounts{
			TotalTasks: 10, PendingTasks: 1, InProgressTasks: 2, CompleteTasks: 2, ErrorTasks: 1, CancelledTasks: 0,
			TotalSteps: 20, PendingSteps: 4, InProgressSteps: 3, CompleteSteps: 8, ErrorSteps: 3,
			RetryableErrorSteps: 2, ExhaustedRetrySteps: 1, InBackoffSteps: 1,
			ActiveConnections: 7, MaxConnections: 100,
		},
		ResolvedManuallyTasks: 1, CancelledSteps: 1, ResolvedManuallySteps: 0,
		ErrorStepsByName: []collector.GroupCount{
			g("payments", "charge", "exhausted", 1),
			g("payments", "charge", "in_backoff", 1),
			g("payments", "charge", "retryable", 2),
		},
		// A step in progress for 90 s at testNow; no retryable error step.
		OldestInProgressStep: testNow.Add(-90 * time.Second),
		Tasks: []collector.GroupCount{
			g("payments", "charge", "", 3),
			g("payments", "charge", "complete", 2),
			g("payments", "charge", "error", 1),
			g("payments", "refund", "in_progress", 2),
			g("default", "report", "pending", 1),
			g("default", "report", "resolved_manually", 1),
		},
		Steps: []collector.GroupCount{
			g("payments", "charge", "", 1),
			g("payments", "charge", "complete", 8),
			g("payments", "charge", "error", 3),
			g("payments", "refund", "in_progress", 3),
			g("payments", "refund", "cancelled", 1),
			g("default", "report", "pending", 4),
		},
		TakenAt:  testNow.Add(-10 * time.Second),
		Duration: 40 * time.Millisecond,
	}
}

func newDomain(src HealthSource, opts Config) prometheus.Collector {
	c := NewDomainCollector(src, opts)
	c.(*domainCollector).now = func() time.Time { return testNow }
	return c
}

const wantDomain = `
# HELP tasker_database_connections_active Active sessions on the Tasker database (pg_stat_activity state='active', including the sidecar's own).
# TYPE tasker_database_connections_active gauge
tasker_database_connections_active 7
# HELP tasker_database_connections_max PostgreSQL max_connections setting (0 if unknown).
# TYPE tasker_database_connections_max gauge
tasker_database_connections_max 100
# HELP tasker_error_steps Steps currently in error by retry class, as get_system_health_counts_v01 counts them; in_backoff is a subset of retryable.
# TYPE tasker_error_steps gauge
tasker_error_steps{retry_class="exhausted"} 1
tasker_error_steps{retry_class="in_backoff"} 1
tasker_error_steps{retry_class="retryable"} 2
# HELP tasker_error_steps_by_name Steps currently in error by their task's namespace and name and by retry class (in_backoff is a subset of retryable); pairs beyond the cap are summed into namespace="other",task="other". Classes with no step are left out.
# TYPE tasker_error_steps_by_name gauge
tasker_error_steps_by_name{namespace="payments",retry_class="exhausted",task="charge"} 1
tasker_error_steps_by_name{namespace="payments",retry_class="in_backoff",task="charge"} 1
tasker_error_steps_by_name{namespace="payments",retry_class="retryable",task="charge"} 2
# HELP tasker_sidecar_label_groups_dropped (namespace, task) pairs folded into namespace="other",task="other" by the cardinality cap.
# TYPE tasker_sidecar_label_groups_dropped gauge
tasker_sidecar_label_groups_dropped 0
# HELP tasker_steps Tasker workflow steps by current state; state="new" counts steps with no transition yet, so the series sum to all steps.
# TYPE tasker_steps gauge
tasker_steps{state="cancelled"} 1
tasker_steps{state="complete"} 8
tasker_steps{state="error"} 3
tasker_steps{state="in_progress"} 3
tasker_steps{state="new"} 1
tasker_steps{state="pending"} 4
tasker_steps{state="resolved_manually"} 0
# HELP tasker_steps_by_name Tasker workflow steps by their task's namespace and name and by current state; pairs beyond the cap are summed into namespace="other",task="other".
# TYPE tasker_steps_by_name gauge
tasker_steps_by_name{namespace="default",state="pending",task="report"} 4
tasker_steps_by_name{namespace="payments",state="cancelled",task="refund"} 1
tasker_steps_by_name{namespace="payments",state="complete",task="charge"} 8
tasker_steps_by_name{namespace="payments",state="error",task="charge"} 3
tasker_steps_by_name{namespace="payments",state="in_progress",task="refund"} 3
tasker_steps_by_name{namespace="payments",state="new",task="charge"} 1
# HELP tasker_steps_oldest_age_seconds How long the step waiting longest has been in its state: state="in_progress" for steps in progress, state="error" for steps in error with a retry left whose task is still pending or in progress (the others wait for an operator). 0 when no step waits.
# TYPE tasker_steps_oldest_age_seconds gauge
tasker_steps_oldest_age_seconds{state="error"} 0
tasker_steps_oldest_age_seconds{state="in_progress"} 90
# HELP tasker_tasks Tasker tasks by current state; state="new" counts tasks with no transition yet, so the series sum to all tasks.
# TYPE tasker_tasks gauge
tasker_tasks{state="cancelled"} 0
tasker_tasks{state="complete"} 2
tasker_tasks{state="error"} 1
tasker_tasks{state="in_progress"} 2
tasker_tasks{state="new"} 3
tasker_tasks{state="pending"} 1
tasker_tasks{state="resolved_manually"} 1
# HELP tasker_tasks_by_name Tasker tasks by namespace, task name and current state; pairs beyond the cap are summed into namespace="other",task="other".
# TYPE tasker_tasks_by_name gauge
tasker_tasks_by_name{namespace="default",state="pending",task="report"} 1
tasker_tasks_by_name{namespace="default",state="resolved_manually",task="report"} 1
tasker_tasks_by_name{namespace="payments",state="complete",task="charge"} 2
tasker_tasks_by_name{namespace="payments",state="error",task="charge"} 1
tasker_tasks_by_name{namespace="payments",state="in_progress",task="refund"} 2
tasker_tasks_by_name{namespace="payments",state="new",task="charge"} 3
`

func TestDomainCollector(t *testing.T) {
	src := &fakeSource{}
	c := newDomain(src, Config{})
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("%d series before the first snapshot", n)
	}
	src.Set(collector.RefreshState{Last: domainSnapshot()})
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantDomain)); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	// It also registers cleanly (consistent Describe) next to other collectors.
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("pedantic gather: %v", err)
	}
}

func TestDomainKeepsServingAfterFailure(t *testing.T) {
	src := &fakeSource{}
	src.Set(collector.RefreshState{Last: domainSnapshot(), LastError: errRefused, Failures: 4})
	c := newDomain(src, Config{})
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantDomain)); err != nil {
		t.Error(err)
	}
}

func TestDomainMaxStaleness(t *testing.T) {
	snap := domainSnapshot()
	tests := []struct {
		name      string
		staleness time.Duration
		age       time.Duration
		wantAny   bool
	}{
		{"never withdraw", 0, 24 * time.Hour, true},
		{"fresh", time.Minute, 10 * time.Second, true},
		{"exactly at the limit", time.Minute, time.Minute, true},
		{"too old", time.Minute, time.Minute + time.Millisecond, false},
		{"fresh read, lagging standby", time.Minute, 10 * time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := *snap
			s.TakenAt = testNow.Add(-tc.age)
			if strings.Contains(tc.name, "standby") {
				s.Replication = collector.Replication{Known: true, Standby: true, Lag: 55 * time.Second}
			}
			src := &fakeSource{}
			src.Set(collector.RefreshState{Last: &s})
			n := testutil.CollectAndCount(newDomain(src, Config{MaxStaleness: tc.staleness}))
			if (n > 0) != tc.wantAny {
				t.Errorf("%d series, want any = %v", n, tc.wantAny)
			}
		})
	}
}

func TestFoldGroups(t *testing.T) {
	tasks := []collector.GroupCount{
		g("a", "big", "complete", 50), g("a", "big", "error", 5),
		g("b", "mid", "complete", 20),
		// Two versions of one named task arrive as separate rows.
		g("c", "tie", "pending", 3), g("c", "tie", "pending", 7),
		g("d", "tie", "pending", 10),
		g("e", "small", "error", 1), g("e", "small", "", 2),
		g("f", "odd", "exploded", 4), // not a Tasker state: dropped
	}
	steps := []collector.GroupCount{
		g("a", "big", "complete", 200),
		g("c", "tie", "complete", 5),
		g("d", "tie", "complete", 5),
		g("e", "small", "error", 9),
		g("zzz", "stepsonly", "pending", 1), // a pair with steps but no tasks
	}
	b := foldGroups(tasks, steps, 3, engine.Rails())

	// a/big (55) and b/mid (20) lead; c/tie and d/tie tie on tasks (10) and
	// steps (5), so the namespace decides: c/tie stays.
	wantTasks := []series{
		{"a", "big", "complete", 50}, {"a", "big", "error", 5},
		{"b", "mid", "complete", 20},
		{"c", "tie", "pending", 10},
		{"other", "other", "error", 1}, {"other", "other", "new", 2}, {"other", "other", "pending", 10},
	}
	if !equalSeries(b.tasks, wantTasks) {
		t.Errorf("tasks:\n got %v\nwant %v", b.tasks, wantTasks)
	}
	wantSteps := []series{
		{"a", "big", "complete", 200},
		{"c", "tie", "complete", 5},
		{"other", "other", "complete", 5}, {"other", "other", "error", 9}, {"other", "other", "pending", 1},
	}
	if !equalSeries(b.steps, wantSteps) {
		t.Errorf("steps:\n got %v\nwant %v", b.steps, wantSteps)
	}
	// d/tie, e/small and zzz/stepsonly were folded; f/odd has nothing to fold.
	if b.dropped != 3 {
		t.Errorf("dropped = %d, want 3", b.dropped)
	}
	if got, want := sum(b.tasks), sumGroups(tasks)-4; got != want {
		t.Errorf("task sum %d, want %d (all but the unknown state)", got, want)
	}
	if got, want := sum(b.steps), sumGroups(steps); got != want {
		t.Errorf("step sum %d, want %d", got, want)
	}

	// Same input in another order gives the same answer.
	rev := make([]collector.GroupCount, len(tasks))
	for i, x := range tasks {
		rev[len(tasks)-1-i] = x
	}
	if again := foldGroups(rev, steps, 3, engine.Rails()); !equalSeries(again.tasks, b.tasks) {
		t.Errorf("order-dependent result: %v", again.tasks)
	}
}

func TestFoldMergesRealOtherPair(t *testing.T) {
	tasks := []collector.GroupCount{
		g("other", "other", "complete", 100),
		g("x", "y", "complete", 1),
	}
	b := foldGroups(tasks, nil, 1, engine.Rails())
	want := []series{{"other", "other", "complete", 101}}
	if !equalSeries(b.tasks, want) {
		t.Errorf("got %v, want %v", b.tasks, want)
	}
}

func TestDomainCapThroughCollector(t *testing.T) {
	snap := domainSnapshot()
	// A step of a pair beyond the cap is in error: its class goes to other.
	snap.ErrorStepsByName = append(snap.ErrorStepsByName, g("default", "report", "exhausted", 1))
	src := &fakeSource{}
	src.Set(collector.RefreshState{Last: snap})
	c := newDomain(src, Config{MaxLabelGroups: 1})
	want := `
# HELP tasker_sidecar_label_groups_dropped (namespace, task) pairs folded into namespace="other",task="other" by the cardinality cap.
# TYPE tasker_sidecar_label_groups_dropped gauge
tasker_sidecar_label_groups_dropped 2
# HELP tasker_tasks_by_name Tasker tasks by namespace, task name and current state; pairs beyond the cap are summed into namespace="other",task="other".
# TYPE tasker_tasks_by_name gauge
tasker_tasks_by_name{namespace="other",state="in_progress",task="other"} 2
tasker_tasks_by_name{namespace="other",state="pending",task="other"} 1
tasker_tasks_by_name{namespace="other",state="resolved_manually",task="other"} 1
tasker_tasks_by_name{namespace="payments",state="complete",task="charge"} 2
tasker_tasks_by_name{namespace="payments",state="error",task="charge"} 1
tasker_tasks_by_name{namespace="payments",state="new",task="charge"} 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "tasker_tasks_by_name", "tasker_sidecar_label_groups_dropped"); err != nil {
		t.Error(err)
	}
	wantErrors := `
# HELP tasker_error_steps_by_name Steps currently in error by their task's namespace and name and by retry class (in_backoff is a subset of retryable); pairs beyond the cap are summed into namespace="other",task="other". Classes with no step are left out.
# TYPE tasker_error_steps_by_name gauge
tasker_error_steps_by_name{namespace="other",retry_class="exhausted",task="other"} 1
tasker_error_steps_by_name{namespace="payments",retry_class="exhausted",task="charge"} 1
tasker_error_steps_by_name{namespace="payments",retry_class="in_backoff",task="charge"} 1
tasker_error_steps_by_name{namespace="payments",retry_class="retryable",task="charge"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantErrors), "tasker_error_steps_by_name"); err != nil {
		t.Error(err)
	}
	// The by-name series still sum to the total.
	var total float64
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tasker_tasks_by_name" {
			for _, m := range mf.GetMetric() {
				total += m.GetGauge().GetValue()
			}
		}
	}
	if total != float64(snap.Counts.TotalTasks) {
		t.Errorf("by-name sum %v, want %d", total, snap.Counts.TotalTasks)
	}
}

func TestDomainInvalidUTF8(t *testing.T) {
	snap := domainSnapshot()
	snap.Tasks = []collector.GroupCount{g("ns\xff", "t", "complete", 1)}
	snap.Steps = nil
	src := &fakeSource{}
	src.Set(collector.RefreshState{Last: snap})
	want := `
# HELP tasker_tasks_by_name Tasker tasks by namespace, task name and current state; pairs beyond the cap are summed into namespace="other",task="other".
# TYPE tasker_tasks_by_name gauge
tasker_tasks_by_name{namespace="ns` + "\uFFFD" + `",state="complete",task="t"} 1
`
	if err := testutil.CollectAndCompare(newDomain(src, Config{}), strings.NewReader(want), "tasker_tasks_by_name"); err != nil {
		t.Error(err)
	}
}

func equalSeries(a, b []series) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sum(s []series) (n int64) {
	for _, x := range s {
		n += x.count
	}
	return n
}

func sumGroups(gs []collector.GroupCount) (n int64) {
	for _, x := range gs {
		n += x.Count
	}
	return n
}

// When the query behind the retryable step's age failed, the series is left
// out rather than aged from an old answer: an alert on it must not fire.
func TestDomainOldestRetryableUnknown(t *testing.T) {
	snap := domainSnapshot()
	snap.OldestRetryableErrorStep = testNow.Add(-time.Hour)
	src := &fakeSource{}
	c := newDomain(src, Config{})
	for _, tc := range []struct {
		unknown bool
		want    string
	}{
		{false, `
# HELP tasker_steps_oldest_age_seconds How long the step waiting longest has been in its state: state="in_progress" for steps in progress, state="error" for steps in error with a retry left whose task is still pending or in progress (the others wait for an operator). 0 when no step waits.
# TYPE tasker_steps_oldest_age_seconds gauge
tasker_steps_oldest_age_seconds{state="error"} 3600
tasker_steps_oldest_age_seconds{state="in_progress"} 90
`},
		{true, `
# HELP tasker_steps_oldest_age_seconds How long the step waiting longest has been in its state: state="in_progress" for steps in progress, state="error" for steps in error with a retry left whose task is still pending or in progress (the others wait for an operator). 0 when no step waits.
# TYPE tasker_steps_oldest_age_seconds gauge
tasker_steps_oldest_age_seconds{state="in_progress"} 90
`},
	} {
		s := *snap
		s.OldestRetryableUnknown = tc.unknown
		src.Set(collector.RefreshState{Last: &s})
		if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want), "tasker_steps_oldest_age_seconds"); err != nil {
			t.Errorf("unknown=%v: %v", tc.unknown, err)
		}
	}
}
