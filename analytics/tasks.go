package analytics

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// TaskContext is get_task_execution_context for one task, plus the
// permanently blocked count its decision tables use internally.
type TaskContext struct {
	TaskID               int64   `json:"task_id"`
	NamedTaskID          int32   `json:"named_task_id"`
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

	PermanentlyBlockedSteps int64 `json:"permanently_blocked_steps"`
}

// TaskSteps is the readiness of one task's steps.
type TaskSteps struct {
	TaskID int64           `json:"task_id"`
	Steps  []StepReadiness `json:"steps"`
}

// taskData is everything the per-task endpoints derive their answers from,
// read in one transaction.
type taskData struct {
	taskID      int64
	namedTaskID int32
	status      string
	edges       [][2]int64 // parent, child; only edges ending at this task's steps
	steps       []StepReadiness
	now         time.Time
}

// loadTasks reads the tasks of ids that exist, in id order, with their
// steps' readiness and incoming edges.
func loadTasks(ctx context.Context, q querier, ids []int64) ([]*taskData, error) {
	rows, err := q.Query(ctx, taskGraphSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("query tasks: %w", err)
	}
	tasks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*taskData, error) {
		var t taskData
		var edges [][]int64
		if err := row.Scan(&t.taskID, &t.namedTaskID, &t.status, &edges, &t.now); err != nil {
			return nil, err
		}
		for _, e := range edges {
			if len(e) == 2 {
				t.edges = append(t.edges, [2]int64{e[0], e[1]})
			}
		}
		return &t, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read tasks: %w", err)
	}
	if len(tasks) == 0 {
		return nil, nil
	}
	found := make([]int64, len(tasks))
	for i, t := range tasks {
		found[i] = t.taskID
	}
	steps, err := readiness(ctx, q, found, tasks[0].now)
	if err != nil {
		return nil, err
	}
	byTask := make(map[int64]*taskData, len(tasks))
	for _, t := range tasks {
		byTask[t.taskID] = t
	}
	for _, s := range steps {
		if t := byTask[s.TaskID]; t != nil {
			t.steps = append(t.steps, s)
		}
	}
	return tasks, nil
}

// context applies get_task_execution_context's decision tables to the
// readiness rows.
func (t *taskData) context() TaskContext {
	c := TaskContext{TaskID: t.taskID, NamedTaskID: t.namedTaskID, Status: t.status}
	for i := range t.steps {
		s := &t.steps[i]
		c.TotalSteps++
		switch s.CurrentState {
		case StatePending:
			c.PendingSteps++
		case StateInProgress:
			c.InProgressSteps++
		case StateComplete, StateResolvedManually:
			c.CompletedSteps++
		case StateError:
			c.FailedSteps++
			if s.Exhausted() {
				c.PermanentlyBlockedSteps++
			}
		}
		if s.ReadyForExecution {
			c.ReadySteps++
		}
	}
	switch {
	case c.ReadySteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "has_ready_steps", "execute_ready_steps"
	case c.InProgressSteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "processing", "wait_for_completion"
	case c.PermanentlyBlockedSteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "blocked_by_failures", "handle_failures"
	case c.CompletedSteps == c.TotalSteps && c.TotalSteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "all_complete", "finalize_task"
	default:
		c.ExecutionStatus, c.RecommendedAction = "waiting_for_dependencies", "wait_for_dependencies"
	}
	switch {
	case c.FailedSteps == 0:
		c.HealthStatus = "healthy"
	case c.ReadySteps > 0:
		c.HealthStatus = "recovering"
	case c.PermanentlyBlockedSteps > 0:
		c.HealthStatus = "blocked"
	default:
		c.HealthStatus = "recovering"
	}
	c.CompletionPercentage = percent(c.CompletedSteps, c.TotalSteps, 2)
	return c
}

// percent is ROUND(part / whole * 100, places) in exact integer arithmetic,
// half away from zero, as PostgreSQL rounds numerics; "0.0" when whole is 0.
// The values are non-negative counts.
func percent(part, whole int64, places int) Decimal {
	if whole <= 0 {
		return "0.0"
	}
	scale := int64(1)
	for range places {
		scale *= 10
	}
	// part*100*scale/whole, rounded: (2n + d) / 2d.
	n := part * 100 * scale
	r := (2*n + whole) / (2 * whole)
	whole10 := strconv.FormatInt(r/scale, 10)
	frac := strconv.FormatInt(r%scale, 10)
	for len(frac) < places {
		frac = "0" + frac
	}
	return Decimal(whole10 + "." + frac)
}

// TaskContexts returns the execution contexts of the tasks of ids that
// exist, ordered by task id, and the ids that do not exist.
func (s *Service) TaskContexts(ctx context.Context, ids []int64) ([]TaskContext, []int64, error) {
	var out []TaskContext
	var missing []int64
	err := s.read(ctx, ClassLookup, "task_context", func(q querier) error {
		tasks, err := loadTasks(ctx, q, ids)
		if err != nil {
			return err
		}
		out = make([]TaskContext, len(tasks))
		for i, t := range tasks {
			out[i] = t.context()
		}
		missing = missingIDs(ids, tasks)
		return nil
	})
	return out, missing, err
}

// TaskSteps returns the step readiness of the tasks of ids that exist,
// ordered by task id, and the ids that do not exist.
func (s *Service) TaskSteps(ctx context.Context, ids []int64) ([]TaskSteps, []int64, error) {
	var out []TaskSteps
	var missing []int64
	err := s.read(ctx, ClassLookup, "task_steps", func(q querier) error {
		tasks, err := loadTasks(ctx, q, ids)
		if err != nil {
			return err
		}
		out = make([]TaskSteps, len(tasks))
		for i, t := range tasks {
			steps := t.steps
			if steps == nil {
				steps = []StepReadiness{}
			}
			out[i] = TaskSteps{TaskID: t.taskID, Steps: steps}
		}
		missing = missingIDs(ids, tasks)
		return nil
	})
	return out, missing, err
}

// TaskGraphs returns the dependency graph analysis of the tasks of ids that
// exist, ordered by task id, and the ids that do not exist.
func (s *Service) TaskGraphs(ctx context.Context, ids []int64) ([]TaskGraph, []int64, error) {
	var out []TaskGraph
	var missing []int64
	err := s.read(ctx, ClassLookup, "task_graph", func(q querier) error {
		tasks, err := loadTasks(ctx, q, ids)
		if err != nil {
			return err
		}
		out = make([]TaskGraph, len(tasks))
		for i, t := range tasks {
			out[i] = analyzeGraph(t, maxPaths)
		}
		missing = missingIDs(ids, tasks)
		return nil
	})
	return out, missing, err
}

// missingKeys returns the ids of ids that no task has, once each, in the
// order asked: for either engine's keys (Rails' ids, tasker-core's UUIDs).
func missingKeys[ID comparable, T any](ids []ID, tasks []T, key func(T) ID) []ID {
	found := make(map[ID]bool, len(tasks))
	for _, t := range tasks {
		found[key(t)] = true
	}
	missing := []ID{}
	for _, id := range ids {
		if !found[id] && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	return missing
}

func missingIDs(ids []int64, tasks []*taskData) []int64 {
	return missingKeys(ids, tasks, func(t *taskData) int64 { return t.taskID })
}
