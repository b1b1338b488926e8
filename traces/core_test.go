package traces

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

// coreTask is a tasker-core task written with SQL: step authorize fails
// once (handed to orchestration as an error, which waits out a retry) and
// succeeds on its second attempt; step capture depends on it.
type coreTask struct {
	task, authorize, capture engine.ID
	end                      collector.Transition // the task's complete row
	// in_progress rows: the attempts' span ids derive from them.
	authorize1, authorize2, capture1 engine.ID
	correlationID                    string
}

func writeCoreTask(t *testing.T, pg pgtest.DB) coreTask {
	t.Helper()
	ctx := context.Background()
	conn := pg.Conn(t)
	key := func(sql string, args ...any) engine.ID {
		t.Helper()
		var id engine.ID
		if err := conn.QueryRow(ctx, sql, args...).Scan(&id); err != nil {
			t.Fatalf("fixture %q: %v", sql, err)
		}
		return id
	}
	ct := coreTask{correlationID: "0190f2a4-5b6c-7d8e-9f00-0000000000c1"}
	ns := key(`INSERT INTO tasker.task_namespaces (name, created_at, updated_at) VALUES ('payments', $1, $1)
		RETURNING task_namespace_uuid`, base)
	nt := key(`INSERT INTO tasker.named_tasks (task_namespace_uuid, name, version, created_at, updated_at)
		VALUES ($1, 'charge', '1.2.0', $2, $2) RETURNING named_task_uuid`, ns, base)
	ct.task = key(`INSERT INTO tasker.tasks (named_task_uuid, requested_at, identity_hash, initiator, source_system,
		reason, correlation_id, created_at, updated_at)
		VALUES ($1, $2, 'h', 'checkout-web', 'web', 'order placed', $3, $2, $2) RETURNING task_uuid`, nt, base, ct.correlationID)
	for i, r := range []struct {
		state string
		sec   float64
	}{{engine.Pending, 0}, {engine.Initializing, 0.1}, {engine.EnqueuingSteps, 0.2}, {engine.StepsInProcess, 0.3},
		{engine.EvaluatingResults, 9.5}, {engine.Complete, 10}} {
		id := key(`INSERT INTO tasker.task_transitions (task_uuid, to_state, sort_key, most_recent, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $5) RETURNING task_transition_uuid`, ct.task, r.state, i+1, r.state == engine.Complete, at(r.sec))
		if r.state == engine.Complete {
			ct.end = collector.Transition{ID: id, TaskID: ct.task, ToState: r.state, SortKey: int32(i + 1), At: at(r.sec)}
		}
	}
	step := func(name string, backoff int) engine.ID {
		ns := key(`INSERT INTO tasker.named_steps (name, created_at, updated_at) VALUES ($1, $2, $2)
			RETURNING named_step_uuid`, name, base)
		return key(`INSERT INTO tasker.workflow_steps (task_uuid, named_step_uuid, retryable, max_attempts, attempts,
			backoff_request_seconds, results, created_at, updated_at)
			VALUES ($1, $2, true, 3, $3, $4, '{"success": true}', $5, $5) RETURNING workflow_step_uuid`,
			ct.task, ns, max(backoff, 1), backoff, base)
	}
	ct.authorize, ct.capture = step("authorize", 2), step("capture", 0)
	failure := `{"event": "{\"type\":\"EnqueueAsErrorForOrchestration\",\"data\":{\"success\":false,\"error\":{\"message\":\"card declined\",\"error_type\":\"PaymentError\",\"retryable\":true}}}"}`
	rows := func(s engine.ID, states ...any) []engine.ID {
		var ids []engine.ID
		for i := 0; i < len(states); i += 2 {
			meta := "{}"
			if states[i] == engine.EnqueuedAsErrorForOrchestration {
				meta = failure
			}
			ids = append(ids, key(`INSERT INTO tasker.workflow_step_transitions (workflow_step_uuid, to_state, sort_key,
				most_recent, metadata, created_at, updated_at)
				VALUES ($1, $2, $3, false, $4, $5, $5) RETURNING workflow_step_transition_uuid`,
				s, states[i], i/2+1, meta, at(states[i+1].(float64))))
		}
		return ids
	}
	a := rows(ct.authorize, engine.Pending, 0.2, engine.Enqueued, 0.3, engine.InProgress, 0.5,
		engine.EnqueuedAsErrorForOrchestration, 1.0, engine.WaitingForRetry, 1.2, engine.Pending, 3.2,
		engine.Enqueued, 3.5, engine.InProgress, 4.0, engine.EnqueuedForOrchestration, 5.0, engine.Complete, 5.3)
	c := rows(ct.capture, engine.Pending, 0.2, engine.Enqueued, 5.5, engine.InProgress, 6.0,
		engine.EnqueuedForOrchestration, 8.0, engine.Complete, 8.4)
	ct.authorize1, ct.authorize2, ct.capture1 = a[2], a[7], c[2]
	if _, err := conn.Exec(ctx, `INSERT INTO tasker.workflow_step_edges (from_step_uuid, to_step_uuid, name, created_at, updated_at)
		VALUES ($1, $2, 'provides', $3, $3)`, ct.authorize, ct.capture, base); err != nil {
		t.Fatal(err)
	}
	return ct
}

