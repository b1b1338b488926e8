// Package traces is the workflow trace pipeline: it turns the transition
// stream's ended task runs into one OpenTelemetry trace per task (Workflows),
// builds the provider of the sidecar's own spans, and owns the `tracing:`
// configuration (Config). The OTLP exporter is built by traces/otlp, so
// that importing this package (internal/config does) links no gRPC or OTLP
// package. See docs/traces.md.
package traces

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// Span names, as Tasker's TelemetrySubscriber names them (docs/traces.md,
// "Tasker's spans").
const (
	SpanTask = "tasker.task.execution"
	SpanStep = "tasker.step.execution"
)

// retryAfter is how long the exporter leaves a failing receiver alone
// before it tries again, so a dead receiver costs one timeout per period
// and not one per poll of the stream.
const retryAfter = 15 * time.Second

// historyChunk bounds the tasks read in one history query.
const historyChunk = 200

// TaskHistorySource reads task histories; *collector.DB implements it.
// seen holds the transitions the stream already handed over for some of
// the tasks (collector.Transition.History), which are not read again.
type TaskHistorySource interface {
	TaskHistories(ctx context.Context, taskIDs []engine.ID, seen map[engine.ID]*collector.TaskTransitions) ([]collector.TaskHistory, error)
}

// Workflows turns the transition stream into one trace per task: it
// is a collector.Sink. When a task reaches a terminal state (complete,
// error, cancelled, resolved_manually) it reads the task's history (only
// the task's and steps' columns when the stream handed over the
// transitions with the run's end) and
// exports a span for that run of the task with a child span per step
// attempt, synchronously, so the stream's checkpoint only moves past
// exported tasks. See docs/traces.md for the span model.
type Workflows struct {
	cfg     Config
	src     TaskHistorySource
	exp     sdktrace.SpanExporter
	tp      *sdktrace.TracerProvider
	tracer  trace.Tracer
	rec     *spanRecorder
	sampler sdktrace.Sampler
	logger  *slog.Logger
	now     func() time.Time

	mu          sync.Mutex // Consume and Shutdown
	limiter     *spanLimiter
	pending     []taskEnd // ends whose export failed, tried again later
	pausedUntil time.Time

	tasks          *prometheus.CounterVec
	spans          prometheus.Counter
	exportErrors   prometheus.Counter
	exportDuration prometheus.Histogram
	pendingGauge   prometheus.Gauge
}

// taskEnd is a terminal task transition: the end of one run of a task.
type taskEnd struct {
	taskID engine.ID
	// id is the transition's key, which finds it on core, where sort_key
	// is not unique; sortKey finds it on Rails.
	id      engine.ID
	sortKey int32
	// seen is the task's transitions as the stream read them, nil when the
	// stream did not see them all (collector.Transition.History).
	seen *collector.TaskTransitions
}

// Results counted in tasker_sidecar_traces_tasks_total.
const (
	resultExported    = "exported"
	resultUnsampled   = "unsampled"
	resultRateLimited = "rate_limited"
	resultDropped     = "dropped"  // the retry queue was full
	resultMissing     = "missing"  // the task or its transition is gone from the database
	resultRetried     = "retrying" // export failed; kept for another try
)

// NewWorkflows returns the trace pipeline for workflow traces. exp
// receives the spans (otlp.NewSpanExporter, or any SpanExporter in tests)
// and is shut down by Shutdown; src reads task histories; metrics go to reg
// (nil skips them).
func NewWorkflows(cfg Config, exp sdktrace.SpanExporter, src TaskHistorySource, reg prometheus.Registerer, logger *slog.Logger) *Workflows {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rec := &spanRecorder{}
	limits := sdktrace.NewSpanLimits()
	// A run span carries an event per task and step transition; a wide
	// task easily has more than the default 128; a core step writes about
	// four rows per attempt besides the attempt's own.
	limits.EventCountLimit = 8 * cfg.MaxSpansPerTrace
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(cfg.Resource(cfg.ServiceName, cfg.ServiceVersion)),
		sdktrace.WithIDGenerator(idGenerator{}),
		// Sampling is decided before reading a history (Sampled), so every
		// span that gets here is wanted.
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithSpanProcessor(rec),
		sdktrace.WithRawSpanLimits(limits),
	)
	w := &Workflows{
		cfg:     cfg,
		src:     src,
		exp:     exp,
		tp:      tp,
		tracer:  tp.Tracer("github.com/tasker-systems/tasker-sidecar/traces"),
		rec:     rec,
		sampler: sdktrace.TraceIDRatioBased(cfg.SamplingRatio),
		logger:  logger,
		now:     time.Now,
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "traces", Name: "task_runs_total",
			Help: "Ended task runs by what the trace exporter did with them (exported, unsampled, rate_limited, retrying, dropped, missing).",
		}, []string{"result"}),
		spans: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "traces", Name: "spans_exported_total",
			Help: "Workflow spans accepted by the OTLP receiver.",
		}),
		exportErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "traces", Name: "export_errors_total",
			Help: "Failed exports of workflow spans (the receiver or the history query failed).",
		}),
		exportDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tasker_sidecar", Subsystem: "traces", Name: "export_duration_seconds",
			Help:    "Time to read the histories of ended tasks and export their spans, per stream batch.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		pendingGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "traces", Name: "pending_task_runs",
			Help: "Ended task runs waiting for another export attempt.",
		}),
	}
	w.limiter = newSpanLimiter(cfg.MaxSpansPerSecond, w.now)
	for _, r := range []string{resultExported, resultUnsampled, resultRateLimited, resultDropped, resultMissing, resultRetried} {
		w.tasks.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(w.tasks, w.spans, w.exportErrors, w.exportDuration, w.pendingGauge)
	}
	return w
}

