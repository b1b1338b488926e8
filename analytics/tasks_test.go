package analytics

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

// contextCase is a task built to land on one row of the decision tables of
// get_task_execution_context (facts §3.2).
type contextCase struct {
	name  string
	build func(f *fixture, task int64)
	want  TaskContext // TaskID and NamedTaskID are filled in
}

func contextCases() []contextCase {
	s := time.Second
	exhausted := stepOpts{attempts: i32(3)}
	return []contextCase{
		{"ready steps, one failure: recovering", func(f *fixture, task int64) {
			f.step(task, "a", stepOpts{attempts: i32(0)})
			f.step(task, "b", stepOpts{attempts: i32(1)}, at("error", 100*s))
			f.step(task, "c", stepOpts{attempts: i32(1), processed: true}, at("complete", 50*s))
		}, TaskContext{Status: "in_progress", TotalSteps: 3, PendingSteps: 1, CompletedSteps: 1, FailedSteps: 1,
			ReadySteps: 2, ExecutionStatus: "has_ready_steps", RecommendedAction: "execute_ready_steps",
			CompletionPercentage: "33.33", HealthStatus: "recovering"}},
		{"in progress wins over permanent failure", func(f *fixture, task int64) {
			f.step(task, "a", stepOpts{attempts: i32(1)}, at("in_progress", s))
			f.step(task, "b", exhausted, at("error", 100*s))
		}, TaskContext{Status: "in_progress", TotalSteps: 2, InProgressSteps: 1, FailedSteps: 1,
			ExecutionStatus: "processing", RecommendedAction: "wait_for_completion", CompletionPercentage: "0.00",
			HealthStatus: "blocked", PermanentlyBlockedSteps: 1}},
		{"blocked by failures", func(f *fixture, task int64) {
			a := f.step(task, "a", exhausted, at("error", 100*s))
			b := f.step(task, "b", stepOpts{attempts: i32(0)})
			f.edge(a, b)
		}, TaskContext{Status: "in_progress", TotalSteps: 2, PendingSteps: 1, FailedSteps: 1,
			ExecutionStatus: "blocked_by_failures", RecommendedAction: "handle_failures", CompletionPercentage: "0.00",
			HealthStatus: "blocked", PermanentlyBlockedSteps: 1}},
		{"all complete, resolved counts as complete", func(f *fixture, task int64) {
			f.step(task, "a", stepOpts{attempts: i32(1), processed: true}, at("complete", 50*s))
			f.step(task, "b", stepOpts{attempts: i32(3)}, at("error", 60*s), at("resolved_manually", 40*s))
		}, TaskContext{Status: "in_progress", TotalSteps: 2, CompletedSteps: 2, ExecutionStatus: "all_complete",
			RecommendedAction: "finalize_task", CompletionPercentage: "100.00", HealthStatus: "healthy"}},
		{"no steps", func(*fixture, int64) {},
			TaskContext{Status: "in_progress", ExecutionStatus: "waiting_for_dependencies",
				RecommendedAction: "wait_for_dependencies", CompletionPercentage: "0.0", HealthStatus: "healthy"}},
		// Facts §3.2 edge case: a non-retryable error step with attempts
		// left is neither ready nor permanently blocked.
		{"non-retryable error with attempts left", func(f *fixture, task int64) {
			f.step(task, "a", stepOpts{attempts: i32(1), notRetryable: true}, at("error", 100*s))
		}, TaskContext{Status: "in_progress", TotalSteps: 1, FailedSteps: 1, ExecutionStatus: "waiting_for_dependencies",
			RecommendedAction: "wait_for_dependencies", CompletionPercentage: "0.00", HealthStatus: "recovering"}},
		{"two of three complete", func(f *fixture, task int64) {
			a := f.step(task, "a", stepOpts{attempts: i32(1), processed: true}, at("complete", 50*s))
			b := f.step(task, "b", stepOpts{attempts: i32(1), processed: true}, at("complete", 40*s))
			c := f.step(task, "c", stepOpts{attempts: i32(0), inProcess: true}, at("pending", 30*s))
			f.edge(a, c)
			f.edge(b, c)
		}, TaskContext{Status: "in_progress", TotalSteps: 3, PendingSteps: 1, CompletedSteps: 2,
			ExecutionStatus: "waiting_for_dependencies", RecommendedAction: "wait_for_dependencies",
			CompletionPercentage: "66.67", HealthStatus: "healthy"}},
	}
}

