package traces

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// fakeHistories serves hand-made histories.
type fakeHistories struct {
	mu    sync.Mutex
	tasks map[engine.ID]collector.TaskHistory
	err   error
	calls int
}

func (f *fakeHistories) TaskHistories(_ context.Context, ids []engine.ID, _ map[engine.ID]*collector.TaskTransitions) ([]collector.TaskHistory, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	var out []collector.TaskHistory
	for _, id := range ids {
		if h, ok := f.tasks[id]; ok {
			out = append(out, h)
		}
	}
	return out, nil
}

var base = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func at(seconds float64) time.Time { return base.Add(time.Duration(seconds * float64(time.Second))) }

func transitions(id0 int64, states ...any) []collector.HistoryTransition {
	var out []collector.HistoryTransition
	for i := 0; i < len(states); i += 2 {
		out = append(out, collector.HistoryTransition{
			ID: engine.IntID(id0 + int64(i/2)), ToState: states[i].(string), SortKey: int32(10 * (i/2 + 1)), At: at(states[i+1].(float64)),
		})
	}
	return out
}

func i32(v int32) *int32 { return &v }

// retriedTask is task 42: step A fails once and succeeds on its second
// attempt after a 3 s backoff; step B depends on A.
func retriedTask() collector.TaskHistory {
	return collector.TaskHistory{
		TaskID: engine.IntID(42), Namespace: "payments", TaskName: "charge", Version: "1.2.0", CreatedAt: at(0),
		Initiator: "checkout-web", SourceSystem: "web", Reason: "order placed",
		Transitions: transitions(1, "in_progress", 0.1, "complete", 10.0),
		Steps: []collector.StepHistory{
			{
				StepID: engine.IntID(100), Name: "authorize", Retryable: true, RetryLimit: i32(3), Attempts: i32(2),
				BackoffRequestSeconds: i32(2),
				Transitions:           transitions(10, "pending", 0.1, "in_progress", 0.2, "error", 1.0, "pending", 3.0, "in_progress", 4.0, "complete", 5.0),
			},
			{
				StepID: engine.IntID(101), Name: "capture", Retryable: true, RetryLimit: i32(3), Attempts: i32(1), Parents: []engine.ID{engine.IntID(100)},
				Transitions: transitions(20, "pending", 5.5, "in_progress", 6.0, "complete", 8.0),
			},
		},
	}
}

func testTracing() Config {
	c := DefaultConfig()
	c.Enabled = true
	c.Timeout = 5 * time.Second
	return c
}

func newTestTraces(t *testing.T, cfg Config, exp sdktrace.SpanExporter, src TaskHistorySource) (*Workflows, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w := NewWorkflows(cfg, exp, src, reg, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = w.Shutdown(context.Background()) })
	return w, reg
}

