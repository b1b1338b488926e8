package simulate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// BulkCore is Bulk for a tasker-core database (schema tasker): tasks spread
// over opts.History up to opts.Now, each planned through tasker-core's state
// machines and written up to Now, with COPY, one transaction per batch.
// Keys are UUIDv7 made here from each row's own creation time, which is what
// uuid_generate_v7() would have returned when the engine wrote the row (the
// column defaults would stamp them all with the load's time instead, and cost
// a function call per row).
func BulkCore(ctx context.Context, pool *pgxpool.Pool, tasks int, opts Options, progress func(done int)) (Stats, error) {
	start := time.Now()
	opts, err := bulkOptions(tasks, opts)
	if err != nil {
		return Stats{}, err
	}
	cat, err := loadCoreCatalog(ctx, pool, opts)
	if err != nil {
		return Stats{}, err
	}
	pick := newPicker(cat.catalog)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	batches := (tasks + opts.BatchSize - 1) / opts.BatchSize
	gens := max(1, runtime.GOMAXPROCS(0))
	writers := int(min(max(pool.Config().MaxConns-1, 1), 2))

	jobs := make(chan int)
	out := make(chan *coreBatch, writers)
	var gwg sync.WaitGroup
	for range gens {
		gwg.Go(func() {
			for bi := range jobs {
				b := genCoreBatch(cat, pick, &opts, tasks, bi)
				select {
				case out <- b:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	go func() {
		defer close(jobs)
		for bi := range batches {
			select {
			case jobs <- bi:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { gwg.Wait(); close(out) }()
	stats := writeBatches(ctx, cancel, pool, out, writers, opts.SkipFKChecks, progress)
	return finishBulk(ctx, stats, start)
}

// coreBatch holds COPY rows, ready to send.
type coreBatch struct {
	tasks                        int
	taskRows, stepRows, edgeRows [][]any
	taskTransRows, stepTransRows [][]any
}

func genCoreBatch(cat *coreCatalog, pick *picker, opts *Options, total, bi int) *coreBatch {
	lo := bi * opts.BatchSize
	hi := min(lo+opts.BatchSize, total)
	b := &coreBatch{tasks: hi - lo}
	seed := uint64(opts.Seed)
	for i := lo; i < hi; i++ {
		r := rand.New(rand.NewPCG(seed, uint64(i)|1<<59))
		u := 1 - (float64(i)+r.Float64())/float64(total)
		age := time.Duration(float64(opts.History) * u * u).Truncate(time.Microsecond)
		p := planCoreTask(pick.pick(r, age), r, opts, opts.Now.Add(-age))
		b.add(cat, p, r, opts.Now)
	}
	return b
}

// add writes the part of plan p that happened by now, the way the engine left
// it: sort_key 1, 2, …, from_state the previous state, most_recent on the
// last row only, a superseded row's updated_at the time it was superseded.
func (b *coreBatch) add(cat *coreCatalog, p *corePlan, r *rand.Rand, now time.Time) {
	taskID := uuidV7At(p.createdAt, r)
	stepIDs := make([][16]byte, len(p.steps))
	for i := range p.steps {
		stepIDs[i] = uuidV7At(p.createdAt, r)
	}
	type last struct {
		row  int // index in the transition rows; -1 none
		sort int32
	}
	lastTask := last{row: -1}
	lastStep := make([]last, len(p.steps))
	for i := range lastStep {
		lastStep[i].row = -1
	}
	cols := make([]coreStepCols, len(p.steps))
	stepUpdated := make([]time.Time, len(p.steps))
	for i := range stepUpdated {
		stepUpdated[i] = p.createdAt
	}
	var completedAt any
	taskUpdated := p.createdAt
	for _, op := range p.ops {
		if op.at.After(now) {
			break
		}
		id := uuidV7At(op.at, r)
		var from any
		if op.from != "" {
			from = op.from
		}
		if op.step < 0 {
			if lastTask.row >= 0 {
				b.taskTransRows[lastTask.row][7] = false
				b.taskTransRows[lastTask.row][9] = op.at
			}
			meta, tmeta := jsonOrEmpty(op.meta), any("{}")
			if op.transitionMeta {
				meta, tmeta = "{}", jsonOrEmpty(op.meta)
			}
			lastTask.sort++
			b.taskTransRows = append(b.taskTransRows, []any{id, taskID, op.to, from, meta, tmeta, lastTask.sort, true, op.at, op.at})
			lastTask.row = len(b.taskTransRows) - 1
			taskUpdated = op.at
			if op.taskDone {
				completedAt = op.at
			}
			continue
		}
		l := &lastStep[op.step]
		if l.row >= 0 {
			b.stepTransRows[l.row][6] = false
			b.stepTransRows[l.row][8] = op.at
		}
		l.sort++
		b.stepTransRows = append(b.stepTransRows, []any{id, stepIDs[op.step], op.to, from, jsonOrEmpty(op.meta), l.sort, true, op.at, op.at})
		l.row = len(b.stepTransRows) - 1
		if op.cols != nil && op.from != "" {
			cols[op.step] = *op.cols
			stepUpdated[op.step] = op.at
		}
	}
	b.taskRows = append(b.taskRows, []any{taskID, cat.task[p.def], completedAt != nil, p.createdAt, completedAt,
		p.initiator, p.source, p.reason, p.tags, p.context, p.identity, p.createdAt, taskUpdated, p.priority, p.correlation})
	for i, s := range p.steps {
		c := cols[i]
		var attempts any
		if c.attempts > 0 {
			attempts = c.attempts
		}
		b.stepRows = append(b.stepRows, []any{stepIDs[i], taskID, cat.step[p.def.steps[i].name], s.retryable, s.maxAttempts,
			c.inProcess, c.processed, nullTime(c.processedAt), attempts, nullTime(c.lastAttempted), nullInt(c.backoff),
			s.inputs, nullBytes(c.results), p.createdAt, stepUpdated[i]})
	}
	for _, e := range p.def.edges {
		b.edgeRows = append(b.edgeRows, []any{uuidV7At(p.createdAt, r), stepIDs[e[0]], stepIDs[e[1]], "provides", p.createdAt, p.createdAt})
	}
}

func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

func (b *coreBatch) write(ctx context.Context, pool *pgxpool.Pool, skipFK bool) (Stats, error) {
	var s Stats
	t := engine.Core().Tables
	copies := []struct {
		table string
		cols  []string
		rows  [][]any
		n     *int64
	}{
		{t.Tasks, []string{"task_uuid", "named_task_uuid", "complete", "requested_at", "completed_at", "initiator",
			"source_system", "reason", "tags", "context", "identity_hash", "created_at", "updated_at", "priority", "correlation_id"},
			b.taskRows, &s.Tasks},
		{t.Steps, []string{"workflow_step_uuid", "task_uuid", "named_step_uuid", "retryable", "max_attempts", "in_process",
			"processed", "processed_at", "attempts", "last_attempted_at", "backoff_request_seconds", "inputs", "results",
			"created_at", "updated_at"}, b.stepRows, &s.Steps},
		{t.StepEdges, []string{"workflow_step_edge_uuid", "from_step_uuid", "to_step_uuid", "name", "created_at", "updated_at"},
			b.edgeRows, &s.Edges},
		{t.TaskTransitions, []string{"task_transition_uuid", "task_uuid", "to_state", "from_state", "metadata",
			"transition_metadata", "sort_key", "most_recent", "created_at", "updated_at"}, b.taskTransRows, &s.TaskTransitions},
		{t.StepTransitions, []string{"workflow_step_transition_uuid", "workflow_step_uuid", "to_state", "from_state",
			"metadata", "sort_key", "most_recent", "created_at", "updated_at"}, b.stepTransRows, &s.StepTransitions},
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if skipFK {
			if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
				return fmt.Errorf("skip foreign-key checks: %w", err)
			}
		}
		for _, c := range copies {
			n, err := tx.CopyFrom(ctx, pgx.Identifier{engine.Core().Schema, tableName(c.table)}, c.cols, pgx.CopyFromRows(c.rows))
			if err != nil {
				return fmt.Errorf("copy into %s: %w", c.table, err)
			}
			*c.n = n
		}
		return nil
	})
	if err != nil {
		return Stats{}, err
	}
	return s, nil
}

// tableName strips the schema from a qualified table name.
func tableName(q string) string {
	for i := len(q) - 1; i >= 0; i-- {
		if q[i] == '.' {
			return q[i+1:]
		}
	}
	return q
}
