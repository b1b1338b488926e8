package collector

import (
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// OtherLabel is the namespace and task label of (namespace, task) pairs
// beyond the label cap, as in exporters/domain.go.
const OtherLabel = "other"

// Bucket layouts. Tasks run from sub-second to hours (an operator resolving
// a failure); attempts from milliseconds to the HTTP client's timeouts;
// backoff from Tasker's 1 s minimum to its 300 s cap plus queueing.
var (
	taskDurationBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600}
	stepDurationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	backoffBuckets      = []float64{.5, 1, 2, 4, 8, 16, 32, 60, 120, 300, 600, 1800, 3600}
)

// streamMetrics are the stream's metrics: the workflow counters and
// histograms derived from transition rows (the tasker_ namespace, since
// they describe Tasker's work) and the stream's own health
// (tasker_sidecar_stream_).
type streamMetrics struct {
	taskTransitions *prometheus.CounterVec
	stepTransitions *prometheus.CounterVec
	taskDuration    *prometheus.HistogramVec
	stepDuration    *prometheus.HistogramVec
	stepRetries     *prometheus.CounterVec
	stepBackoff     *prometheus.HistogramVec
	audit           auditMetrics // tasker-core's step execution times (stream_audit.go)

	rows            *prometheus.CounterVec
	lateRows        *prometheus.CounterVec
	gaps            *prometheus.GaugeVec
	gapIDs          *prometheus.GaugeVec
	gapsExpired     *prometheus.CounterVec
	watermark       *prometheus.GaugeVec
	pollDuration    prometheus.Histogram
	pollErrors      *prometheus.CounterVec
	caughtUp        prometheus.Gauge
	lastPoll        prometheus.Gauge
	drift           *prometheus.GaugeVec
	driftTotal      *prometheus.CounterVec
	recounts        prometheus.Counter
	recountDuration prometheus.Histogram
	recountErrors   *prometheus.CounterVec
	recountFailures prometheus.Gauge
	checkpoints     *prometheus.CounterVec
	leader          prometheus.Gauge
	sinkErrors      prometheus.Counter
	replayed        prometheus.Counter
}

func newStreamMetrics(reg prometheus.Registerer) *streamMetrics {
	groupLabels := []string{"namespace", "task"}
	m := &streamMetrics{
		taskTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_task_transitions_total",
			Help: "Task transition rows seen by the transition stream, each exactly once, by the state entered and the task's namespace and name.",
		}, []string{"to_state", "namespace", "task"}),
		stepTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_step_transitions_total",
			Help: "Workflow step transition rows seen by the transition stream, each exactly once, by the state entered and the step's task namespace and name.",
		}, []string{"to_state", "namespace", "task"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tasker_task_duration_seconds",
			Help:    "Time from a task's creation (for a retried task, from the first transition after its previous terminal one, usually error to pending) to a terminal transition, by terminal state.",
			Buckets: taskDurationBuckets,
		}, append(slices.Clone(groupLabels), "state")),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tasker_step_duration_seconds",
			Help:    "Duration of one step attempt, from in_progress to the state it ended in (complete, error or cancelled); on tasker-core to the hand-off to orchestration, labelled complete or error by its outcome.",
			Buckets: stepDurationBuckets,
		}, append(slices.Clone(groupLabels), "state")),
		stepRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_step_retries_total",
			Help: "Steps leaving their retry wait for another attempt (error to pending or in_progress; on tasker-core waiting_for_retry to pending, enqueued or in_progress).",
		}, groupLabels),
		stepBackoff: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tasker_step_backoff_seconds",
			Help:    "Time a step spent between entering its retry wait (error; waiting_for_retry on tasker-core) and the start of its next attempt.",
			Buckets: backoffBuckets,
		}, groupLabels),
		audit: newAuditMetrics(),

		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "rows_total",
			Help: "Rows read by the transition stream, by table.",
		}, []string{"table"}),
		lateRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "late_rows_total",
			Help: "Rows committed after a row with a higher key had been read (found in a gap below the watermark, or on tasker-core below the newest key read).",
		}, []string{"table"}),
		gaps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "gaps",
			Help: "Open gaps (runs of missing ids below the watermark still re-checked), by table.",
		}, []string{"table"}),
		gapIDs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "gap_ids",
			Help: "Ids inside open gaps, by table.",
		}, []string{"table"}),
		gapsExpired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "gap_ids_expired_total",
			Help: "Ids given up on after the gap horizon; a row committed later under one of them is only corrected by the next recount.",
		}, []string{"table"}),
		watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "watermark",
			Help: "Highest id read, by table; on tasker-core the floor, in Unix seconds: every row whose key was made before it has been read.",
		}, []string{"table"}),
		pollDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "poll_duration_seconds",
			Help:    "Duration of one poll of the transition stream (its queries, not the recount).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		pollErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "errors_total",
			Help: "Failed polls by reason (timeout, connection, query, schema).",
		}, []string{"reason"}),
		caughtUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "caught_up",
			Help: "1 if the last poll succeeded and read every committed row; 0 while a backlog drains, after a failed poll and before the first poll.",
		}),
		lastPoll: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last successful poll, 0 if none yet.",
		}),
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "drift",
			Help: "Difference found by the last recount between the incremental counts and a full count (sum of absolute differences; error_steps: steps whose retry class differed).",
		}, []string{"kind"}),
		driftTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "drift_corrected_total",
			Help: "Sum of all differences corrected by recounts.",
		}, []string{"kind"}),
		recounts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "recounts_total",
			Help: "Full recounts, including the one at start.",
		}),
		recountDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "recount_duration_seconds",
			Help:    "Duration of full recounts.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		recountErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "recount_errors_total",
			Help: "Failed recounts by reason (timeout, connection, query, schema); the poll still applies what it read, and the recount is retried after a back-off.",
		}, []string{"reason"}),
		recountFailures: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "recount_consecutive_failures",
			Help: "Recounts that failed since the last successful one; while above zero, drift is neither measured nor corrected.",
		}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "checkpoint_saves_total",
			Help: "Checkpoint saves by result (ok, error).",
		}, []string{"result"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "leader",
			Help: "1 if this replica holds the lease: it exports traces and writes the shared checkpoint.",
		}),
		sinkErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "sink_errors_total",
			Help: "Errors returned by consumers of the stream (the trace exporter).",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "replayed_transitions_total",
			Help: "Terminal task transitions handed to the trace exporter again after taking the lease over, because the previous holder had not exported them.",
		}),
	}
	for _, r := range Reasons() {
		m.pollErrors.WithLabelValues(r)
		m.recountErrors.WithLabelValues(r)
	}
	for _, k := range driftKinds {
		m.driftTotal.WithLabelValues(k)
	}
	m.checkpoints.WithLabelValues("ok")
	m.checkpoints.WithLabelValues("error")
	if reg != nil {
		reg.MustRegister(m.taskTransitions, m.stepTransitions, m.taskDuration, m.stepDuration, m.stepRetries,
			m.stepBackoff, m.rows, m.lateRows, m.gaps, m.gapIDs, m.gapsExpired, m.watermark, m.pollDuration,
			m.pollErrors, m.caughtUp, m.lastPoll, m.drift, m.driftTotal, m.recounts, m.recountDuration,
			m.recountErrors, m.recountFailures, m.checkpoints, m.leader, m.sinkErrors, m.replayed,
			m.audit.stepExecution, m.audit.stepUntimed)
	}
	return m
}