// TraceID is the trace id of the task's trace and whether the task is
// sampled.
func (w *Workflows) TraceID(taskID engine.ID) (trace.TraceID, bool) {
	id := TaskTraceID(w.cfg.TraceIDSalt, taskID)
	r := w.sampler.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: id, Name: SpanTask})
	return id, r.Decision == sdktrace.RecordAndSample
}

// ExemplarTraceID is TraceID as collector.WithExemplars wants it: the hex
// id, and false for tasks that are not traced.
func (w *Workflows) ExemplarTraceID(taskID engine.ID) (string, bool) {
	id, ok := w.TraceID(taskID)
	if !ok {
		return "", false
	}
	return id.String(), true
}

// Consume implements collector.Sink: it exports the runs that ended in ts
// (and those whose export failed earlier), and returns the export error,
// if any, after keeping the failed runs for another try.
func (w *Workflows) Consume(ctx context.Context, ts []collector.Transition) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ends := w.pending
	w.pending = nil
	for _, t := range ts {
		if t.Step || !engineOf(t.TaskID).EndsRun(t.ToState) {
			continue
		}
		if _, ok := w.TraceID(t.TaskID); !ok {
			w.tasks.WithLabelValues(resultUnsampled).Inc()
			continue
		}
		ends = append(ends, taskEnd{taskID: t.TaskID, id: t.ID, sortKey: t.SortKey, seen: t.History})
	}
	if len(ends) == 0 {
		w.pendingGauge.Set(0)
		return nil
	}
	if w.now().Before(w.pausedUntil) {
		w.keep(ends)
		return nil
	}
	start := time.Now()
	err := w.export(ctx, ends)
	w.exportDuration.Observe(time.Since(start).Seconds())
	w.pendingGauge.Set(float64(len(w.pending)))
	return err
}

// keep queues ends for another try, dropping what does not fit.
func (w *Workflows) keep(ends []taskEnd) {
	room := max(w.cfg.MaxPendingTasks-len(w.pending), 0)
	if len(ends) > room {
		w.tasks.WithLabelValues(resultDropped).Add(float64(len(ends) - room))
		ends = ends[:room]
	}
	// A kept end forgets the transitions the stream handed over: up to
	// max_pending_tasks of them wait for a receiver that may be down for
	// long, and a retry reads the history from the database instead, as for
	// a task the stream did not see begin.
	for _, e := range ends {
		e.seen = nil
		w.pending = append(w.pending, e)
	}
	w.tasks.WithLabelValues(resultRetried).Add(float64(len(ends)))
	w.pendingGauge.Set(float64(len(w.pending)))
}

