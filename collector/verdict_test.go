package collector

import (
	"testing"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

func TestVerdict(t *testing.T) {
	tests := []struct {
		name     string
		counts   HealthCounts
		healthy  bool
		wantUtil float64
	}{
		{"empty database", HealthCounts{ActiveConnections: 1, MaxConnections: 100}, true, 1.0},
		{"5 of 100 connections", HealthCounts{ActiveConnections: 5, MaxConnections: 100}, true, 5.0},
		{"3 of 50 connections", HealthCounts{ActiveConnections: 3, MaxConnections: 50}, true, 6.0},
		{"exactly 90% connections", HealthCounts{ActiveConnections: 90, MaxConnections: 100}, true, 90.0},
		{"90.01% connections", HealthCounts{ActiveConnections: 9001, MaxConnections: 10000}, false, 90.01},
		{"max connections 0", HealthCounts{ActiveConnections: 500}, true, 0.0},
		{"2 of 3 connections rounds", HealthCounts{ActiveConnections: 2, MaxConnections: 3}, true, 66.67},
		{"50% error tasks", HealthCounts{TotalTasks: 2, ErrorTasks: 1}, true, 0},
		{"over 50% error tasks", HealthCounts{TotalTasks: 10000, ErrorTasks: 5001}, false, 0},
		{"50% error steps", HealthCounts{TotalSteps: 100, ErrorSteps: 50}, true, 0},
		{"over 50% error steps", HealthCounts{TotalSteps: 100, ErrorSteps: 51}, false, 0},
		{"errors but no totals", HealthCounts{ErrorTasks: 3, ErrorSteps: 3}, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			healthy, util := Verdict(tc.counts)
			if healthy != tc.healthy || util != tc.wantUtil {
				t.Errorf("Verdict = %v, %v; want %v, %v", healthy, util, tc.healthy, tc.wantUtil)
			}
		})
	}
}

// On core the verdict reads the core error state; the states of a failure
// that may still recover (waiting_for_retry, blocked_by_failures, the
// error hand-off to orchestration) count in the totals only.
func TestVerdictCore(t *testing.T) {
	g := func(state string, n int64) GroupCount { return GroupCount{"ns", "t", state, n} }
	for _, tc := range []struct {
		name         string
		tasks, steps []GroupCount
		healthy      bool
	}{
		{"recoverable failures are not errors",
			[]GroupCount{g("blocked_by_failures", 5), g("waiting_for_retry", 5), g("error", 1)},
			[]GroupCount{g("waiting_for_retry", 8), g("enqueued_as_error_for_orchestration", 8), g("error", 1)}, true},
		{"half the tasks in error", []GroupCount{g("error", 2), g("", 2)}, nil, true},
		{"over half the tasks in error", []GroupCount{g("error", 3), g("", 2)}, nil, false},
		{"over half the steps in error", nil, []GroupCount{g("error", 3), g("complete", 2)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Snapshot{Engine: engine.KindCore, Tasks: tc.tasks}
			s.tallyTasks()
			var steps []stepGroup
			for _, gc := range tc.steps {
				steps = append(steps, stepGroup{GroupCount: gc})
			}
			s.Steps = s.tallySteps(steps)
			s.Counts.MaxConnections, s.Counts.ActiveConnections = 100, 1
			if healthy, _ := Verdict(s.Counts); healthy != tc.healthy {
				t.Errorf("Verdict(%+v) = %v, want %v", s.Counts, healthy, tc.healthy)
			}
		})
	}
}
