package collector

import (
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"reflect"
	"testing"
	"time"
)

func TestCountStateMoves(t *testing.T) {
	t.Parallel()
	g := group{"billing", "invoice"}
	s := newCountState(engine.Rails())
	s.newTask(g)
	s.newStep(g)
	s.newStep(g)
	s.moveTask(g, "", "in_progress")
	s.moveStep(g, engine.IntID(1), "", "in_progress", 0, time.Time{})
	s.moveStep(g, engine.IntID(1), "in_progress", "error", classRetryable|classBackoff, time.Time{})
	s.moveStep(g, engine.IntID(2), "", "error", classExhausted, time.Time{})

	snap := s.snapshot()
	want := HealthCounts{
		TotalTasks: 1, InProgressTasks: 1,
		TotalSteps: 2, ErrorSteps: 2,
		RetryableErrorSteps: 1, ExhaustedRetrySteps: 1, InBackoffSteps: 1,
	}
	if snap.Counts != want {
		t.Fatalf("counts = %+v, want %+v", snap.Counts, want)
	}

	// Leaving error removes the class it entered with, whatever the
	// step's columns say now.
	s.moveStep(g, engine.IntID(1), "error", "pending", classExhausted, time.Time{})
	s.moveStep(g, engine.IntID(1), "pending", "in_progress", 0, time.Time{})
	s.moveStep(g, engine.IntID(1), "in_progress", "complete", 0, time.Time{})
	s.moveTask(g, "in_progress", "complete")
	snap = s.snapshot()
	want = HealthCounts{
		TotalTasks: 1, CompleteTasks: 1,
		TotalSteps: 2, CompleteSteps: 1, ErrorSteps: 1, ExhaustedRetrySteps: 1,
	}
	if snap.Counts != want {
		t.Fatalf("counts = %+v, want %+v", snap.Counts, want)
	}
	if want := []GroupCount{{"billing", "invoice", RetryClassExhausted, 1}}; !reflect.DeepEqual(snap.ErrorStepsByName, want) {
		t.Errorf("error steps by name = %+v, want %+v", snap.ErrorStepsByName, want)
	}
	wantSteps := []GroupCount{{"billing", "invoice", "complete", 1}, {"billing", "invoice", "error", 1}}
	if !reflect.DeepEqual(snap.Steps, wantSteps) {
		t.Errorf("steps = %+v, want %+v", snap.Steps, wantSteps)
	}
}

func TestCountStateDrift(t *testing.T) {
	t.Parallel()
	g := group{"ns", "t"}
	a, b := newCountState(engine.Rails()), newCountState(engine.Rails())
	for _, s := range []*countState{a, b} {
		s.newTask(g)
		s.moveTask(g, "", "complete")
		s.newStep(g)
		s.moveStep(g, engine.IntID(7), "", "error", classRetryable, time.Time{})
	}
	if d := a.drift(b); !d.zero() {
		t.Fatalf("equal states drift %+v", d)
	}
	b.newTask(g)                                                                  // one task a missed
	b.moveStep(g, engine.IntID(7), "error", "error", classExhausted, time.Time{}) // same state, other class
	d := a.drift(b)
	if d.Tasks != 1 || d.Steps != 0 || d.ErrorSteps != 1 {
		t.Errorf("drift = %+v, want 1 task, 0 steps, 1 error step", d)
	}
}

func TestCountStateFromSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	var snap Snapshot
	snap.Tasks = mixedTaskGroups()
	snap.Steps = mixedStepGroups()
	s := countStateFrom(engine.Rails(), snap, map[engine.ID]errorStep{engine.IntID(1): {classRetryable | classBackoff, group{"billing", "invoice"}}, engine.IntID(2): {classExhausted, group{"default", "welcome"}}}, nil)
	got := s.snapshot()
	SortGroups(snap.Tasks)
	SortGroups(snap.Steps)
	if !reflect.DeepEqual(got.Tasks, snap.Tasks) || !reflect.DeepEqual(got.Steps, snap.Steps) {
		t.Errorf("groups changed in the round trip:\n%+v\n%+v", got.Tasks, got.Steps)
	}
	if got.Counts.RetryableErrorSteps != 1 || got.Counts.InBackoffSteps != 1 || got.Counts.ExhaustedRetrySteps != 1 {
		t.Errorf("retry classes = %+v", got.Counts)
	}
	wantByName := []GroupCount{
		{"billing", "invoice", RetryClassInBackoff, 1}, {"billing", "invoice", RetryClassRetryable, 1},
		{"default", "welcome", RetryClassExhausted, 1},
	}
	if !reflect.DeepEqual(got.ErrorStepsByName, wantByName) {
		t.Errorf("error steps by name = %+v, want %+v", got.ErrorStepsByName, wantByName)
	}
	if got.Counts.TotalTasks != 8 || got.Counts.TotalSteps != 18 {
		t.Errorf("totals = %d tasks, %d steps", got.Counts.TotalTasks, got.Counts.TotalSteps)
	}
}

func TestLabelerCap(t *testing.T) {
	t.Parallel()
	l := newLabeler(2)
	l.seed([]group{{"a", "x"}})
	if ns, task := l.labels(group{"b", "y"}); ns != "b" || task != "y" {
		t.Errorf("second pair = %s/%s, want its own labels", ns, task)
	}
	if ns, task := l.labels(group{"c", "z"}); ns != OtherLabel || task != OtherLabel {
		t.Errorf("third pair = %s/%s, want other/other", ns, task)
	}
	if ns, _ := l.labels(group{"a", "x"}); ns != "a" {
		t.Errorf("seeded pair lost its labels")
	}
	if ns, _ := l.labels(group{"bad\xff", "x"}); ns != OtherLabel {
		t.Errorf("label value not folded: %q", ns)
	}
}

// The oldest step in progress follows each step's entry into in_progress,
// and forgets it when it moves on.
func TestCountStateOldestInProgress(t *testing.T) {
	t.Parallel()
	g := group{"ns", "t"}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type move struct {
		step     int64
		from, to string
		at       int
	}
	for _, tc := range []struct {
		name  string
		moves []move
		want  time.Time
	}{
		{"none", nil, time.Time{}},
		{"the earliest", []move{{1, "", "in_progress", 10}, {2, "", "in_progress", 5}, {3, "", "in_progress", 20}}, at(5)},
		{"a step that moves on is forgotten", []move{{1, "", "in_progress", 10}, {2, "", "in_progress", 5}, {2, "in_progress", "complete", 30}},
			at(10)},
		{"a retry restarts the clock", []move{{1, "", "in_progress", 1}, {1, "in_progress", "error", 2},
			{1, "error", "pending", 40}, {1, "pending", "in_progress", 41}}, at(41)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newCountState(engine.Rails())
			for _, m := range tc.moves {
				s.moveStep(g, engine.IntID(m.step), m.from, m.to, classRetryable, at(m.at))
			}
			if got := s.snapshot().OldestInProgressStep; !got.Equal(tc.want) {
				t.Errorf("oldest in progress %v, want %v", got, tc.want)
			}
		})
	}
}
