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

// coreSnapshot: 6 tasks, 1 without a transition; 9 steps, 1 without. The
// state families carry every core state, zeros included.
func coreSnapshot() *collector.Snapshot {
	return &collector.Snapshot{
		Engine: engine.KindCore,
		Counts: collector.HealthCounts{
			TotalTasks: 6, PendingTasks: 1, CompleteTasks: 1, ErrorTasks: 1,
			TotalSteps: 9, InProgressSteps: 2, ErrorSteps: 1,
			RetryableErrorSteps: 3, ExhaustedRetrySteps: 1, InBackoffSteps: 3,
			ActiveConnections: 2, MaxConnections: 50,
		},
		Tasks: []collector.GroupCount{
			g("billing", "invoice", "", 1),
			g("billing", "invoice", "steps_in_process", 2),
			g("billing", "invoice", "error", 1),
			g("default", "welcome", "pending", 1),
			g("default", "welcome", "complete", 1),
			g("default", "welcome", "in_progress", 7), // not a core task state: dropped, counted as new
		},
		Steps: []collector.GroupCount{
			g("billing", "invoice", "", 1),
			g("billing", "invoice", "in_progress", 2),
			g("billing", "invoice", "enqueued_for_orchestration", 1),
			g("billing", "invoice", "waiting_for_retry", 3),
			g("billing", "invoice", "error", 1),
			g("default", "welcome", "enqueued", 1),
		},
		ErrorStepsByName: []collector.GroupCount{
			g("billing", "invoice", "exhausted", 1),
			g("billing", "invoice", "in_backoff", 3),
			g("billing", "invoice", "retryable", 3),
		},
		OldestStepByState: map[string]time.Time{
			"in_progress":                testNow.Add(-90 * time.Second),
			"enqueued_for_orchestration": testNow.Add(-30 * time.Second),
			"enqueued":                   testNow.Add(-5 * time.Second),
		},
		OldestInProgressStep:     testNow.Add(-90 * time.Second),
		OldestRetryableErrorStep: testNow.Add(-600 * time.Second),
		TakenAt:                  testNow.Add(-10 * time.Second),
	}
}

const wantCoreStates = `
# HELP tasker_steps Tasker workflow steps by current state; state="new" counts steps with no transition yet, so the series sum to all steps.
# TYPE tasker_steps gauge
tasker_steps{state="cancelled"} 0
tasker_steps{state="complete"} 0
tasker_steps{state="enqueued"} 1
tasker_steps{state="enqueued_as_error_for_orchestration"} 0
tasker_steps{state="enqueued_for_orchestration"} 1
tasker_steps{state="error"} 1
tasker_steps{state="in_progress"} 2
tasker_steps{state="new"} 1
tasker_steps{state="pending"} 0
tasker_steps{state="resolved_manually"} 0
tasker_steps{state="waiting_for_retry"} 3
# HELP tasker_steps_by_name Tasker workflow steps by their task's namespace and name and by current state; pairs beyond the cap are summed into namespace="other",task="other".
# TYPE tasker_steps_by_name gauge
tasker_steps_by_name{namespace="billing",state="enqueued_for_orchestration",task="invoice"} 1
tasker_steps_by_name{namespace="billing",state="error",task="invoice"} 1
tasker_steps_by_name{namespace="billing",state="in_progress",task="invoice"} 2
tasker_steps_by_name{namespace="billing",state="new",task="invoice"} 1
tasker_steps_by_name{namespace="billing",state="waiting_for_retry",task="invoice"} 3
tasker_steps_by_name{namespace="default",state="enqueued",task="welcome"} 1
# HELP tasker_steps_oldest_age_seconds How long the step waiting longest has been in its state: state="in_progress" for steps in progress, state="error" for steps in error with a retry left whose task is still pending or in progress (the others wait for an operator). 0 when no step waits.
# TYPE tasker_steps_oldest_age_seconds gauge
tasker_steps_oldest_age_seconds{state="enqueued"} 5
tasker_steps_oldest_age_seconds{state="enqueued_as_error_for_orchestration"} 0
tasker_steps_oldest_age_seconds{state="enqueued_for_orchestration"} 30
tasker_steps_oldest_age_seconds{state="in_progress"} 90
tasker_steps_oldest_age_seconds{state="waiting_for_retry"} 600
# HELP tasker_tasks Tasker tasks by current state; state="new" counts tasks with no transition yet, so the series sum to all tasks.
# TYPE tasker_tasks gauge
tasker_tasks{state="blocked_by_failures"} 0
tasker_tasks{state="cancelled"} 0
tasker_tasks{state="complete"} 1
tasker_tasks{state="enqueuing_steps"} 0
tasker_tasks{state="error"} 1
tasker_tasks{state="evaluating_results"} 0
tasker_tasks{state="initializing"} 0
tasker_tasks{state="new"} 8
tasker_tasks{state="pending"} 1
tasker_tasks{state="resolved_manually"} 0
tasker_tasks{state="steps_in_process"} 2
tasker_tasks{state="waiting_for_dependencies"} 0
tasker_tasks{state="waiting_for_retry"} 0
# HELP tasker_tasks_by_name Tasker tasks by namespace, task name and current state; pairs beyond the cap are summed into namespace="other",task="other".
# TYPE tasker_tasks_by_name gauge
tasker_tasks_by_name{namespace="billing",state="error",task="invoice"} 1
tasker_tasks_by_name{namespace="billing",state="new",task="invoice"} 1
tasker_tasks_by_name{namespace="billing",state="steps_in_process",task="invoice"} 2
tasker_tasks_by_name{namespace="default",state="complete",task="welcome"} 1
tasker_tasks_by_name{namespace="default",state="pending",task="welcome"} 1
`

