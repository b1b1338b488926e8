package simulate

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Live produces ongoing activity in real time: it creates rate tasks per second
// (Poisson arrivals; 0 creates none) and advances them and the in-flight tasks
// it finds in the database (of the simulator's own named tasks) step by step,
// writing each transition in its own transaction as Statesman does. It stops
// when ctx is done or after duration (0: no limit); work under way finishes
// first, so every task is left in a consistent state. Stopping that way is not
// an error. progress, if not nil, gets the running totals about once a second,
// from Live's own goroutine.
//
// Live uses at most opts.Workers connections of pool at a time and keeps at
// most opts.MaxActive tasks in memory. Run one Live per database: two would
// advance the same adopted tasks.
func Live(ctx context.Context, pool *pgxpool.Pool, rate float64, duration time.Duration, opts Options, progress func(Stats)) (Stats, error) {
	start := time.Now()
	opts, err := liveOptions(pool, rate, duration, opts)
	if err != nil {
		return Stats{}, err
	}
	cat, err := loadCatalog(ctx, pool, opts)
	if err != nil {
		return Stats{}, fmt.Errorf("live: %w", err)
	}
	seqs, err := sequences(ctx, pool)
	if err != nil {
		return Stats{}, fmt.Errorf("live: %w", err)
	}
	l := &live{
		pool:   pool,
		cat:    cat,
		opts:   opts,
		prof:   liveProfile(),
		picker: newPicker(cat),
		seqs:   seqs,
		rng:    rand.New(rand.NewPCG(uint64(opts.Seed), 1<<62)),
	}
	adopted, err := l.adopt(ctx, min(opts.MaxActive/2, 1000))
	if err != nil {
		return Stats{}, fmt.Errorf("live: %w", err)
	}
	stats, err := l.run(ctx, start, rate, duration, adopted, progress)
	stats.Elapsed = time.Since(start)
	if err != nil {
		return stats, fmt.Errorf("live: %w", err)
	}
	return stats, nil
}

type live struct {
	pool   *pgxpool.Pool
	cat    *catalog
	opts   Options
	prof   profile
	picker *picker
	seqs   seqNames
	rng    *rand.Rand // the dispatcher's: arrival times
	seq    uint64     // the dispatcher's: streams handed to new tasks
}

type job struct {
	t      *taskSim // the task to advance, unless create
	create bool
	seq    uint64 // create: number of the task's random stream
}

type result struct {
	t     *taskSim
	delta Stats
	err   error
}

