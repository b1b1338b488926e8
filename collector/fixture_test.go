package collector

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// epoch anchors every fixture timestamp. The health counts are not
// time-based, but fixed naive UTC values keep the fixtures independent of
// the machine's zone and clock anyway.
const epoch = "2025-01-01 00:00:00"

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logBuffer captures log output for assertions and mirrors it to t.Log.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(string(p))
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func captureLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// openTest opens a DB on url with a fresh registry and closes it at cleanup.
func openTest(t testing.TB, url string) (*DB, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	db, err := Open(DBConfig{URL: secret.URL(url)}, reg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(db.Close)
	return db, reg
}

// fixture writes Tasker rows directly with SQL through a read-write
// connection of its own (the collector's pool cannot write).
type fixture struct {
	t    testing.TB
	ctx  context.Context
	conn *pgx.Conn

	// fromState fills transitions' from_state with the previous state, which
	// Tasker never does (facts §2.3); counts must not depend on it.
	fromState bool

	systemID   int
	stepNameID int
	namespaces map[string]int
	seq        int
}

func newFixture(t testing.TB, db pgtest.DB) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: testCtx(t), conn: db.Conn(t), namespaces: map[string]int{}}
	f.systemID = f.id(`INSERT INTO tasker_dependent_systems (name, created_at, updated_at)
		VALUES ('fixture', $1, $1) RETURNING dependent_system_id`, epoch)
	f.stepNameID = f.id(`INSERT INTO tasker_named_steps (dependent_system_id, name, created_at, updated_at)
		VALUES ($1, 'fixture_step', $2, $2) RETURNING named_step_id`, f.systemID, epoch)
	return f
}

func (f *fixture) id(sql string, args ...any) int {
	f.t.Helper()
	var id int
	if err := f.conn.QueryRow(f.ctx, sql, args...).Scan(&id); err != nil {
		f.t.Fatalf("fixture %q: %v", sql, err)
	}
	return id
}

func (f *fixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.conn.Exec(f.ctx, sql, args...); err != nil {
		f.t.Fatalf("fixture %q: %v", sql, err)
	}
}

// namedTask creates (namespace, name, version), creating the namespace on
// first use.
func (f *fixture) namedTask(ns, name, version string) int {
	f.t.Helper()
	nsID, ok := f.namespaces[ns]
	if !ok {
		nsID = f.id(`INSERT INTO tasker_task_namespaces (name, created_at, updated_at)
			VALUES ($1, $2, $2) RETURNING task_namespace_id`, ns, epoch)
		f.namespaces[ns] = nsID
	}
	return f.id(`INSERT INTO tasker_named_tasks (name, task_namespace_id, version, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $4) RETURNING named_task_id`, name, nsID, version, epoch)
}

// task creates a task whose transitions go through states in order, the
// last one being most_recent, with Statesman's sort_key spacing of 10.
func (f *fixture) task(namedTask int, states ...string) int64 {
	f.t.Helper()
	f.seq++
	id := int64(f.id(`INSERT INTO tasker_tasks (named_task_id, requested_at, identity_hash, context, created_at, updated_at)
		VALUES ($1, $2, $3, '{}', $2, $2) RETURNING task_id`, namedTask, epoch, fmt.Sprintf("fixture-%d", f.seq)))
	f.transitions("tasker_task_transitions", "task_id", id, states)
	return id
}

// stepSpec holds the retry columns; nil pointers are stored as NULL.
type stepSpec struct {
	attempts, retryLimit *int32
	notRetryable         bool
	lastAttempted        bool
}

func n32(v int32) *int32 { return &v }

func (f *fixture) step(task int64, s stepSpec, states ...string) int64 {
	f.t.Helper()
	var last any
	if s.lastAttempted {
		last = epoch
	}
	id := int64(f.id(`INSERT INTO tasker_workflow_steps
		(task_id, named_step_id, retryable, retry_limit, attempts, last_attempted_at, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING workflow_step_id`,
		task, f.stepNameID, !s.notRetryable, s.retryLimit, s.attempts, last, epoch))
	f.transitions("tasker_workflow_step_transitions", "workflow_step_id", id, states)
	return id
}

func (f *fixture) transitions(table, fk string, id int64, states []string) {
	f.t.Helper()
	var prev any
	for i, st := range states {
		from := any(nil)
		if f.fromState {
			from = prev
		}
		f.transition(table, fk, id, st, from, (i+1)*10, i == len(states)-1)
		prev = st
	}
}

// transition inserts one row as given, for data Statesman would not write
// (most_recent on an older sort_key).
func (f *fixture) transition(table, fk string, id int64, to string, from any, sortKey int, mostRecent bool) {
	f.t.Helper()
	f.exec(fmt.Sprintf(`INSERT INTO %s (%s, to_state, from_state, sort_key, most_recent, created_at, updated_at)
		VALUES ($1, $2, $3, $4::int, $5, $6::timestamp + $4::int * interval '1 second', $6::timestamp + $4::int * interval '1 second')`,
		table, fk), id, to, from, sortKey, mostRecent, epoch)
}

