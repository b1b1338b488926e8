package simulate

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// LiveCore is Live for a tasker-core database. It creates rate tasks per
// second and plays each task's plan in real time, one transaction per
// transition as the engine writes them (task_transition.rs,
// workflow_step_transition.rs): sort_key = max + 1, the previous row's
// most_recent cleared, created_at = now(), keys from the column defaults.
// To exercise readers of the transition stream, about one transaction in
// three hundred is held open for 2 to 6 s before it commits (so it commits after
// rows with later keys and created_at), and about one in a hundred is
// rolled back (its keys never commit) and then redone. Tasks it finds in the
// database are not adopted: in-flight tasks of an earlier run stay as they
// were left. Stopping finishes the transitions under way.
func LiveCore(ctx context.Context, pool *pgxpool.Pool, rate float64, duration time.Duration, opts Options, progress func(Stats)) (Stats, error) {
	start := time.Now()
	opts, err := liveOptions(pool, rate, duration, opts)
	if err != nil {
		return Stats{}, err
	}
	cat, err := loadCoreCatalog(ctx, pool, opts)
	if err != nil {
		return Stats{}, fmt.Errorf("live: %w", err)
	}
	l := &coreLive{pool: pool, cat: cat, opts: opts, picker: newPicker(cat.catalog)}
	stats, err := l.run(ctx, rate, duration, progress, start)
	stats.Elapsed = time.Since(start)
	if err != nil {
		return stats, fmt.Errorf("live: %w", err)
	}
	return stats, nil
}

type coreLive struct {
	pool   *pgxpool.Pool
	cat    *coreCatalog
	opts   Options
	picker *picker
}

// coreTask is a task in flight: its plan, its keys and the next op.
type coreTask struct {
	p       *corePlan
	r       *rand.Rand
	id      [16]byte
	stepIDs [][16]byte
	next    int           // index into p.ops
	shift   time.Duration // plan time → wall clock
}

func (t *coreTask) due() (time.Time, bool) {
	if t == nil || t.next >= len(t.p.ops) {
		return time.Time{}, false
	}
	return t.p.ops[t.next].at.Add(t.shift), true
}

type coreHeap []*coreTask

func (h coreHeap) Len() int { return len(h) }
func (h coreHeap) Less(i, j int) bool {
	a, _ := h[i].due()
	b, _ := h[j].due()
	return a.Before(b)
}
func (h coreHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *coreHeap) Push(x any)   { *h = append(*h, x.(*coreTask)) }
func (h *coreHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

type coreResult struct {
	t     *coreTask
	delta Stats
	err   error
}

func (l *coreLive) run(ctx context.Context, rate float64, duration time.Duration, progress func(Stats), start time.Time) (Stats, error) {
	workers := l.opts.Workers
	jobs := make(chan *coreTask)
	results := make(chan coreResult, workers)
	wctx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for t := range jobs {
				results <- l.work(wctx, t)
			}
		})
	}
	defer wg.Wait()
	defer close(jobs)

	rng := rand.New(rand.NewPCG(uint64(l.opts.Seed), 7))
	var (
		h        coreHeap
		stats    Stats
		firstErr error
		inflight int
		seq      uint64
		stopping bool
		stopAt   time.Time
		nextNew  time.Time
	)
	if duration > 0 {
		stopAt = time.Now().Add(duration)
	}
	if rate > 0 {
		nextNew = time.Now()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	done := ctx.Done()
	for {
		now := time.Now()
		if !stopping && (ctx.Err() != nil || (!stopAt.IsZero() && !now.Before(stopAt))) {
			stopping, done = true, nil
		}
		if stopping && inflight == 0 {
			break
		}
		if !stopping {
			for !nextNew.IsZero() && inflight < workers && !now.Before(nextNew) && h.Len()+inflight < l.opts.MaxActive {
				seq++
				r := rand.New(rand.NewPCG(uint64(l.opts.Seed), 1<<58+seq))
				p := planCoreTask(l.picker.pick(r, 0), r, &l.opts, now)
				jobs <- &coreTask{p: p, r: r}
				inflight++
				nextNew = maxTime(nextNew.Add(time.Duration(rng.ExpFloat64()/rate*float64(time.Second))), now.Add(-time.Second))
			}
			for inflight < workers && h.Len() > 0 {
				at, _ := h[0].due()
				if at.After(now) {
					break
				}
				jobs <- heap.Pop(&h).(*coreTask)
				inflight++
			}
		}
		wait := time.Hour
		if !stopping {
			if !nextNew.IsZero() {
				wait = min(wait, nextNew.Sub(now))
			}
			if h.Len() > 0 {
				at, _ := h[0].due()
				wait = min(wait, at.Sub(now))
			}
			if !stopAt.IsZero() {
				wait = min(wait, stopAt.Sub(now))
			}
		}
		timer.Reset(max(wait, time.Millisecond))
		select {
		case <-done:
		case <-timer.C:
		case r := <-results:
			inflight--
			stats.add(r.delta)
			if r.err != nil {
				if firstErr == nil {
					firstErr = r.err
				}
				stopping, done = true, nil
				continue
			}
			if _, ok := r.t.due(); ok {
				heap.Push(&h, r.t)
			}
		case <-tick.C:
			if progress != nil {
				s := stats
				s.Active = int64(h.Len() + inflight)
				s.Elapsed = time.Since(start)
				progress(s)
			}
		}
	}
	stats.Active = int64(h.Len())
	return stats, firstErr
}

