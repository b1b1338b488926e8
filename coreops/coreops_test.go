package coreops

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
)

//go:embed testdata/core_views.sql
var coreViewsSQL string

//go:embed testdata/pgmq_layout.sql
var pgmqLayoutSQL string

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// installPGMQ installs PGMQ into db: the real PGMQ SQL when PGMQ_SQL names
// its file (scripts/e2e-pgmq.sh), otherwise the documented layout.
func installPGMQ(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	src := pgmqLayoutSQL
	if path := os.Getenv("PGMQ_SQL"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		src = string(b)
	}
	if _, err := conn.Exec(testCtx(t), src); err != nil {
		t.Fatalf("installing pgmq: %v", err)
	}
}

type coreDB struct {
	t    *testing.T
	pg   pgtest.DB
	conn *pgx.Conn
	pool *pgxpool.Pool
	n    int
}

func newCoreDB(t *testing.T) *coreDB {
	t.Helper()
	pg := pgtest.New(t)
	conn := pg.Conn(t)
	if err := schema.ApplyCore(testCtx(t), conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(testCtx(t), coreViewsSQL); err != nil {
		t.Fatal(err)
	}
	return &coreDB{t: t, pg: pg, conn: conn, pool: pool(t, pg.URL)}
}

// pool is a read-only UTC pool, as the sidecar's (collector/db.go).
func pool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	p, err := pgxpool.NewWithConfig(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func (c *coreDB) exec(sql string, args ...any) {
	c.t.Helper()
	if _, err := c.conn.Exec(testCtx(c.t), sql, args...); err != nil {
		c.t.Fatalf("%s: %v", sql, err)
	}
}

func (c *coreDB) key(sql string, args ...any) string {
	c.t.Helper()
	var k string
	if err := c.conn.QueryRow(testCtx(c.t), sql, args...).Scan(&k); err != nil {
		c.t.Fatalf("%s: %v", sql, err)
	}
	return k
}

func (c *coreDB) template(ns, name, config string) string {
	c.exec(`INSERT INTO tasker.task_namespaces (name, created_at, updated_at) VALUES ($1, now(), now())
	        ON CONFLICT (name) DO NOTHING`, ns)
	return c.key(`INSERT INTO tasker.named_tasks (task_namespace_uuid, name, configuration, created_at, updated_at)
	              SELECT task_namespace_uuid, $2, $3::jsonb, now(), now() FROM tasker.task_namespaces WHERE name = $1
	              RETURNING named_task_uuid::text`, ns, name, config)
}

// task writes a task whose current state was entered minutesAgo, after a
// pending row an hour before that.
func (c *coreDB) task(template, state string, minutesAgo float64, complete bool) string {
	c.n++
	k := c.key(`INSERT INTO tasker.tasks (named_task_uuid, requested_at, identity_hash, complete, created_at, updated_at, correlation_id)
	            VALUES ($1, now(), $2, $3, now(), now(), gen_random_uuid()) RETURNING task_uuid::text`,
		template, fmt.Sprintf("identity-%d", c.n), complete)
	at := fmt.Sprintf("now() AT TIME ZONE 'UTC' - make_interval(secs => %f)", minutesAgo*60)
	c.exec(`INSERT INTO tasker.task_transitions (task_uuid, to_state, sort_key, most_recent, created_at, updated_at)
	        VALUES ($1, 'pending', 1, false, `+at+` - interval '1 hour', now())`, k)
	c.exec(`INSERT INTO tasker.task_transitions (task_uuid, to_state, from_state, sort_key, most_recent, created_at, updated_at)
	        VALUES ($1, $2, 'pending', 2, true, `+at+`, now())`, k, state)
	return k
}

func (c *coreDB) dlq(task, reason, status string, minutesAgo float64) {
	c.exec(`INSERT INTO tasker.tasks_dlq (task_uuid, original_state, dlq_reason, dlq_timestamp, resolution_status, task_snapshot, created_at, updated_at)
	        VALUES ($1, 'error', $2, now() AT TIME ZONE 'UTC' - make_interval(secs => $4), $3, '{}', now(), now())`,
		task, reason, status, minutesAgo*60)
}

// buildWorkload writes tasks in every monitored state on both sides of
// the thresholds, with template overrides, and dead-letter entries.
func buildWorkload(c *coreDB) []string {
	plain := c.template("billing", "invoice", `{}`)
	tight := c.template("billing", "refund", `{"lifecycle": {"max_steps_in_process_minutes": 10, "max_waiting_for_retry_minutes": 5}}`)
	loose := c.template("ops", "sync", `{"lifecycle": {"max_waiting_for_dependencies_minutes": 600}}`)
	var tasks []string
	add := func(tpl, state string, ago float64) { tasks = append(tasks, c.task(tpl, state, ago, false)) }
	// steps_in_process, default 30 min: healthy, warning (83 %), stale.
	add(plain, "steps_in_process", 5)
	add(plain, "steps_in_process", 25)
	add(plain, "steps_in_process", 45)
	// ... refund's 10 min: 9 is warning, 12 stale.
	add(tight, "steps_in_process", 9)
	add(tight, "steps_in_process", 12)
	// waiting_for_dependencies, default 60, sync's 600.
	add(plain, "waiting_for_dependencies", 55)
	add(plain, "waiting_for_dependencies", 70)
	add(loose, "waiting_for_dependencies", 70)
	add(loose, "waiting_for_dependencies", 500)
	// waiting_for_retry, default 30, refund's 5.
	add(plain, "waiting_for_retry", 40)
	add(tight, "waiting_for_retry", 4.5)
	add(tight, "waiting_for_retry", 6)
	// Active but not monitored, and finished ones.
	add(plain, "pending", 90)
	add(plain, "blocked_by_failures", 3000)
	add(plain, "evaluating_results", 2)
	c.task(plain, "complete", 500, true)
	c.task(plain, "steps_in_process", 500, true) // complete flag set: not active
	c.task(plain, "error", 4000, false)          // ended, not yet finalized: no age series for error

	c.dlq(tasks[2], "staleness_timeout", "pending", 30)
	c.dlq(tasks[6], "staleness_timeout", "manually_resolved", 300)
	c.dlq(tasks[9], "max_retries_exceeded", "pending", 90)
	c.dlq(tasks[12], "worker_unavailable", "cancelled", 10)
	c.dlq(tasks[13], "manual_dlq", "permanently_failed", 1000)
	return tasks
}

func TestReadMatchesEngineViews(t *testing.T) {
	c := newCoreDB(t)
	buildWorkload(c)
	snap := Read(testCtx(t), c.pool, nil, engine.Core(), time.Now())
	if err := snap.Err(); err != nil {
		t.Fatal(err)
	}

	// Staleness: v_task_staleness_monitoring grouped by state and level.
	want := map[[2]string]int64{}
	rows, err := c.conn.Query(testCtx(t), `SELECT current_state, health_status, count(*) FROM tasker.v_task_staleness_monitoring
	                                       WHERE health_status <> 'healthy' GROUP BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var st, lvl string
		var n int64
		if err := rows.Scan(&st, &lvl, &n); err != nil {
			t.Fatal(err)
		}
		want[[2]string{st, lvl}] = n
	}
	if len(want) == 0 {
		t.Fatal("the workload has no warning or stale task: the comparison would prove nothing")
	}
	if len(snap.Stale) != 2*len(MonitoredStates) {
		t.Errorf("%d staleness series, want every monitored state at both levels (%d)", len(snap.Stale), 2*len(MonitoredStates))
	}
	for _, s := range snap.Stale {
		if w := want[[2]string{s.State, s.Level}]; s.Count != w {
			t.Errorf("%s/%s: %d, view says %d", s.State, s.Level, s.Count, w)
		}
	}
	// By hand: steps_in_process warning 25 and 9, stale 45 and 12;
	// waiting_for_dependencies warning 55 of 60 and 500 of sync's 600,
	// stale 70 of 60 (70 of 600 is healthy); retry
	// warning 4.5 of 5, stale 40 and 6.
	byHand := map[[2]string]int64{
		{"steps_in_process", "warning"}: 2, {"steps_in_process", "stale"}: 2,
		{"waiting_for_dependencies", "warning"}: 2, {"waiting_for_dependencies", "stale"}: 1,
		{"waiting_for_retry", "warning"}: 1, {"waiting_for_retry", "stale"}: 2,
	}
	for _, s := range snap.Stale {
		if s.Count != byHand[[2]string{s.State, s.Level}] {
			t.Errorf("%s/%s: %d, by hand %d", s.State, s.Level, s.Count, byHand[[2]string{s.State, s.Level}])
		}
	}

	// Oldest per active state: blocked_by_failures at 3000 min, the
	// finished steps_in_process task (complete = true) left out.
	for st, minutes := range map[string]float64{"blocked_by_failures": 3000, "steps_in_process": 45, "pending": 90, "initializing": 0} {
		got := snap.OldestActive[st] / 60
		if minutes == 0 && got != 0 || minutes > 0 && (got < minutes || got > minutes+1) {
			t.Errorf("oldest %s: %.2f min, want %.0f", st, got, minutes)
		}
	}
	for _, st := range engine.Core().TaskStates.Terminal {
		if _, ok := snap.OldestActive[st]; ok {
			t.Errorf("terminal state %s has an oldest age", st)
		}
	}

	// Dead letters: v_dlq_dashboard's columns, per reason and status.
	wantDLQ := map[[2]string]int64{}
	rows, err = c.conn.Query(testCtx(t), `SELECT dlq_reason::text, pending, manually_resolved, permanent_failures, cancelled FROM tasker.v_dlq_dashboard`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r string
		var p, m, f, cn int64
		if err := rows.Scan(&r, &p, &m, &f, &cn); err != nil {
			t.Fatal(err)
		}
		wantDLQ[[2]string{r, "pending"}], wantDLQ[[2]string{r, "manually_resolved"}] = p, m
		wantDLQ[[2]string{r, "permanently_failed"}], wantDLQ[[2]string{r, "cancelled"}] = f, cn
	}
	if len(snap.DLQ) != 5*4 {
		t.Errorf("%d dead-letter pairs, want all 5 reasons x 4 statuses", len(snap.DLQ))
	}
	var total int64
	for _, d := range snap.DLQ {
		total += d.Count
		if d.Count != wantDLQ[[2]string{d.Reason, d.Status}] {
			t.Errorf("dlq %s/%s: %d, view says %d", d.Reason, d.Status, d.Count, wantDLQ[[2]string{d.Reason, d.Status}])
		}
	}
	if total != 5 {
		t.Errorf("%d dead-letter entries counted, 5 written", total)
	}
	if snap.DLQOldestPending == nil || *snap.DLQOldestPending < 90*60 || *snap.DLQOldestPending > 91*60 {
		t.Errorf("oldest pending entry %v s, want 90 minutes", snap.DLQOldestPending)
	}
}

// A template threshold that is not an integer fails the engine's view
// outright; the sidecar falls back to the default for that template.
func TestStalenessBadTemplateThreshold(t *testing.T) {
	c := newCoreDB(t)
	bad := c.template("ops", "odd", `{"lifecycle": {"max_steps_in_process_minutes": "soon"}}`)
	c.task(bad, "steps_in_process", 40, false)
	if _, err := c.conn.Exec(testCtx(t), `SELECT health_status FROM tasker.v_task_staleness_monitoring`); err == nil {
		t.Fatal("the view accepted a non-integer threshold; the difference this test documents is gone")
	}
	snap := Read(testCtx(t), c.pool, nil, engine.Core(), time.Now())
	if snap.StaleErr != nil {
		t.Fatal(snap.StaleErr)
	}
	for _, s := range snap.Stale {
		want := int64(0)
		if s.State == "steps_in_process" && s.Level == LevelStale {
			want = 1 // 40 min against the default 30
		}
		if s.Count != want {
			t.Errorf("%s/%s: %d, want %d", s.State, s.Level, s.Count, want)
		}
	}
}

// pgmqQueues reads pgmq.metrics_all() directly, as the oracle.
func pgmqQueues(t *testing.T, conn *pgx.Conn) []Queue {
	t.Helper()
	rows, err := conn.Query(testCtx(t), `SELECT queue_name, queue_length, newest_msg_age_sec::float8, oldest_msg_age_sec::float8, total_messages
	                                     FROM pgmq.metrics_all() ORDER BY queue_name`)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Queue, error) {
		var q Queue
		return q, r.Scan(&q.Name, &q.Length, &q.NewestAge, &q.OldestAge, &q.Total)
	})
	if err != nil {
		t.Fatal(err)
	}
	return qs
}

// sendAndRead fills queues as tasker-core's orchestration does: sends,
// and deletes the messages it has processed.
func sendAndRead(t *testing.T, conn *pgx.Conn, queue string, sent, deleted int) {
	t.Helper()
	ctx := testCtx(t)
	if _, err := conn.Exec(ctx, `SELECT pgmq.create($1)`, queue); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := range sent {
		var id int64
		if err := conn.QueryRow(ctx, `SELECT * FROM pgmq.send($1::text, $2::jsonb)`, queue, fmt.Sprintf(`{"n": %d}`, i)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids[:deleted] {
		if _, err := conn.Exec(ctx, `SELECT pgmq.delete($1::text, $2::bigint)`, queue, id); err != nil {
			t.Fatal(err)
		}
	}
}

func TestQueuesEqualMetricsAll(t *testing.T) {
	for _, apart := range []bool{false, true} {
		t.Run(map[bool]string{false: "in the Tasker database", true: "in a database of its own"}[apart], func(t *testing.T) {
			c := newCoreDB(t)
			qconn, qpool := c.conn, c.pool
			if apart {
				q := pgtest.New(t)
				qconn, qpool = q.Conn(t), pool(t, q.URL)
			}
			installPGMQ(t, qconn)
			sendAndRead(t, qconn, "orchestration_step_results", 7, 3)
			sendAndRead(t, qconn, "orchestration_task_requests", 2, 2) // drained: ages NULL
			sendAndRead(t, qconn, "worker_billing_queue", 4, 0)
			sendAndRead(t, qconn, "orchestration_task_finalizations", 0, 0)

			snap := Read(testCtx(t), c.pool, qpool, engine.Core(), time.Now())
			if err := snap.Err(); err != nil {
				t.Fatal(err)
			}
			if !snap.QueuesFound {
				t.Fatal("pgmq not found")
			}
			want := pgmqQueues(t, qconn)
			if len(want) != 4 {
				t.Fatalf("metrics_all() lists %d queues", len(want))
			}
			if !slices.EqualFunc(snap.Queues, want, sameQueue) {
				t.Errorf("queues\n got %s\nwant %s", queuesString(snap.Queues), queuesString(want))
			}
			byName := map[string]Queue{}
			for _, q := range snap.Queues {
				byName[q.Name] = q
			}
			if q := byName["orchestration_step_results"]; q.Length != 4 || q.Total != 7 || q.OldestAge == nil {
				t.Errorf("step results queue %+v: want 4 waiting of 7 sent", q)
			}
			if q := byName["orchestration_task_requests"]; q.Length != 0 || q.OldestAge != nil || q.NewestAge != nil {
				t.Errorf("drained queue %+v: want length 0 and no ages", q)
			}
		})
	}
}

func sameQueue(a, b Queue) bool {
	eq := func(x, y *float64) bool { return x == nil && y == nil || x != nil && y != nil && *x == *y }
	return a.Name == b.Name && a.Length == b.Length && a.Total == b.Total && eq(a.OldestAge, b.OldestAge) && eq(a.NewestAge, b.NewestAge)
}

func queuesString(qs []Queue) string {
	var b strings.Builder
	for _, q := range qs {
		fmt.Fprintf(&b, "%s len=%d total=%d oldest=%v newest=%v; ", q.Name, q.Length, q.Total, ptr(q.OldestAge), ptr(q.NewestAge))
	}
	return b.String()
}

func ptr(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestNoPGMQ(t *testing.T) {
	c := newCoreDB(t)
	snap := Read(testCtx(t), c.pool, c.pool, engine.Core(), time.Now())
	if snap.QueuesFound || snap.QueuesErr != nil || len(snap.Queues) != 0 {
		t.Errorf("without pgmq: found %v, err %v, %d queues", snap.QueuesFound, snap.QueuesErr, len(snap.Queues))
	}
}

type engineFunc func() (engine.Engine, bool)

func (f engineFunc) Engine() (engine.Engine, bool) { return f() }

func coreSource() Source {
	return engineFunc(func() (engine.Engine, bool) { return engine.Core(), true })
}

func gather(t *testing.T, cs ...prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		reg.MustRegister(c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

func TestCollectorSeries(t *testing.T) {
	c := newCoreDB(t)
	tasks := buildWorkload(c)
	installPGMQ(t, c.conn)
	sendAndRead(t, c.conn, "orchestration_step_results", 3, 1)

	r := NewRefresher(coreSource(), c.pool, Options{Interval: time.Hour, Timeout: 10 * time.Second, Queues: c.pool})
	col := NewCollector(r, 10, time.Minute)
	if got := gather(t, col); len(got) != 0 {
		t.Fatalf("series before the first read: %v", got)
	}
	r.Refresh(testCtx(t))
	got := gather(t, append(r.Metrics(), col)...)
	for name, want := range map[string]float64{
		"tasker_pgmq_queue_length{queue=orchestration_step_results}":                               2,
		"tasker_pgmq_messages_total{queue=orchestration_step_results}":                             3,
		"tasker_sidecar_pgmq_found{}":                                                              1,
		"tasker_sidecar_pgmq_queues_folded{}":                                                      0,
		"tasker_dlq_entries{reason=staleness_timeout,resolution_status=pending}":                   1,
		"tasker_dlq_entries{reason=dependency_cycle_detected,resolution_status=cancelled}":         0,
		"tasker_tasks_stale{level=stale,state=waiting_for_retry}":                                  2,
		"tasker_tasks_stale{level=warning,state=waiting_for_dependencies}":                         2,
		"tasker_dlq_entries_created_total{reason=manual_dlq}":                                      0,
		"tasker_dlq_entries_created_total{reason=dependency_cycle_detected}":                       0,
		"tasker_sidecar_coreops_errors_total{part=dlq}":                                            0,
		"tasker_tasks_oldest_age_seconds{state=initializing}":                                      0,
		"tasker_dlq_entries{reason=worker_unavailable,resolution_status=permanently_failed}":       0,
		"tasker_dlq_entries{reason=max_retries_exceeded,resolution_status=manually_resolved}":      0,
		"tasker_pgmq_oldest_message_age_seconds{queue=orchestration_step_results}":                 0,
		"tasker_pgmq_newest_message_age_seconds{queue=orchestration_step_results}":                 0,
		"tasker_tasks_stale{level=stale,state=steps_in_process}":                                   2,
		"tasker_dlq_entries{reason=manual_dlq,resolution_status=permanently_failed}":               1,
		"tasker_dlq_entries{reason=staleness_timeout,resolution_status=manually_resolved}":         1,
		"tasker_dlq_entries{reason=dependency_cycle_detected,resolution_status=pending}":           0,
		"tasker_dlq_entries{reason=max_retries_exceeded,resolution_status=pending}":                1,
		"tasker_dlq_entries{reason=worker_unavailable,resolution_status=cancelled}":                1,
		"tasker_dlq_entries{reason=staleness_timeout,resolution_status=cancelled}":                 0,
		"tasker_dlq_entries{reason=manual_dlq,resolution_status=pending}":                          0,
		"tasker_dlq_entries_created_total{reason=staleness_timeout}":                               0,
		"tasker_dlq_entries_created_total{reason=max_retries_exceeded}":                            0,
		"tasker_dlq_entries_created_total{reason=worker_unavailable}":                              0,
		"tasker_sidecar_coreops_errors_total{part=queues}":                                         0,
		"tasker_sidecar_coreops_errors_total{part=staleness}":                                      0,
		"tasker_tasks_stale{level=warning,state=steps_in_process}":                                 2,
		"tasker_tasks_stale{level=warning,state=waiting_for_retry}":                                1,
		"tasker_tasks_stale{level=stale,state=waiting_for_dependencies}":                           1,
		"tasker_dlq_entries{reason=dependency_cycle_detected,resolution_status=manually_resolved}": 0,
	} {
		v, ok := got[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		// Message ages are whole seconds of a queue filled just now.
		if strings.Contains(name, "message_age") {
			if v < 0 || v > 5 {
				t.Errorf("%s = %v, want a few seconds", name, v)
			}
			continue
		}
		if v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if n := countPrefix(got, "tasker_dlq_entries{"); n != 20 {
		t.Errorf("%d tasker_dlq_entries series, want 20", n)
	}
	if n := countPrefix(got, "tasker_tasks_oldest_age_seconds{"); n != len(engine.Core().TaskStates.Active()) {
		t.Errorf("%d oldest-age series, want one per active state", n)
	}

	// A new entry is counted once, under its reason; the first read only
	// remembered the five already there.
	c.dlq(tasks[0], "dependency_cycle_detected", "pending", 0)
	r.Refresh(testCtx(t))
	r.Refresh(testCtx(t))
	got = gather(t, append(r.Metrics(), col)...)
	if v := got["tasker_dlq_entries_created_total{reason=dependency_cycle_detected}"]; v != 1 {
		t.Errorf("created_total for the new entry = %v, want 1", v)
	}
	if v := got["tasker_dlq_entries_created_total{reason=staleness_timeout}"]; v != 0 {
		t.Errorf("created_total for old entries = %v, want 0", v)
	}

	// Older than max staleness: withdrawn, the counters stay.
	col.(*metricsCollector).now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	got = gather(t, append(r.Metrics(), col)...)
	for name := range got {
		if !strings.Contains(name, "_total{") {
			t.Errorf("%s served from a read older than max staleness", name)
		}
	}
}

func countPrefix(m map[string]float64, prefix string) int {
	n := 0
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// A zero timeout is the configuration's "the interval, at most 10 s", not
// a deadline already past (collector.refresh_timeout's default is 0).
func TestZeroTimeoutReads(t *testing.T) {
	c := newCoreDB(t)
	r := NewRefresher(coreSource(), c.pool, Options{Interval: time.Minute})
	r.Refresh(testCtx(t))
	if _, at := r.Last(); len(at) != 2 {
		t.Errorf("parts read with a zero timeout: %v, want dlq and staleness", at)
	}
	if v := testutil.ToFloat64(r.errs.WithLabelValues(PartDLQ)); v != 0 {
		t.Errorf("%v dlq errors", v)
	}
}

// On a Rails database the refresher reads nothing and nothing is served.
func TestRailsReadsNothing(t *testing.T) {
	pg := pgtest.NewTasker(t)
	rails := engineFunc(func() (engine.Engine, bool) { return engine.Rails(), true })
	r := NewRefresher(rails, pool(t, pg.URL), Options{Interval: time.Hour, Timeout: 10 * time.Second})
	r.Refresh(testCtx(t))
	got := gather(t, NewCollector(r, 10, 0))
	if len(got) != 0 {
		t.Errorf("series on a Rails database: %v", got)
	}
	if v := testutil.ToFloat64(r.errs.WithLabelValues(PartDLQ)); v != 0 {
		t.Errorf("%v dlq errors on a Rails database", v)
	}
}

// A failing part keeps its last good values and counts the error; the
// other parts go on.
func TestFailingPartKeepsLastGood(t *testing.T) {
	c := newCoreDB(t)
	buildWorkload(c)
	r := NewRefresher(coreSource(), c.pool, Options{Interval: time.Hour, Timeout: 10 * time.Second})
	r.Refresh(testCtx(t))
	before, _ := r.Last()
	c.exec(`ALTER TABLE tasker.tasks_dlq RENAME TO tasks_dlq_gone`)
	r.Refresh(testCtx(t))
	after, at := r.Last()
	if v := testutil.ToFloat64(r.errs.WithLabelValues(PartDLQ)); v < 1 {
		t.Errorf("dlq errors %v, want at least 1", v)
	}
	if !slices.Equal(after.DLQ, before.DLQ) {
		t.Error("the dead-letter counts changed although their read failed")
	}
	if _, ok := at[PartStaleness]; !ok || after.Stale == nil {
		t.Error("staleness was not read while the dead-letter read failed")
	}
}

func TestFoldQueues(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	qs := []Queue{
		{Name: "a", Length: 5, Total: 10, OldestAge: f(50), NewestAge: f(1)},
		{Name: "b", Length: 9, Total: 9, OldestAge: f(20), NewestAge: f(3)},
		{Name: "c", Length: 1, Total: 100, OldestAge: f(70), NewestAge: f(70)},
		{Name: "d", Length: 0, Total: 4},
	}
	for _, tc := range []struct {
		max    int
		names  []string
		folded int
		other  Queue
	}{
		{max: 4, names: []string{"a", "b", "c", "d"}},
		{max: 10, names: []string{"a", "b", "c", "d"}},
		{max: 3, names: []string{"a", "b", "other"}, folded: 2, other: Queue{Name: "other", Length: 1, Total: 104, OldestAge: f(70), NewestAge: f(70)}},
		{max: 1, names: []string{"other"}, folded: 4, other: Queue{Name: "other", Length: 15, Total: 123, OldestAge: f(70), NewestAge: f(1)}},
	} {
		got, folded := foldQueues(qs, tc.max)
		var names []string
		for _, q := range got {
			names = append(names, q.Name)
		}
		if !slices.Equal(names, tc.names) || folded != tc.folded {
			t.Errorf("max %d: %v folded %d, want %v folded %d", tc.max, names, folded, tc.names, tc.folded)
		}
		if tc.folded > 0 && !sameQueue(got[len(got)-1], tc.other) {
			t.Errorf("max %d: other %s, want %s", tc.max, queuesString(got[len(got)-1:]), queuesString([]Queue{tc.other}))
		}
	}
}
