package engine

import (
	"fmt"
	"slices"
)

// Kind names an engine, and is the value of the database.engine setting.
type Kind string

// The values database.engine accepts. KindAuto detects the engine when the
// sidecar attaches (Resolve); the others insist on one.
const (
	KindAuto  Kind = "auto"
	KindRails Kind = "rails"
	KindCore  Kind = "core"
)

// ParseKind reads a database.engine setting.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindAuto, KindRails, KindCore:
		return k, nil
	}
	return "", fmt.Errorf("unknown engine %q: want %s, %s or %s", s, KindAuto, KindRails, KindCore)
}

// The states only tasker-core has, in the order of
// crates/tasker-shared/src/state_machine/states.rs (tasker-core). Core
// has no task state in_progress; its steps do.
const (
	// Task states.
	Initializing           = "initializing"
	EnqueuingSteps         = "enqueuing_steps"
	StepsInProcess         = "steps_in_process"
	EvaluatingResults      = "evaluating_results"
	WaitingForDependencies = "waiting_for_dependencies"
	BlockedByFailures      = "blocked_by_failures"

	// Task and step state: a retryable failure waiting out its backoff.
	WaitingForRetry = "waiting_for_retry"

	// Step states.
	Enqueued                        = "enqueued"
	EnqueuedForOrchestration        = "enqueued_for_orchestration"
	EnqueuedAsErrorForOrchestration = "enqueued_as_error_for_orchestration"
)

// Engine describes one Tasker engine's database: where its tables are, its
// key type and retry column, and its state machines. Rails and Core build
// one; each call returns new slices, so a caller may not change another's.
type Engine struct {
	Kind Kind
	// Name is how logs and errors name the engine.
	Name string
	// Schema holds the tables. Empty for Rails: its tables are found
	// through the session's search_path (normally public), as the sidecar
	// has always read them. tasker-core's functions set no search_path,
	// so the sidecar qualifies its names instead.
	Schema string
	// Tables are spelled as the sidecar's SQL writes them: bare on Rails,
	// schema-qualified on core.
	Tables Tables
	// KeyType is the SQL type of every table's key: bigint on Rails
	// (sequences), uuid on core (UUIDv7, ordered by creation but neither
	// gap-free nor ordered by commit).
	KeyType string
	// RetryLimitColumn is the workflow_steps column bounding attempts.
	RetryLimitColumn string
	TaskStates       StateSets
	StepStates       StateSets
}

// StateSets are one state machine's states and the classes of them the
// sidecar reasons about. Terminal, Running and Waiting do not overlap; on
// core tasks pending is in none of them (created, not yet picked up).
// Failed is within Terminal and InBackoff within Waiting.
type StateSets struct {
	// All is every state, in the engine's order.
	All []string
	// Terminal states end a run or an attempt. Not all are final: a Rails
	// task in error can be retried, a core step in error reset by an
	// operator (ResetForRetry in tasker-core's
	// crates/tasker-shared/src/state_machine/events.rs), which is why
	// states.rs's WorkflowStepState::is_terminal leaves error out.
	Terminal []string
	// Running states are being worked on: in_progress on Rails; on core
	// TaskState::is_active and WorkflowStepState::is_in_processing_pipeline.
	Running []string
	// Waiting states wait for something other than a worker: pending on
	// Rails (not started, or back after a retry); on core tasks
	// TaskState::is_waiting, on core steps pending and waiting_for_retry.
	Waiting []string
	// InBackoff states wait out a retry delay: waiting_for_retry on core.
	// None on Rails, whose backoff is a column-derived class of error steps
	// (RetryClassInBackoff).
	InBackoff []string
	// Failed is error. On core it means exhausted or not retryable, since
	// a retryable failure moves to waiting_for_retry instead; on Rails it
	// also holds steps with attempts left, which the retry classes
	// (RetryClassRetryable and the others) split by columns; Core's doc
	// maps them onto core's states.
	Failed []string
}

// Active returns the states that are not terminal, in the engine's order.
// Not states.rs's TaskState::is_active, which is Running here.
func (s StateSets) Active() []string {
	return slices.DeleteFunc(slices.Clone(s.All), func(st string) bool { return slices.Contains(s.Terminal, st) })
}

// Has reports whether st is one of the machine's states.
func (s StateSets) Has(st string) bool { return slices.Contains(s.All, st) }

// Rails describes the Rails engine (tasker-engine) from this package's
// constants; docs/tasker-semantics.md explains its states.
func Rails() Engine {
	sets := func() StateSets {
		return StateSets{
			All:       States(),
			Terminal:  RunEndStates(),
			Running:   []string{InProgress},
			Waiting:   []string{Pending},
			InBackoff: []string{},
			Failed:    []string{Error},
		}
	}
	return Engine{
		Kind:             KindRails,
		Name:             "the Rails engine",
		Tables:           RailsTables,
		KeyType:          "bigint",
		RetryLimitColumn: "retry_limit",
		TaskStates:       sets(),
		StepStates:       sets(),
	}
}

