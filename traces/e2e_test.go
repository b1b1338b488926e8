//go:build e2e

// The Jaeger end-to-end test needs a Jaeger that scripts/e2e-jaeger.sh builds
// and starts; it only compiles with -tags e2e, so the normal suite never skips it.
// It is an external test of traces, as it uses traces/otlp (see otlp_test.go).

package traces_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
	"github.com/tasker-systems/tasker-sidecar/traces"
	"github.com/tasker-systems/tasker-sidecar/traces/otlp"
)

// jaegerTrace is the part of Jaeger's /api/traces answer the test reads.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			TraceID string `json:"traceID"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// e2eEngine is what the Jaeger test does differently per engine: make the
// database, drive the workload, and count each complete task's runs and
// step attempts (keyed by the task's key as text), and find how a task's
// run ended.
type e2eEngine struct {
	name     string
	database func(t *testing.T) pgtest.DB
	catalog  func(ctx context.Context, pool *pgxpool.Pool, opts simulate.Options) error
	live     func(ctx context.Context, pool *pgxpool.Pool, rate float64, d time.Duration, opts simulate.Options, progress func(simulate.Stats)) (simulate.Stats, error)
	expected func(t *testing.T, conn *pgx.Conn) map[string][2]int
	endSQL   string // the task's current transition: key, sort_key
	// settle is how long the workload runs without new tasks, for some to
	// complete; 0 keeps creating them throughout (LiveCore does not pick up
	// the tasks of an earlier run, so a second run would finish nothing).
	settle time.Duration
	load   time.Duration // how long tasks are created
}

var e2eEngines = []e2eEngine{
	{name: "rails", database: func(t *testing.T) pgtest.DB { return pgtest.NewTasker(t) },
		catalog: simulate.EnsureCatalog, live: simulate.Live,
		expected: func(t *testing.T, conn *pgx.Conn) map[string][2]int {
			return traces.ExpectedSpans(t, conn, engine.Rails())
		},
		endSQL: `SELECT id::text, sort_key FROM tasker_task_transitions WHERE task_id = $1::bigint AND most_recent`,
		load:   3 * time.Second, settle: 5 * time.Second},
	{name: "core", database: func(t *testing.T) pgtest.DB { return pgtest.NewCore(t) },
		catalog: simulate.EnsureCoreCatalog, live: simulate.LiveCore,
		expected: func(t *testing.T, conn *pgx.Conn) map[string][2]int {
			return traces.ExpectedSpans(t, conn, engine.Core())
		},
		endSQL: `SELECT task_transition_uuid::text, sort_key FROM tasker.task_transitions WHERE task_uuid = $1::uuid AND most_recent`,
		load:   25 * time.Second},
}

// TestJaegerE2E exports a simulated workload's traces to a real Jaeger v2,
// on each engine's database, and finds a task's trace by its task key.
// scripts/e2e-jaeger.sh starts Jaeger and sets the variables; it is built
// only with -tags e2e, so it is not part of `make test`.
func TestJaegerE2E(t *testing.T) {
	for _, e := range e2eEngines {
		t.Run(e.name, func(t *testing.T) { jaegerE2E(t, e) })
	}
}

