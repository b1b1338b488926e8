package simulate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

func TestLiveInvariants(t *testing.T) {
	db := pgtest.NewTasker(t)
	pool := newPool(t, db.URL, func(c *pgxpool.Config) {
		tokyo(c)
		c.MaxConns = 3
	})
	ctx := context.Background()
	// Recent history leaves tasks in flight for Live to adopt.
	bulkNow := time.Now().UTC()
	before, err := simulate.Bulk(ctx, pool, 300, simulate.Options{Seed: 3, Now: bulkNow, History: 10 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var reports []simulate.Stats
	stats, err := simulate.Live(ctx, pool, 40, 2*time.Second, simulate.Options{Seed: 3, ErrorRate: 0.2, Workers: 2},
		func(s simulate.Stats) {
			mu.Lock()
			reports = append(reports, s)
			mu.Unlock()
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bulk %+v\nlive %+v", before, stats)
	if stats.Tasks < 20 || stats.TaskTransitions == 0 || stats.StepTransitions == 0 || stats.Adopted == 0 {
		t.Errorf("live did too little: %+v", stats)
	}
	if stats.Elapsed < 2*time.Second || stats.Elapsed > 10*time.Second {
		t.Errorf("live ran %v, want about 2s", stats.Elapsed)
	}
	mu.Lock()
	if len(reports) == 0 {
		t.Error("no progress reports")
	}
	mu.Unlock()

	conn := db.Conn(t)
	total := before
	total.Tasks += stats.Tasks
	total.Steps += stats.Steps
	total.Edges += stats.Edges
	total.TaskTransitions += stats.TaskTransitions
	total.StepTransitions += stats.StepTransitions
	checkRowCounts(t, conn, total)
	checkInvariants(t, conn, time.Now())

	// Live advanced tasks Bulk left behind, not only its own.
	n := count(t, conn, `SELECT count(*) FROM tasker_workflow_step_transitions st
		JOIN tasker_workflow_steps ws USING (workflow_step_id) JOIN tasker_tasks t USING (task_id)
		WHERE t.created_at <= $1::timestamp AND st.created_at > $1::timestamp`, bulkNow)
	if n == 0 {
		t.Error("no adopted task moved")
	}
	// Live's tasks got picked up and ran steps.
	n = count(t, conn, `SELECT count(*) FROM tasker_workflow_step_transitions st
		JOIN tasker_workflow_steps ws USING (workflow_step_id) JOIN tasker_tasks t USING (task_id)
		WHERE t.created_at > $1::timestamp AND st.to_state = 'complete'`, bulkNow)
	if n == 0 {
		t.Error("no step of a new task completed")
	}
}

func TestLiveStopsOnCancel(t *testing.T) {
	db := pgtest.NewTasker(t)
	pool := newPool(t, db.URL, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(700*time.Millisecond, cancel)
	start := time.Now()
	stats, err := simulate.Live(ctx, pool, 30, 0, simulate.Options{Seed: 5}, nil)
	if err != nil {
		t.Fatalf("cancel is a normal stop, got %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("stopped after %v", el)
	}
	if stats.Tasks == 0 {
		t.Errorf("no tasks created: %+v", stats)
	}
	checkInvariants(t, db.Conn(t), time.Now())
}

func TestLiveRejectsBadArguments(t *testing.T) {
	db := pgtest.NewTasker(t)
	pool := newPool(t, db.URL, nil)
	for _, tc := range []struct {
		name string
		rate float64
		dur  time.Duration
		opts simulate.Options
	}{
		{"negative rate", -1, time.Second, simulate.Options{}},
		{"negative duration", 1, -time.Second, simulate.Options{}},
		{"rate above 1", 1, time.Second, simulate.Options{ErrorRate: 1.5}},
		{"duplicate namespace", 1, time.Second, simulate.Options{Namespaces: []string{"a", "a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := simulate.Live(context.Background(), pool, tc.rate, tc.dur, tc.opts, nil); err == nil {
				t.Error("want an error")
			}
		})
	}
}