// run is the dispatcher: it owns the schedule and hands due work to workers,
// never more jobs than workers, so channel sends never block.
func (l *live) run(ctx context.Context, start time.Time, rate float64, duration time.Duration, adopted []*taskSim, progress func(Stats)) (Stats, error) {
	workers := l.opts.Workers
	jobs := make(chan job, workers)
	results := make(chan result, workers)
	// Writes outlive ctx so a transition under way commits and the simulated
	// task stays in step with the database.
	wctx := context.WithoutCancel(ctx)
	for range workers {
		go func() {
			for j := range jobs {
				results <- l.work(wctx, j)
			}
		}()
	}
	defer close(jobs)

	sched := &schedule{}
	for _, t := range adopted {
		sched.add(t)
	}
	var (
		stats    = Stats{Adopted: int64(len(adopted))}
		firstErr error
		inflight int
		stopping bool
		now      = time.Now()
		stopAt   time.Time
		nextNew  time.Time
	)
	if duration > 0 {
		stopAt = now.Add(duration)
	}
	if rate > 0 {
		nextNew = now
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	done := ctx.Done()
	for {
		now = time.Now()
		if !stopping && (ctx.Err() != nil || (!stopAt.IsZero() && !now.Before(stopAt))) {
			stopping, done = true, nil
		}
		if stopping && inflight == 0 {
			break
		}
		canCreate := !nextNew.IsZero() && sched.Len()+inflight < l.opts.MaxActive
		if !stopping {
			for canCreate && inflight < workers && !now.Before(nextNew) {
				l.seq++
				jobs <- job{create: true, seq: l.seq}
				inflight++
				// Arrivals missed while at capacity are dropped, not bunched.
				nextNew = maxTime(nextNew.Add(time.Duration(l.rng.ExpFloat64()/rate*float64(time.Second))), now.Add(-time.Second))
				canCreate = sched.Len()+inflight < l.opts.MaxActive
			}
			for inflight < workers && sched.Len() > 0 && !sched.peek().After(now) {
				jobs <- job{t: sched.pop()}
				inflight++
			}
		}
		wait := time.Hour
		if !stopping {
			// At capacity, a finishing task is what frees room, not the clock.
			if canCreate {
				wait = min(wait, nextNew.Sub(now))
			}
			if sched.Len() > 0 {
				wait = min(wait, sched.peek().Sub(now))
			}
			if !stopAt.IsZero() {
				wait = min(wait, stopAt.Sub(now))
			}
		}
		if inflight >= workers {
			wait = time.Hour // a result arrives first
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
			if _, ok := r.t.next(); ok {
				sched.add(r.t)
			}
		case <-tick.C:
			if progress != nil {
				s := stats
				s.Active = int64(sched.Len() + inflight)
				s.Elapsed = time.Since(start)
				progress(s)
			}
		}
	}
	stats.Active = int64(sched.Len())
	return stats, firstErr
}

// work creates a task or fires the events of one that are due by now.
func (l *live) work(ctx context.Context, j job) result {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if j.create {
		t, s, err := l.create(ctx, j.seq)
		return result{t: t, delta: s, err: err}
	}
	k := &dbSink{ctx: ctx, pool: l.pool}
	t := j.t
	// Bounded so one task cannot hold a worker for long.
	for range 32 {
		at, ok := t.next()
		if !ok || at.After(time.Now()) {
			break
		}
		if err := t.fire(time.Now(), k); err != nil {
			return result{t: t, delta: k.stats, err: err}
		}
	}
	return result{t: t, delta: k.stats}
}

// create inserts a new task with its steps and edges in one transaction, as
// Tasker's TaskBuilder does; none of them has a transition yet.
func (l *live) create(ctx context.Context, seq uint64) (*taskSim, Stats, error) {
	// Each task gets its own stream: workers never share a generator.
	r := rand.New(rand.NewPCG(uint64(l.opts.Seed), 1<<61+seq))
	t := newTask(l.picker.pick(r, 0), r, &l.opts, &l.prof, time.Now())
	var s Stats
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var stepIDs []int64
		err := tx.QueryRow(ctx, `SELECT nextval($1::regclass), ARRAY(SELECT nextval($2::regclass) FROM generate_series(1, $3))`,
			l.seqs.task, l.seqs.step, len(t.steps)).Scan(&t.id, &stepIDs)
		if err != nil {
			return fmt.Errorf("reserve ids: %w", err)
		}
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO tasker_tasks (task_id, named_task_id, complete, requested_at, initiator, source_system,
			reason, tags, context, identity_hash, created_at, updated_at)
			VALUES ($1, $2, false, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
			t.id, t.def.id, t.requestedAt, t.initiator, t.source, t.reason, t.tags, t.context, identityHash(t, t.id), t.createdAt)
		for i := range t.steps {
			st := &t.steps[i]
			st.id = stepIDs[i]
			b.Queue(`INSERT INTO tasker_workflow_steps (workflow_step_id, task_id, named_step_id, retryable, retry_limit,
				in_process, processed, attempts, inputs, created_at, updated_at, skippable)
				VALUES ($1, $2, $3, $4, $5, false, false, 0, $6, $7, $7, false)`,
				st.id, t.id, st.def.id, st.retryable, st.retryLimit, t.context, st.createdAt)
		}
		for i, e := range t.def.edges {
			at := t.createdAt.Add(time.Duration(len(t.steps)+1+i) * 150 * time.Microsecond)
			b.Queue(`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name, created_at, updated_at)
				VALUES ($1, $2, 'provides', $3, $3)`, stepIDs[e[0]], stepIDs[e[1]], at)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return t, s, fmt.Errorf("create task: %w", err)
	}
	s.Tasks, s.Steps, s.Edges = 1, int64(len(t.steps)), int64(len(t.def.edges))
	return t, s, nil
}

// dbSink writes one transition per transaction the way Statesman's
// ActiveRecord adapter does
// (docs/tasker-semantics.md#how-transitions-are-written): clear most_recent on the current
// row, insert the new row with sort_key = last + 10, together with the step
// executor's column updates.
type dbSink struct {
	ctx   context.Context
	pool  *pgxpool.Pool
	stats Stats
}

func (d *dbSink) taskMoved(t *taskSim, to state, meta []byte, at time.Time, markComplete bool) error {
	err := pgx.BeginFunc(d.ctx, d.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		if markComplete {
			b.Queue(`UPDATE tasker_tasks SET complete = true, updated_at = $2 WHERE task_id = $1`, t.id, at)
		}
		b.Queue(`UPDATE tasker_task_transitions SET most_recent = false, updated_at = $2
			WHERE task_id = $1 AND most_recent`, t.id, at)
		b.Queue(`INSERT INTO tasker_task_transitions (to_state, metadata, sort_key, most_recent, task_id, created_at, updated_at)
			SELECT $2::varchar, $3::jsonb, COALESCE(MAX(sort_key), 0) + 10, true, $1::bigint, $4::timestamp, $4::timestamp
			FROM tasker_task_transitions WHERE task_id = $1`, t.id, to.String(), metaJSON(meta), at)
		return tx.SendBatch(d.ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("task %d → %s: %w", t.id, to, err)
	}
	d.stats.TaskTransitions++
	return nil
}

func (d *dbSink) stepMoved(t *taskSim, i int, n *stepSim, to state, at time.Time) error {
	old := &t.steps[i]
	err := pgx.BeginFunc(d.ctx, d.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		if !n.updatedAt.Equal(old.updatedAt) {
			b.Queue(`UPDATE tasker_workflow_steps SET attempts = $2, last_attempted_at = $3, processed = $4,
				processed_at = $5, backoff_request_seconds = $6, results = $7, in_process = false, updated_at = $8
				WHERE workflow_step_id = $1`,
				n.id, n.attempts, nullTime(n.lastAttempted), n.processed, nullTime(n.processedAt), nullInt(n.backoff),
				nullJSON(n.results), n.updatedAt)
		}
		b.Queue(`UPDATE tasker_workflow_step_transitions SET most_recent = false, updated_at = $2
			WHERE workflow_step_id = $1 AND most_recent`, n.id, at)
		b.Queue(`INSERT INTO tasker_workflow_step_transitions (to_state, metadata, sort_key, most_recent, workflow_step_id, created_at, updated_at)
			SELECT $2::varchar, '{}'::jsonb, COALESCE(MAX(sort_key), 0) + 10, true, $1::bigint, $3::timestamp, $3::timestamp
			FROM tasker_workflow_step_transitions WHERE workflow_step_id = $1`, n.id, to.String(), at)
		return tx.SendBatch(d.ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("step %d → %s: %w", n.id, to, err)
	}
	d.stats.StepTransitions++
	return nil
}

// schedule is a min-heap of tasks by their next event.
type schedule struct{ items []scheduled }

type scheduled struct {
	at time.Time
	t  *taskSim
}

func (s *schedule) Len() int           { return len(s.items) }
func (s *schedule) Less(i, j int) bool { return s.items[i].at.Before(s.items[j].at) }
func (s *schedule) Swap(i, j int)      { s.items[i], s.items[j] = s.items[j], s.items[i] }
func (s *schedule) Push(x any)         { s.items = append(s.items, x.(scheduled)) }
func (s *schedule) Pop() any {
	x := s.items[len(s.items)-1]
	s.items = s.items[:len(s.items)-1]
	return x
}

func (s *schedule) add(t *taskSim) {
	if at, ok := t.next(); ok {
		heap.Push(s, scheduled{at: at, t: t})
	}
}
func (s *schedule) peek() time.Time { return s.items[0].at }
func (s *schedule) pop() *taskSim   { return heap.Pop(s).(scheduled).t }

// adopt loads up to limit unfinished tasks of the simulator's named tasks,
// newest first, so Live carries on with what Bulk or an earlier run left in
// flight (and operators act on recent failures).
func (l *live) adopt(ctx context.Context, limit int) ([]*taskSim, error) {
	if limit <= 0 {
		return nil, nil
	}
	var named []int32
	for id := range l.cat.byTask {
		named = append(named, id)
	}
	rows, err := l.pool.Query(ctx, `SELECT t.task_id, t.named_task_id, t.created_at, tt.to_state, tt.created_at,
			EXISTS (SELECT 1 FROM tasker_task_transitions x WHERE x.task_id = t.task_id AND x.to_state = 'in_progress')
		FROM tasker_tasks t
		LEFT JOIN tasker_task_transitions tt ON tt.task_id = t.task_id AND tt.most_recent
		WHERE t.named_task_id = ANY($1) AND NOT t.complete
		  AND (tt.to_state IS NULL OR tt.to_state IN ('pending', 'in_progress', 'error'))
		ORDER BY t.task_id DESC LIMIT $2`, named, limit)
	if err != nil {
		return nil, fmt.Errorf("find unfinished tasks: %w", err)
	}
	byID := make(map[int64]*taskSim)
	var tasks []*taskSim
	var ids []int64
	for rows.Next() {
		t := &taskSim{opts: &l.opts, prof: &l.prof, lastRow: -1}
		var named int32
		var st *string
		var lastAt *time.Time
		if err := rows.Scan(&t.id, &named, &t.createdAt, &st, &lastAt, &t.initialized); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read unfinished tasks: %w", err)
		}
		if t.state, err = optState(st); err != nil {
			rows.Close()
			return nil, err
		}
		if lastAt != nil {
			t.lastAt = *lastAt
		}
		t.def = &taskDef{id: named}
		t.rng = rand.New(rand.NewPCG(uint64(l.opts.Seed), 1<<60+uint64(t.id)))
		byID[t.id] = t
		tasks = append(tasks, t)
		ids = append(ids, t.id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read unfinished tasks: %w", err)
	}
	if len(tasks) == 0 {
		return nil, nil
	}

	stepIndex := make(map[int64]int)
	transient := make(map[int64][]bool)
	rows, err = l.pool.Query(ctx, `SELECT ws.task_id, ws.workflow_step_id, ws.named_step_id, ws.retryable,
			COALESCE(ws.retry_limit, 3), COALESCE(ws.attempts, 0), ws.last_attempted_at,
			COALESCE(ws.backoff_request_seconds, 0), ws.processed, ws.processed_at, ws.results::text,
			COALESCE(ws.results->>'error_class', ''), ws.created_at, ws.updated_at, st.to_state, st.created_at
		FROM tasker_workflow_steps ws
		LEFT JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = ws.workflow_step_id AND st.most_recent
		WHERE ws.task_id = ANY($1) ORDER BY ws.task_id, ws.workflow_step_id`, ids)
	if err != nil {
		return nil, fmt.Errorf("read steps: %w", err)
	}
	for rows.Next() {
		var (
			taskID, stepID     int64
			namedStep          int32
			s                  = stepSim{lastRow: -1}
			lastAttempted, pAt *time.Time
			results, st        *string
			class              string
			lastAt             *time.Time
		)
		err := rows.Scan(&taskID, &stepID, &namedStep, &s.retryable, &s.retryLimit, &s.attempts, &lastAttempted,
			&s.backoff, &s.processed, &pAt, &results, &class, &s.createdAt, &s.updatedAt, &st, &lastAt)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("read steps: %w", err)
		}
		t := byID[taskID]
		if s.state, err = optState(st); err != nil {
			rows.Close()
			return nil, err
		}
		s.id = stepID
		s.lastAttempted, s.processedAt, s.lastAt = deref(lastAttempted), deref(pAt), deref(lastAt)
		if results != nil {
			s.results = *results
		}
		d, ok := l.cat.bySteps[namedStep]
		if !ok {
			d = stepDef{name: "step", mean: 500 * time.Millisecond, retryable: true, retryLimit: 3, id: namedStep}
		}
		stepIndex[stepID] = len(t.steps)
		t.def.steps = append(t.def.steps, d)
		t.steps = append(t.steps, s)
		transient[taskID] = append(transient[taskID], isTransientClass(class))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read steps: %w", err)
	}
	rows, err = l.pool.Query(ctx, `SELECT ws.task_id, e.from_step_id, e.to_step_id
		FROM tasker_workflow_step_edges e JOIN tasker_workflow_steps ws ON ws.workflow_step_id = e.to_step_id
		WHERE ws.task_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("read edges: %w", err)
	}
	for rows.Next() {
		var taskID, from, to int64
		if err := rows.Scan(&taskID, &from, &to); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read edges: %w", err)
		}
		t := byID[taskID]
		t.def.edges = append(t.def.edges, [2]int{stepIndex[from], stepIndex[to]})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read edges: %w", err)
	}
	now := time.Now()
	for _, t := range tasks {
		d := t.def
		d.parents, d.children = make([][]int, len(d.steps)), make([][]int, len(d.steps))
		for _, e := range d.edges {
			d.children[e[0]] = append(d.children[e[0]], e[1])
			d.parents[e[1]] = append(d.parents[e[1]], e[0])
		}
		for i := range t.steps {
			t.steps[i].def = &d.steps[i]
		}
		t.resume(now, transient[t.id])
	}
	return tasks, nil
}

func optState(s *string) (state, error) {
	if s == nil {
		return none, nil
	}
	return parseState(*s)
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// liveOptions checks Live's and LiveCore's arguments and fills the
// defaults: workers leave one of the pool's connections free, at most 4.
func liveOptions(pool *pgxpool.Pool, rate float64, duration time.Duration, opts Options) (Options, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return opts, err
	}
	if rate < 0 || duration < 0 {
		return opts, errors.New("live: rate and duration must not be negative")
	}
	if opts.Workers == 0 {
		opts.Workers = int(min(max(pool.Config().MaxConns-1, 1), 4))
	}
	opts.Workers = min(opts.Workers, int(pool.Config().MaxConns))
	return opts, nil
}