func (w *Workflows) export(ctx context.Context, ends []taskEnd) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	// The rate limit is applied before reading histories, so a flood of
	// ending tasks costs no queries beyond the budget.
	var allowed []taskEnd
	for _, e := range ends {
		if !w.limiter.admit() {
			w.tasks.WithLabelValues(resultRateLimited).Inc()
			continue
		}
		allowed = append(allowed, e)
	}
	if len(allowed) == 0 {
		return nil
	}
	histories, err := w.histories(ctx, allowed)
	if err != nil {
		w.exportErrors.Inc()
		w.fail(allowed)
		return fmt.Errorf("read task histories for traces: %w", err)
	}
	built := 0
	for _, e := range allowed {
		h, ok := histories[e.taskID]
		if !ok {
			w.tasks.WithLabelValues(resultMissing).Inc()
			continue
		}
		n, ok := w.build(h, e)
		if !ok {
			w.tasks.WithLabelValues(resultMissing).Inc()
			continue
		}
		w.limiter.settle(n)
		built++
	}
	spans := w.rec.take()
	if len(spans) == 0 {
		return nil
	}
	if err := w.exp.ExportSpans(ctx, spans); err != nil {
		w.exportErrors.Inc()
		w.fail(allowed)
		return fmt.Errorf("export %d workflow spans: %w", len(spans), err)
	}
	w.spans.Add(float64(len(spans)))
	w.tasks.WithLabelValues(resultExported).Add(float64(built))
	return nil
}

func (w *Workflows) fail(ends []taskEnd) {
	w.pausedUntil = w.now().Add(retryAfter)
	w.keep(ends)
}

func (w *Workflows) histories(ctx context.Context, ends []taskEnd) (map[engine.ID]collector.TaskHistory, error) {
	var ids []engine.ID
	listed := map[engine.ID]bool{}
	var seen map[engine.ID]*collector.TaskTransitions
	for _, e := range ends {
		if !listed[e.taskID] {
			listed[e.taskID] = true
			ids = append(ids, e.taskID)
		}
		if e.seen != nil {
			if seen == nil {
				seen = map[engine.ID]*collector.TaskTransitions{}
			}
			// Two ends of one task in a batch: the later one saw more.
			if prev := seen[e.taskID]; prev == nil || len(e.seen.Task) > len(prev.Task) {
				seen[e.taskID] = e.seen
			}
		}
	}
	out := make(map[engine.ID]collector.TaskHistory, len(ids))
	for chunk := range slices.Chunk(ids, historyChunk) {
		hs, err := w.src.TaskHistories(ctx, chunk, seen)
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			out[h.TaskID] = h
		}
	}
	return out, nil
}

// Shutdown tries the pending runs once more and shuts the exporter down.
func (w *Workflows) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	pending := w.pending
	w.pending = nil
	if len(pending) > 0 {
		if err := w.export(ctx, pending); err != nil {
			w.logger.Warn("could not export pending workflow traces at shutdown", "task_runs", len(pending), "err", err)
		}
	}
	w.mu.Unlock()
	return errors.Join(w.tp.Shutdown(ctx), w.exp.Shutdown(ctx))
}

// attempt is one execution of a step: from an in_progress row to the row
// after it (on core the hand-off to orchestration); or a failure before any
// execution (an error row not preceded by in_progress, nor on core by a
// hand-off), with no duration.
type attempt struct {
	step   *collector.StepHistory
	number int // 1-based, counting executions and pre-flight failures
	start  collector.HistoryTransition
	end    collector.HistoryTransition
	// outcome is complete, error or cancelled (Engine.AttemptOutcome), or
	// the end row's state when the engine gives none.
	outcome   string
	preflight bool
	last      bool // the step's latest attempt: its columns describe it
	waited    time.Duration
	spanID    trace.SpanID
	// Core only: the enqueued row the attempt was picked up from, and the
	// row orchestration wrote after the hand-off (complete,
	// waiting_for_retry, error...), zero when absent.
	enqueued, decided collector.HistoryTransition
}

// The engines, built once: Consume asks for every transition. Read only.
var railsEngine, coreEngine = engine.Rails(), engine.Core()

// engineOf is the engine whose database a key comes from: UUIDs are
// tasker-core's, numbers Rails'.
func engineOf(id engine.ID) engine.Engine {
	if id.IsUUID() {
		return coreEngine
	}
	return railsEngine
}

// rowKey identifies a transition row within its task or step for span ids:
// the sort_key on Rails (unique there, and what ids were always derived
// from), the row's key on core (sort_key is not unique).
func rowKey(id engine.ID, t collector.HistoryTransition) engine.ID {
	if id.IsUUID() {
		return t.ID
	}
	return engine.IntID(int64(t.SortKey))
}

