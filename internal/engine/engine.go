// Package engine names what the sidecar reads from a Tasker engine's
// database: the workflow states, the sets of them the code reasons about,
// and the tables. The constants and functions of this file describe the
// Rails engine (tasker-engine); docs/tasker-semantics.md explains the
// semantics the sidecar relies on. engines.go describes each engine as an
// Engine value, tasker-core's included, and detect.go finds which one a
// database holds.
//
// SQL files and SQL strings keep Tasker's names spelled out, so that they
// read and run as written; Go code that compares, labels or passes states
// and table names uses this package.
package engine

// The six states tasks and steps share (lib/tasker/constants.rb;
// docs/tasker-semantics.md#states-and-state-machines). An entity without
// any transition row is treated as Pending.
const (
	Pending          = "pending"
	InProgress       = "in_progress"
	Complete         = "complete"
	Error            = "error"
	Cancelled        = "cancelled"
	ResolvedManually = "resolved_manually"
)

// States returns the six states in constants.rb's order. Each call returns
// a new slice.
func States() []string {
	return []string{Pending, InProgress, Complete, Error, Cancelled, ResolvedManually}
}

// IsState reports whether s is one of the six states. Tasker's models
// reject any other to_state. A switch, not a search of States(): it runs
// for every label at scrape time and States allocates.
func IsState(s string) bool {
	switch s {
	case Pending, InProgress, Complete, Error, Cancelled, ResolvedManually:
		return true
	}
	return false
}

// RunEndStates returns the task states that end a run of a task: its span
// ends there and its duration is observed. Only Cancelled is final in
// Tasker's task state machine (lib/tasker/state_machine/task_state_machine.rb);
// the others can be followed by a retry or a cancellation, which starts a
// new run (docs/tasker-semantics.md#states-and-state-machines).
func RunEndStates() []string { return []string{Complete, Error, Cancelled, ResolvedManually} }

// EndsRun reports whether a task entering s ends its run (see
// RunEndStates). It runs for every transition the stream reads, so it does
// not build the slice.
func EndsRun(s string) bool {
	switch s {
	case Complete, Error, Cancelled, ResolvedManually:
		return true
	}
	return false
}

// EndsAttempt reports whether a step moving from in_progress to s ends an
// attempt: the moves out of in_progress that
// lib/tasker/state_machine/step_state_machine.rb allows.
func EndsAttempt(s string) bool { return s == Complete || s == Error || s == Cancelled }

// IsRetry reports whether a step moving from one state to another is a
// retry: leaving error for pending (re-enqueued) or straight for
// in_progress.
func IsRetry(from, to string) bool { return from == Error && (to == Pending || to == InProgress) }

// SatisfiesDependency reports whether a parent step in state s lets its
// children start (docs/tasker-semantics.md#states-and-state-machines).
func SatisfiesDependency(s string) bool { return s == Complete || s == ResolvedManually }

// Retry classes of steps in error, after the retryable_error_steps,
// exhausted_retry_steps and in_backoff_steps columns of Tasker's
// get_system_health_counts_v01; InBackoff is a subset of Retryable
// (docs/tasker-semantics.md#health-counts).
const (
	RetryClassRetryable = "retryable"
	RetryClassExhausted = "exhausted"
	RetryClassInBackoff = "in_backoff"
)

// Tables names the tables of a Tasker schema that the sidecar reads.
type Tables struct {
	Tasks           string
	Steps           string
	TaskTransitions string
	StepTransitions string
	NamedTasks      string
	Namespaces      string
	NamedSteps      string
	StepEdges       string
}

// List returns every table, the stream's four first.
func (t Tables) List() []string {
	return []string{t.Tasks, t.Steps, t.TaskTransitions, t.StepTransitions,
		t.NamedTasks, t.Namespaces, t.NamedSteps, t.StepEdges}
}

// RailsTables are the Rails engine's tables (tasker-engine's db/migrate;
// internal/schema/tasker.sql is a copy for demos and tests).
var RailsTables = Tables{
	Tasks:           "tasker_tasks",
	Steps:           "tasker_workflow_steps",
	TaskTransitions: "tasker_task_transitions",
	StepTransitions: "tasker_workflow_step_transitions",
	NamedTasks:      "tasker_named_tasks",
	Namespaces:      "tasker_task_namespaces",
	NamedSteps:      "tasker_named_steps",
	StepEdges:       "tasker_workflow_step_edges",
}