var driftKinds = []string{"tasks", "steps", "error_steps"}

func (m *streamMetrics) setDrift(d driftReport) {
	for i, v := range []int64{d.Tasks, d.Steps, d.ErrorSteps} {
		m.drift.WithLabelValues(driftKinds[i]).Set(float64(v))
		m.driftTotal.WithLabelValues(driftKinds[i]).Add(float64(v))
	}
}

// touchTables creates the per-table series of e's tables at zero, once
// the engine is known.
func (m *streamMetrics) touchTables(e engine.Engine) {
	for t := range numTables {
		m.rows.WithLabelValues(t.name(e))
		m.lateRows.WithLabelValues(t.name(e))
		m.gapsExpired.WithLabelValues(t.name(e))
	}
}

// touchGroups creates at zero the transition counters and histograms of
// each (namespace, task) label pair in pairs, in every label combination
// e's state machines allow: the task and step transitions by state
// entered, the retries, the task durations by run-ending state, the step
// attempt durations by outcome (AttemptOutcome) and the backoff. Called
// with the pairs the labeler keeps after seeding (labeler.keptLabels), it
// lets the per-task panels read zero on a quiet database instead of "No
// data"; the pairs are bounded by the label cap, so the series are those
// the cap allows anyway (docs/operations.md, Sizing).
func (m *streamMetrics) touchGroups(e engine.Engine, pairs [][2]string) {
	outcomes := attemptOutcomes(e)
	for _, p := range pairs {
		ns, task := p[0], p[1]
		for _, s := range e.TaskStates.All {
			m.taskTransitions.WithLabelValues(s, ns, task)
		}
		for _, s := range e.StepStates.All {
			m.stepTransitions.WithLabelValues(s, ns, task)
		}
		m.stepRetries.WithLabelValues(ns, task)
		for _, s := range e.TaskStates.All {
			if e.EndsRun(s) {
				m.taskDuration.WithLabelValues(ns, task, s)
			}
		}
		for _, o := range outcomes {
			m.stepDuration.WithLabelValues(ns, task, o)
		}
		m.stepBackoff.WithLabelValues(ns, task)
	}
}