// work creates the task (t.id unset) or writes its ops that are due.
func (l *coreLive) work(ctx context.Context, t *coreTask) coreResult {
	var s Stats
	if t.stepIDs == nil {
		// Now and then the creating transaction rolls back: its keys never
		// commit, and the task is dropped.
		if t.r.IntN(50) == 0 {
			err := l.create(ctx, t, true)
			if !errors.Is(err, errRolledBack) {
				return coreResult{err: err}
			}
			t.next = len(t.p.ops)
			return coreResult{t: t}
		}
		if err := l.create(ctx, t, false); err != nil {
			return coreResult{err: err}
		}
		s.Tasks, s.Steps, s.Edges = 1, int64(len(t.p.steps)), int64(len(t.p.def.edges))
		s.TaskTransitions, s.StepTransitions = 1, int64(len(t.p.steps))
		return coreResult{t: t, delta: s}
	}
	for range 32 {
		at, ok := t.due()
		if !ok || at.After(time.Now()) {
			break
		}
		op := t.p.ops[t.next]
		if t.r.IntN(100) == 0 {
			if err := l.write(ctx, t, op, rollBack); !errors.Is(err, errRolledBack) {
				return coreResult{t: t, delta: s, err: err}
			}
		}
		hold := time.Duration(0)
		if t.r.IntN(300) == 0 {
			hold = 2*time.Second + time.Duration(t.r.Int64N(int64(4*time.Second)))
		}
		if err := l.write(ctx, t, op, hold); err != nil {
			return coreResult{t: t, delta: s, err: err}
		}
		if op.step < 0 {
			s.TaskTransitions++
		} else {
			s.StepTransitions++
		}
		t.next++
		if hold > 0 {
			break
		}
	}
	return coreResult{t: t, delta: s}
}

var errRolledBack = errors.New("rolled back on purpose")

// rollBack as a hold makes write roll its transaction back.
const rollBack = time.Duration(-1)

// create inserts the task, its steps and edges and the initial pending
// transitions in one transaction, as the engine's task initializer does; the
// keys come from the column defaults, the correlation id from the client
// (Uuid::now_v7 in the engine).
func (l *coreLive) create(ctx context.Context, t *coreTask, abort bool) error {
	p := t.p
	t.shift = time.Since(p.createdAt)
	corr, err := uuid.NewV7()
	if err != nil {
		return err
	}
	n := 1 + len(p.steps) // the creating ops
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var id pgtype.UUID
		err := tx.QueryRow(ctx, `INSERT INTO tasker.tasks (named_task_uuid, complete, requested_at, initiator, source_system,
				reason, tags, context, identity_hash, priority, correlation_id, created_at, updated_at)
			VALUES ($1, false, now(), $2, $3, $4, $5, $6, $7, $8, $9, now(), now()) RETURNING task_uuid`,
			l.cat.task[p.def], p.initiator, p.source, p.reason, p.tags, p.context, p.identity, p.priority, [16]byte(corr)).Scan(&id)
		if err != nil {
			return fmt.Errorf("insert task: %w", err)
		}
		t.id = id.Bytes
		t.stepIDs = make([][16]byte, len(p.steps))
		for i, s := range p.steps {
			var sid pgtype.UUID
			err := tx.QueryRow(ctx, `INSERT INTO tasker.workflow_steps (task_uuid, named_step_uuid, retryable, max_attempts,
					inputs, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, now(), now()) RETURNING workflow_step_uuid`,
				t.id, l.cat.step[p.def.steps[i].name], s.retryable, s.maxAttempts, s.inputs).Scan(&sid)
			if err != nil {
				return fmt.Errorf("insert step: %w", err)
			}
			t.stepIDs[i] = sid.Bytes
		}
		b := &pgx.Batch{}
		for _, e := range p.def.edges {
			b.Queue(`INSERT INTO tasker.workflow_step_edges (from_step_uuid, to_step_uuid, name, created_at, updated_at)
				VALUES ($1, $2, 'provides', now(), now())`, t.stepIDs[e[0]], t.stepIDs[e[1]])
		}
		for _, op := range p.ops[:n] {
			queueTransition(b, t, op)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		if abort {
			return errRolledBack
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, errRolledBack) {
			return err
		}
		return fmt.Errorf("create task: %w", err)
	}
	t.next = n
	return nil
}

