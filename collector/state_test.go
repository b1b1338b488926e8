package collector

import (
	"reflect"
	"testing"
	"time"
)

func TestCountStateMoves(t *testing.T) {
	t.Parallel()
	g := group{"billing", "invoice"}
	s := newCountState()
	s.newTask(g)
	s.newStep(g)
	s.newStep(g)
	s.moveTask(g, "", "in_progress")
	s.moveStep(g, 1, "", "in_progress", 0, time.Time{})
	s.moveStep(g, 1, "in_progress", "error", classRetryable|classBackoff, time.Time{})
	s.moveStep(g, 2, "", "error", classExhausted, time.Time{})

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
	s.moveStep(g, 1, "error", "pending", classExhausted, time.Time{})
	s.moveStep(g, 1, "pending", "in_progress", 0, time.Time{})
	s.moveStep(g, 1, "in_progress", "complete", 0, time.Time{})
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
	a, b := newCountState(), newCountState()
	for _, s := range []*countState{a, b} {
		s.newTask(g)
		s.moveTask(g, "", "complete")
		s.newStep(g)
		s.moveStep(g, 7, "", "error", classRetryable, time.Time{})
	}
	if d := a.drift(b); !d.zero() {
		t.Fatalf("equal states drift %+v", d)
	}
	b.newTask(g)                                                    // one task a missed
	b.moveStep(g, 7, "error", "error", classExhausted, time.Time{}) // same state, other class
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
	s := countStateFrom(snap, map[int64]errorStep{1: {classRetryable | classBackoff, group{"billing", "invoice"}}, 2: {classExhausted, group{"default", "welcome"}}}, stepsWaiting{})
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

// The oldest waiting steps follow each step's entry into in_progress, or
// into error with a retry left, and forget it when it moves on.
func TestCountStateOldestWaiting(t *testing.T) {
	t.Parallel()
	g := group{"ns", "t"}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type move struct {
		step     int64
		from, to string
		class    uint8
		at       int
	}
	for _, tc := range []struct {
		name                   string
		moves                  []move
		inProgress, retryError time.Time
	}{
		{"none", nil, time.Time{}, time.Time{}},
		{"the earliest in progress", []move{{1, "", "in_progress", 0, 10}, {2, "", "in_progress", 0, 5}, {3, "", "in_progress", 0, 20}},
			at(5), time.Time{}},
		{"a step that moves on is forgotten", []move{{1, "", "in_progress", 0, 10}, {2, "", "in_progress", 0, 5}, {2, "in_progress", "complete", 0, 30}},
			at(10), time.Time{}},
		{"retryable errors only", []move{{1, "in_progress", "error", classRetryable, 8}, {2, "in_progress", "error", classExhausted, 3},
			{3, "in_progress", "error", classRetryable | classBackoff, 12}}, time.Time{}, at(8)},
		{"a retry restarts the clock", []move{{1, "", "in_progress", 0, 1}, {1, "in_progress", "error", classRetryable, 2},
			{1, "error", "pending", 0, 40}, {1, "pending", "in_progress", 0, 41}}, at(41), time.Time{}},
		{"error then exhausted: no longer waits for a retry", []move{{1, "in_progress", "error", classRetryable, 2},
			{1, "error", "error", classExhausted, 9}}, time.Time{}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newCountState()
			for _, m := range tc.moves {
				s.moveStep(g, m.step, m.from, m.to, m.class, at(m.at))
			}
			snap := s.snapshot()
			if !snap.OldestInProgressStep.Equal(tc.inProgress) || !snap.OldestRetryableErrorStep.Equal(tc.retryError) {
				t.Errorf("oldest in progress %v, retryable error %v; want %v, %v",
					snap.OldestInProgressStep, snap.OldestRetryableErrorStep, tc.inProgress, tc.retryError)
			}
		})
	}
}