// attemptOutcomes lists the state labels of e's step attempt durations:
// every outcome AttemptOutcome gives for a move between two of its states.
func attemptOutcomes(e engine.Engine) []string {
	var out []string
	for _, from := range e.StepStates.All {
		for _, to := range e.StepStates.All {
			if o, ok := e.AttemptOutcome(from, to); ok && !slices.Contains(out, o) {
				out = append(out, o)
			}
		}
	}
	return out
}

func (m *streamMetrics) setPosition(e engine.Engine, p position) {
	for t := range numTables {
		name := t.name(e)
		if e.Kind == engine.KindCore {
			m.watermark.WithLabelValues(name).Set(float64(p[t].Floor.UUIDTime().UnixMilli()) / 1e3)
			m.gaps.WithLabelValues(name).Set(0)
			m.gapIDs.WithLabelValues(name).Set(0)
			continue
		}
		m.watermark.WithLabelValues(name).Set(float64(p[t].Watermark))
		m.gaps.WithLabelValues(name).Set(float64(len(p[t].Gaps)))
		m.gapIDs.WithLabelValues(name).Set(float64(p[t].gapIDs()))
	}
}

// labeler bounds the (namespace, task) label pairs: the first max pairs
// keep their names (seeded with the largest groups of the first count, as
// the domain gauges rank them), every later one is "other". A counter's
// series cannot move between label sets, so a pair keeps its fate for the
// life of the process.
type labeler struct {
	max  int
	kept map[group]bool
}

func newLabeler(max int) *labeler { return &labeler{max: max, kept: map[group]bool{}} }

func (l *labeler) seed(groups []group) {
	for _, g := range groups {
		if len(l.kept) >= l.max {
			return
		}
		l.kept[g] = true
	}
}

// keptLabels returns the label values of the pairs kept so far, in no
// particular order.
func (l *labeler) keptLabels() [][2]string {
	out := make([][2]string, 0, len(l.kept))
	for g := range l.kept {
		out = append(out, [2]string{clean(g.namespace), clean(g.task)})
	}
	return out
}

func (l *labeler) labels(g group) (namespace, task string) {
	if !l.kept[g] {
		if len(l.kept) >= l.max {
			return OtherLabel, OtherLabel
		}
		l.kept[g] = true
	}
	return clean(g.namespace), clean(g.task)
}

// stateValue keeps the state label to Tasker's six states; rows with any
// other to_state (which Tasker's models reject) count as "other".
func stateValue(known func(string) bool, s string) string {
	if known(s) {
		return s
	}
	return OtherLabel
}

func clean(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// exemplar returns the exemplar labels for a task's trace, nil when the
// task has no exported trace.
type exemplarFunc func(taskID engine.ID) (traceID string, ok bool)

func (m *streamMetrics) inc(c prometheus.Counter, ex prometheus.Labels) {
	if ex != nil {
		if a, ok := c.(prometheus.ExemplarAdder); ok {
			a.AddWithExemplar(1, ex)
			return
		}
	}
	c.Inc()
}

func (m *streamMetrics) observe(o prometheus.Observer, d time.Duration, ex prometheus.Labels) {
	v := max(d.Seconds(), 0) // clock skew between writers must not produce a negative observation
	if ex != nil {
		if e, ok := o.(prometheus.ExemplarObserver); ok {
			e.ObserveWithExemplar(v, ex)
			return
		}
	}
	o.Observe(v)
}

// emit updates the workflow metrics for one transition row; g is its
// group, ex its exemplar (nil for none).
func (m *streamMetrics) emit(e engine.Engine, t table, r *row, ns, task string, ex prometheus.Labels) {
	if t == tableTaskTransitions {
		to := stateValue(e.IsTaskState, r.toState)
		m.inc(m.taskTransitions.WithLabelValues(to, ns, task), ex)
		if e.EndsRun(r.toState) {
			start := r.taskCreated
			if r.runStartAt != nil {
				start = r.runStartAt
			}
			if start != nil {
				m.observe(m.taskDuration.WithLabelValues(ns, task, to), r.at.Sub(*start), ex)
			}
		}
		return
	}
	to := stateValue(e.IsStepState, r.toState)
	m.inc(m.stepTransitions.WithLabelValues(to, ns, task), ex)
	from := ""
	if r.fromState != nil {
		from = *r.fromState
	}
	outcome, ends := e.AttemptOutcome(from, to)
	switch {
	case ends && r.fromAt != nil:
		m.observe(m.stepDuration.WithLabelValues(ns, task, outcome), r.at.Sub(*r.fromAt), ex)
	case e.IsRetry(from, to):
		m.inc(m.stepRetries.WithLabelValues(ns, task), ex)
	}
	if to == engine.InProgress && r.lastErrorAt != nil {
		m.observe(m.stepBackoff.WithLabelValues(ns, task), r.at.Sub(*r.lastErrorAt), ex)
	}
}
