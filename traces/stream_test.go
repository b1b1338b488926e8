package traces

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

func writerPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["TimeZone"] = "UTC"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// openDB is the sidecar's read-only pool on url, closed with the test.
func openDB(t *testing.T, url string, logger *slog.Logger) *collector.DB {
	t.Helper()
	db, err := collector.Open(collector.DBConfig{URL: secret.URL(url)}, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// streamConfig is the stream's configuration for these tests: polls every
// poll, no checkpoint file.
func streamConfig(poll time.Duration) collector.StreamConfig {
	c := collector.DefaultStreamConfig()
	c.PollInterval = poll
	c.Checkpoint.File = ""
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// expectedSpans counts, per task currently complete on engine e, its
// terminal transitions (task runs) and its step attempts (in_progress rows
// with a following row, and failures without an execution), with window
// functions: an account of the database independent of the exporter's.
// Tasks are keyed by their key's text.
func expectedSpans(t *testing.T, conn *pgx.Conn, e engine.Engine) map[string][2]int {
	t.Helper()
	sql := railsSpansSQL
	if e.Kind == engine.KindCore {
		sql = coreSpansSQL
	}
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][2]int{}
	var id string
	var runs, attempts int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &runs, &attempts}, func() error {
		out[id] = [2]int{int(runs), int(attempts)}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

const railsSpansSQL = `
WITH complete AS (
    SELECT task_id FROM tasker_task_transitions WHERE most_recent AND to_state = 'complete'
), runs AS (
    SELECT task_id, count(*) AS n FROM tasker_task_transitions
    WHERE to_state IN ('complete', 'error', 'cancelled', 'resolved_manually') GROUP BY task_id
), attempts AS (
    SELECT s.task_id, count(*) AS n FROM (
        SELECT workflow_step_id, to_state,
               lag(to_state) OVER w AS prev, lead(to_state) OVER w AS next
        FROM tasker_workflow_step_transitions WINDOW w AS (PARTITION BY workflow_step_id ORDER BY sort_key)
    ) x JOIN tasker_workflow_steps s ON s.workflow_step_id = x.workflow_step_id
    WHERE (x.to_state = 'in_progress' AND x.next IS NOT NULL)
       OR (x.to_state = 'error' AND x.prev IS DISTINCT FROM 'in_progress')
    GROUP BY s.task_id
)
SELECT c.task_id::text, r.n, COALESCE(a.n, 0)
FROM complete c JOIN runs r ON r.task_id = c.task_id LEFT JOIN attempts a ON a.task_id = c.task_id`

func TestStreamTracesThroughOTLP(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	pool := writerPool(t, pg.URL)
	logger := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	db := openDB(t, pg.URL, logger)
	reg := prometheus.NewRegistry()
	recv, addr := startGRPCReceiver(t)
	traces := NewWorkflows(testTracing(), grpcExporter(t, addr), db, reg, logger)
	defer func() { _ = traces.Shutdown(context.Background()) }()

	selfRecv, selfAddr := startGRPCReceiver(t)
	selfCfg := testTracing()
	selfCfg.SidecarSamplingRatio = 1
	selfTP := NewSidecarTracerProvider(selfCfg, grpcExporter(t, selfAddr))
	defer func() { _ = selfTP.Shutdown(context.Background()) }()

	scfg := streamConfig(20 * time.Millisecond)
	stream := collector.NewStream(db, scfg, nil, reg, logger,
		collector.WithSink(traces), collector.WithExemplars(traces.ExemplarTraceID), collector.WithTracerProvider(selfTP))
	_ = stream.Start(ctx)
	defer func() { _ = stream.Shutdown(context.Background()) }()
	<-stream.Ready()

	opts := simulate.Options{Seed: 7, ErrorRate: 0.3, ManualResolveRate: 1, Workers: 3}
	st, err := simulate.Live(ctx, pool, 25, 3*time.Second, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	// No new tasks, but the ones in flight carry on, so many finish.
	if _, err := simulate.Live(ctx, pool, 0, 4*time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}
	conn := pg.Conn(t)
	var terminal int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tasker_task_transitions
		WHERE to_state IN ('complete', 'error', 'cancelled', 'resolved_manually')`).Scan(&terminal); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(byName(recv.all(), SpanTask)) < terminal && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // poll interval of this bounded wait; the count is checked below
	}
	_ = stream.Shutdown(context.Background())
	spans := recv.all()
	t.Logf("live wrote %+v; %d terminal task transitions; %d spans received", st, terminal, len(spans))
	if got := len(byName(spans, SpanTask)); got != terminal {
		t.Fatalf("%d task run spans for %d terminal task transitions", got, terminal)
	}

	// Span by span, per completed task: one run span per terminal
	// transition and one step span per attempt, all in the task's trace.
	type tally struct{ runs, steps int }
	got := map[string]*tally{}
	for _, s := range spans {
		id := hexID(s.GetTraceId())
		if got[id] == nil {
			got[id] = &tally{}
		}
		if s.GetName() == SpanTask {
			got[id].runs++
		} else {
			got[id].steps++
		}
	}
	want := expectedSpans(t, conn, engine.Rails())
	if len(want) == 0 {
		t.Fatal("no task completed; the simulation was too short")
	}
	for task, w := range want {
		id, err := engine.ParseID(task)
		if err != nil {
			t.Fatal(err)
		}
		g := got[TaskTraceID("", id).String()]
		if g == nil {
			t.Errorf("task %s: no trace", task)
			continue
		}
		if g.runs != w[0] || g.steps != w[1] {
			t.Errorf("task %s: %d run spans and %d step spans, want %d and %d", task, g.runs, g.steps, w[0], w[1])
		}
	}
	t.Logf("%d completed tasks checked span by span", len(want))

	// Exemplars on the histograms carry the trace id of their task; those
	// of finished tasks point at exported traces.
	traceOf := map[string]bool{}
	rows, err := conn.Query(ctx, "SELECT task_id FROM tasker_tasks")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		traceOf[TaskTraceID("", engine.IntID(id)).String()] = true
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exemplars, exported := 0, 0
	for _, mf := range mfs {
		if mf.GetName() != "tasker_step_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, b := range m.GetHistogram().GetBucket() {
				for _, l := range b.GetExemplar().GetLabel() {
					if l.GetName() == "trace_id" {
						exemplars++
						if !traceOf[l.GetValue()] {
							t.Errorf("exemplar trace %s is no task's trace", l.GetValue())
						}
						if got[l.GetValue()] != nil {
							exported++
						}
					}
				}
			}
		}
	}
	if exemplars == 0 || exported == 0 {
		t.Errorf("%d exemplars on tasker_step_duration_seconds, %d of exported traces", exemplars, exported)
	}

	// The sidecar's own work, under its own service name.
	if err := selfTP.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	polls, reads := 0, 0
	for _, s := range selfRecv.all() {
		if s.service != "tasker-sidecar" {
			t.Errorf("self span %s under service %q", s.GetName(), s.service)
		}
		switch s.GetName() {
		case "stream.poll":
			polls++
		case "stream.read":
			reads++
			if len(s.GetParentSpanId()) == 0 {
				t.Error("stream.read is not a child of a poll")
			}
		}
	}
	if polls == 0 || reads == 0 {
		t.Errorf("self spans: %d polls, %d reads", polls, reads)
	}
}