// build starts and ends the spans of the run of h that ended at e and
// returns how many; false when the history does not contain e.
func (w *Workflows) build(h collector.TaskHistory, e taskEnd) (int, bool) {
	eng := engineOf(h.TaskID)
	traceID := TaskTraceID(w.cfg.TraceIDSalt, h.TaskID)
	runEnd := slices.IndexFunc(h.Transitions, func(t collector.HistoryTransition) bool {
		if h.TaskID.IsUUID() && !e.id.IsZero() {
			return t.ID == e.id
		}
		return t.SortKey == e.sortKey
	})
	if runEnd < 0 || !eng.EndsRun(h.Transitions[runEnd].ToState) {
		return 0, false
	}
	// The run begins after the previous terminal transition.
	run, runStart := 1, 0
	for i := range runEnd {
		if eng.EndsRun(h.Transitions[i].ToState) {
			run++
			runStart = i + 1
		}
	}
	var lower time.Time // step activity after this belongs to this run
	if runStart > 0 {
		lower = h.Transitions[runStart-1].At
	}
	first, last := h.Transitions[runStart], h.Transitions[runEnd]

	rootID := spanIDFor(traceID, "task")
	runID := rootID
	ctx := context.Background()
	opts := []trace.SpanStartOption{trace.WithTimestamp(first.At), trace.WithSpanKind(trace.SpanKindInternal)}
	if run == 1 {
		opts = append(opts, trace.WithNewRoot())
	} else {
		// A later run (a retried or cancelled-after-completion task) is a
		// child of the first run's span, which is already exported.
		runID = spanIDFor(traceID, "run", rowKey(h.TaskID, last))
		ctx = trace.ContextWithRemoteSpanContext(ctx, sampledContext(traceID, rootID))
	}
	attrs := []attribute.KeyValue{
		str("tasker.task_id", h.TaskID),
		attribute.String("tasker.namespace", h.Namespace),
		attribute.String("tasker.task_name", h.TaskName),
		attribute.String("tasker.version", h.Version),
		attribute.String("tasker.state", last.ToState),
		attribute.String("tasker.run", strconv.Itoa(run)),
		attribute.String("tasker.total_steps", strconv.Itoa(len(h.Steps))),
		attribute.String("tasker.initiator", h.Initiator),
		attribute.String("tasker.source_system", h.SourceSystem),
		attribute.String("tasker.reason", h.Reason),
	}
	if h.CorrelationID != "" {
		// tasker-core's own logs and spans carry it: the way from them to
		// this trace.
		attrs = append(attrs, attribute.String("tasker.correlation_id", h.CorrelationID))
	}
	_, runSpan := w.tracer.Start(withIDs(ctx, traceID, runID), SpanTask, append(opts, trace.WithAttributes(attrs...))...)
	for _, t := range h.Transitions[runStart : runEnd+1] {
		runSpan.AddEvent("task."+t.ToState, trace.WithTimestamp(t.At), trace.WithAttributes(str("tasker.transition_id", t.ID)))
	}

	attempts, events := stepActivity(eng, h, traceID)
	inRun := func(at time.Time) bool { return !at.After(last.At) && (lower.IsZero() || at.After(lower)) }
	var mine []attempt
	for _, a := range attempts {
		if inRun(a.end.At) {
			mine = append(mine, a)
		}
	}
	for _, ev := range events {
		if inRun(ev.t.At) {
			runSpan.AddEvent("step."+ev.t.ToState, trace.WithTimestamp(ev.t.At), trace.WithAttributes(
				str("tasker.step_id", ev.step.StepID), attribute.String("tasker.step_name", ev.step.Name)))
		}
	}
	dropped := 0
	if len(mine) > w.cfg.MaxSpansPerTrace {
		dropped = len(mine) - w.cfg.MaxSpansPerTrace
		mine = mine[:w.cfg.MaxSpansPerTrace]
	}
	runCtx := trace.ContextWithRemoteSpanContext(context.Background(), sampledContext(traceID, runID))
	for _, a := range mine {
		w.stepSpan(runCtx, h, traceID, a, attempts)
	}

	switch last.ToState {
	case engine.Complete:
		runSpan.SetStatus(codes.Ok, "")
	case engine.Error:
		runSpan.SetStatus(codes.Error, "task failed")
	}
	if dropped > 0 {
		runSpan.SetAttributes(attribute.String("tasker.step_spans_dropped", strconv.Itoa(dropped)))
	}
	runSpan.End(trace.WithTimestamp(last.At))
	return 1 + len(mine), true
}

