package analytics

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

var (
	coreReadinessSQL = mustSQL("core_readiness.sql")
	coreTasksSQL     = mustSQL("core_tasks.sql")
)

// CoreStepReadiness is one row of tasker-core's get_step_readiness_status
// (migrations/20260110000003_sql_functions.sql), column for column:
// Rails' row with uuids and max_attempts where Rails has retry_limit.
type CoreStepReadiness struct {
	WorkflowStepUUID      string `json:"workflow_step_uuid"`
	TaskUUID              string `json:"task_uuid"`
	NamedStepUUID         string `json:"named_step_uuid"`
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
	MaxAttempts           int32  `json:"max_attempts"`
	BackoffRequestSeconds *int32 `json:"backoff_request_seconds"`
	LastAttemptedAt       Time   `json:"last_attempted_at"`
}

// CoreTaskContext is tasker-core's get_task_execution_context, column for
// column: Rails' columns with uuids, plus enqueued_steps.
type CoreTaskContext struct {
	TaskUUID             string  `json:"task_uuid"`
	NamedTaskUUID        string  `json:"named_task_uuid"`
	Status               string  `json:"status"`
	TotalSteps           int64   `json:"total_steps"`
	PendingSteps         int64   `json:"pending_steps"`
	InProgressSteps      int64   `json:"in_progress_steps"`
	CompletedSteps       int64   `json:"completed_steps"`
	FailedSteps          int64   `json:"failed_steps"`
	ReadySteps           int64   `json:"ready_steps"`
	ExecutionStatus      string  `json:"execution_status"`
	RecommendedAction    string  `json:"recommended_action"`
	CompletionPercentage Decimal `json:"completion_percentage"`
	HealthStatus         string  `json:"health_status"`
	EnqueuedSteps        int64   `json:"enqueued_steps"`
}

// CoreTaskSteps is the readiness of one tasker-core task's steps.
type CoreTaskSteps struct {
	TaskUUID string              `json:"task_uuid"`
	Steps    []CoreStepReadiness `json:"steps"`
}

// coreTask is what the per-task answers on tasker-core derive from.
type coreTask struct {
	uuid, namedTaskUUID, status string
	steps                       []CoreStepReadiness
	now                         time.Time // the transaction's now()
}

// ParseTaskUUID validates a tasker-core task id: a UUID in its canonical
// 36-character form, any case; it is returned in lower case.
func ParseTaskUUID(raw string) (string, error) {
	u, err := parseUUID(raw)
	if err != nil {
		return "", &ParamError{"id", "must be a task UUID (8-4-4-4-12 hex digits), got " + Echo(raw)}
	}
	return u, nil
}

func parseUUID(raw string) (string, error) {
	// uuid.Parse also takes braces, urn: prefixes and 32 bare digits; one
	// spelling per task keeps one cache entry per task.
	if len(raw) != 36 {
		return "", fmt.Errorf("not a canonical UUID")
	}
	u, err := uuid.Parse(raw)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// ParseTaskUUIDs validates a comma-separated list of at most limit distinct
// task UUIDs, returned lower case, sorted (the order PostgreSQL sorts
// uuids in) and without repeats; every bad element is named.
func ParseTaskUUIDs(raw string, limit int) ([]string, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, &ParamError{"ids", "is required: a comma-separated list of task UUIDs"}
	}
	// Room for spaces and a repeat of each id; past that the list is not
	// worth parsing.
	if maxLen := 80 * max(limit, 1); len(raw) > maxLen {
		return nil, &ParamError{"ids", fmt.Sprintf("must be at most %d bytes for %d task UUIDs, got %d", maxLen, limit, len(raw))}
	}
	var ids, bad []string
	for part := range strings.SplitSeq(raw, ",") {
		part = strings.TrimSpace(part)
		u, err := parseUUID(part)
		if err != nil {
			bad = append(bad, Echo(part))
			continue
		}
		ids = append(ids, u)
	}
	if len(bad) > 0 {
		return nil, &ParamError{"ids", "must be task UUIDs (8-4-4-4-12 hex digits), got " + strings.Join(bad, ", ")}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > limit {
		return nil, &ParamError{"ids", fmt.Sprintf("at most %d task UUIDs per request, got %d", limit, len(ids))}
	}
	return ids, nil
}

// TaskUUIDParams is the cache key parameters of one tasker-core task.
func TaskUUIDParams(id string) string { return "uuid=" + id }

// loadCoreTasks reads the tasks of ids that exist, in uuid order, with
// their steps' readiness.
func loadCoreTasks(ctx context.Context, q querier, ids []string) ([]*coreTask, error) {
	rows, err := q.Query(ctx, coreTasksSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("query tasks: %w", err)
	}
	tasks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*coreTask, error) {
		var t coreTask
		err := row.Scan(&t.uuid, &t.namedTaskUUID, &t.status, &t.now)
		return &t, err
	})
	if err != nil {
		return nil, fmt.Errorf("read tasks: %w", err)
	}
	if len(tasks) == 0 {
		return nil, nil
	}
	found := make([]string, len(tasks))
	byTask := make(map[string]*coreTask, len(tasks))
	for i, t := range tasks {
		found[i] = t.uuid
		byTask[t.uuid] = t
	}
	steps, err := coreReadiness(ctx, q, found)
	if err != nil {
		return nil, err
	}
	for _, s := range steps {
		if t := byTask[s.TaskUUID]; t != nil {
			t.steps = append(t.steps, s)
		}
	}
	return tasks, nil
}