// A tasker-core task driven to completion with a retried step: one trace,
// keyed by the task's UUID, a span per step attempt from the core states,
// the same ids whichever sidecar exports it.
func TestCoreTaskTrace(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewCore(t)
	ct := writeCoreTask(t, pg)
	db := openDB(t, pg.URL, testLogger(t))

	export := func() tracetest.SpanStubs {
		exp := tracetest.NewInMemoryExporter()
		w := NewWorkflows(testTracing(), exp, db, nil, testLogger(t))
		if err := w.Consume(context.Background(), []collector.Transition{ct.end}); err != nil {
			t.Fatal(err)
		}
		spans := exp.GetSpans()
		if err := w.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		return spans
	}
	spans := export()
	if len(spans) != 4 {
		t.Fatalf("%d spans, want a task span and 3 step attempts: %v", len(spans), spans.Snapshots())
	}
	// Another replica, or this one after a restart, draws the same trace.
	if again := spansOf(export()); fmt.Sprint(again) != fmt.Sprint(spansOf(spans)) {
		t.Errorf("a second export differs:\n%v\n%v", again, spansOf(spans))
	}

	traceID := TaskTraceID("", ct.task)
	parsed, err := engine.ParseID(ct.task.String())
	if err != nil || TaskTraceID("", parsed) != traceID || TaskTraceID("", engine.IntID(42)) == traceID {
		t.Errorf("trace id of a UUID key not derived from the key alone (%v)", err)
	}
	byName := map[string][]tracetest.SpanStub{}
	for _, s := range spans {
		if s.SpanContext.TraceID() != traceID {
			t.Errorf("span %s in trace %s, want %s", s.Name, s.SpanContext.TraceID(), traceID)
		}
		byName[s.Name] = append(byName[s.Name], s)
	}
	task := byName[SpanTask][0]
	if task.SpanContext.SpanID() != spanIDFor(traceID, "task") || task.Parent.IsValid() ||
		!task.StartTime.Equal(at(0)) || !task.EndTime.Equal(at(10)) || task.Status.Code != codes.Ok {
		t.Errorf("task span = %+v", task)
	}
	for k, want := range map[string]string{
		"tasker.task_id": ct.task.String(), "tasker.correlation_id": ct.correlationID, "tasker.state": engine.Complete,
		"tasker.namespace": "payments", "tasker.task_name": "charge", "tasker.run": "1", "tasker.total_steps": "2",
	} {
		if got := attrOf(task.Attributes, k); got != want {
			t.Errorf("task span %s = %q, want %q", k, got, want)
		}
	}
	var events []string
	for _, e := range task.Events {
		events = append(events, fmt.Sprintf("%s@%.1f", e.Name, e.Time.Sub(base).Seconds()))
	}
	wantEvents := []string{"task.pending@0.0", "task.initializing@0.1", "task.enqueuing_steps@0.2", "task.steps_in_process@0.3",
		"task.evaluating_results@9.5", "task.complete@10.0",
		// Steps: enqueueing, orchestration's decisions and the retry wait.
		"step.pending@0.2", "step.enqueued@0.3", "step.waiting_for_retry@1.2", "step.pending@3.2", "step.enqueued@3.5",
		"step.complete@5.3", "step.pending@0.2", "step.enqueued@5.5", "step.complete@8.4"}
	if !slices.Equal(events, wantEvents) {
		t.Errorf("task span events\n%v\nwant\n%v", events, wantEvents)
	}

	steps := byName[SpanStep]
	slices.SortFunc(steps, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	for i, tc := range []struct {
		name       string
		step, row  engine.ID
		start, end float64
		status     codes.Code
		attrs      map[string]string
		event      string // the hand-off
		linkedTo   engine.ID
	}{
		{"authorize, failed", ct.authorize, ct.authorize1, 0.5, 1.0, codes.Error, map[string]string{
			"tasker.state": engine.Error, "tasker.attempt_number": "1", "tasker.error": "card declined",
			"tasker.exception_class": "PaymentError", "tasker.queued_seconds": "0.200",
			"tasker.handoff_state": engine.EnqueuedAsErrorForOrchestration, "tasker.orchestration_state": engine.WaitingForRetry,
			"tasker.orchestration_seconds": "0.200", "tasker.retry_limit": "3", "tasker.backoff_seconds": "",
			"tasker.task_id": ct.task.String(), "tasker.step_id": ct.authorize.String(),
		}, engine.EnqueuedAsErrorForOrchestration, engine.ID{}},
		{"authorize, retried", ct.authorize, ct.authorize2, 4.0, 5.0, codes.Ok, map[string]string{
			"tasker.state": engine.Complete, "tasker.attempt_number": "2", "tasker.error": "",
			"tasker.backoff_seconds": "2.800", "tasker.queued_seconds": "0.500", "tasker.backoff_request_seconds": "2",
			"tasker.handoff_state": engine.EnqueuedForOrchestration, "tasker.orchestration_state": engine.Complete,
			"tasker.orchestration_seconds": "0.300",
		}, engine.EnqueuedForOrchestration, engine.ID{}},
		{"capture", ct.capture, ct.capture1, 6.0, 8.0, codes.Ok, map[string]string{
			"tasker.state": engine.Complete, "tasker.attempt_number": "1", "tasker.step_name": "capture",
			"tasker.orchestration_state": engine.Complete, "tasker.orchestration_seconds": "0.400",
		}, engine.EnqueuedForOrchestration, ct.authorize},
	} {
		s := steps[i]
		if s.SpanContext.SpanID() != spanIDFor(traceID, "step", tc.step, tc.row) || s.Parent.SpanID() != task.SpanContext.SpanID() ||
			!s.StartTime.Equal(at(tc.start)) || !s.EndTime.Equal(at(tc.end)) || s.Status.Code != tc.status {
			t.Errorf("%s: span %s parent %s, %s to %s, status %v", tc.name, s.SpanContext.SpanID(), s.Parent.SpanID(),
				s.StartTime.Sub(base), s.EndTime.Sub(base), s.Status)
		}
		for k, want := range tc.attrs {
			if got := attrOf(s.Attributes, k); got != want {
				t.Errorf("%s: %s = %q, want %q", tc.name, k, got, want)
			}
		}
		if len(s.Events) != 1 || s.Events[0].Name != "step."+tc.event || !s.Events[0].Time.Equal(at(tc.end)) {
			t.Errorf("%s: events %+v, want the hand-off %s", tc.name, s.Events, tc.event)
		}
		if tc.linkedTo.IsZero() != (len(s.Links) == 0) ||
			(len(s.Links) == 1 && s.Links[0].SpanContext.SpanID() != spanIDFor(traceID, "step", ct.authorize, ct.authorize2)) {
			t.Errorf("%s: links %+v", tc.name, s.Links)
		}
	}
}

func attrOf(kvs []attribute.KeyValue, key string) string {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value.AsString()
		}
	}
	return ""
}