func TestContextDecisionTables(t *testing.T) {
	db := pgtest.NewTasker(t)
	installYardsticks(t, db)
	f := newFixture(t, db)
	nt := f.namedTask("ns", "wf", "1.0.0")
	var ids []int64
	cases := contextCases()
	for _, c := range cases {
		task := f.task(nt, time.Hour, at("pending", time.Hour), at("in_progress", 59*time.Minute))
		c.build(f, task)
		ids = append(ids, task)
	}
	// A task without transitions reports pending.
	bare := f.task(nt, time.Minute)
	ids = append(ids, bare)

	tasks, err := loadTasks(f.ctx, f.tx, append(slices.Clone(ids), 999999))
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != len(ids) {
		t.Fatalf("got %d tasks, want %d (the unknown id must be skipped)", len(tasks), len(ids))
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			want.TaskID, want.NamedTaskID = ids[i], nt
			if got := tasks[i].context(); !reflect.DeepEqual(got, want) {
				t.Errorf("context:\n got  %+v\n want %+v", got, want)
			}
		})
	}
	if got := tasks[len(tasks)-1].context().Status; got != "pending" {
		t.Errorf("task without transitions: status %q, want pending", got)
	}
	assertContextsMatchYardstick(t, f, append(ids, 999999))
	assertReadinessMatchesYardstick(t, f, ids)
}