// grpcExporter is the exporter otlp.NewSpanExporter builds for protocol
// grpc, endpoint addr, insecure and testTracing's timeout. It is built here
// because this internal test cannot import traces/otlp, which imports
// traces; otlp_test.go covers NewSpanExporter itself.
func grpcExporter(t *testing.T, addr string) sdktrace.SpanExporter {
	t.Helper()
	exp, err := otlptracegrpc.New(context.Background(),
		otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure(), otlptracegrpc.WithTimeout(testTracing().Timeout))
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

func ended(taskID int64, state string, sortKey int32) collector.Transition {
	return collector.Transition{TaskID: engine.IntID(taskID), ToState: state, SortKey: sortKey}
}

func byName(spans []gotSpan, name string) []gotSpan {
	var out []gotSpan
	for _, s := range spans {
		if s.GetName() == name {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b gotSpan) int { return int(a.GetStartTimeUnixNano() - b.GetStartTimeUnixNano()) })
	return out
}

func TestTaskTraceID(t *testing.T) {
	t.Parallel()
	a, b := TaskTraceID("", engine.IntID(42)), TaskTraceID("", engine.IntID(42))
	if a != b || !a.IsValid() {
		t.Fatalf("trace id not deterministic: %s %s", a, b)
	}
	if TaskTraceID("other-db", engine.IntID(42)) == a || TaskTraceID("", engine.IntID(43)) == a {
		t.Error("salt or task id does not change the trace id")
	}
	// Ratio sampling reads the low bytes; sequential task ids must spread.
	w := NewWorkflows(Config{SamplingRatio: 0.5, ServiceName: "tasker", MaxSpansPerTrace: 1}, nil, nil, nil, nil)
	n := 0
	for id := int64(1); id <= 10000; id++ {
		if _, ok := w.TraceID(engine.IntID(id)); ok {
			n++
		}
	}
	if n < 4700 || n > 5300 {
		t.Errorf("sampled %d of 10000 sequential tasks at ratio 0.5", n)
	}
}

func TestWorkflowTracesSpanBySpan(t *testing.T) {
	t.Parallel()
	recv, addr := startGRPCReceiver(t)
	src := &fakeHistories{tasks: map[engine.ID]collector.TaskHistory{engine.IntID(42): retriedTask()}}
	w, reg := newTestTraces(t, testTracing(), grpcExporter(t, addr), src)
	ctx := context.Background()
	if err := w.Consume(ctx, []collector.Transition{
		{TaskID: engine.IntID(42), ToState: "in_progress", SortKey: 10},                        // not an end
		{Step: true, TaskID: engine.IntID(42), StepID: engine.IntID(100), ToState: "complete"}, // steps never end a run
		ended(42, "complete", 20),
	}); err != nil {
		t.Fatal(err)
	}
	spans := recv.all()
	if len(spans) != 4 {
		t.Fatalf("received %d spans, want 1 task + 3 step attempts", len(spans))
	}
	traceID := TaskTraceID("", engine.IntID(42))
	for _, s := range spans {
		if hexID(s.GetTraceId()) != traceID.String() {
			t.Errorf("span %s in trace %x, want %s", s.GetName(), s.GetTraceId(), traceID)
		}
		if s.service != "tasker" {
			t.Errorf("service %q, want tasker", s.service)
		}
		if attr(s.GetAttributes(), "tasker.task_id") != "42" {
			t.Errorf("span %s without tasker.task_id", s.GetName())
		}
	}

	root := byName(spans, SpanTask)
	if len(root) != 1 {
		t.Fatalf("%d task spans", len(root))
	}
	r := root[0]
	if len(r.GetParentSpanId()) != 0 || hexID(r.GetSpanId()) != spanIDFor(traceID, "task").String() {
		t.Errorf("root span: parent %x, id %x", r.GetParentSpanId(), r.GetSpanId())
	}
	if r.GetStartTimeUnixNano() != uint64(at(0.1).UnixNano()) || r.GetEndTimeUnixNano() != uint64(at(10).UnixNano()) {
		t.Errorf("root span runs %d..%d, want first to terminal transition", r.GetStartTimeUnixNano(), r.GetEndTimeUnixNano())
	}
	for k, v := range map[string]string{
		"tasker.namespace": "payments", "tasker.task_name": "charge", "tasker.version": "1.2.0",
		"tasker.state": "complete", "tasker.run": "1", "tasker.total_steps": "2", "tasker.initiator": "checkout-web",
	} {
		if got := attr(r.GetAttributes(), k); got != v {
			t.Errorf("root %s = %q, want %q", k, got, v)
		}
	}
	if r.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_OK {
		t.Errorf("root status %v", r.GetStatus())
	}
	var events []string
	for _, e := range r.GetEvents() {
		events = append(events, e.GetName())
	}
	// Task transitions, and the step transitions that are not attempts.
	wantEvents := []string{"task.in_progress", "task.complete", "step.pending", "step.pending", "step.pending"}
	slices.Sort(events)
	slices.Sort(wantEvents)
	if !slices.Equal(events, wantEvents) {
		t.Errorf("root events %v, want %v", events, wantEvents)
	}

	steps := byName(spans, SpanStep)
	if len(steps) != 3 {
		t.Fatalf("%d step spans, want 3", len(steps))
	}
	a1, a2, b1 := steps[0], steps[1], steps[2]
	for _, s := range steps {
		if hexID(s.GetParentSpanId()) != hexID(r.GetSpanId()) {
			t.Errorf("step span %s not a child of the task span", attr(s.GetAttributes(), "tasker.step_name"))
		}
	}
	check := func(s gotSpan, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if got := attr(s.GetAttributes(), k); got != v {
				t.Errorf("%s attempt %s: %s = %q, want %q", attr(s.GetAttributes(), "tasker.step_name"),
					attr(s.GetAttributes(), "tasker.attempt_number"), k, got, v)
			}
		}
	}
	check(a1, map[string]string{"tasker.step_id": "100", "tasker.step_name": "authorize", "tasker.attempt_number": "1",
		"tasker.state": "error", "tasker.retryable": "true", "tasker.retry_limit": "3", "tasker.attempts": "2"})
	if a1.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR || hasAttr(a1.GetAttributes(), "tasker.backoff_request_seconds") {
		t.Errorf("failed attempt: status %v, backoff request on an old attempt %v", a1.GetStatus(), hasAttr(a1.GetAttributes(), "tasker.backoff_request_seconds"))
	}
	check(a2, map[string]string{"tasker.attempt_number": "2", "tasker.state": "complete",
		"tasker.backoff_seconds": "3.000", "tasker.backoff_request_seconds": "2"})
	if a2.GetStartTimeUnixNano() != uint64(at(4).UnixNano()) || a2.GetEndTimeUnixNano() != uint64(at(5).UnixNano()) {
		t.Errorf("second attempt runs %d..%d", a2.GetStartTimeUnixNano(), a2.GetEndTimeUnixNano())
	}
	check(b1, map[string]string{"tasker.step_name": "capture", "tasker.attempt_number": "1", "tasker.state": "complete"})
	// The dependency: capture's attempt links to the attempt that completed
	// authorize.
	if len(b1.GetLinks()) != 1 || hexID(b1.GetLinks()[0].GetSpanId()) != hexID(a2.GetSpanId()) ||
		hexID(b1.GetLinks()[0].GetTraceId()) != traceID.String() || attr(b1.GetLinks()[0].GetAttributes(), "tasker.step_id") != "100" {
		t.Errorf("capture's links = %v, want one to authorize's second attempt %x", b1.GetLinks(), a2.GetSpanId())
	}
	if len(a1.GetLinks())+len(a2.GetLinks()) != 0 {
		t.Error("a root step has links")
	}

	// Exporting again (a restart, another replica) produces the same ids.
	if err := w.Consume(ctx, []collector.Transition{ended(42, "complete", 20)}); err != nil {
		t.Fatal(err)
	}
	again := recv.all()[4:]
	for i := range again {
		if hexID(again[i].GetSpanId()) != hexID(spans[i].GetSpanId()) || hexID(again[i].GetTraceId()) != hexID(spans[i].GetTraceId()) {
			t.Errorf("re-export changed span %d: %x/%x vs %x/%x", i, again[i].GetTraceId(), again[i].GetSpanId(), spans[i].GetTraceId(), spans[i].GetSpanId())
		}
	}
	if n := testutil.ToFloat64(w.tasks.WithLabelValues(resultExported)); n != 2 {
		t.Errorf("exported runs = %v, want 2", n)
	}
	if n := testutil.ToFloat64(w.spans); n != 8 {
		t.Errorf("spans exported = %v", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// A task that fails, is retried by an operator and completes has two runs:
// the first is the trace's root, the second its child, each with the
// attempts that ended in it.
func TestWorkflowTracesSecondRun(t *testing.T) {
	t.Parallel()
	recv, addr := startGRPCReceiver(t)
	h := collector.TaskHistory{
		TaskID: engine.IntID(7), Namespace: "ops", TaskName: "sync", Version: "0.1.0",
		Transitions: transitions(1, "in_progress", 0.0, "error", 2.0, "pending", 30.0, "in_progress", 31.0, "complete", 33.0),
		Steps: []collector.StepHistory{{
			StepID: engine.IntID(70), Name: "pull", Retryable: true, RetryLimit: i32(3), Attempts: i32(2),
			Error: "stale", ErrorClass: "X",
			Transitions: transitions(10, "in_progress", 0.5, "error", 1.5, "pending", 30.0, "in_progress", 31.5, "complete", 32.5),
		}},
	}
	src := &fakeHistories{tasks: map[engine.ID]collector.TaskHistory{engine.IntID(7): h}}
	w, _ := newTestTraces(t, testTracing(), grpcExporter(t, addr), src)
	ctx := context.Background()
	if err := w.Consume(ctx, []collector.Transition{ended(7, "error", 20)}); err != nil {
		t.Fatal(err)
	}
	if err := w.Consume(ctx, []collector.Transition{ended(7, "complete", 50)}); err != nil {
		t.Fatal(err)
	}
	spans := recv.all()
	runs := byName(spans, SpanTask)
	if len(runs) != 2 {
		t.Fatalf("%d task spans, want 2 runs", len(runs))
	}
	first, second := runs[0], runs[1]
	if len(first.GetParentSpanId()) != 0 || hexID(second.GetParentSpanId()) != hexID(first.GetSpanId()) {
		t.Errorf("second run's parent %x, want the first run %x", second.GetParentSpanId(), first.GetSpanId())
	}
	if attr(first.GetAttributes(), "tasker.state") != "error" || first.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("first run: %v %v", attr(first.GetAttributes(), "tasker.state"), first.GetStatus())
	}
	if attr(second.GetAttributes(), "tasker.run") != "2" || second.GetStartTimeUnixNano() != uint64(at(30).UnixNano()) {
		t.Errorf("second run: run %s starts %d", attr(second.GetAttributes(), "tasker.run"), second.GetStartTimeUnixNano())
	}
	steps := byName(spans, SpanStep)
	if len(steps) != 2 {
		t.Fatalf("%d step spans", len(steps))
	}
	if hexID(steps[0].GetParentSpanId()) != hexID(first.GetSpanId()) || hexID(steps[1].GetParentSpanId()) != hexID(second.GetSpanId()) {
		t.Error("attempts are not under the run they ended in")
	}
	// The error text belongs to the latest failure only; the first attempt
	// failed, but the step's results were overwritten since.
	if hasAttr(steps[0].GetAttributes(), "tasker.error") || steps[0].GetStatus().GetMessage() != "step failed" {
		t.Errorf("first attempt carries another attempt's error: %v", steps[0].GetStatus())
	}
}

func TestWorkflowTracesPreflightFailure(t *testing.T) {
	t.Parallel()
	recv, addr := startGRPCReceiver(t)
	h := collector.TaskHistory{
		TaskID: engine.IntID(9), Transitions: transitions(1, "in_progress", 0.0, "error", 1.0),
		Steps: []collector.StepHistory{{
			StepID: engine.IntID(90), Name: "lookup", Error: "No step handler registered", ErrorClass: "Tasker::ProceduralError",
			Transitions: transitions(10, "error", 0.5),
		}},
	}
	w, _ := newTestTraces(t, testTracing(), grpcExporter(t, addr), &fakeHistories{tasks: map[engine.ID]collector.TaskHistory{engine.IntID(9): h}})
	if err := w.Consume(context.Background(), []collector.Transition{ended(9, "error", 20)}); err != nil {
		t.Fatal(err)
	}
	steps := byName(recv.all(), SpanStep)
	if len(steps) != 1 {
		t.Fatalf("%d step spans", len(steps))
	}
	s := steps[0]
	if attr(s.GetAttributes(), "tasker.preflight") != "true" || s.GetStartTimeUnixNano() != s.GetEndTimeUnixNano() ||
		attr(s.GetAttributes(), "tasker.exception_class") != "Tasker::ProceduralError" ||
		s.GetStatus().GetMessage() != "No step handler registered" {
		t.Errorf("pre-flight failure span: %v", s)
	}
}

func TestWorkflowTracesSamplingAndRateLimit(t *testing.T) {
	t.Parallel()
	recv, addr := startGRPCReceiver(t)
	src := &fakeHistories{tasks: map[engine.ID]collector.TaskHistory{}}
	for id := int64(1); id <= 50; id++ {
		h := retriedTask()
		h.TaskID = engine.IntID(id)
		src.tasks[h.TaskID] = h
	}
	cfg := testTracing()
	cfg.SamplingRatio = 0
	w, _ := newTestTraces(t, cfg, grpcExporter(t, addr), src)
	var ends []collector.Transition
	for id := int64(1); id <= 50; id++ {
		ends = append(ends, ended(id, "complete", 20))
	}
	if err := w.Consume(context.Background(), ends); err != nil {
		t.Fatal(err)
	}
	if len(recv.all()) != 0 || src.calls != 0 {
		t.Errorf("ratio 0 exported %d spans and read %d histories", len(recv.all()), src.calls)
	}
	if _, ok := w.ExemplarTraceID(engine.IntID(1)); ok {
		t.Error("an unsampled task has an exemplar")
	}

	// 10 spans per second. Before any history is read a run is assumed to
	// be one span, so the first batch admits ten runs of four spans; the
	// debt then holds everything back until the bucket refills. No trace is
	// ever cut.
	cfg = testTracing()
	cfg.MaxSpansPerSecond = 10
	w, _ = newTestTraces(t, cfg, grpcExporter(t, addr), src)
	clock := base
	w.now = func() time.Time { return clock }
	w.limiter = newSpanLimiter(cfg.MaxSpansPerSecond, w.now)
	if err := w.Consume(context.Background(), ends); err != nil {
		t.Fatal(err)
	}
	exported := testutil.ToFloat64(w.tasks.WithLabelValues(resultExported))
	limited := testutil.ToFloat64(w.tasks.WithLabelValues(resultRateLimited))
	if exported != 10 || limited != 40 {
		t.Errorf("exported %v, rate limited %v; want 10 and 40", exported, limited)
	}
	if n := len(byName(recv.all(), SpanTask)); n != 10 || len(byName(recv.all(), SpanStep)) != 30 {
		t.Errorf("%d task spans received, want 10 whole traces", n)
	}
	clock = clock.Add(time.Second)
	if err := w.Consume(context.Background(), ends[:5]); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(w.tasks.WithLabelValues(resultExported)); n != 10 {
		t.Errorf("exported %v while paying the debt, want still 10", n)
	}
	// Over the next ten seconds the average holds: about 10 spans/s, at
	// most one run over.
	for range 10 {
		clock = clock.Add(time.Second)
		if err := w.Consume(context.Background(), ends[:5]); err != nil {
			t.Fatal(err)
		}
	}
	spans := len(recv.all()) - 40
	if spans < 80 || spans > 100+4 {
		t.Errorf("%d spans exported in 10 s at 10 spans/s", spans)
	}
}

func TestWorkflowTracesRetryAfterReceiverFailure(t *testing.T) {
	t.Parallel()
	recv, addr := startGRPCReceiver(t)
	src := &fakeHistories{tasks: map[engine.ID]collector.TaskHistory{engine.IntID(42): retriedTask()}}
	w, _ := newTestTraces(t, testTracing(), grpcExporter(t, addr), src)
	clock := base
	w.now = func() time.Time { return clock }
	recv.failNext(1)
	err := w.Consume(context.Background(), []collector.Transition{ended(42, "complete", 20)})
	if err == nil {
		t.Fatal("a failed export returned no error")
	}
	if len(w.pending) != 1 || testutil.ToFloat64(w.pendingGauge) != 1 {
		t.Fatalf("pending = %v", w.pending)
	}
	// While paused nothing is tried.
	if err := w.Consume(context.Background(), nil); err != nil || len(recv.all()) != 0 {
		t.Fatalf("tried during the pause: %v, %d spans", err, len(recv.all()))
	}
	clock = clock.Add(retryAfter + time.Second)
	if err := w.Consume(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if len(byName(recv.all(), SpanTask)) != 1 || len(w.pending) != 0 {
		t.Errorf("the pending run was not exported after the pause: %d spans, %d pending", len(recv.all()), len(w.pending))
	}

	// A failing history read keeps the run too.
	src.err = errors.New("database down")
	clock = clock.Add(retryAfter + time.Second)
	if err := w.Consume(context.Background(), []collector.Transition{ended(42, "complete", 20)}); err == nil {
		t.Fatal("a failed history read returned no error")
	}
	if len(w.pending) != 1 {
		t.Errorf("pending after a history failure = %d", len(w.pending))
	}
	// A full queue drops, counted.
	w.cfg.MaxPendingTasks = 1
	w.keep([]taskEnd{{taskID: engine.IntID(1)}, {taskID: engine.IntID(2)}})
	if n := testutil.ToFloat64(w.tasks.WithLabelValues(resultDropped)); n != 2 {
		t.Errorf("dropped = %v, want 2", n)
	}
}