// coreReadiness reads the step readiness rows of the given tasks.
func coreReadiness(ctx context.Context, q querier, taskIDs []string) ([]CoreStepReadiness, error) {
	rows, err := q.Query(ctx, coreReadinessSQL, taskIDs)
	if err != nil {
		return nil, fmt.Errorf("query step readiness: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CoreStepReadiness, error) {
		var r CoreStepReadiness
		var lastFailure, nextRetry, lastAttempt *time.Time
		err := row.Scan(&r.WorkflowStepUUID, &r.TaskUUID, &r.NamedStepUUID, &r.Name, &r.CurrentState,
			&r.DependenciesSatisfied, &r.RetryEligible, &r.ReadyForExecution, &lastFailure, &nextRetry,
			&r.TotalParents, &r.CompletedParents, &r.Attempts, &r.MaxAttempts, &r.BackoffRequestSeconds, &lastAttempt)
		r.LastFailureAt, r.NextRetryAt, r.LastAttemptedAt = timeOf(lastFailure), timeOf(nextRetry), timeOf(lastAttempt)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("read step readiness: %w", err)
	}
	return out, nil
}

// context applies get_task_execution_context's decision tables (the
// engine's, which differ from Rails': a step in error blocks the task
// before ready steps count, and enqueued steps are processing).
func (t *coreTask) context() CoreTaskContext {
	c := CoreTaskContext{TaskUUID: t.uuid, NamedTaskUUID: t.namedTaskUUID, Status: t.status}
	for i := range t.steps {
		s := &t.steps[i]
		c.TotalSteps++
		switch s.CurrentState {
		case engine.Pending:
			c.PendingSteps++
		case engine.InProgress:
			c.InProgressSteps++
		case engine.Complete, engine.ResolvedManually:
			c.CompletedSteps++
		case engine.Error:
			c.FailedSteps++
		case "enqueued", "enqueued_for_orchestration", "enqueued_as_error_for_orchestration":
			c.EnqueuedSteps++
		}
		if s.ReadyForExecution {
			c.ReadySteps++
		}
	}
	// Every step in error is permanently blocked on tasker-core: a
	// retryable failure is waiting_for_retry instead.
	blocked := c.FailedSteps
	switch {
	case blocked > 0:
		c.ExecutionStatus, c.RecommendedAction = "blocked_by_failures", "handle_failures"
	case c.ReadySteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "has_ready_steps", "execute_ready_steps"
	case c.InProgressSteps > 0 || c.EnqueuedSteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "processing", "wait_for_completion"
	case c.CompletedSteps == c.TotalSteps && c.TotalSteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "all_complete", "finalize_task"
	default:
		c.ExecutionStatus, c.RecommendedAction = "waiting_for_dependencies", "wait_for_dependencies"
	}
	// The engine's 'recovering' and 'unknown' branches are unreachable:
	// failed steps are the blocked ones.
	if blocked > 0 {
		c.HealthStatus = "blocked"
	} else {
		c.HealthStatus = "healthy"
	}
	c.CompletionPercentage = percent(c.CompletedSteps, c.TotalSteps, 2)
	return c
}

// CoreTasksSupported is nil when the per-task context and steps routes can
// be computed: on tasker-core once the attachment says the database is
// core's, else as Supported says.
func (s *Service) CoreTasksSupported() error { return s.CorePerformanceSupported() }

// OnCore reports whether the attachment says the database is tasker-core's.
func (s *Service) OnCore() bool {
	e, ok := s.attachedEngine()
	return ok && e.Kind == engine.KindCore
}

// readCoreLookup is readCore in the lookup admission class.
func (s *Service) readCoreLookup(ctx context.Context, name string, fn func(q querier) error) error {
	return s.readGated(ctx, ClassLookup, name, false, func(q querier) error {
		if err := s.requireCore(ctx, q); err != nil {
			return err
		}
		return fn(q)
	})
}

// CoreTaskContexts returns the execution contexts of the tasker-core tasks
// of ids (canonical lower-case UUIDs) that exist, in uuid order, and the
// ids that do not exist.
func (s *Service) CoreTaskContexts(ctx context.Context, ids []string) ([]CoreTaskContext, []string, error) {
	var out []CoreTaskContext
	var missing []string
	err := s.readCoreLookup(ctx, "task_context", func(q querier) error {
		tasks, err := loadCoreTasks(ctx, q, ids)
		if err != nil {
			return err
		}
		out = make([]CoreTaskContext, len(tasks))
		for i, t := range tasks {
			out[i] = t.context()
		}
		missing = missingUUIDs(ids, tasks)
		return nil
	})
	return out, missing, err
}

// CoreTaskSteps returns the step readiness of the tasker-core tasks of ids
// that exist, in uuid order, and the ids that do not exist.
func (s *Service) CoreTaskSteps(ctx context.Context, ids []string) ([]CoreTaskSteps, []string, error) {
	var out []CoreTaskSteps
	var missing []string
	err := s.readCoreLookup(ctx, "task_steps", func(q querier) error {
		tasks, err := loadCoreTasks(ctx, q, ids)
		if err != nil {
			return err
		}
		out = make([]CoreTaskSteps, len(tasks))
		for i, t := range tasks {
			steps := t.steps
			if steps == nil {
				steps = []CoreStepReadiness{}
			}
			out[i] = CoreTaskSteps{TaskUUID: t.uuid, Steps: steps}
		}
		missing = missingUUIDs(ids, tasks)
		return nil
	})
	return out, missing, err
}

func missingUUIDs(ids []string, tasks []*coreTask) []string {
	return missingKeys(ids, tasks, func(t *coreTask) string { return t.uuid })
}
