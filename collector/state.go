package collector

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// group is a (namespace, task name) pair, the breakdown of Snapshot.Tasks
// and Snapshot.Steps. Versions of one named task share a group, as in the
// full count.
type group struct{ namespace, task string }

// stateKey is one counter of the incremental state: entities of a group in
// a current state ("" for no transition row yet).
type stateKey struct {
	group
	state string
}

// Retry classes of a step currently in error, as get_system_health_counts_v01
// defines them (docs/tasker-semantics.md#health-counts). in_backoff is a subset of retryable.
const (
	classRetryable uint8 = 1 << iota
	classExhausted
	classBackoff
)

// countState is the incremental form of a Snapshot's counts. Every change
// is a move of one entity from one key to another, so applying each
// transition exactly once keeps it equal to a full count of the same rows.
type countState struct {
	eng   engine.Engine // whose states carry retry classes (Engine.HasRetryClass)
	tasks map[stateKey]int64
	steps map[stateKey]int64
	// errorSteps remembers the retry class each step in error was counted
	// with. The class comes from step columns that are overwritten on the
	// next attempt, so it cannot be recomputed when the step leaves error.
	errorSteps map[engine.ID]uint8
	retryable  int64
	exhausted  int64
	backoff    int64
	// errorGroup is the group each step in error was counted in, and
	// retryByGroup the retry classes per group: the by-name breakdown.
	errorGroup   map[engine.ID]group
	retryByGroup map[group]*retryCounts
	// running holds each step in one of the engine's running states
	// (StepStates.Running) and when it entered it: the oldest per state
	// are Snapshot.OldestStepByState. (OldestRetryableErrorStep depends on
	// the task's state too, which the stream does not keep; the stream
	// queries it, see Stream.Refresh.)
	running map[engine.ID]stateSince
}

// stateSince is a step's current state and when it entered it.
type stateSince struct {
	state string
	at    time.Time
}

func newCountState(e engine.Engine) *countState {
	return &countState{eng: e, tasks: map[stateKey]int64{}, steps: map[stateKey]int64{}, errorSteps: map[engine.ID]uint8{},
		errorGroup: map[engine.ID]group{}, retryByGroup: map[group]*retryCounts{},
		running: map[engine.ID]stateSince{}}
}

// retryCounts are the retry classes of one group's steps in error.
type retryCounts struct{ retryable, exhausted, backoff int64 }

// errorStep is what a full count reads of a step in error.
type errorStep struct {
	class uint8
	group group
}

// countStateFrom builds the state from a full count, the steps in error
// with their classes and when each step in progress entered it, all taken
// in the same snapshot.
func countStateFrom(e engine.Engine, snap Snapshot, errorSteps map[engine.ID]errorStep, running map[engine.ID]stateSince) *countState {
	s := newCountState(e)
	if running != nil {
		s.running = running
	}
	for _, g := range snap.Tasks {
		s.tasks[stateKey{group{g.Namespace, g.TaskName}, g.State}] += g.Count
	}
	for _, g := range snap.Steps {
		s.steps[stateKey{group{g.Namespace, g.TaskName}, g.State}] += g.Count
	}
	for id, e := range errorSteps {
		s.setErrorStep(id, e.class, e.group)
	}
	return s
}

// newTask counts a task row: no transition yet.
func (s *countState) newTask(g group) { s.tasks[stateKey{g, ""}]++ }

// newStep counts a step row: no transition yet.
func (s *countState) newStep(g group) { s.steps[stateKey{g, ""}]++ }

// moveTask applies one task transition; from is the previous row's state,
// "" when this is the task's first transition.
func (s *countState) moveTask(g group, from, to string) {
	move(s.tasks, g, from, to)
}

// moveStep applies one step transition. class is the step's retry class
// from its current columns, used when it enters error. A step's
// transitions must be applied in sort_key order, so that leaving error
// removes the class entering it added.
func (s *countState) moveStep(g group, stepID engine.ID, from, to string, class uint8, at time.Time) {
	move(s.steps, g, from, to)
	delete(s.running, stepID)
	if slices.Contains(s.eng.StepStates.Running, to) {
		s.running[stepID] = stateSince{to, at}
	}
	if s.eng.HasRetryClass(from) {
		s.clearErrorStep(stepID)
	}
	if s.eng.HasRetryClass(to) {
		s.clearErrorStep(stepID) // a missed exit must not count the step twice
		s.setErrorStep(stepID, class, g)
	}
}

func move(m map[stateKey]int64, g group, from, to string) {
	k := stateKey{g, from}
	if m[k]--; m[k] == 0 {
		delete(m, k)
	}
	m[stateKey{g, to}]++
}

func (s *countState) setErrorStep(id engine.ID, c uint8, g group) {
	s.errorSteps[id] = c
	s.errorGroup[id] = g
	d := classCounts(c)
	s.retryable += d.retryable
	s.exhausted += d.exhausted
	s.backoff += d.backoff
	rc := s.retryByGroup[g]
	if rc == nil {
		rc = &retryCounts{}
		s.retryByGroup[g] = rc
	}
	rc.retryable += d.retryable
	rc.exhausted += d.exhausted
	rc.backoff += d.backoff
}

func (s *countState) clearErrorStep(id engine.ID) {
	c, ok := s.errorSteps[id]
	if !ok {
		return
	}
	g := s.errorGroup[id]
	delete(s.errorSteps, id)
	delete(s.errorGroup, id)
	d := classCounts(c)
	s.retryable -= d.retryable
	s.exhausted -= d.exhausted
	s.backoff -= d.backoff
	if rc := s.retryByGroup[g]; rc != nil {
		rc.retryable -= d.retryable
		rc.exhausted -= d.exhausted
		rc.backoff -= d.backoff
		if *rc == (retryCounts{}) {
			delete(s.retryByGroup, g)
		}
	}
}

