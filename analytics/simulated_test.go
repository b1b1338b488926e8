package analytics

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

// simulated fills a fresh Tasker database with a realistic workload whose
// history spans every window, and returns it with the yardsticks installed.
func simulated(t *testing.T, tasks int) pgtest.DB {
	t.Helper()
	db := pgtest.NewTasker(t)
	installYardsticks(t, db)
	pool, err := pgxpool.New(context.Background(), db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := testCtx(t)
	if _, err := simulate.Bulk(ctx, pool, tasks, simulate.Options{
		Seed:      1,
		History:   30 * time.Hour,
		ErrorRate: 0.1,
		// A higher operator rate leaves resolved and retried tasks behind.
		ManualResolveRate: 0.6,
	}, nil); err != nil {
		t.Fatal(err)
	}
	return db
}

func allTaskIDs(t *testing.T, f *fixture) []int64 {
	t.Helper()
	rows, err := f.tx.Query(f.ctx, "SELECT task_id FROM tasker_tasks ORDER BY task_id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestYardsticksOnSimulatedWorkload checks every compatible number against
// Tasker's functions on data the simulator wrote the way the engine does.
func TestYardsticksOnSimulatedWorkload(t *testing.T) {
	db := simulated(t, 600)
	f := newFixture(t, db)
	now := f.now()

	for _, since := range []*time.Time{nil, ptr(now.Add(-90 * time.Minute)), ptr(now.Add(-48 * time.Hour))} {
		p, err := performance(f.ctx, f.tx, since)
		if err != nil {
			t.Fatal(err)
		}
		if p.PerformanceTrends.Last24Hours.TaskThroughput == 0 || p.PerformanceTrends.LastHour.CompletionCount == 0 {
			t.Fatalf("the simulated workload does not cover the windows: %+v", p.PerformanceTrends)
		}
		assertPerformanceMatchesYardstick(t, f, p, since)
	}

	ids := allTaskIDs(t, f)
	assertReadinessMatchesYardstick(t, f, ids)
	assertContextsMatchYardstick(t, f, ids)

	tasks, err := loadTasks(f.ctx, f.tx, ids)
	if err != nil {
		t.Fatal(err)
	}
	statuses := map[string]int{}
	for _, task := range tasks {
		statuses[task.context().ExecutionStatus]++
		g := analyzeGraph(task, maxPaths)
		rows, err := f.tx.Query(f.ctx, `SELECT workflow_step_id, dependency_level FROM calculate_dependency_levels($1)`, task.taskID)
		if err != nil {
			t.Fatal(err)
		}
		want, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (StepLevel, error) {
			var l StepLevel
			return l, row.Scan(&l.WorkflowStepID, &l.DependencyLevel)
		})
		if err != nil {
			t.Fatal(err)
		}
		if want == nil {
			want = []StepLevel{}
		}
		if !reflect.DeepEqual(g.DependencyLevels, want) {
			t.Errorf("task %d levels %v, calculate_dependency_levels %v", task.taskID, g.DependencyLevels, want)
		}
	}
	// The comparison means little unless the workload reaches most rows of
	// the decision table.
	if len(statuses) < 4 {
		t.Errorf("simulated tasks cover only execution statuses %v", statuses)
	}

	for _, q := range []BottleneckQuery{
		{PeriodHours: 24},
		{PeriodHours: 2},
		{PeriodHours: 24, Scope: Scope{Namespace: "payments"}},
		{PeriodHours: 6, Scope: Scope{Namespace: "fulfillment", Name: "ship_order", Version: "1.0.0"}},
	} {
		b, err := bottlenecks(f.ctx, f.tx, q, 10, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		assertSlowestMatchYardstick(t, f, q, 10, b)
	}
}

func ptr[T any](v T) *T { return &v }
