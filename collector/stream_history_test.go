package collector

import (
	"reflect"
	"slices"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

func TestTaskHistories(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	nt := f.namedTask("billing", "invoice", "0.3.0")
	task := f.task(nt, "pending", "in_progress", "complete")
	parent := f.step(task, stepSpec{attempts: n32(2), retryLimit: n32(3), lastAttempted: true},
		"pending", "in_progress", "error", "pending", "in_progress", "complete")
	child := f.step(task, stepSpec{attempts: n32(1), retryLimit: n32(3)}, "pending", "in_progress", "complete")
	f.exec(`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name, created_at, updated_at)
		VALUES ($1, $2, 'provides', $3, $3), ($1, $2, 'provides', $3, $3)`, parent, child, epoch) // a duplicate edge
	f.exec(`UPDATE tasker_workflow_steps SET results = '{"error": "boom", "error_class": "Faraday::TimeoutError"}',
		backoff_request_seconds = 4 WHERE workflow_step_id = $1`, parent)
	other := f.task(nt) // no transitions, no steps

	db, _ := openTest(t, pg.URL)
	hs, err := db.TaskHistories(testCtx(t), []int64{other, task, 999_999}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].TaskID != task || hs[1].TaskID != other {
		t.Fatalf("histories for %v", hs)
	}
	h := hs[0]
	if h.Namespace != "billing" || h.TaskName != "invoice" || h.Version != "0.3.0" || len(h.Transitions) != 3 {
		t.Errorf("task = %+v", h)
	}
	var states []string
	for _, tr := range h.Transitions {
		states = append(states, tr.ToState)
	}
	if !slices.Equal(states, []string{"pending", "in_progress", "complete"}) {
		t.Errorf("task transitions %v", states)
	}
	if len(h.Steps) != 2 {
		t.Fatalf("steps = %+v", h.Steps)
	}
	p, c := h.Steps[0], h.Steps[1]
	if p.StepID != parent || len(p.Transitions) != 6 || p.Name != "fixture_step" || *p.Attempts != 2 ||
		p.Error != "boom" || p.ErrorClass != "Faraday::TimeoutError" || *p.BackoffRequestSeconds != 4 || p.LastAttemptedAt == nil {
		t.Errorf("parent step = %+v", p)
	}
	if !slices.Equal(c.Parents, []int64{parent}) || len(p.Parents) != 0 {
		t.Errorf("parents: child %v, parent %v", c.Parents, p.Parents)
	}
	if len(hs[1].Steps) != 0 || len(hs[1].Transitions) != 0 {
		t.Errorf("empty task = %+v", hs[1])
	}
	if hs, err := db.TaskHistories(testCtx(t), nil, nil); hs != nil || err != nil {
		t.Errorf("no ids: %v, %v", hs, err)
	}

	// The transitions the stream read stand in for the queries: the same
	// histories, whether the stream had read every row, or only part of
	// them and the rest are read above its position.
	const maxID = 1 << 62
	for _, tc := range []struct {
		name    string
		keep    func(HistoryTransition) bool
		through int64
	}{
		{"all read", func(HistoryTransition) bool { return true }, maxID},
		{"all read, position unknown", func(HistoryTransition) bool { return true }, 0},
		{"the last rows committed after the read", func(tr HistoryTransition) bool { return tr.SortKey < 3 }, -1},
	} {
		seen := &TaskTransitions{Steps: map[int64][]HistoryTransition{}, TaskThrough: tc.through, StepThrough: tc.through}
		for _, tr := range h.Transitions {
			if tc.keep(tr) {
				seen.Task = append(seen.Task, tr)
				if tc.through < 0 {
					seen.TaskThrough = max(seen.TaskThrough, tr.ID)
				}
			}
		}
		for _, st := range h.Steps {
			for _, tr := range st.Transitions {
				if tc.keep(tr) {
					seen.Steps[st.StepID] = append(seen.Steps[st.StepID], tr)
					if tc.through < 0 {
						seen.StepThrough = max(seen.StepThrough, tr.ID)
					}
				}
			}
		}
		again, err := db.TaskHistories(testCtx(t), []int64{other, task}, map[int64]*TaskTransitions{task: seen})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, hs) {
			t.Errorf("%s:\n%+v\nwant\n%+v", tc.name, again, hs)
		}
	}
}
