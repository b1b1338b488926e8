package collector

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

func TestStepLabelerCap(t *testing.T) {
	a, b := [2]string{"billing", "invoice"}, [2]string{"default", "welcome"}
	tests := []struct {
		name  string
		calls []struct {
			pair [2]string
			step string
		}
		want []string
	}{
		{"under the cap", []struct {
			pair [2]string
			step string
		}{{a, "charge"}, {a, "notify"}}, []string{"charge", "notify"}},
		{"third name folds, kept names stay", []struct {
			pair [2]string
			step string
		}{{a, "charge"}, {a, "notify"}, {a, "refund"}, {a, "charge"}, {a, "refund"}},
			[]string{"charge", "notify", OtherLabel, "charge", OtherLabel}},
		{"the cap is per pair", []struct {
			pair [2]string
			step string
		}{{a, "x"}, {a, "y"}, {b, "z"}, {a, "z"}}, []string{"x", "y", "z", OtherLabel}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newStepLabeler(2)
			for i, c := range tc.calls {
				if got := l.label(c.pair, c.step); got != tc.want[i] {
					t.Errorf("call %d (%v, %s) = %q, want %q", i, c.pair, c.step, got, tc.want[i])
				}
			}
		})
	}
}

// auditStep writes a core step of the named step name under task, with a
// run up to in_progress, and lists the name in the task's template.
func (f *coreFixture) auditStep(nt, task, name string) string {
	ns := f.key(`INSERT INTO tasker.named_steps (name, created_at, updated_at) VALUES ($1, $2, $2)
	             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING named_step_uuid::text`, name, coreBase)
	f.exec(`INSERT INTO tasker.named_tasks_named_steps (named_task_uuid, named_step_uuid, created_at, updated_at)
	        VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING`, nt, ns, coreBase)
	k := f.key(`INSERT INTO tasker.workflow_steps (task_uuid, named_step_uuid, attempts, max_attempts, created_at, updated_at)
	            VALUES ($1, $2, 1, 3, $3, $3) RETURNING workflow_step_uuid::text`, task, ns, coreBase)
	f.transitions("tasker.workflow_step_transitions", "workflow_step_uuid", k, 0, coreStepRun)
	return k
}

// handOff writes a step's hand-off transition and its audit row in q, as
// tasker-core's trigger trg_step_result_audit does in the transition's
// transaction (our schema has no trigger). ms nil is a worker result whose
// time the trigger did not find.
func handOff(t *testing.T, ctx context.Context, q execQuerier, task, step string, success bool, ms *int64) {
	t.Helper()
	state := "enqueued_for_orchestration"
	if !success {
		state = "enqueued_as_error_for_orchestration"
	}
	coreStepTransition(t, ctx, q, step, state)
	if _, err := q.Exec(ctx, `INSERT INTO tasker.workflow_step_result_audit
		(workflow_step_uuid, workflow_step_transition_uuid, task_uuid, success, execution_time_ms)
		SELECT $1, workflow_step_transition_uuid, $2, $3, $4
		FROM tasker.workflow_step_transitions WHERE workflow_step_uuid = $1 AND most_recent`,
		step, task, success, ms); err != nil {
		t.Fatal(err)
	}
}

func ms(n int64) *int64 { return &n }

// executionSeries returns the execution histogram of one series, nil if absent.
func executionSeries(t *testing.T, reg *prometheus.Registry, ns, task, step, outcome string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"namespace": ns, "task": task, "step": step, "outcome": outcome}
	for _, mf := range mfs {
		if mf.GetName() != "tasker_step_execution_seconds" {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetHistogram()
		}
	}
	return nil
}