// Core describes tasker-core: schema tasker, UUIDv7 keys, 12 task and 10
// step states (crates/tasker-shared/src/state_machine/states.rs, enforced
// by CHECK constraints on to_state and from_state).
//
// Retry classes map onto its states, where Rails derives them from error
// rows and columns (docs/tasker-semantics.md#health-counts):
//   - Rails' in_backoff (error, attempts left, last_attempted_at set) and
//     retryable (error, attempts < retry_limit) are steps in
//     waiting_for_retry: the engine moves a retryable failure there, and
//     back to pending when the delay is over.
//   - Rails' exhausted (error, attempts >= retry_limit) is error on core,
//     which also holds failures that were not retryable (Rails counts
//     those in no retry class).
func Core() Engine {
	return Engine{
		Kind:   KindCore,
		Name:   "tasker-core",
		Schema: "tasker",
		Tables: Tables{
			Tasks:           "tasker.tasks",
			Steps:           "tasker.workflow_steps",
			TaskTransitions: "tasker.task_transitions",
			StepTransitions: "tasker.workflow_step_transitions",
			NamedTasks:      "tasker.named_tasks",
			Namespaces:      "tasker.task_namespaces",
			NamedSteps:      "tasker.named_steps",
			StepEdges:       "tasker.workflow_step_edges",
		},
		KeyType:          "uuid",
		RetryLimitColumn: "max_attempts",
		TaskStates: StateSets{
			All: []string{Pending, Initializing, EnqueuingSteps, StepsInProcess, EvaluatingResults,
				WaitingForDependencies, WaitingForRetry, BlockedByFailures,
				Complete, Error, Cancelled, ResolvedManually},
			Terminal:  []string{Complete, Error, Cancelled, ResolvedManually},
			Running:   []string{Initializing, EnqueuingSteps, StepsInProcess, EvaluatingResults},
			Waiting:   []string{WaitingForDependencies, WaitingForRetry, BlockedByFailures},
			InBackoff: []string{WaitingForRetry},
			Failed:    []string{Error},
		},
		StepStates: StateSets{
			All: []string{Pending, Enqueued, InProgress, EnqueuedForOrchestration,
				EnqueuedAsErrorForOrchestration, WaitingForRetry,
				Complete, Error, Cancelled, ResolvedManually},
			Terminal:  []string{Complete, Error, Cancelled, ResolvedManually},
			Running:   []string{Enqueued, InProgress, EnqueuedForOrchestration, EnqueuedAsErrorForOrchestration},
			Waiting:   []string{Pending, WaitingForRetry},
			InBackoff: []string{WaitingForRetry},
			Failed:    []string{Error},
		},
	}
}

// For returns the engine of an explicit kind; KindAuto must be resolved
// first (Resolve).
func For(k Kind) (Engine, error) {
	switch k {
	case KindRails:
		return Rails(), nil
	case KindCore:
		return Core(), nil
	}
	return Engine{}, fmt.Errorf("engine %q names no engine: want %s or %s", k, KindRails, KindCore)
}

// IsTaskState and IsStepState report whether s is one of the engine's
// states; the stream labels anything else "other".
func (e Engine) IsTaskState(s string) bool { return e.TaskStates.Has(s) }

// IsStepState: see IsTaskState.
func (e Engine) IsStepState(s string) bool { return e.StepStates.Has(s) }

// EndsRun reports whether a task entering s ends its run: its span ends
// and its duration is observed. Both engines end runs in the same four
// terminal states, Rails' RunEndStates (package EndsRun).
func (e Engine) EndsRun(s string) bool { return EndsRun(s) }

// AttemptOutcome says whether a step moving from one state to another
// ends an attempt, and its outcome, "complete" or "error" (or
// "cancelled"), the label of the attempt's duration. On Rails an attempt
// leaves in_progress for its outcome (EndsAttempt). On core the worker
// hands the result to orchestration: in_progress to
// enqueued_for_orchestration is a success, to
// enqueued_as_error_for_orchestration a failure
// (crates/tasker-shared/src/state_machine/step_state_machine.rs); the
// orchestration's decision follows in a later row.
func (e Engine) AttemptOutcome(from, to string) (string, bool) {
	if from != InProgress {
		return "", false
	}
	if e.Kind == KindCore {
		switch to {
		case EnqueuedForOrchestration:
			return Complete, true
		case EnqueuedAsErrorForOrchestration:
			return Error, true
		}
	}
	if EndsAttempt(to) {
		return to, true
	}
	return "", false
}

// RetryWait is the step state a retryable failure waits in: error on Rails
// (with attempts left), waiting_for_retry on core.
func (e Engine) RetryWait() string {
	if e.Kind == KindCore {
		return WaitingForRetry
	}
	return Error
}

// IsRetry reports whether a step moving from one state to another starts
// a retry: leaving the retry wait for pending or a new attempt.
func (e Engine) IsRetry(from, to string) bool {
	if e.Kind == KindCore {
		return from == WaitingForRetry && (to == Pending || to == Enqueued || to == InProgress)
	}
	return IsRetry(from, to)
}

// HasRetryClass reports whether a step in state s is counted in a retry
// class (Core's doc gives the mapping): error on Rails; error and
// waiting_for_retry on core.
func (e Engine) HasRetryClass(s string) bool {
	return s == Error || (e.Kind == KindCore && s == WaitingForRetry)
}
