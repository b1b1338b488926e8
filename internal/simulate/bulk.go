package simulate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// Bulk writes tasks of history, created over opts.History up to opts.Now and
// denser towards Now, each simulated up to Now: old tasks are finished, recent
// ones are in flight or not picked up yet. Rows go in with COPY, one
// transaction per batch of opts.BatchSize tasks; ids come from the tables'
// sequences, so Bulk can run next to a live engine. progress, if not nil, gets
// the number of tasks committed so far after every batch (never concurrently).
func Bulk(ctx context.Context, pool *pgxpool.Pool, tasks int, opts Options, progress func(done int)) (Stats, error) {
	start := time.Now()
	opts, err := bulkOptions(tasks, opts)
	if err != nil {
		return Stats{}, err
	}
	cat, err := loadCatalog(ctx, pool, opts)
	if err != nil {
		return Stats{}, err
	}
	seqs, err := sequences(ctx, pool)
	if err != nil {
		return Stats{}, err
	}
	g := &generator{opts: opts, prof: bulkProfile(), picker: newPicker(cat), total: tasks}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	batches := (tasks + opts.BatchSize - 1) / opts.BatchSize
	gens := max(1, runtime.GOMAXPROCS(0))
	writers := int(min(max(pool.Config().MaxConns-1, 1), 2))

	// Generators work on batches round-robin; reading their channels in the
	// same order puts the batches back in order, so ids are reserved in
	// created_at order, as an engine would have assigned them.
	var wg sync.WaitGroup
	generated := make([]chan *batch, gens)
	for w := range gens {
		generated[w] = make(chan *batch, 1)
		wg.Go(func() {
			defer close(generated[w])
			for bi := w; bi < batches; bi += gens {
				b, err := g.batch(bi)
				if err != nil {
					cancel(err)
					return
				}
				select {
				case generated[w] <- b:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	toWrite := make(chan *batch, 1)
	wg.Go(func() {
		defer close(toWrite)
		for bi := range batches {
			var b *batch
			select {
			case b = <-generated[bi%gens]:
			case <-ctx.Done():
				return
			}
			if b == nil {
				return
			}
			if err := b.reserveIDs(ctx, pool, seqs); err != nil {
				cancel(err)
				return
			}
			select {
			case toWrite <- b:
			case <-ctx.Done():
				return
			}
		}
	})
	stats := writeBatches(ctx, cancel, pool, toWrite, writers, opts.SkipFKChecks, progress)
	wg.Wait()
	return finishBulk(ctx, stats, start)
}

type seqNames struct{ task, step string }

func sequences(ctx context.Context, pool *pgxpool.Pool) (seqNames, error) {
	var s seqNames
	err := pool.QueryRow(ctx, `SELECT pg_get_serial_sequence('tasker_tasks', 'task_id'),
		pg_get_serial_sequence('tasker_workflow_steps', 'workflow_step_id')`).Scan(&s.task, &s.step)
	if err != nil {
		return s, fmt.Errorf("find id sequences: %w", err)
	}
	return s, nil
}

// reserveIDs takes ids from the sequences. nextval hands out distinct values
// even with a live engine inserting at the same time.
func reserveIDs(ctx context.Context, pool *pgxpool.Pool, seq string, n int) ([]int64, error) {
	if n == 0 {
		return nil, nil
	}
	rows, err := pool.Query(ctx, `SELECT nextval($1::regclass) FROM generate_series(1, $2)`, seq, n)
	if err != nil {
		return nil, fmt.Errorf("reserve %d ids from %s: %w", n, seq, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("reserve %d ids from %s: %w", n, seq, err)
	}
	slices.Sort(ids)
	return ids, nil
}

// picker chooses which named task (and version) a new task runs.
type picker struct {
	namespaces []string
	families   map[string][]family
}

// family is the versions of one named task, oldest first.
type family struct {
	weight   int
	versions []*taskDef
}

func newPicker(c *catalog) *picker {
	p := &picker{namespaces: c.namespaces, families: make(map[string][]family)}
	for _, ns := range c.namespaces {
		idx := make(map[string]int)
		var fams []family
		for _, d := range c.byNamespace[ns] {
			i, ok := idx[d.name]
			if !ok {
				i = len(fams)
				idx[d.name] = i
				fams = append(fams, family{})
			}
			fams[i].weight += d.weight
			fams[i].versions = append(fams[i].versions, d)
		}
		p.families[ns] = fams
	}
	return p
}

// pick favours the newest version for recent tasks and the older ones for
// old tasks, like a deploy that rolled out about a day ago.
func (p *picker) pick(r *rand.Rand, age time.Duration) *taskDef {
	fams := p.families[p.namespaces[r.IntN(len(p.namespaces))]]
	total := 0
	for _, f := range fams {
		total += f.weight
	}
	n := r.IntN(total)
	f := fams[len(fams)-1]
	for _, c := range fams {
		if n < c.weight {
			f = c
			break
		}
		n -= c.weight
	}
	last := len(f.versions) - 1
	newest := 0.8
	if age > 24*time.Hour {
		newest = 0.3
	}
	if last == 0 || r.Float64() < newest {
		return f.versions[last]
	}
	return f.versions[r.IntN(last)]
}

type generator struct {
	opts   Options
	prof   profile
	picker *picker
	total  int
}

// batch simulates tasks [bi*BatchSize, ...) up to opts.Now. Each task draws
// from its own random stream, so the result does not depend on how batches are
// spread over goroutines.
func (g *generator) batch(bi int) (*batch, error) {
	lo := bi * g.opts.BatchSize
	hi := min(lo+g.opts.BatchSize, g.total)
	b := &batch{tasks: make([]*taskSim, 0, hi-lo)}
	seed := uint64(g.opts.Seed)
	for i := lo; i < hi; i++ {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		// Stratified so task i is older than task i+1; the square puts more
		// tasks near Now (P(age < x) = sqrt(x / History)).
		u := 1 - (float64(i)+r.Float64())/float64(g.total)
		// Whole microseconds, so every timestamp keeps its offset from Now
		// and the same seed gives the same data whatever Now is.
		age := time.Duration(float64(g.opts.History) * u * u).Truncate(time.Microsecond)
		t := newTask(g.picker.pick(r, age), r, &g.opts, &g.prof, g.opts.Now.Add(-age))
		t.ref, t.base = int32(len(b.tasks)), int32(b.steps)
		b.steps += len(t.steps)
		b.edges += len(t.def.edges)
		for {
			at, ok := t.next()
			if !ok || at.After(g.opts.Now) {
				break
			}
			if err := t.fire(at, b); err != nil {
				return nil, err
			}
		}
		t.rng = nil
		b.tasks = append(b.tasks, t)
	}
	return b, nil
}

// transRow is a buffered transition row.
type transRow struct {
	owner      int32 // batch index of the task or step
	state      state
	mostRecent bool
	sortKey    int32
	meta       []byte // nil is '{}'
	createdAt  time.Time
	updatedAt  time.Time
}

// batch is the sink of Bulk: it buffers transition rows the way Statesman
// would have left them.
type batch struct {
	tasks     []*taskSim
	steps     int
	edges     int
	taskTrans []transRow
	stepTrans []transRow
	taskIDs   []int64
	stepIDs   []int64
}

func (b *batch) taskMoved(t *taskSim, to state, meta []byte, at time.Time, _ bool) error {
	t.lastRow = b.push(&b.taskTrans, t.lastRow, t.ref, t.sortKey+10, to, meta, at)
	return nil
}

func (b *batch) stepMoved(t *taskSim, i int, n *stepSim, to state, at time.Time) error {
	n.lastRow = b.push(&b.stepTrans, n.lastRow, t.base+int32(i), n.sortKey, to, nil, at)
	return nil
}

// push appends a transition and, like Statesman, clears most_recent on the
// previous one, touching its updated_at.
func (b *batch) push(rows *[]transRow, last, owner, sortKey int32, to state, meta []byte, at time.Time) int32 {
	if last >= 0 {
		(*rows)[last].mostRecent = false
		(*rows)[last].updatedAt = at
	}
	*rows = append(*rows, transRow{owner: owner, state: to, mostRecent: true, sortKey: sortKey, meta: meta, createdAt: at, updatedAt: at})
	return int32(len(*rows) - 1)
}

func (b *batch) reserveIDs(ctx context.Context, pool *pgxpool.Pool, seqs seqNames) error {
	var err error
	if b.taskIDs, err = reserveIDs(ctx, pool, seqs.task, len(b.tasks)); err != nil {
		return err
	}
	b.stepIDs, err = reserveIDs(ctx, pool, seqs.step, b.steps)
	return err
}

// write copies the batch in one transaction, parents before children.
func (b *batch) write(ctx context.Context, pool *pgxpool.Pool, skipFK bool) (Stats, error) {
	var s Stats
	tables := engine.RailsTables
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		copies := []struct {
			table string
			cols  []string
			src   pgx.CopyFromSource
			n     *int64
		}{
			{tables.Tasks, taskCols(), b.taskSource(), &s.Tasks},
			{tables.Steps, stepCols(), b.stepSource(), &s.Steps},
			{tables.StepEdges, edgeCols(), b.edgeSource(), &s.Edges},
			{tables.TaskTransitions, transCols("task_id"), b.transSource(b.taskTrans, b.taskIDs), &s.TaskTransitions},
			{tables.StepTransitions, transCols("workflow_step_id"), b.transSource(b.stepTrans, b.stepIDs), &s.StepTransitions},
		}
		if skipFK {
			// The rows reference catalog rows and rows copied earlier in this
			// transaction, so the foreign keys hold without row-by-row checks.
			if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
				return fmt.Errorf("skip foreign-key checks: %w", err)
			}
		}
		for _, c := range copies {
			n, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, c.src)
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

// source feeds CopyFrom; fill writes row i into the reused values slice
// (CopyFrom encodes each row before asking for the next).
type source struct {
	n, i int
	vals []any
	fill func(i int, v []any)
}

func (s *source) Next() bool             { s.i++; return s.i <= s.n }
func (s *source) Values() ([]any, error) { s.fill(s.i-1, s.vals); return s.vals, nil }
func (s *source) Err() error             { return nil }

func newSource(n, cols int, fill func(i int, v []any)) *source {
	return &source{n: n, vals: make([]any, cols), fill: fill}
}

func taskCols() []string {
	return []string{"task_id", "named_task_id", "complete", "requested_at", "initiator", "source_system",
		"reason", "tags", "context", "identity_hash", "created_at", "updated_at"}
}

func stepCols() []string {
	return []string{"workflow_step_id", "task_id", "named_step_id", "retryable", "retry_limit", "in_process",
		"processed", "processed_at", "attempts", "last_attempted_at", "backoff_request_seconds", "inputs", "results",
		"created_at", "updated_at", "skippable"}
}

func edgeCols() []string {
	return []string{"from_step_id", "to_step_id", "name", "created_at", "updated_at"}
}

func transCols(owner string) []string {
	return []string{"to_state", "metadata", "sort_key", "most_recent", owner, "created_at", "updated_at"}
}

func (b *batch) taskSource() *source {
	return newSource(len(b.tasks), 12, func(i int, v []any) {
		t := b.tasks[i]
		id := b.taskIDs[i]
		v[0], v[1], v[2], v[3] = id, t.def.id, t.complete, t.requestedAt
		v[4], v[5], v[6], v[7], v[8] = t.initiator, t.source, t.reason, t.tags, t.context
		v[9], v[10], v[11] = identityHash(t, id), t.createdAt, t.updatedAt
	})
}

// identityHash stands in for Tasker's identity strategy; the id makes it unique.
func identityHash(t *taskSim, id int64) string {
	buf := make([]byte, 0, 96)
	buf = append(buf, t.def.namespace...)
	buf = append(buf, '/')
	buf = append(buf, t.def.name...)
	buf = strconv.AppendInt(append(buf, '#'), id, 10)
	buf = strconv.AppendUint(append(buf, '#'), t.salt, 16)
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:])
}

func (b *batch) stepSource() *source {
	// Walk tasks and their steps in order instead of searching per row.
	ti, si := 0, 0
	return newSource(b.steps, 16, func(i int, v []any) {
		for si >= len(b.tasks[ti].steps) {
			ti, si = ti+1, 0
		}
		t := b.tasks[ti]
		s := &t.steps[si]
		si++
		v[0], v[1], v[2], v[3], v[4] = b.stepIDs[i], b.taskIDs[ti], s.def.id, s.retryable, s.retryLimit
		v[5], v[6], v[7], v[8] = false, s.processed, nullTime(s.processedAt), s.attempts
		v[9], v[10], v[11], v[12] = nullTime(s.lastAttempted), nullInt(s.backoff), t.context, nullJSON(s.results)
		v[13], v[14], v[15] = s.createdAt, s.updatedAt, false
	})
}

func (b *batch) edgeSource() *source {
	ti, ei := 0, 0
	return newSource(b.edges, 5, func(_ int, v []any) {
		for ei >= len(b.tasks[ti].def.edges) {
			ti, ei = ti+1, 0
		}
		t := b.tasks[ti]
		e := t.def.edges[ei]
		ei++
		// The builder saves edges after the steps, in the same transaction.
		at := t.createdAt.Add(time.Duration(len(t.steps)+1+ei) * 150 * time.Microsecond)
		v[0], v[1], v[2], v[3], v[4] = b.stepIDs[t.base+int32(e[0])], b.stepIDs[t.base+int32(e[1])], "provides", at, at
	})
}

func (b *batch) transSource(rows []transRow, ids []int64) *source {
	return newSource(len(rows), 7, func(i int, v []any) {
		r := &rows[i]
		v[0], v[1], v[2], v[3] = r.state.String(), metaJSON(r.meta), r.sortKey, r.mostRecent
		v[4], v[5], v[6] = ids[r.owner], r.createdAt, r.updatedAt
	})
}

// metaJSON is the metadata column value: Tasker's default '{}' unless the
// transition carries metadata.
func metaJSON(meta []byte) any {
	if meta == nil {
		return "{}"
	}
	return meta
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func nullInt(n int32) any {
	if n == 0 {
		return nil
	}
	return n
}

func nullJSON(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// bulkOptions checks Bulk's and BulkCore's arguments and fills the
// defaults.
func bulkOptions(tasks int, opts Options) (Options, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return opts, err
	}
	if tasks < 0 {
		return opts, errors.New("bulk: task count must not be negative")
	}
	return opts, nil
}

// bulkBatch is a generated batch of either engine, ready to COPY.
type bulkBatch interface {
	write(ctx context.Context, pool *pgxpool.Pool, skipFK bool) (Stats, error)
	size() int // tasks in the batch
}

func (b *batch) size() int     { return len(b.tasks) }
func (b *coreBatch) size() int { return b.tasks }

// writeBatches writes the batches from in with writers connections until
// in is closed, reporting the tasks committed so far to progress (never
// concurrently). A failed write cancels ctx with its error; the batches
// after it are drained unwritten.
func writeBatches[B bulkBatch](ctx context.Context, cancel context.CancelCauseFunc, pool *pgxpool.Pool, in <-chan B,
	writers int, skipFK bool, progress func(done int)) Stats {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		stats Stats
		done  int
	)
	for range writers {
		wg.Go(func() {
			for b := range in {
				if ctx.Err() != nil {
					continue
				}
				s, err := b.write(ctx, pool, skipFK)
				if err != nil {
					cancel(err)
					continue
				}
				mu.Lock()
				stats.add(s)
				done += b.size()
				if progress != nil {
					progress(done)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return stats
}

// finishBulk stamps the elapsed time and returns the cause that stopped the
// run, if any.
func finishBulk(ctx context.Context, stats Stats, start time.Time) (Stats, error) {
	stats.Elapsed = time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return stats, fmt.Errorf("bulk: %w", err)
	}
	return stats, nil
}