// coreSpansSQL is expectedSpans' account on tasker-core: step attempts
// are in_progress rows with a following row, and error rows after neither
// in_progress nor a hand-off, in history order.
const coreSpansSQL = `
WITH complete AS (
    SELECT task_uuid FROM tasker.task_transitions WHERE most_recent AND to_state = 'complete'
), runs AS (
    SELECT task_uuid, count(*) AS n FROM tasker.task_transitions
    WHERE to_state IN ('complete', 'error', 'cancelled', 'resolved_manually') GROUP BY task_uuid
), attempts AS (
    SELECT s.task_uuid, count(*) AS n FROM (
        SELECT workflow_step_uuid, to_state, lag(to_state) OVER w AS prev, lead(to_state) OVER w AS next
        FROM tasker.workflow_step_transitions
        WINDOW w AS (PARTITION BY workflow_step_uuid ORDER BY sort_key, created_at, workflow_step_transition_uuid)
    ) x JOIN tasker.workflow_steps s ON s.workflow_step_uuid = x.workflow_step_uuid
    WHERE (x.to_state = 'in_progress' AND x.next IS NOT NULL)
       OR (x.to_state = 'error' AND x.prev IS DISTINCT FROM 'in_progress'
           AND x.prev IS DISTINCT FROM 'enqueued_for_orchestration'
           AND x.prev IS DISTINCT FROM 'enqueued_as_error_for_orchestration')
    GROUP BY s.task_uuid
)
SELECT c.task_uuid::text, r.n, COALESCE(a.n, 0)
FROM complete c JOIN runs r ON r.task_uuid = c.task_uuid LEFT JOIN attempts a ON a.task_uuid = c.task_uuid`