func classCounts(c uint8) retryCounts {
	return retryCounts{
		retryable: int64(c & classRetryable),
		exhausted: int64(c&classExhausted) >> 1,
		backoff:   int64(c&classBackoff) >> 2,
	}
}

// snapshot renders the state as a Snapshot with the same groups and
// columns a full count produces (connection counts excepted).
func (s *countState) snapshot() Snapshot {
	snap := Snapshot{Engine: s.eng.Kind}
	snap.Tasks = groupCounts(s.tasks)
	snap.tallyTasks()
	steps := make([]stepGroup, 0, len(s.steps))
	for _, g := range groupCounts(s.steps) {
		steps = append(steps, stepGroup{GroupCount: g})
	}
	snap.Steps = snap.tallySteps(steps)
	snap.Counts.RetryableErrorSteps = s.retryable
	snap.Counts.ExhaustedRetrySteps = s.exhausted
	snap.Counts.InBackoffSteps = s.backoff
	for g, rc := range s.retryByGroup {
		snap.ErrorStepsByName = appendRetryGroups(snap.ErrorStepsByName, g.namespace, g.task, *rc)
	}
	SortGroups(snap.ErrorStepsByName)
	snap.OldestStepByState = oldestByState(s.running)
	snap.OldestInProgressStep = snap.OldestStepByState[engine.InProgress]
	return snap
}

// oldestByState is the earliest entry per state in m, nil when m is
// empty. A linear scan, once per poll: on Rails the steps in progress are
// bounded by the workers; on core enqueued steps count too, so a queue
// backlog of 100,000 steps costs about a millisecond a poll.
func oldestByState(m map[engine.ID]stateSince) map[string]time.Time {
	var out map[string]time.Time
	for _, r := range m {
		if out == nil {
			out = map[string]time.Time{}
		}
		if first, ok := out[r.state]; !ok || r.at.Before(first) {
			out[r.state] = r.at
		}
	}
	return out
}

// groupCounts lists the non-zero counters sorted by namespace, task and
// state, byte-wise (the full count's ORDER BY follows the database
// collation; compare the two sorted the same way).
func groupCounts(m map[stateKey]int64) []GroupCount {
	out := make([]GroupCount, 0, len(m))
	for k, n := range m {
		if n != 0 {
			out = append(out, GroupCount{Namespace: k.namespace, TaskName: k.task, State: k.state, Count: n})
		}
	}
	SortGroups(out)
	return out
}

// SortGroups orders group counts by namespace, task name and state,
// byte-wise, so two breakdowns can be compared element by element.
func SortGroups(gs []GroupCount) {
	slices.SortFunc(gs, func(a, b GroupCount) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.TaskName, b.TaskName),
			strings.Compare(a.State, b.State))
	})
}

// driftReport is how far the incremental counts were from a full count of the
// same snapshot: the sum of absolute differences over all groups and
// states, and the number of steps in error whose retry class differed.
type driftReport struct {
	Tasks      int64
	Steps      int64
	ErrorSteps int64
}

// zero reports whether the two counts agreed.
func (d driftReport) zero() bool { return d == driftReport{} }

// drift compares s with a full count.
func (s *countState) drift(full *countState) driftReport {
	var d driftReport
	diff := func(a, b map[stateKey]int64) int64 {
		var n int64
		for k := range joinKeys(a, b) {
			n += abs(a[k] - b[k])
		}
		return n
	}
	d.Tasks = diff(s.tasks, full.tasks)
	d.Steps = diff(s.steps, full.steps)
	for id, c := range s.errorSteps {
		if fc, ok := full.errorSteps[id]; !ok || fc != c {
			d.ErrorSteps++
		}
	}
	for id := range full.errorSteps {
		if _, ok := s.errorSteps[id]; !ok {
			d.ErrorSteps++
		}
	}
	return d
}

func joinKeys(a, b map[stateKey]int64) map[stateKey]struct{} {
	keys := make(map[stateKey]struct{}, len(a)+len(b))
	for k := range maps.Keys(a) {
		keys[k] = struct{}{}
	}
	for k := range maps.Keys(b) {
		keys[k] = struct{}{}
	}
	return keys
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// groupSizes returns the groups ordered by task count, then step count,
// then name, the ranking exporters/domain.go uses for its label cap, so the
// stream's counters start with the same kept pairs.
func (s *countState) groupSizes() []group {
	type size struct{ tasks, steps int64 }
	sizes := map[group]*size{}
	get := func(g group) *size {
		if sizes[g] == nil {
			sizes[g] = &size{}
		}
		return sizes[g]
	}
	for k, n := range s.tasks {
		get(k.group).tasks += n
	}
	for k, n := range s.steps {
		get(k.group).steps += n
	}
	out := slices.Collect(maps.Keys(sizes))
	slices.SortFunc(out, func(a, b group) int {
		return cmp.Or(cmp.Compare(sizes[b].tasks, sizes[a].tasks), cmp.Compare(sizes[b].steps, sizes[a].steps),
			strings.Compare(a.namespace, b.namespace), strings.Compare(a.task, b.task))
	})
	return out
}

// appendRetryGroups adds a group's non-zero retry classes as GroupCounts
// whose State is the class.
func appendRetryGroups(out []GroupCount, namespace, task string, rc retryCounts) []GroupCount {
	for _, c := range []struct {
		class string
		n     int64
	}{{RetryClassRetryable, rc.retryable}, {RetryClassExhausted, rc.exhausted}, {RetryClassInBackoff, rc.backoff}} {
		if c.n != 0 {
			out = append(out, GroupCount{Namespace: namespace, TaskName: task, State: c.class, Count: c.n})
		}
	}
	return out
}