// buildMixed writes the hand-made fixture whose expected numbers are worked
// out in mixedCounts.
func buildMixed(f *fixture) {
	welcome1 := f.namedTask("default", "welcome", "0.1.0")
	welcome2 := f.namedTask("default", "welcome", "0.2.0") // same name, counts merge
	invoice := f.namedTask("billing", "invoice", "0.1.0")

	t1 := f.task(welcome1) // no transitions: totals only
	f.task(welcome1, "pending")
	f.task(welcome2, "pending", "in_progress")
	t4 := f.task(invoice, "pending", "in_progress", "complete")
	t5 := f.task(invoice, "pending", "in_progress", "error")
	f.task(invoice, "pending", "in_progress", "error", "resolved_manually") // totals only
	f.task(invoice, "pending", "cancelled")
	// most_recent, not the highest sort_key, decides the current state.
	t8 := f.task(welcome1)
	f.transition("tasker_task_transitions", "task_id", t8, "error", nil, 10, true)
	f.transition("tasker_task_transitions", "task_id", t8, "complete", nil, 20, false)

	ok := stepSpec{attempts: n32(0), retryLimit: n32(3)}
	f.step(t4, ok) // no transitions: totals only
	f.step(t4, ok, "pending")
	f.step(t4, ok, "pending", "in_progress")
	f.step(t4, ok, "pending", "in_progress", "complete")
	f.step(t4, ok, "pending", "cancelled")                  // totals only
	f.step(t4, ok, "pending", "error", "resolved_manually") // totals only

	e := []string{"pending", "in_progress", "error"}
	f.step(t5, stepSpec{attempts: n32(1), retryLimit: n32(3), lastAttempted: true}, e...)                     // retryable, backoff
	f.step(t5, stepSpec{attempts: n32(1), retryLimit: n32(3)}, e...)                                          // retryable
	f.step(t5, stepSpec{attempts: n32(1), retryLimit: n32(3), notRetryable: true, lastAttempted: true}, e...) // none
	f.step(t5, stepSpec{attempts: n32(3), retryLimit: n32(3)}, e...)                                          // exhausted
	f.step(t5, stepSpec{attempts: n32(5), retryLimit: n32(3), notRetryable: true}, e...)                      // exhausted
	f.step(t5, stepSpec{retryLimit: n32(3), lastAttempted: true}, e...)                                       // NULL attempts: none
	f.step(t5, stepSpec{attempts: n32(2), lastAttempted: true}, e...)                                         // NULL limit: none
	f.step(t5, stepSpec{}, e...)                                                                              // both NULL: none
	f.step(t5, stepSpec{attempts: n32(0), retryLimit: n32(0)}, e...)                                          // exhausted

	// Steps of a task that itself has no transition still count.
	f.step(t1, stepSpec{attempts: n32(1), retryLimit: n32(3), lastAttempted: true}, e...) // retryable, backoff
	f.step(t1, stepSpec{attempts: n32(4), retryLimit: n32(3)},
		"pending", "in_progress", "error", "pending", "in_progress", "complete") // not error now
	w3 := f.step(t1, stepSpec{attempts: n32(5), retryLimit: n32(3)})
	f.transition("tasker_workflow_step_transitions", "workflow_step_id", w3, "error", nil, 10, false)
	f.transition("tasker_workflow_step_transitions", "workflow_step_id", w3, "pending", nil, 20, true)
}

// mixedCounts is buildMixed's expected result, worked out by hand from the
// facts (§3.3): see the comments in buildMixed for each row's fate.
func mixedCounts() HealthCounts {
	return HealthCounts{
		TotalTasks: 8, PendingTasks: 1, InProgressTasks: 1, CompleteTasks: 1, ErrorTasks: 2, CancelledTasks: 1,
		TotalSteps: 18, PendingSteps: 2, InProgressSteps: 1, CompleteSteps: 2, ErrorSteps: 10,
		RetryableErrorSteps: 3, ExhaustedRetrySteps: 3, InBackoffSteps: 2,
	}
}

func mixedTaskGroups() []GroupCount {
	return []GroupCount{
		{"billing", "invoice", "cancelled", 1},
		{"billing", "invoice", "complete", 1},
		{"billing", "invoice", "error", 1},
		{"billing", "invoice", "resolved_manually", 1},
		{"default", "welcome", "", 1},
		{"default", "welcome", "error", 1},
		{"default", "welcome", "in_progress", 1},
		{"default", "welcome", "pending", 1},
	}
}

func mixedStepGroups() []GroupCount {
	return []GroupCount{
		{"billing", "invoice", "", 1},
		{"billing", "invoice", "cancelled", 1},
		{"billing", "invoice", "complete", 1},
		{"billing", "invoice", "error", 9},
		{"billing", "invoice", "in_progress", 1},
		{"billing", "invoice", "pending", 1},
		{"billing", "invoice", "resolved_manually", 1},
		{"default", "welcome", "complete", 1},
		{"default", "welcome", "error", 1},
		{"default", "welcome", "pending", 1},
	}
}

// buildRandom writes a reproducible random population that exercises every
// state, NULL retry columns and entities without transitions.
func buildRandom(f *fixture, seed uint64, tasks int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var named []int
	for _, ns := range []string{"default", "billing", "ops"} {
		for _, name := range []string{"sync", "export"} {
			named = append(named, f.namedTask(ns, name, "0.1.0"))
		}
	}
	named = append(named, f.namedTask("ops", "sync", "0.2.0"))

	states := func() []string {
		if rng.IntN(4) == 0 {
			return nil
		}
		out := make([]string, 1+rng.IntN(4))
		for i := range out {
			out[i] = States[rng.IntN(len(States))]
		}
		return out
	}
	nullable := func(max int) *int32 {
		if rng.IntN(6) == 0 {
			return nil
		}
		return n32(int32(rng.IntN(max)))
	}
	f.fromState = rng.IntN(2) == 0
	for range tasks {
		id := f.task(named[rng.IntN(len(named))], states()...)
		for range rng.IntN(5) {
			f.step(id, stepSpec{
				attempts:      nullable(6),
				retryLimit:    nullable(5),
				notRetryable:  rng.IntN(3) == 0,
				lastAttempted: rng.IntN(2) == 0,
			}, states()...)
		}
	}
}