func TestDomainCollectorCore(t *testing.T) {
	src := &fakeSource{}
	snap := coreSnapshot()
	// The stray in_progress task row is part of no core state: "new" takes
	// it, as for any state the engine does not have.
	snap.Counts.TotalTasks += 7
	src.Set(collector.RefreshState{Last: snap})
	c := newDomain(src, Config{})
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantCoreStates),
		"tasker_tasks", "tasker_steps", "tasker_tasks_by_name", "tasker_steps_by_name", "tasker_steps_oldest_age_seconds"); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("pedantic gather: %v", err)
	}
}

// Every state of each engine is exported, zeros included, and nothing
// else but "new"; the retry wait's label follows the engine.
func TestDomainStatesPerEngine(t *testing.T) {
	for _, tc := range []struct {
		snap      *collector.Snapshot
		e         engine.Engine
		retryWait string
	}{
		{domainSnapshot(), engine.Rails(), "error"},
		{coreSnapshot(), engine.Core(), "waiting_for_retry"},
	} {
		t.Run(string(tc.e.Kind), func(t *testing.T) {
			src := &fakeSource{}
			src.Set(collector.RefreshState{Last: tc.snap})
			reg := prometheus.NewRegistry()
			reg.MustRegister(newDomain(src, Config{}))
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			labels := map[string][]string{}
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "state" {
							labels[mf.GetName()] = append(labels[mf.GetName()], l.GetValue())
						}
					}
				}
			}
			check := func(family string, want []string) {
				got := labels[family]
				if len(got) != len(want) {
					t.Errorf("%s states %v, want %v", family, got, want)
					return
				}
				for _, s := range want {
					if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+s+" ") {
						t.Errorf("%s lacks state %s: %v", family, s, got)
					}
				}
			}
			check("tasker_tasks", append(tc.e.TaskStates.All, StateNew))
			check("tasker_steps", append(tc.e.StepStates.All, StateNew))
			check("tasker_steps_oldest_age_seconds", append(tc.e.StepStates.Running, tc.retryWait))
		})
	}
}

func TestEngineCollector(t *testing.T) {
	var found engine.Engine
	c := NewEngineCollector(func() (engine.Engine, bool) { return found, found.Kind != "" })
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("%d series before the engine is known", n)
	}
	for _, e := range []engine.Engine{engine.Rails(), engine.Core()} {
		found = e
		want := `
# HELP tasker_sidecar_engine_info The Tasker engine whose database the sidecar reads (database.engine, detected when auto): rails or core; always 1.
# TYPE tasker_sidecar_engine_info gauge
tasker_sidecar_engine_info{engine="` + string(e.Kind) + `"} 1
`
		if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
			t.Errorf("%s: %v", e.Kind, err)
		}
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
