package analytics

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// Step states, as Tasker stores them (package engine names them).
const (
	StatePending          = engine.Pending
	StateInProgress       = engine.InProgress
	StateComplete         = engine.Complete
	StateError            = engine.Error
	StateCancelled        = engine.Cancelled
	StateResolvedManually = engine.ResolvedManually
)

// StepReadiness is one row of get_step_readiness_status (v02), followed by
// the values Tasker's Ruby readiness helper derives from it.
type StepReadiness struct {
	WorkflowStepID        int64  `json:"workflow_step_id"`
	TaskID                int64  `json:"task_id"`
	NamedStepID           int32  `json:"named_step_id"`
	Name                  string `json:"name"`
	CurrentState          string `json:"current_state"`
	DependenciesSatisfied bool   `json:"dependencies_satisfied"`
	RetryEligible         bool   `json:"retry_eligible"`
	ReadyForExecution     bool   `json:"ready_for_execution"`
	LastFailureAt         Time   `json:"last_failure_at"`
	NextRetryAt           Time   `json:"next_retry_at"`
	TotalParents          int32  `json:"total_parents"`
	CompletedParents      int32  `json:"completed_parents"`
	Attempts              int32  `json:"attempts"`
	RetryLimit            int32  `json:"retry_limit"`
	BackoffRequestSeconds *int32 `json:"backoff_request_seconds"`
	LastAttemptedAt       Time   `json:"last_attempted_at"`

	BlockingReason   *string `json:"blocking_reason"`
	RetryStatus      string  `json:"retry_status"`
	DependencyStatus string  `json:"dependency_status"`
	// TimeUntilReady is whole seconds until next_retry_at: 0 when ready,
	// null when there is no next_retry_at.
	TimeUntilReady *int64 `json:"time_until_ready"`
	Retryable      bool   `json:"retryable"`
	Processed      bool   `json:"processed"`
	InProcess      bool   `json:"in_process"`
}

// Exhausted reports attempts >= retry_limit, both coalesced as Tasker does.
func (r *StepReadiness) Exhausted() bool { return r.Attempts >= r.RetryLimit }

// readiness reads the rows of the given tasks, ordered by task and step id,
// and derives the helper fields against now (the transaction's NOW()).
func readiness(ctx context.Context, q querier, taskIDs []int64, now time.Time) ([]StepReadiness, error) {
	rows, err := q.Query(ctx, readinessSQL, taskIDs)
	if err != nil {
		return nil, fmt.Errorf("query step readiness: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (StepReadiness, error) {
		var r StepReadiness
		var lastFailure, nextRetry, lastAttempt *time.Time
		err := row.Scan(&r.WorkflowStepID, &r.TaskID, &r.NamedStepID, &r.Name, &r.CurrentState,
			&r.DependenciesSatisfied, &r.RetryEligible, &r.ReadyForExecution, &lastFailure, &nextRetry,
			&r.TotalParents, &r.CompletedParents, &r.Attempts, &r.RetryLimit, &r.BackoffRequestSeconds,
			&lastAttempt, &r.Retryable, &r.Processed, &r.InProcess)
		r.LastFailureAt, r.NextRetryAt, r.LastAttemptedAt = timeOf(lastFailure), timeOf(nextRetry), timeOf(lastAttempt)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("read step readiness: %w", err)
	}
	for i := range out {
		out[i].derive(now)
	}
	return out, nil
}

// derive fills the helper fields the way Tasker's
// FunctionBasedStepReadinessStatus computes them.
func (r *StepReadiness) derive(now time.Time) {
	r.deriveWith(now, func(s string) bool { return s == StatePending || s == StateError })
}

// deriveWith is derive with the engine's states a step may be made ready
// from (Rails: pending, error; tasker-core: pending, waiting_for_retry).
func (r *StepReadiness) deriveWith(now time.Time, readyState func(string) bool) {
	r.BlockingReason = nil
	if !r.ReadyForExecution {
		reason := "unknown"
		switch {
		case !r.DependenciesSatisfied:
			reason = "dependencies_not_satisfied"
		case !r.RetryEligible:
			reason = "retry_not_eligible"
		case !readyState(r.CurrentState):
			reason = "invalid_state"
		}
		r.BlockingReason = &reason
	}
	switch {
	case r.Exhausted():
		r.RetryStatus = "max_retries_reached"
	case r.RetryEligible:
		r.RetryStatus = "retry_eligible"
	default:
		r.RetryStatus = "waiting_for_backoff"
	}
	switch {
	case r.TotalParents == 0:
		r.DependencyStatus = "no_dependencies"
	case r.DependenciesSatisfied:
		r.DependencyStatus = "all_satisfied"
	default:
		r.DependencyStatus = strconv.Itoa(int(r.CompletedParents)) + "/" + strconv.Itoa(int(r.TotalParents)) + "_satisfied"
	}
	r.TimeUntilReady = nil
	switch {
	case r.ReadyForExecution:
		zero := int64(0)
		r.TimeUntilReady = &zero
	case !r.NextRetryAt.Std().IsZero():
		// Ruby's Integer() truncates the float difference toward zero.
		s := max(int64(math.Trunc(r.NextRetryAt.Std().Sub(now).Seconds())), 0)
		r.TimeUntilReady = &s
	}
}
