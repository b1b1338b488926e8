package collector

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

func TestKeptRuns(t *testing.T) {
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	taskRow := func(id int64) row { return row{id: engine.IntID(id)} }
	taskTr := func(id, task int64, state string, sortKey int32) row {
		return row{id: engine.IntID(id), taskID: engine.IntID(task), toState: state, sortKey: sortKey, at: at.Add(time.Duration(id) * time.Second)}
	}
	stepTr := func(id, task, step int64, state string, sortKey int32) row {
		r := taskTr(id, task, state, sortKey)
		r.stepID = engine.IntID(step)
		return r
	}
	poll := func(tasks, taskTrs, stepTrs []row) *pollResult {
		var res pollResult
		res.rows[tableTasks], res.rows[tableTaskTransitions], res.rows[tableStepTransitions] = tasks, taskTrs, stepTrs
		return &res
	}
	end := func(task int64, state string, sortKey int32) []Transition {
		return []Transition{{TaskID: engine.IntID(task), ToState: state, SortKey: sortKey}}
	}

	t.Run("a task seen from its row", func(t *testing.T) {
		k := newKeptRuns(nil)
		k.add(poll([]row{taskRow(1)}, []row{taskTr(1, 1, "pending", 1)}, nil))
		// A late row (found in a gap) arrives after a later one.
		k.add(poll(nil, []row{taskTr(3, 1, "complete", 3)}, []row{stepTr(11, 1, 7, "in_progress", 2), stepTr(10, 1, 7, "pending", 1)}))
		k.add(poll(nil, []row{taskTr(2, 1, "in_progress", 2)}, nil))
		out := end(1, "complete", 3)
		var pos position
		pos[tableTaskTransitions] = Cursor{Watermark: 3}
		pos[tableStepTransitions] = Cursor{Watermark: 20, Gaps: []Gap{{Lo: 15, Hi: 16}, {Lo: 12, Hi: 12}}}
		k.attach(out, pos)
		h := out[0].History
		if h == nil {
			t.Fatal("no history for a task seen from its row")
		}
		if len(h.Task) != 3 || h.Task[0].SortKey != 1 || h.Task[2].ToState != "complete" {
			t.Errorf("task transitions %+v", h.Task)
		}
		if h.TaskThrough != engine.IntID(4) || h.StepThrough != engine.IntID(12) {
			t.Errorf("read below %s and %s, want 4 and 12 (below the lowest gap)", h.TaskThrough, h.StepThrough)
		}
		if s := h.Steps[engine.IntID(7)]; len(s) != 2 || s[0].ToState != "pending" || s[1].ID != engine.IntID(11) {
			t.Errorf("step transitions %+v", s)
		}
		// A later run of the task is read from the database.
		out = end(1, "complete", 5)
		k.attach(out, position{})
		if out[0].History != nil {
			t.Error("history kept after the run ended")
		}
	})

	t.Run("a task begun before the stream", func(t *testing.T) {
		k := newKeptRuns(nil)
		k.add(poll(nil, []row{taskTr(1, 2, "complete", 4)}, nil))
		out := end(2, "complete", 4)
		k.attach(out, position{})
		if out[0].History != nil {
			t.Error("history for a task whose row the stream did not read")
		}
	})

	t.Run("steps and non-terminal rows get none", func(t *testing.T) {
		k := newKeptRuns(nil)
		k.add(poll([]row{taskRow(3)}, nil, nil))
		out := []Transition{{TaskID: engine.IntID(3), ToState: "in_progress"}, {Step: true, TaskID: engine.IntID(3), StepID: engine.IntID(9), ToState: "complete"}}
		k.attach(out, position{})
		if out[0].History != nil || out[1].History != nil {
			t.Error("history on a transition that ends no run")
		}
		if _, ok := k.tasks[engine.IntID(3)]; !ok {
			t.Error("task forgotten before its run ended")
		}
	})

	t.Run("too many transitions", func(t *testing.T) {
		k := newKeptRuns(nil)
		rows := make([]row, 0, maxKeptTransitionsPerTask+1)
		for i := range maxKeptTransitionsPerTask + 1 {
			rows = append(rows, stepTr(int64(i+1), 4, 1, "pending", int32(i+1)))
		}
		k.add(poll([]row{taskRow(4)}, nil, rows))
		out := end(4, "error", 1)
		k.attach(out, position{})
		if out[0].History != nil {
			t.Error("history kept past the bound")
		}
		if got := testutil.ToFloat64(k.dropped); got != 1 {
			t.Errorf("dropped = %v, want 1", got)
		}
	})

	t.Run("too many tasks", func(t *testing.T) {
		k := newKeptRuns(nil)
		tasks := make([]row, 0, maxKeptTasks+1)
		for i := range maxKeptTasks + 1 {
			tasks = append(tasks, taskRow(int64(i+1)))
		}
		k.add(poll(tasks, nil, nil))
		if len(k.tasks) != maxKeptTasks {
			t.Errorf("%d tasks kept, want %d", len(k.tasks), maxKeptTasks)
		}
		if _, ok := k.tasks[engine.IntID(1)]; ok {
			t.Error("the oldest task is still kept")
		}
		if got := testutil.ToFloat64(k.dropped); got != 1 {
			t.Errorf("dropped = %v, want 1", got)
		}
	})

	t.Run("too many rows", func(t *testing.T) {
		k := newKeptRuns(nil)
		per := maxKeptTransitionsPerTask - 1
		tasks := maxKeptRows/per + 1
		var rows, trs []row
		for i := range tasks {
			rows = append(rows, taskRow(int64(i+1)))
			for j := range per {
				trs = append(trs, stepTr(int64(i*per+j+1), int64(i+1), 1, "pending", int32(j+1)))
			}
		}
		k.add(poll(rows, nil, trs))
		if k.rows > maxKeptRows {
			t.Errorf("%d rows kept, bound %d", k.rows, maxKeptRows)
		}
		if _, ok := k.tasks[engine.IntID(1)]; ok {
			t.Error("the oldest task is still kept")
		}
		if _, ok := k.tasks[engine.IntID(int64(tasks))]; !ok {
			t.Error("the newest task was forgotten")
		}
		if got := testutil.ToFloat64(k.dropped); got != 1 {
			t.Errorf("dropped = %v, want 1", got)
		}
	})

	t.Run("a gap given up", func(t *testing.T) {
		k := newKeptRuns(nil)
		k.add(poll([]row{taskRow(5), taskRow(6)}, nil, nil))
		res := poll(nil, nil, nil)
		res.expired[tableStepTransitions] = 1
		k.add(res)
		out := end(5, "complete", 1)
		k.attach(out, position{})
		if out[0].History != nil || len(k.tasks) != 0 {
			t.Error("histories kept after a row was given up")
		}
		if got := testutil.ToFloat64(k.dropped); got != 2 {
			t.Errorf("dropped = %v, want 2", got)
		}
	})
}