func (w *Workflows) stepSpan(ctx context.Context, h collector.TaskHistory, traceID trace.TraceID, a attempt, all []attempt) {
	s := a.step
	attrs := []attribute.KeyValue{
		str("tasker.task_id", h.TaskID),
		str("tasker.step_id", s.StepID),
		attribute.String("tasker.step_name", s.Name),
		attribute.String("tasker.attempt_number", strconv.Itoa(a.number)),
		attribute.String("tasker.state", a.outcome),
		attribute.String("tasker.retryable", strconv.FormatBool(s.Retryable)),
		attribute.String("tasker.attempts", optInt(s.Attempts)),
		attribute.String("tasker.retry_limit", optInt(s.RetryLimit)),
	}
	if a.preflight {
		attrs = append(attrs, attribute.String("tasker.preflight", "true"))
	}
	if a.waited > 0 {
		attrs = append(attrs, attribute.String("tasker.backoff_seconds", seconds(a.waited)))
	}
	if !a.enqueued.At.IsZero() {
		attrs = append(attrs, attribute.String("tasker.queued_seconds", seconds(a.start.At.Sub(a.enqueued.At))))
	}
	if h.TaskID.IsUUID() && !a.preflight {
		attrs = append(attrs, attribute.String("tasker.handoff_state", a.end.ToState))
	}
	if !a.decided.At.IsZero() {
		attrs = append(attrs,
			attribute.String("tasker.orchestration_state", a.decided.ToState),
			attribute.String("tasker.orchestration_seconds", seconds(a.decided.At.Sub(a.end.At))))
	}
	// The step's columns are overwritten by every attempt, so they belong
	// on its latest attempt only.
	if a.last && s.BackoffRequestSeconds != nil {
		attrs = append(attrs, attribute.String("tasker.backoff_request_seconds", strconv.Itoa(int(*s.BackoffRequestSeconds))))
	}
	errMsg, errClass := "", ""
	if a.outcome == engine.Error {
		// tasker-core keeps each failure with its hand-off row; the
		// step's results hold the latest failure only.
		for _, f := range s.Failures {
			if f.TransitionID == a.end.ID {
				errMsg, errClass = f.Error, f.ErrorClass
			}
		}
		if errMsg == "" && a.last && s.Error != "" {
			errMsg, errClass = s.Error, s.ErrorClass
		}
		if errMsg != "" {
			attrs = append(attrs, attribute.String("tasker.error", errMsg), attribute.String("tasker.exception_class", errClass))
		}
	}
	var links []trace.Link
	for _, p := range s.Parents {
		if id, ok := completedAttempt(all, p, a.start.At); ok {
			links = append(links, trace.Link{
				SpanContext: sampledContext(traceID, id),
				Attributes:  []attribute.KeyValue{str("tasker.step_id", p), attribute.String("tasker.link", "parent_step")},
			})
		}
	}
	_, span := w.tracer.Start(withIDs(ctx, traceID, a.spanID), SpanStep,
		trace.WithTimestamp(a.start.At), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrs...), trace.WithLinks(links...))
	if h.TaskID.IsUUID() && !a.preflight {
		// The worker's hand-off to orchestration ends the attempt.
		span.AddEvent("step."+a.end.ToState, trace.WithTimestamp(a.end.At),
			trace.WithAttributes(str("tasker.transition_id", a.end.ID)))
	}
	switch a.outcome {
	case engine.Complete:
		span.SetStatus(codes.Ok, "")
	case engine.Error:
		if errMsg == "" {
			errMsg = "step failed"
		}
		span.SetStatus(codes.Error, errMsg)
	}
	span.End(trace.WithTimestamp(a.end.At))
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }

type stepEvent struct {
	step *collector.StepHistory
	t    collector.HistoryTransition
}

// isHandoff reports whether a core step state hands a worker's result to
// orchestration.
func isHandoff(s string) bool {
	return s == engine.EnqueuedForOrchestration || s == engine.EnqueuedAsErrorForOrchestration
}

