package collector

import (
	"cmp"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// TaskTransitions are the transition rows of one task and of its steps, as
// the stream read them: what TaskHistory's Transitions hold, by sort_key.
// The trace exporter draws a task from them instead of reading them again
// (DB.TaskHistories).
type TaskTransitions struct {
	Task  []HistoryTransition
	Steps map[engine.ID][]HistoryTransition // by step key
	// TaskThrough and StepThrough are the keys below which the stream had
	// read every committed row of the task transitions and of the step
	// transitions table when it handed these over (Cursor.ReadBelow). Rows
	// at or above them (a step cancelled just after its task, committed
	// after the stream's read) are read from the database and merged.
	TaskThrough, StepThrough engine.ID
}

// Bounds of the transitions the stream keeps for the trace exporter (a
// kept row is about 60 bytes): a task beyond the per-task bound is
// forgotten, and past the others the oldest kept task is; a forgotten
// task's history is read from the database when its run ends, as for a
// task the stream did not see begin.
const (
	maxKeptTasks              = 10_000
	maxKeptRows               = 100_000
	maxKeptTransitionsPerTask = 2_000
)

// keptRuns are the transitions of the tasks the stream saw from their
// first row: tasks whose tasker_tasks row it read, so that every later row
// of the task and its steps passes through it too. A task started before
// the stream's start or checkpoint is never kept. Owned by the loop
// goroutine.
type keptRuns struct {
	tasks map[engine.ID]*keptTask
	order []engine.ID // task ids, oldest first; ids no longer kept are skipped
	rows  int         // kept rows of all tasks
	// dropped counts the tasks forgotten because of the bounds or a gap
	// given up below the watermark.
	dropped prometheus.Counter
}

type keptTask struct {
	rows int
	t    TaskTransitions
}

func newKeptRuns(reg prometheus.Registerer) *keptRuns {
	k := &keptRuns{
		tasks: map[engine.ID]*keptTask{},
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "histories_dropped_total",
			Help: "Tasks whose transitions the stream stopped keeping for the trace exporter (bounds reached, or a gap given up); their histories are read from the database.",
		}),
	}
	if reg != nil {
		reg.MustRegister(k.dropped)
	}
	return k
}

// reset forgets every task: the rows read from now on no longer make
// complete histories (a new start, or rows given up in a gap).
func (k *keptRuns) reset() {
	k.dropped.Add(float64(len(k.tasks)))
	clear(k.tasks)
	k.order, k.rows = k.order[:0], 0
}

// add keeps the poll's rows: new tasks, and the transitions of kept tasks.
func (k *keptRuns) add(res *pollResult) {
	for t := range numTables {
		if (t == tableTaskTransitions || t == tableStepTransitions) && res.expired[t] > 0 || res.given > 0 {
			// A row given up may belong to any kept task.
			k.reset()
			break
		}
	}
	for _, r := range res.rows[tableTasks] {
		k.start(r.id)
	}
	for _, t := range []table{tableTaskTransitions, tableStepTransitions} {
		for _, r := range res.rows[t] {
			kt, ok := k.tasks[r.taskID]
			if !ok {
				continue
			}
			if kt.rows >= maxKeptTransitionsPerTask {
				k.forget(r.taskID)
				continue
			}
			for k.rows >= maxKeptRows && k.tasks[r.taskID] != nil {
				if !k.forgetOldest() {
					break
				}
			}
			if k.tasks[r.taskID] == nil {
				continue // it was the oldest
			}
			kt.rows++
			k.rows++
			h := HistoryTransition{ID: r.id, ToState: r.toState, SortKey: r.sortKey, At: r.at}
			if t == tableTaskTransitions {
				kt.t.Task = append(kt.t.Task, h)
			} else {
				kt.t.Steps[r.stepID] = append(kt.t.Steps[r.stepID], h)
			}
		}
	}
}

// start keeps a task from its first row on, forgetting the oldest kept
// task when the bound is reached.
func (k *keptRuns) start(taskID engine.ID) {
	if _, ok := k.tasks[taskID]; ok {
		return
	}
	for len(k.tasks) >= maxKeptTasks {
		if !k.forgetOldest() {
			break
		}
	}
	k.tasks[taskID] = &keptTask{t: TaskTransitions{Steps: map[engine.ID][]HistoryTransition{}}}
	k.order = append(k.order, taskID)
	if len(k.order) > 2*maxKeptTasks {
		k.order = slices.DeleteFunc(k.order, func(id engine.ID) bool { _, ok := k.tasks[id]; return !ok })
	}
}

// forgetOldest forgets the task kept longest; false when none is kept.
func (k *keptRuns) forgetOldest() bool {
	for len(k.order) > 0 {
		oldest := k.order[0]
		k.order = k.order[1:]
		if _, ok := k.tasks[oldest]; ok {
			k.forget(oldest)
			return true
		}
	}
	return false
}

func (k *keptRuns) forget(taskID engine.ID) {
	k.remove(taskID)
	k.dropped.Inc()
}

func (k *keptRuns) remove(taskID engine.ID) {
	if kt, ok := k.tasks[taskID]; ok {
		k.rows -= kt.rows
		delete(k.tasks, taskID)
	}
}

// attach gives each run-ending task transition in out the transitions of
// its task, when the stream kept them, and stops keeping the task: a later
// run of it (a retried task) is read from the database. pos is what the
// stream has read.
func (k *keptRuns) attach(out []Transition, pos position) {
	for i := range out {
		tr := &out[i]
		if tr.Step || !engine.EndsRun(tr.ToState) {
			continue
		}
		kt, ok := k.tasks[tr.TaskID]
		if !ok {
			continue
		}
		k.remove(tr.TaskID)
		tt := kt.t
		tt.TaskThrough, tt.StepThrough = pos[tableTaskTransitions].ReadBelow(), pos[tableStepTransitions].ReadBelow()
		bySortKey(tt.Task)
		for _, rows := range tt.Steps {
			bySortKey(rows)
		}
		tr.History = &tt
	}
}

// bySortKey orders rows as TaskHistories returns them; rows found late in
// a gap arrive after later ones.
func bySortKey(rows []HistoryTransition) {
	slices.SortFunc(rows, func(a, b HistoryTransition) int {
		return cmp.Or(cmp.Compare(a.SortKey, b.SortKey), a.At.Compare(b.At), a.ID.Compare(b.ID))
	})
}
