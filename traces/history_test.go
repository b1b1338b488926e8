package traces

import (
	"cmp"
	"context"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

// recordingSink keeps every batch the stream hands over.
type recordingSink struct {
	mu      sync.Mutex
	batches [][]collector.Transition
}

func (r *recordingSink) Consume(_ context.Context, ts []collector.Transition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, slices.Clone(ts))
	return nil
}

// ends counts the run-ending task transitions handed over.
func (r *recordingSink) ends() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.batches {
		for _, tr := range b {
			if !tr.Step && engine.EndsRun(tr.ToState) {
				n++
			}
		}
	}
	return n
}

// countingSource counts the tasks whose transitions were read from the
// database.
type countingSource struct {
	db     *collector.DB
	mu     sync.Mutex
	unseen int
}

func (c *countingSource) TaskHistories(ctx context.Context, ids []engine.ID, seen map[engine.ID]*collector.TaskTransitions) ([]collector.TaskHistory, error) {
	c.mu.Lock()
	for _, id := range ids {
		if seen[id] == nil {
			c.unseen++
		}
	}
	c.mu.Unlock()
	return c.db.TaskHistories(ctx, ids, seen)
}

// comparableSpan keeps what a span says, without the provider it came from.
type comparableSpan struct {
	Name               string
	TraceID, SpanID    string
	Parent             string
	Start, End         time.Time
	Attributes, Events any
	Links              any
	Status             sdktrace.Status
}

func spansOf(stubs tracetest.SpanStubs) []comparableSpan {
	out := make([]comparableSpan, 0, len(stubs))
	for _, s := range stubs {
		out = append(out, comparableSpan{
			Name: s.Name, TraceID: s.SpanContext.TraceID().String(), SpanID: s.SpanContext.SpanID().String(),
			Parent: s.Parent.SpanID().String(), Start: s.StartTime, End: s.EndTime,
			Attributes: s.Attributes, Events: s.Events, Links: s.Links, Status: s.Status,
		})
	}
	slices.SortFunc(out, func(a, b comparableSpan) int {
		return cmp.Or(cmp.Compare(a.TraceID, b.TraceID), cmp.Compare(a.SpanID, b.SpanID))
	})
	return out
}

// terminalTransitions counts e's task transitions to a terminal state.
func terminalTransitions(t *testing.T, pg pgtest.DB, e engine.Engine) int {
	t.Helper()
	var n int
	if err := pg.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM `+e.Tables.TaskTransitions+`
		WHERE to_state = ANY($1)`, e.TaskStates.Terminal).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The transitions the stream hands over with a run's end draw the same
// spans as the histories read from the database, and spare reading them.
func TestStreamHistoriesDrawTheSameTraces(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	pool := writerPool(t, pg.URL)
	logger := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	db := openDB(t, pg.URL, logger)
	opts := simulate.Options{Seed: 11, ErrorRate: 0.3, ManualResolveRate: 1, Workers: 3}
	// Tasks begun before the stream starts: their histories must be read.
	if _, err := simulate.Live(ctx, pool, 5, time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}

	rec := &recordingSink{}
	scfg := streamConfig(20 * time.Millisecond)
	stream := collector.NewStream(db, scfg, nil, nil, logger, collector.WithSink(rec))
	_ = stream.Start(ctx)
	defer func() { _ = stream.Shutdown(context.Background()) }()
	<-stream.Ready()
	before := terminalTransitions(t, pg, engine.Rails())
	if _, err := simulate.Live(ctx, pool, 20, 3*time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := simulate.Live(ctx, pool, 0, 3*time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}
	// Let the stream read everything, then draw the traces both ways from
	// the same, final database.
	terminal := terminalTransitions(t, pg, engine.Rails()) - before
	for deadline := time.Now().Add(30 * time.Second); rec.ends() < terminal && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // poll interval of this bounded wait
	}
	_ = stream.Shutdown(context.Background())

	draw := func(strip bool) ([]comparableSpan, *countingSource) {
		exp := tracetest.NewInMemoryExporter()
		src := &countingSource{db: db}
		cfg := testTracing()
		cfg.MaxSpansPerSecond = 1e9
		w := NewWorkflows(cfg, exp, src, nil, logger)
		for _, b := range rec.batches {
			if strip {
				b = slices.Clone(b)
				for i := range b {
					b[i].History = nil
				}
			}
			if err := w.Consume(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		spans := spansOf(exp.GetSpans()) // Shutdown empties exp
		if err := w.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		return spans, src
	}
	fromStream, streamSrc := draw(false)
	fromDB, dbSrc := draw(true)

	handed := 0
	for _, b := range rec.batches {
		for _, tr := range b {
			if !tr.Step && tr.History != nil {
				handed++
			}
		}
	}
	ends := rec.ends()
	t.Logf("%d run ends, %d with the stream's transitions; transitions read for %d tasks instead of %d; %d spans",
		ends, handed, streamSrc.unseen, dbSrc.unseen, len(fromDB))
	if handed == 0 || handed == ends {
		t.Fatalf("%d of %d run ends carried the stream's transitions; want some, not all (tasks begun before the stream)", handed, ends)
	}
	if streamSrc.unseen >= dbSrc.unseen {
		t.Errorf("transitions read for %d tasks with the stream's, %d without", streamSrc.unseen, dbSrc.unseen)
	}
	if len(fromDB) == 0 {
		t.Fatal("no spans drawn")
	}
	if !reflect.DeepEqual(fromStream, fromDB) {
		for i := range min(len(fromStream), len(fromDB)) {
			if !reflect.DeepEqual(fromStream[i], fromDB[i]) {
				t.Fatalf("first difference at span %d:\nstream:   %+v\ndatabase: %+v", i, fromStream[i], fromDB[i])
			}
		}
		t.Fatalf("%d spans from the stream's transitions, %d from the database's", len(fromStream), len(fromDB))
	}
}
