package analytics

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

var coreEdgesSQL = mustSQL("core_edges.sql")

// CoreTaskGraph is the graph analysis of one tasker-core task: Rails'
// TaskGraph with every task and step id a UUID string and the task's
// execution context as the core context route answers it.
type CoreTaskGraph = TaskGraphOf[string, CoreTaskContext]

// coreReadyStates are the states a tasker-core step is made ready from
// (evaluate_step_state_readiness, as sql/core_readiness.sql applies it):
// pending and waiting_for_retry.
var coreReadyStates = engine.Core().StepStates.Waiting

func coreReadyState(s string) bool { return slices.Contains(coreReadyStates, s) }

// coreGraph analyzes one tasker-core task. The analyzer works on int64
// keys: each step gets its 1-based position in t.steps, which are in step
// uuid order, so that every ascending order of keys the analysis produces
// is the uuid order (lower-case canonical text sorts as PostgreSQL sorts
// uuids); parents outside the task get keys past the steps', which the
// output never shows (analyzeGraph leaves such edges out of the
// structure). edges are (from, to) uuids ending at the task's steps.
func coreGraph(t *coreTask, edges [][2]string, maxPaths int) CoreTaskGraph {
	keys := make(map[string]int64, len(t.steps))
	uuids := make([]string, len(t.steps))
	steps := make([]StepReadiness, len(t.steps))
	failing := int64(0)
	for i, s := range t.steps {
		k := int64(i + 1)
		keys[s.WorkflowStepUUID], uuids[i] = k, s.WorkflowStepUUID
		steps[i] = StepReadiness{
			WorkflowStepID: k, Name: s.Name, CurrentState: s.CurrentState,
			DependenciesSatisfied: s.DependenciesSatisfied, RetryEligible: s.RetryEligible,
			ReadyForExecution: s.ReadyForExecution, LastFailureAt: s.LastFailureAt, NextRetryAt: s.NextRetryAt,
			TotalParents: s.TotalParents, CompletedParents: s.CompletedParents, Attempts: s.Attempts,
			RetryLimit: s.MaxAttempts, BackoffRequestSeconds: s.BackoffRequestSeconds, LastAttemptedAt: s.LastAttemptedAt,
		}
		steps[i].deriveWith(t.now, coreReadyState)
		if coreSemantics.failing(s.CurrentState) {
			failing++
		}
	}
	key := func(u string) int64 {
		k, ok := keys[u]
		if !ok {
			k = int64(len(keys) + 1)
			keys[u] = k
		}
		return k
	}
	keyed := make([][2]int64, len(edges))
	for i, e := range edges {
		keyed[i] = [2]int64{key(e[0]), key(e[1])}
	}
	c := t.context()
	gc := graphContext{TotalSteps: c.TotalSteps, PendingSteps: c.PendingSteps, FailedSteps: failing,
		ReadySteps: c.ReadySteps, CompletionPercentage: c.CompletionPercentage, HealthStatus: c.HealthStatus}
	g := newAnalyzer(steps, keyed, gc, coreSemantics, func(k int64) string { return uuids[k-1] })
	return buildGraph(g, t.uuid, c, t.now, maxPaths)
}

// coreEdges reads the edges ending at the steps of the given tasks, by
// task uuid.
func coreEdges(ctx context.Context, q querier, taskIDs []string) (map[string][][2]string, error) {
	rows, err := q.Query(ctx, coreEdgesSQL, taskIDs)
	if err != nil {
		return nil, fmt.Errorf("query step edges: %w", err)
	}
	out := map[string][][2]string{}
	var task, from, to string
	_, err = pgx.ForEachRow(rows, []any{&task, &from, &to}, func() error {
		out[task] = append(out[task], [2]string{from, to})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read step edges: %w", err)
	}
	return out, nil
}

// CoreTaskGraphs returns the graph analysis of the tasker-core tasks of ids
// that exist, in uuid order, and the ids that do not exist.
func (s *Service) CoreTaskGraphs(ctx context.Context, ids []string) ([]CoreTaskGraph, []string, error) {
	var out []CoreTaskGraph
	var missing []string
	err := s.readCoreLookup(ctx, "task_graph", func(q querier) error {
		tasks, err := loadCoreTasks(ctx, q, ids)
		if err != nil {
			return err
		}
		found := make([]string, len(tasks))
		for i, t := range tasks {
			found[i] = t.uuid
		}
		var edges map[string][][2]string
		if len(tasks) > 0 {
			if edges, err = coreEdges(ctx, q, found); err != nil {
				return err
			}
		}
		out = make([]CoreTaskGraph, len(tasks))
		for i, t := range tasks {
			out[i] = coreGraph(t, edges[t.uuid], maxPaths)
		}
		missing = missingUUIDs(ids, tasks)
		return nil
	})
	return out, missing, err
}