// Simulated tasker-core activity through the stream: every completed task
// has one trace with a span per run and per step attempt, and the spans are
// the same whether drawn from the transitions the stream handed over or
// from the database.
func TestCoreStreamTraces(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewCore(t)
	pool := writerPool(t, pg.URL)
	logger := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	db := openDB(t, pg.URL, logger)
	opts := simulate.Options{Seed: 7, ErrorRate: 0.3, Workers: 3}
	if _, err := simulate.LiveCore(ctx, pool, 5, time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}
	rec := &recordingSink{}
	stream := collector.NewStream(db, streamConfig(20*time.Millisecond), nil, nil, logger, collector.WithSink(rec))
	_ = stream.Start(ctx)
	defer func() { _ = stream.Shutdown(context.Background()) }()
	<-stream.Ready()
	before := terminalTransitions(t, pg, engine.Core())
	// One run: a run's tasks in flight when it stops are left unfinished,
	// and a retried step waits seconds.
	if _, err := simulate.LiveCore(ctx, pool, 10, 8*time.Second, opts, nil); err != nil {
		t.Fatal(err)
	}
	terminal := terminalTransitions(t, pg, engine.Core()) - before
	for deadline := time.Now().Add(30 * time.Second); rec.ends() < terminal && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // poll interval of this bounded wait
	}
	_ = stream.Shutdown(context.Background())
	if rec.ends() < terminal {
		t.Fatalf("the stream handed over %d run ends, want at least %d", rec.ends(), terminal)
	}

	draw := func(strip bool) []comparableSpan {
		exp := tracetest.NewInMemoryExporter()
		cfg := testTracing()
		cfg.MaxSpansPerSecond = 1e9
		w := NewWorkflows(cfg, exp, db, nil, logger)
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
		spans := spansOf(exp.GetSpans())
		if err := w.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		return spans
	}
	handed := 0
	for _, b := range rec.batches {
		for _, tr := range b {
			if !tr.Step && tr.History != nil {
				handed++
			}
		}
	}
	if handed == 0 {
		t.Error("no run end carried the stream's transitions")
	}
	fromStream, fromDB := draw(false), draw(true)
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

	// Tasks begun before the stream started ended partly before it too;
	// check those the stream saw end every run of.
	type count struct{ runs, steps int }
	got := map[string]*count{}
	for _, s := range fromDB {
		if got[s.TraceID] == nil {
			got[s.TraceID] = &count{}
		}
		if s.Name == SpanTask {
			got[s.TraceID].runs++
		} else {
			got[s.TraceID].steps++
		}
	}
	endedInStream := map[engine.ID]int{}
	for _, b := range rec.batches {
		for _, tr := range b {
			if !tr.Step && engine.EndsRun(tr.ToState) {
				endedInStream[tr.TaskID]++
			}
		}
	}
	checked := 0
	want := expectedSpans(t, pg.Conn(t), engine.Core())
	t.Logf("%d complete tasks, %d tasks ended runs in the stream, %d run ends (%d with the stream's transitions)",
		len(want), len(endedInStream), rec.ends(), handed)
	for task, w := range want {
		id, err := engine.ParseID(task)
		if err != nil {
			t.Fatal(err)
		}
		if endedInStream[id] != w[0] {
			continue
		}
		checked++
		g := got[TaskTraceID("", id).String()]
		if g == nil || g.runs != w[0] || g.steps != w[1] {
			t.Errorf("task %s: %+v run and step spans, want %d and %d", task, g, w[0], w[1])
		}
	}
	if checked == 0 {
		t.Fatal("no completed task to check")
	}
	t.Logf("%d completed core tasks checked span by span, %d spans", checked, len(fromDB))
}

// Trace ids are the hash of the key's text: for Rails ids the same ids as
// every earlier version (decimal), for tasker-core the canonical UUID
// whichever form the key was read in.
func TestTaskTraceIDByEngine(t *testing.T) {
	t.Parallel()
	hashed := func(salt, key string) string {
		sum := sha256.Sum256([]byte("tasker.task\x00" + salt + "\x00" + key))
		return hex.EncodeToString(sum[:16])
	}
	uuid, err := engine.ParseID("0190f2a45b6c7d8e9f00000000000042")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, salt string
		id         engine.ID
		want       string
	}{
		{"rails", "", engine.IntID(42), hashed("", "42")},
		{"rails, salted", "db-a", engine.IntID(7), hashed("db-a", "7")},
		{"core", "", uuid, hashed("", "0190f2a4-5b6c-7d8e-9f00-000000000042")},
		{"core, salted", "db-a", uuid, hashed("db-a", "0190f2a4-5b6c-7d8e-9f00-000000000042")},
	} {
		if got := TaskTraceID(tc.salt, tc.id).String(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