// TestCoreStepExecutionAudit writes hand-offs with their audit rows the
// way tasker-core does and checks the execution histogram and the untimed
// counter against them: per outcome, a NULL time counted as untimed, a
// row committed late by a long transaction observed once, the exemplar,
// the step cap and the series created at zero from the templates.
func TestCoreStepExecutionAudit(t *testing.T) {
	t.Parallel()
	f := newCoreFixture(t)
	nt := f.namedTask("billing", "invoice")
	task := f.task(nt, 0, coreTaskRun...)
	charge := f.auditStep(nt, task, "charge")
	notify := f.auditStep(nt, task, "notify")
	refund := f.auditStep(nt, task, "refund")
	archive := f.auditStep(nt, task, "archive") // fourth name: beyond a cap of 3
	// The long transaction's step: its own row locks must not block the
	// others' writes.
	task2 := f.task(nt, 0, coreTaskRun...)
	charge2 := f.auditStep(nt, task2, "charge")
	traceOf := func(id engine.ID) string { return strings.ReplaceAll(id.String(), "-", "") }
	cfg := testStreamConfig()
	cfg.KeyClockMargin = 0
	s := newTestStream(t, f.pg.URL, cfg, nil, WithExemplars(func(id engine.ID) (string, bool) { return traceOf(id), true }))
	s.steps = newStepLabeler(3)
	s.drain(t)
	if !s.audit {
		t.Fatal("the stream did not find tasker.workflow_step_result_audit")
	}

	// Created at zero from named_tasks_named_steps, read in name order:
	// archive, charge, notify kept; refund is beyond the cap.
	for _, step := range []string{"archive", "charge", "notify"} {
		for _, o := range auditOutcomes {
			if h := executionSeries(t, s.reg, "billing", "invoice", step, o); h == nil || h.GetSampleCount() != 0 {
				t.Errorf("step %s %s at start: %v, want a series at zero", step, o, h)
			}
		}
	}
	if h := executionSeries(t, s.reg, "billing", "invoice", "refund", outcomeSuccess); h != nil {
		t.Errorf("refund has its own series beyond the cap: %v", h)
	}

	ctx := testCtx(t)
	conn := f.pg.Conn(t)
	// A long transaction writes its hand-off first and commits last, after
	// polls that read newer keys.
	long, err := f.pg.Conn(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = long.Rollback(context.WithoutCancel(ctx)) }()
	handOff(t, ctx, long, task2, charge2, false, ms(4000))

	write := func(step string, success bool, t0 *int64) {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		handOff(t, ctx, tx, task, step, success, t0)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	write(charge, true, ms(1500))
	s.drain(t)
	coreStepTransition(t, ctx, conn, charge, "complete")
	coreStepTransition(t, ctx, conn, charge, "in_progress")
	write(charge, true, ms(250))
	s.drain(t)
	write(notify, true, nil)
	write(notify, false, nil)
	write(refund, true, ms(100)) // beyond the cap: step="other"
	write(archive, true, ms(-5)) // a clock gone wrong: observed as 0
	time.Sleep(20 * time.Millisecond)
	s.drain(t)
	if err := long.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.drain(t)
	s.drain(t) // a further poll must not observe anything twice
	if late := testutil.ToFloat64(s.m.lateRows.WithLabelValues("tasker.workflow_step_transitions")); late == 0 {
		t.Error("the long transaction's hand-off was not read late; the test did not exercise a late commit")
	}

	tests := []struct {
		step, outcome string
		count         uint64
		sum           float64
		task          string // whose trace the exemplar links
	}{
		{"charge", outcomeSuccess, 2, 1.75, task},
		{"charge", outcomeFailure, 1, 4, task2},
		{"notify", outcomeSuccess, 0, 0, ""},
		{"notify", outcomeFailure, 0, 0, ""},
		{OtherLabel, outcomeSuccess, 1, 0.1, task},
		{"archive", outcomeSuccess, 1, 0, task},
	}
	for _, tc := range tests {
		h := executionSeries(t, s.reg, "billing", "invoice", tc.step, tc.outcome)
		if h == nil {
			t.Errorf("%s %s: no series", tc.step, tc.outcome)
			continue
		}
		if h.GetSampleCount() != tc.count || math.Abs(h.GetSampleSum()-tc.sum) > 1e-9 {
			t.Errorf("%s %s: count %d sum %v, want %d and %v", tc.step, tc.outcome, h.GetSampleCount(), h.GetSampleSum(), tc.count, tc.sum)
		}
		if tc.count > 0 {
			exemplar := traceOf(mustID(t, tc.task))
			found := false
			for _, b := range h.GetBucket() {
				found = found || hasTraceID(b.GetExemplar(), exemplar)
			}
			if !found {
				t.Errorf("%s %s: no exemplar with trace_id %s", tc.step, tc.outcome, exemplar)
			}
		}
	}
	for _, o := range auditOutcomes {
		if n := testutil.ToFloat64(s.m.audit.stepUntimed.WithLabelValues("billing", "invoice", o)); n != 1 {
			t.Errorf("untimed %s = %v, want 1", o, n)
		}
	}
	// Every audit row is accounted for exactly once: timed or untimed.
	var rows int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tasker.workflow_step_result_audit`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if want := 2 + 1 + 1 + 1 + 2; rows != want {
		t.Fatalf("audit rows = %d, want %d", rows, want)
	}
	s.assertMatchesRecount(t)
	problems, err := testutil.GatherAndLint(s.reg, "tasker_step_execution_seconds", "tasker_step_execution_untimed_total")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

func mustID(t *testing.T, s string) engine.ID {
	t.Helper()
	id, err := engine.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestCoreStepExecutionWithoutAuditTable: a tasker-core database without
// the audit table (an older release) still streams; the families stay
// empty.
func TestCoreStepExecutionWithoutAuditTable(t *testing.T) {
	t.Parallel()
	f := newCoreFixture(t)
	f.exec(`DROP TABLE tasker.workflow_step_result_audit`)
	nt := f.namedTask("billing", "invoice")
	task := f.task(nt, 0, coreTaskRun...)
	step := f.auditStep(nt, task, "charge")
	s := newTestStream(t, f.pg.URL, testStreamConfig(), nil)
	s.drain(t)
	if s.audit {
		t.Fatal("the stream believes the dropped audit table exists")
	}
	coreStepTransition(t, testCtx(t), f.pg.Conn(t), step, "enqueued_for_orchestration")
	s.drain(t)
	if n := testutil.ToFloat64(s.m.stepTransitions.WithLabelValues("enqueued_for_orchestration", "billing", "invoice")); n != 1 {
		t.Errorf("hand-off transitions = %v, want 1", n)
	}
	if n := testutil.CollectAndCount(s.m.audit.stepExecution) + testutil.CollectAndCount(s.m.audit.stepUntimed); n != 0 {
		t.Errorf("%d step execution series without the audit table", n)
	}
}

// TestStepExecutionAbsentOnRails: Rails has no step result audit; the
// families export nothing there.
func TestStepExecutionAbsentOnRails(t *testing.T) {
	t.Parallel()
	pg := pgtest.NewTasker(t)
	f := newFixture(t, pg)
	task := f.task(f.namedTask("default", "welcome", "0.1.0"))
	step := f.step(task, stepSpec{attempts: n32(0), retryLimit: n32(3)})
	s := newTestStream(t, pg.URL, testStreamConfig(), nil)
	s.drain(t)
	ctx := testCtx(t)
	conn := pg.Conn(t)
	for _, st := range []string{"pending", "in_progress", "complete"} {
		statesman(t, ctx, conn, tableStepTransitions, step, st)
	}
	s.drain(t)
	if n := testutil.ToFloat64(s.m.stepTransitions.WithLabelValues("complete", "default", "welcome")); n != 1 {
		t.Fatalf("step complete transitions = %v, want 1: the stream did not read the rows", n)
	}
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "tasker_step_execution_") {
			t.Errorf("%s exported on Rails with %d series", mf.GetName(), len(mf.GetMetric()))
		}
	}
}
