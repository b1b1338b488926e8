package collector

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// Step execution times from tasker-core's step result audit
// (docs/tasker-core.md#step-execution-times). tasker-core's trigger
// trg_step_result_audit (create_step_result_audit) copies a worker's
// success and execution_time_ms into tasker.workflow_step_result_audit in
// the transaction that inserts the step's enqueued_for_orchestration or
// enqueued_as_error_for_orchestration transition
// (/work/shared/reference/tasker-core-facts.md §3). The audit row is
// therefore visible in exactly the snapshots its transition is, and the
// stream reads it with that transition (coreStepTransitionsSQL): the
// transition cursor's exactly-once reading covers it, a late commit
// included, with no cursor of its own. Rails has no such table: the
// families stay absent there.

// stepExecutionBuckets spans a handler's own run time as the worker
// measures it: from a millisecond (an in-process check) to an hour (a
// batch job), past the attempt histogram's 300 s top because the audit
// time does not include queueing.
var stepExecutionBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600}

// maxStepLabels caps the step label values per (namespace, task) label
// pair; later step names of the pair are summed into step="other". With
// max_label_groups pairs the histogram has at most
// max_label_groups × (maxStepLabels + 1) × 2 outcomes series sets.
const maxStepLabels = 20

// Outcome labels, from the audit's success column.
const (
	outcomeSuccess = "success"
	outcomeFailure = "failure"
)

var auditOutcomes = []string{outcomeSuccess, outcomeFailure}

type auditMetrics struct {
	stepExecution *prometheus.HistogramVec
	stepUntimed   *prometheus.CounterVec
}

func newAuditMetrics() auditMetrics {
	return auditMetrics{
		stepExecution: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tasker_step_execution_seconds",
			Help:    "tasker-core only: a step attempt's execution time as its worker reported it (workflow_step_result_audit.execution_time_ms), by outcome (the audit's success); step names beyond the per-task cap are step=\"other\".",
			Buckets: stepExecutionBuckets,
		}, []string{"namespace", "task", "step", "outcome"}),
		stepUntimed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_step_execution_untimed_total",
			Help: "tasker-core only: step result audit rows without an execution time (the worker nested its result, so the trigger found no flat execution_time_ms), by outcome.",
		}, []string{"namespace", "task", "outcome"}),
	}
}

func outcomeOf(success bool) string {
	if success {
		return outcomeSuccess
	}
	return outcomeFailure
}

// stepLabeler caps the step label values per (namespace, task) label
// pair, first come first kept; as with labeler, a name keeps its fate for
// the life of the process.
type stepLabeler struct {
	max  int
	kept map[[2]string]map[string]bool
}

func newStepLabeler(max int) *stepLabeler {
	return &stepLabeler{max: max, kept: map[[2]string]map[string]bool{}}
}

func (l *stepLabeler) label(pair [2]string, step string) string {
	k := l.kept[pair]
	if k == nil {
		k = map[string]bool{}
		l.kept[pair] = k
	}
	if !k[step] {
		if len(k) >= l.max {
			return OtherLabel
		}
		k[step] = true
	}
	return clean(step)
}

// emitAudit observes a hand-off row's audit row, if it has one: its time
// in tasker_step_execution_seconds, or, without one, a count in
// tasker_step_execution_untimed_total.
func (m *streamMetrics) emitAudit(steps *stepLabeler, r *row, ns, task string, ex prometheus.Labels) {
	if r.auditSuccess == nil {
		return
	}
	outcome := outcomeOf(*r.auditSuccess)
	if r.auditMillis == nil {
		m.inc(m.audit.stepUntimed.WithLabelValues(ns, task, outcome), ex)
		return
	}
	name := OtherLabel // a step row gone since: no name to give
	if r.stepName != nil {
		name = *r.stepName
	}
	step := steps.label([2]string{ns, task}, name)
	v := max(float64(*r.auditMillis)/1e3, 0)
	o := m.audit.stepExecution.WithLabelValues(ns, task, step, outcome)
	if ex != nil {
		if e, ok := o.(prometheus.ExemplarObserver); ok {
			e.ObserveWithExemplar(v, ex)
			return
		}
	}
	o.Observe(v)
}

const hasAuditSQL = `SELECT to_regclass('tasker.workflow_step_result_audit') IS NOT NULL`

// The step names of each task template, in a stable order so that the
// names kept under the cap do not change between restarts.
const coreTemplateStepsSQL = `
SELECT nts.named_task_uuid, ns.name
FROM tasker.named_tasks_named_steps nts
JOIN tasker.named_steps ns ON ns.named_step_uuid = nts.named_step_uuid
ORDER BY ns.name, nts.named_task_uuid`

// touchAudit creates at zero, as touchGroups does for the transition
// families, the untimed counters of every kept (namespace, task) pair and
// the execution histograms of the steps their templates name
// (named_tasks_named_steps), within the step cap.
func (s *Stream) touchAudit(ctx context.Context, tx pgx.Tx) error {
	pairs := s.labels.keptLabels()
	for _, p := range pairs {
		for _, o := range auditOutcomes {
			s.m.audit.stepUntimed.WithLabelValues(p[0], p[1], o)
		}
	}
	rows, err := tx.Query(ctx, coreTemplateStepsSQL)
	if err != nil {
		return fmt.Errorf("read template steps: %w", err)
	}
	type templateStep struct {
		task engine.ID
		name string
	}
	steps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (templateStep, error) {
		var x templateStep
		err := r.Scan(&x.task, &x.name)
		return x, err
	})
	if err != nil {
		return fmt.Errorf("read template steps: %w", err)
	}
	for _, st := range steps {
		nt, ok := s.named[st.task]
		if !ok || !s.labels.kept[nt.group] {
			continue // pairs not kept are "other": created when they happen
		}
		ns, task := s.labels.labels(nt.group)
		step := s.steps.label([2]string{ns, task}, st.name)
		for _, o := range auditOutcomes {
			s.m.audit.stepExecution.WithLabelValues(ns, task, step, o)
		}
	}
	return nil
}