// stepActivity splits every step's transitions into attempts (spans) and
// the other transitions (events on the run span).
func stepActivity(eng engine.Engine, h collector.TaskHistory, traceID trace.TraceID) ([]attempt, []stepEvent) {
	core := eng.Kind == engine.KindCore
	var attempts []attempt
	var events []stepEvent
	for i := range h.Steps {
		s := &h.Steps[i]
		n := 0
		var lastFailure time.Time
		first := len(attempts)
		for j, t := range s.Transitions {
			prev := ""
			if j > 0 {
				prev = s.Transitions[j-1].ToState
			}
			switch {
			case t.ToState == engine.InProgress && j+1 < len(s.Transitions):
				n++
				end := s.Transitions[j+1]
				a := attempt{step: s, number: n, start: t, end: end, outcome: end.ToState,
					spanID: spanIDFor(traceID, "step", s.StepID, rowKey(h.TaskID, t))}
				if o, ok := eng.AttemptOutcome(t.ToState, end.ToState); ok {
					a.outcome = o
				}
				if !lastFailure.IsZero() {
					a.waited = t.At.Sub(lastFailure)
				}
				if core && prev == engine.Enqueued {
					a.enqueued = s.Transitions[j-1]
				}
				if core && isHandoff(end.ToState) && j+2 < len(s.Transitions) {
					a.decided = s.Transitions[j+2]
				}
				attempts = append(attempts, a)
			case t.ToState == engine.InProgress:
				// Still running: its span comes with the run it ends in.
			case prev == engine.InProgress:
				// The end of an attempt, drawn by it.
			case t.ToState == engine.Error && !(core && isHandoff(prev)):
				n++
				attempts = append(attempts, attempt{step: s, number: n, start: t, end: t, outcome: engine.Error, preflight: true,
					spanID: spanIDFor(traceID, "step", s.StepID, rowKey(h.TaskID, t))})
			default:
				// On core also the enqueued rows and orchestration's
				// decisions after a hand-off: complete, waiting_for_retry,
				// error.
				events = append(events, stepEvent{s, t})
			}
			if t.ToState == eng.RetryWait() {
				lastFailure = t.At
			}
		}
		if len(attempts) > first {
			attempts[len(attempts)-1].last = true
		}
	}
	slices.SortStableFunc(attempts, func(a, b attempt) int { return a.start.At.Compare(b.start.At) })
	return attempts, events
}

// completedAttempt finds the span of the attempt of step that completed it
// last before at: the dependency a child attempt waited for.
func completedAttempt(all []attempt, step engine.ID, at time.Time) (trace.SpanID, bool) {
	var best *attempt
	for i := range all {
		a := &all[i]
		if a.step.StepID == step && a.outcome == engine.Complete && !a.end.At.After(at) {
			if best == nil || a.end.At.After(best.end.At) {
				best = a
			}
		}
	}
	if best == nil {
		return trace.SpanID{}, false
	}
	return best.spanID, true
}

func sampledContext(traceID trace.TraceID, spanID trace.SpanID) trace.SpanContext {
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled, Remote: true,
	})
}

// str renders an id as Tasker does: every tasker.* attribute is a string
// (docs/traces.md, "Tasker's spans"), which is also what tag searches in
// Jaeger match.
func str(key string, v engine.ID) attribute.KeyValue {
	return attribute.String(key, v.String())
}

func optInt(p *int32) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(int(*p))
}

// spanRecorder collects ended spans so Consume can export them in one
// synchronous call, and know it succeeded before the stream checkpoints.
type spanRecorder struct {
	mu    sync.Mutex
	spans []sdktrace.ReadOnlySpan
}

func (r *spanRecorder) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (r *spanRecorder) OnEnd(s sdktrace.ReadOnlySpan) {
	r.mu.Lock()
	r.spans = append(r.spans, s)
	r.mu.Unlock()
}

func (r *spanRecorder) take() []sdktrace.ReadOnlySpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.spans
	r.spans = nil
	return out
}

func (r *spanRecorder) Shutdown(context.Context) error   { return nil }
func (r *spanRecorder) ForceFlush(context.Context) error { return nil }

// spanLimiter is a token bucket of spans: one second of budget at most,
// refilled at rate. A task run's span count is only known once its history
// is read, so admit charges the running average and settle corrects it:
// the average stays at rate, and no run is ever cut in half.
type spanLimiter struct {
	rate     float64
	tokens   float64
	estimate float64 // running average of spans per run
	last     time.Time
	now      func() time.Time
}

func newSpanLimiter(rate float64, now func() time.Time) *spanLimiter {
	return &spanLimiter{rate: rate, tokens: rate, estimate: 1, last: now(), now: now}
}

// admit reports whether one more run fits and, if so, charges the
// estimate for it.
func (l *spanLimiter) admit() bool {
	if l.rate <= 0 {
		return true
	}
	now := l.now()
	l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens <= 0 {
		return false
	}
	l.tokens -= l.estimate
	return true
}

// settle replaces an admitted run's estimate with its real span count.
func (l *spanLimiter) settle(spans int) {
	if l.rate <= 0 {
		return
	}
	l.tokens -= float64(spans) - l.estimate
	l.estimate = 0.9*l.estimate + 0.1*float64(spans)
}

var _ collector.Sink = (*Workflows)(nil)