func jaegerE2E(t *testing.T, e e2eEngine) {
	query := os.Getenv("SIDECAR_E2E_JAEGER_QUERY")
	if query == "" {
		t.Fatal("SIDECAR_E2E_JAEGER_QUERY is unset: run make e2e-jaeger, which starts Jaeger")
	}
	cfg := traces.TestingConfig()
	cfg.Protocol = os.Getenv("SIDECAR_E2E_JAEGER_PROTOCOL")
	if cfg.Protocol == "" {
		cfg.Protocol = traces.ProtocolHTTP
	}
	cfg.Endpoint = os.Getenv("SIDECAR_E2E_JAEGER_OTLP_HTTP")
	if cfg.Protocol == traces.ProtocolGRPC {
		cfg.Endpoint, cfg.Insecure = os.Getenv("SIDECAR_E2E_JAEGER_OTLP_GRPC"), true
	}
	// Task ids restart at 1 in every test database; the salt keeps this
	// run's traces apart from earlier runs in a long-lived Jaeger.
	salt := make([]byte, 6)
	_, _ = rand.Read(salt)
	cfg.TraceIDSalt = hex.EncodeToString(salt)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg := e.database(t)
	pool := traces.WriterPool(t, pg.URL)
	logger := traces.NewLogger(t)
	db := traces.OpenDB(t, pg.URL, logger)
	exp, err := otlp.NewSpanExporter(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	workflows := traces.NewWorkflows(cfg, exp, db, prometheus.NewRegistry(), logger)
	defer func() { _ = workflows.Shutdown(context.Background()) }()
	scfg := traces.StreamConfig(50 * time.Millisecond)
	stream := collector.NewStream(db, scfg, nil, nil, logger, collector.WithSink(workflows))
	_ = stream.Start(ctx)
	defer func() { _ = stream.Shutdown(context.Background()) }()
	<-stream.Ready()

	opts := simulate.Options{Seed: 3, ErrorRate: 0.25, Workers: 2}
	if err := e.catalog(ctx, pool, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := e.live(ctx, pool, 5, e.load, opts, nil); err != nil {
		t.Fatal(err)
	}
	if e.settle > 0 {
		if _, err := e.live(ctx, pool, 0, e.settle, opts, nil); err != nil {
			t.Fatal(err)
		}
	}
	conn := pg.Conn(t)
	want := e.expected(t, conn)
	var task string
	best := -1
	for id, w := range want {
		if w[1] > best {
			task, best = id, w[1]
		}
	}
	if best < 0 {
		t.Fatal("no task completed in the simulation")
	}
	deadline := time.Now().Add(30 * time.Second)
	for traces.ExportedRuns(workflows) < float64(len(want)) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // poll interval of this bounded wait
	}
	_ = stream.Shutdown(context.Background())

	taskID, err := engine.ParseID(task)
	if err != nil {
		t.Fatal(err)
	}
	traceID := traces.TaskTraceID(cfg.TraceIDSalt, taskID).String()
	tags, _ := json.Marshal(map[string]string{"tasker.task_id": task})
	u := fmt.Sprintf("%s/api/traces?service=%s&tags=%s&lookback=1h&limit=20", query, cfg.ServiceName, url.QueryEscape(string(tags)))
	// Earlier runs against the same Jaeger have tasks with the same id
	// (every test database starts at 1) under other salts: keep this run's.
	var found []jaegerTrace
	for time.Now().Before(deadline.Add(30 * time.Second)) {
		var all []jaegerTrace
		all, err = getTraces(ctx, u)
		found = found[:0]
		for _, tr := range all {
			if tr.TraceID == traceID {
				found = append(found, tr)
			}
		}
		if err == nil && len(found) > 0 && len(found[0].Spans) >= 1+best {
			break
		}
		time.Sleep(500 * time.Millisecond) // poll interval of this bounded wait
	}
	if err != nil {
		t.Fatalf("query Jaeger: %v", err)
	}
	if len(found) != 1 {
		t.Fatalf("Jaeger has %d traces %s for task %s, want 1 (%s)", len(found), traceID, task, u)
	}
	tr := found[0]
	var root string
	steps, links := 0, 0
	for _, s := range tr.Spans {
		if svc := tr.Processes[s.ProcessID].ServiceName; svc != cfg.ServiceName {
			t.Errorf("span %s of service %q", s.OperationName, svc)
		}
		switch s.OperationName {
		case traces.SpanTask:
			if len(s.References) == 0 {
				root = s.SpanID
			}
		case traces.SpanStep:
			steps++
			for _, r := range s.References {
				if r.RefType == "FOLLOWS_FROM" {
					links++
				}
			}
		default:
			t.Errorf("unexpected span %q", s.OperationName)
		}
	}
	if root == "" {
		t.Error("no root task span")
	}
	for _, s := range tr.Spans {
		if s.OperationName != traces.SpanStep {
			continue
		}
		if len(s.References) == 0 || s.References[0].RefType != "CHILD_OF" || s.References[0].SpanID != root {
			t.Errorf("step span %s is not a child of the task span: %+v", s.SpanID, s.References)
		}
	}
	if steps != best {
		t.Errorf("Jaeger shows %d step spans for task %s, want one per attempt: %d", steps, task, best)
	}
	t.Logf("%s task %s: trace %s in Jaeger with %d spans (%d step attempts, %d dependency links): %s/trace/%s",
		e.name, task, tr.TraceID, len(tr.Spans), steps, links, query, tr.TraceID)

	// A restarted sidecar that exports the task again (its checkpoint was
	// older than the export) lands in the same trace, not a second one.
	var end collector.Transition
	var endKey string
	if err := conn.QueryRow(ctx, e.endSQL, task).Scan(&endKey, &end.SortKey); err != nil {
		t.Fatal(err)
	}
	if end.ID, err = engine.ParseID(endKey); err != nil {
		t.Fatal(err)
	}
	end.TaskID, end.ToState = taskID, "complete"
	exp2, err := otlp.NewSpanExporter(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	again := traces.NewWorkflows(cfg, exp2, db, nil, logger)
	defer func() { _ = again.Shutdown(context.Background()) }()
	if err := again.Consume(ctx, []collector.Transition{end}); err != nil {
		t.Fatal(err)
	}
	// Real time on purpose: the check is that no second trace appears, an
	// absence with no event to wait for, so Jaeger gets time to ingest.
	time.Sleep(2 * time.Second)
	all, err := getTraces(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	n, spans := 0, 0
	for _, x := range all {
		if x.TraceID == traceID {
			n++
			spans = len(x.Spans)
		}
	}
	if n != 1 || spans != len(tr.Spans) {
		t.Errorf("after a re-export Jaeger has %d traces %s with %d spans, want 1 with %d", n, traceID, spans, len(tr.Spans))
	}
	t.Logf("after re-exporting task %s: 1 trace, %d spans as Jaeger returns them (%d before)", task, spans, len(tr.Spans))
}

func getTraces(ctx context.Context, u string) ([]jaegerTrace, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	return body.Data, nil
}