// assertContextsMatchYardstick compares our contexts with Tasker's single
// and batch functions; unknown ids yield no row in either.
func assertContextsMatchYardstick(t *testing.T, f *fixture, ids []int64) {
	t.Helper()
	tasks, err := loadTasks(f.ctx, f.tx, ids)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := f.tx.Query(f.ctx, `SELECT task_id, named_task_id, status, total_steps, pending_steps,
		in_progress_steps, completed_steps, failed_steps, ready_steps, execution_status, recommended_action,
		completion_percentage::text, health_status FROM get_task_execution_contexts_batch($1)`, ids)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var want []TaskContext
	for rows.Next() {
		var c TaskContext
		if err := rows.Scan(&c.TaskID, &c.NamedTaskID, &c.Status, &c.TotalSteps, &c.PendingSteps, &c.InProgressSteps,
			&c.CompletedSteps, &c.FailedSteps, &c.ReadySteps, &c.ExecutionStatus, &c.RecommendedAction,
			&c.CompletionPercentage, &c.HealthStatus); err != nil {
			t.Fatal(err)
		}
		want = append(want, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(tasks) {
		t.Fatalf("yardstick has %d contexts, we have %d", len(want), len(tasks))
	}
	for i, task := range tasks {
		got := task.context()
		got.PermanentlyBlockedSteps = 0 // not one of Tasker's columns
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("task %d differs from get_task_execution_context:\n got  %+v\n want %+v", task.taskID, got, want[i])
		}
		var single TaskContext
		err := f.tx.QueryRow(f.ctx, `SELECT task_id, completion_percentage::text FROM get_task_execution_context($1)`,
			task.taskID).Scan(&single.TaskID, &single.CompletionPercentage)
		if err != nil || single.TaskID != task.taskID || single.CompletionPercentage != want[i].CompletionPercentage {
			t.Errorf("single-task function disagrees with batch for task %d: %+v, %v", task.taskID, single, err)
		}
	}
}

func TestDependencyLevels(t *testing.T) {
	db := pgtest.NewTasker(t)
	installYardsticks(t, db)
	f := newFixture(t, db)
	nt := f.namedTask("ns", "wf", "1.0.0")
	step := func(task int64, name string) int64 { return f.step(task, name, stepOpts{attempts: i32(0)}) }

	// a→b, b→c, a→c: the longest path wins, so c is level 2 (the view's
	// shortest depth would say 1). d is a second root; e hangs off both.
	dag := f.task(nt, time.Hour)
	a, b, c, d, e := step(dag, "a"), step(dag, "b"), step(dag, "c"), step(dag, "d"), step(dag, "e")
	f.edge(a, b)
	f.edge(b, c)
	f.edge(a, c)
	f.edge(c, e)
	f.edge(d, e)
	// A duplicate edge changes nothing.
	f.edge(d, e)

	// A root leads to x; y↔z is a cycle nobody reaches from a root, and w
	// hangs off both x and the cycle. Tasker's walk never enters the cycle, so
	// w gets x's level + 1 and y, z get none.
	island := f.task(nt, time.Hour)
	r, x, y, z, w := step(island, "r"), step(island, "x"), step(island, "y"), step(island, "z"), step(island, "w")
	f.edge(r, x)
	f.edge(y, z)
	f.edge(z, y)
	f.edge(x, w)
	f.edge(z, w)

	// A cycle reachable from a root makes Tasker's function recurse until
	// PostgreSQL gives up; we answer with the acyclic part and say so.
	loop := f.task(nt, time.Hour)
	l1, l2, l3 := step(loop, "l1"), step(loop, "l2"), step(loop, "l3")
	f.edge(l1, l2)
	f.edge(l2, l3)
	f.edge(l3, l2)

	empty := f.task(nt, time.Hour)

	tasks, err := loadTasks(f.ctx, f.tx, []int64{dag, island, loop, empty})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		task  *taskData
		want  []StepLevel
		cycle bool
	}{
		{tasks[0], []StepLevel{{a, 0}, {d, 0}, {b, 1}, {c, 2}, {e, 3}}, false},
		{tasks[1], []StepLevel{{r, 0}, {x, 1}, {w, 2}}, false},
		{tasks[2], []StepLevel{{l1, 0}}, true},
		{tasks[3], []StepLevel{}, false},
	} {
		g := analyzeGraph(tc.task, 100)
		if !reflect.DeepEqual(g.DependencyLevels, tc.want) || g.CycleDetected != tc.cycle {
			t.Errorf("task %d: levels %v cycle %v, want %v cycle %v", tc.task.taskID, g.DependencyLevels, g.CycleDetected, tc.want, tc.cycle)
		}
		if tc.cycle {
			continue
		}
		rows, err := f.tx.Query(f.ctx, `SELECT workflow_step_id, dependency_level FROM calculate_dependency_levels($1)`, tc.task.taskID)
		if err != nil {
			t.Fatal(err)
		}
		want := []StepLevel{}
		for rows.Next() {
			var l StepLevel
			if err := rows.Scan(&l.WorkflowStepID, &l.DependencyLevel); err != nil {
				t.Fatal(err)
			}
			want = append(want, l)
		}
		rows.Close()
		if !reflect.DeepEqual(g.DependencyLevels, want) {
			t.Errorf("task %d differs from calculate_dependency_levels: got %v, want %v", tc.task.taskID, g.DependencyLevels, want)
		}
	}
}

