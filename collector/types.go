package collector

import (
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// Retry classes of steps in error, named in package engine.
const (
	RetryClassRetryable = engine.RetryClassRetryable
	RetryClassExhausted = engine.RetryClassExhausted
	RetryClassInBackoff = engine.RetryClassInBackoff
)

// States are the six states Tasker's state machines use for tasks and steps.
var States = engine.States()

// HealthCounts has exactly the columns and semantics of Tasker's
// get_system_health_counts_v01() (docs/tasker-semantics.md#health-counts). Entities with no
// transition row count in the totals only. On tasker-core each state column
// counts the core state of the same name (InProgressTasks is 0: core tasks
// have no in_progress) and the retry columns follow Snapshot.ErrorStepsByName;
// Snapshot.TaskStates and StepStates have every core state.
type HealthCounts struct {
	TotalTasks      int64 `json:"total_tasks"`
	PendingTasks    int64 `json:"pending_tasks"`
	InProgressTasks int64 `json:"in_progress_tasks"`
	CompleteTasks   int64 `json:"complete_tasks"`
	ErrorTasks      int64 `json:"error_tasks"`
	CancelledTasks  int64 `json:"cancelled_tasks"`

	TotalSteps      int64 `json:"total_steps"`
	PendingSteps    int64 `json:"pending_steps"`
	InProgressSteps int64 `json:"in_progress_steps"`
	CompleteSteps   int64 `json:"complete_steps"`
	ErrorSteps      int64 `json:"error_steps"`

	RetryableErrorSteps int64 `json:"retryable_error_steps"`
	ExhaustedRetrySteps int64 `json:"exhausted_retry_steps"`
	InBackoffSteps      int64 `json:"in_backoff_steps"`

	ActiveConnections int64 `json:"active_connections"`
	MaxConnections    int64 `json:"max_connections"`
}

// GroupCount is the number of tasks or steps of one named task in one current
// state. State is "" for entities that have no transition row yet (Tasker
// counts them in totals only), so a breakdown sums to the totals.
type GroupCount struct {
	Namespace string
	TaskName  string
	State     string
	Count     int64
}

// Snapshot is one successful refresh.
type Snapshot struct {
	// Engine is the engine whose tables were counted; its state sets
	// (engine.For) name the states Tasks and Steps can hold.
	Engine engine.Kind
	Counts HealthCounts
	// Per namespace and named task, all states including resolved_manually and
	// the "" no-transition bucket.
	Tasks []GroupCount
	Steps []GroupCount
	// Steps in error per namespace and named task by retry class: State is
	// RetryClassRetryable, RetryClassExhausted or RetryClassInBackoff, and
	// the counts sum to the HealthCounts columns. Zero counts are left out.
	// On core retryable and in_backoff are the steps in waiting_for_retry,
	// exhausted those in error with attempts >= max_attempts
	// (docs/tasker-semantics.md#tasker-core).
	ErrorStepsByName []GroupCount
	// Current state counts the health function leaves out of its columns.
	ResolvedManuallyTasks int64
	CancelledSteps        int64
	ResolvedManuallySteps int64

	// OldestStepByState has, for each of the engine's running step states
	// (StepStates.Running: in_progress on Rails; enqueued, in_progress and
	// the two orchestration hand-offs on core), when the step longest in
	// that state entered it, from its current transition row. A state no
	// step is in has no entry; nil when no step runs.
	OldestStepByState map[string]time.Time
	// When the step longest in progress entered in_progress (the
	// in_progress entry of OldestStepByState, on both engines), and when
	// the retryable step waiting longest entered its wait, from their
	// current transition rows; zero when there is none. On Rails that is
	// a step in error with a retry left, retryable, its task still pending
	// or in progress; on core a step in waiting_for_retry whose task is
	// not in a terminal state.
	// These are what the stuck-step alerts watch.
	OldestInProgressStep     time.Time
	OldestRetryableErrorStep time.Time
	// OldestRetryableUnknown is set when the query behind
	// OldestRetryableErrorStep failed (the counts are fine): the age is
	// not exported rather than aged from an old answer.
	OldestRetryableUnknown bool

	TakenAt  time.Time     // wall clock when the refresh finished
	Duration time.Duration // how long the refresh queries took

	// Replication is where the counts were read: a primary, or a hot
	// standby and how far behind its primary it was (replica.go). Its lag
	// is part of the data's age (Age).
	Replication Replication
}

// Age is how old the data is at now: the time since the refresh finished
// plus the replication lag of the server it was read on, so that a
// standby that stopped replaying serves counts that age like a stuck
// refresher's (docs/operations.md#read-replicas).
func (s *Snapshot) Age(now time.Time) time.Duration {
	return max(now.Sub(s.TakenAt), 0) + s.Replication.Lag
}