// queueTransition queues the engine's three statements for one transition:
// clear most_recent, insert max(sort_key) + 1, update the owner's columns.
func queueTransition(b *pgx.Batch, t *coreTask, op coreOp) {
	var from any
	if op.from != "" {
		from = op.from
	}
	if op.step < 0 {
		meta, tmeta := jsonOrEmpty(op.meta), any("{}")
		if op.transitionMeta {
			meta, tmeta = "{}", jsonOrEmpty(op.meta)
		}
		b.Queue(`UPDATE tasker.task_transitions SET most_recent = false, updated_at = now()
			WHERE task_uuid = $1 AND most_recent`, t.id)
		b.Queue(`INSERT INTO tasker.task_transitions (task_uuid, to_state, from_state, metadata, transition_metadata,
				sort_key, most_recent, created_at, updated_at)
			SELECT $1, $2, $3, $4, $5, COALESCE(MAX(sort_key), 0) + 1, true, now(), now()
			FROM tasker.task_transitions WHERE task_uuid = $1`, t.id, op.to, from, meta, tmeta)
		if op.taskDone {
			b.Queue(`UPDATE tasker.tasks SET complete = true, completed_at = now(), updated_at = now() WHERE task_uuid = $1`, t.id)
		}
		return
	}
	id := t.stepIDs[op.step]
	b.Queue(`UPDATE tasker.workflow_step_transitions SET most_recent = false, updated_at = now()
		WHERE workflow_step_uuid = $1 AND most_recent`, id)
	b.Queue(`INSERT INTO tasker.workflow_step_transitions (workflow_step_uuid, to_state, from_state, metadata,
			sort_key, most_recent, created_at, updated_at)
		SELECT $1, $2, $3, $4, COALESCE(MAX(sort_key), 0) + 1, true, now(), now()
		FROM tasker.workflow_step_transitions WHERE workflow_step_uuid = $1`, id, op.to, from, jsonOrEmpty(op.meta))
	if op.cols != nil && op.from != "" {
		c := op.cols
		var attempts any
		if c.attempts > 0 {
			attempts = c.attempts
		}
		b.Queue(`UPDATE tasker.workflow_steps SET attempts = $2,
				last_attempted_at = CASE WHEN $3::text = $8::text THEN now()::timestamp ELSE last_attempted_at END,
				processed_at = CASE WHEN $4 THEN now()::timestamp END,
				backoff_request_seconds = $5, in_process = $6, processed = $4, results = $7::jsonb, updated_at = now()
			WHERE workflow_step_uuid = $1`,
			id, attempts, op.to, c.processed, nullInt(c.backoff), c.inProcess, nullBytes(c.results), engine.InProgress)
	}
}

// write runs one op in its own transaction; hold > 0 keeps the transaction
// open that long after its writes, rollBack rolls it back.
func (l *coreLive) write(ctx context.Context, t *coreTask, op coreOp, hold time.Duration) error {
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		queueTransition(b, t, op)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		if hold == rollBack {
			return errRolledBack
		}
		if hold > 0 {
			time.Sleep(hold)
		}
		return nil
	})
	if err != nil && !errors.Is(err, errRolledBack) {
		return fmt.Errorf("task %s → %s: %w", uuidString(t.id), op.to, err)
	}
	return err
}
