package collector

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// The stream's error, drift-correction, checkpoint and per-table counters
// exist at zero from construction (the tables once the engine is known),
// so that its panels and alerts read zero on a quiet database, not "No
// data". The transition counters and histograms, labelled by namespace and
// task, are not made ahead: their label values are the database's.
func TestStreamMetricsExistAtZero(t *testing.T) {
	for _, e := range []engine.Engine{engine.Rails(), engine.Core()} {
		t.Run(string(e.Kind), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := newStreamMetrics(reg)
			m.touchTables(e)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, mf := range mfs {
				for _, s := range mf.GetMetric() {
					var labels []string
					for _, l := range s.GetLabel() {
						labels = append(labels, l.GetName()+"="+l.GetValue())
					}
					slices.Sort(labels)
					got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = s.GetCounter().GetValue()
				}
			}
			var want []string
			for _, r := range Reasons() {
				want = append(want, "tasker_sidecar_stream_errors_total{reason="+r+"}",
					"tasker_sidecar_stream_recount_errors_total{reason="+r+"}")
			}
			for _, k := range driftKinds {
				want = append(want, "tasker_sidecar_stream_drift_corrected_total{kind="+k+"}")
			}
			want = append(want, "tasker_sidecar_stream_checkpoint_saves_total{result=ok}",
				"tasker_sidecar_stream_checkpoint_saves_total{result=error}")
			for _, table := range e.Tables.List()[:4] {
				for _, f := range []string{"rows_total", "late_rows_total", "gap_ids_expired_total"} {
					want = append(want, "tasker_sidecar_stream_"+f+"{table="+table+"}")
				}
			}
			for _, f := range []string{"recounts_total", "sink_errors_total", "replayed_transitions_total"} {
				want = append(want, "tasker_sidecar_stream_"+f+"{}")
			}
			for _, key := range want {
				if v, ok := got[key]; !ok {
					t.Errorf("%s: absent after construction", key)
				} else if v != 0 {
					t.Errorf("%s = %v after construction, want 0", key, v)
				}
			}
		})
	}
}

// touchGroups, given the pairs the labeler keeps after seeding, makes every
// transition counter and histogram of those pairs exist at zero in each
// combination the engine's state machines allow, and nothing for other
// pairs.
func TestTouchGroupsMakesEveryTransitionSeries(t *testing.T) {
	cases := []struct {
		e                      engine.Engine
		taskEnds, stepOutcomes []string
		taskStates, stepStates int
	}{
		{engine.Rails(), []string{"complete", "error", "cancelled", "resolved_manually"}, []string{"complete", "error", "cancelled"}, 6, 6},
		// On core an attempt also ends by in_progress to cancelled
		// (engine.AttemptOutcome), besides the two hand-offs.
		{engine.Core(), []string{"complete", "error", "cancelled", "resolved_manually"}, []string{"complete", "error", "cancelled"}, 12, 10},
	}
	for _, c := range cases {
		t.Run(string(c.e.Kind), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := newStreamMetrics(reg)
			l := newLabeler(2)
			l.seed([]group{{"payments", "refund"}, {"ops", "sync"}, {"ops", "beyond_the_cap"}})
			m.touchGroups(c.e, l.keptLabels())
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			type key struct{ family, ns, task, state string }
			got := map[key]bool{}
			for _, mf := range mfs {
				for _, s := range mf.GetMetric() {
					k := key{family: mf.GetName()}
					for _, lp := range s.GetLabel() {
						switch lp.GetName() {
						case "namespace":
							k.ns = lp.GetValue()
						case "task":
							k.task = lp.GetValue()
						case "to_state", "state":
							k.state = lp.GetValue()
						}
					}
					if k.ns == "" {
						continue
					}
					if v := s.GetCounter().GetValue() + float64(s.GetHistogram().GetSampleCount()); v != 0 {
						t.Errorf("%v = %v, want 0", k, v)
					}
					got[k] = true
				}
			}
			var want []key
			for _, p := range [][2]string{{"payments", "refund"}, {"ops", "sync"}} {
				for _, s := range c.e.TaskStates.All {
					want = append(want, key{"tasker_task_transitions_total", p[0], p[1], s})
				}
				for _, s := range c.e.StepStates.All {
					want = append(want, key{"tasker_step_transitions_total", p[0], p[1], s})
				}
				for _, s := range c.taskEnds {
					want = append(want, key{"tasker_task_duration_seconds", p[0], p[1], s})
				}
				for _, s := range c.stepOutcomes {
					want = append(want, key{"tasker_step_duration_seconds", p[0], p[1], s})
				}
				want = append(want, key{"tasker_step_retries_total", p[0], p[1], ""},
					key{"tasker_step_backoff_seconds", p[0], p[1], ""})
			}
			for _, k := range want {
				if !got[k] {
					t.Errorf("%v: absent after touchGroups", k)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d series with a namespace, want %d (the pair beyond the cap must get none)", len(got), len(want))
			}
			if len(c.e.TaskStates.All) != c.taskStates || len(c.e.StepStates.All) != c.stepStates {
				t.Errorf("engine has %d task and %d step states, the case expects %d and %d",
					len(c.e.TaskStates.All), len(c.e.StepStates.All), c.taskStates, c.stepStates)
			}
		})
	}
}