// TestGraphAnalysis works the analyzer's formulas (facts §7) by hand on a
// three-step chain: a complete, b failed for good, c waiting on b.
func TestGraphAnalysis(t *testing.T) {
	db := pgtest.NewTasker(t)
	f := newFixture(t, db)
	nt := f.namedTask("ns", "wf", "1.0.0")
	task := f.task(nt, time.Hour, at("pending", time.Hour), at("in_progress", 59*time.Minute))
	a := f.step(task, "a", stepOpts{attempts: i32(1), processed: true}, at("complete", 200*time.Second))
	b := f.step(task, "b", stepOpts{attempts: i32(3)}, at("error", 100*time.Second))
	c := f.step(task, "c", stepOpts{attempts: i32(0)})
	f.edge(a, b)
	f.edge(b, c)

	tasks, err := loadTasks(f.ctx, f.tx, []int64{task})
	if err != nil {
		t.Fatal(err)
	}
	g := analyzeGraph(tasks[0], 100)

	if got := g.Context; got.ExecutionStatus != "blocked_by_failures" || got.HealthStatus != "blocked" ||
		got.CompletionPercentage != "33.33" {
		t.Errorf("context %+v", got)
	}
	cp := g.CriticalPaths
	if cp.TotalPaths != 1 || cp.LongestPathLength != 3 || !reflect.DeepEqual(cp.RootNodes, []int64{a}) ||
		!reflect.DeepEqual(cp.LeafNodes, []int64{c}) {
		t.Fatalf("critical paths %+v", cp)
	}
	p := cp.Paths[0]
	// estimated = 3*30 + 60*1 error + 30*(1+3+0) attempts = 270;
	// raw = 30 - 15 + 25*1.5 + 30*1.5 + 10 + 2*270/60 = 116.5; times
	// (1 - 0.3 * 1/3) = 104.85.
	if p.EstimatedDuration != 270 || p.CompletedSteps != 1 || p.BlockedSteps != 1 || p.ErrorSteps != 1 ||
		p.RetrySteps != 1 || p.ReadySteps != 0 || p.CompletionPercentage != 33.3 {
		t.Errorf("path %+v", p)
	}
	if d := float64(p.CriticalityScore) - 104.85; d > 1e-9 || d < -1e-9 {
		t.Errorf("criticality %v, want 104.85", p.CriticalityScore)
	}
	wantPB := []PathBottleneck{
		{StepID: b, StepName: "b", Reason: "Exhausted retries", Severity: 45, Impact: "Blocks 1 downstream steps"},
		{StepID: c, StepName: "c", Reason: "Dependencies not satisfied", Severity: 5, Impact: "Blocks 0 downstream steps"},
	}
	if !reflect.DeepEqual(p.Bottlenecks, wantPB) {
		t.Errorf("path bottlenecks %+v, want %+v", p.Bottlenecks, wantPB)
	}

	par := g.ParallelismOpportunities
	if par.TotalLevels != 3 || par.MaxParallelSteps != 1 || par.BlockedParallelOpportunities != 1 ||
		par.ParallelismEfficiency != 0 || par.Levels[2].BottleneckRisk != "High" || par.Levels[0].ParallelismPotential != "Low" {
		t.Errorf("parallelism %+v", par)
	}

	ec := g.ErrorChains
	// impact = 15*1 blocked + 5*1 downstream + 20 exhausted + 3*3 attempts = 49.
	if ec.TotalErrorSteps != 1 || ec.ErrorPercentage != 33.3 || ec.TotalBlockedByErrors != 1 || len(ec.Chains) != 1 {
		t.Fatalf("error chains %+v", ec)
	}
	ch := ec.Chains[0]
	if ch.TotalImpact != 49 || !ch.RetryAnalysis.Exhausted || ch.RetryAnalysis.InBackoff || ch.RetryAnalysis.Retryable ||
		ch.RecoveryStrategies[0].Strategy != "Manual Resolution" || !reflect.DeepEqual(ch.BlockedSteps, []int64{c}) {
		t.Errorf("chain %+v", ch)
	}
	if rp := ec.RecoveryPriority; len(rp) != 1 || rp[0].PriorityLevel != "Medium" || rp[0].Reason != "Blocking 1 downstream steps" {
		t.Errorf("recovery priority %+v", rp)
	}

	gb := g.Bottlenecks
	// score = round((5*1 + 15*1) * 2.5 + 3*3 + 10 + 20) = 89: High.
	if gb.TotalBottlenecks != 1 || gb.OverallImpact != "Medium" || gb.TotalBlockedSteps != 1 || gb.FailedStepsRatio != 33.3 {
		t.Fatalf("bottlenecks %+v", gb)
	}
	bn := gb.Bottlenecks[0]
	if bn.ImpactScore != 89 || bn.Severity != "High" || bn.BottleneckType != "Permanent Failure" ||
		bn.ResolutionStrategy != "Manual intervention required" || bn.EstimatedResolutionTime != "Immediate action needed" {
		t.Errorf("bottleneck %+v", bn)
	}
}
