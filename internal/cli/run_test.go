package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

// seed writes a small simulated workload into the database at url.
func seed(t *testing.T, url string, tasks int) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Apply(ctx, conn.Conn()); err != nil {
		t.Fatal(err)
	}
	conn.Release()
	opts := simulate.Options{Seed: 42}
	if err := simulate.EnsureCatalog(ctx, pool, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := simulate.Bulk(ctx, pool, tasks, opts, nil); err != nil {
		t.Fatal(err)
	}
}

type taskerCounts struct {
	tasks   map[string]int64
	steps   map[string]int64
	retries map[string]int64
	maxConn int64
}

// yardstick runs our transcription of Tasker's get_system_health_counts_v01.
func yardstick(t *testing.T, db pgtest.DB) taskerCounts {
	t.Helper()
	ctx := context.Background()
	conn := db.Conn(t)
	fn, err := os.ReadFile("../../collector/testdata/get_system_health_counts_v01.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, string(fn)); err != nil {
		t.Fatal(err)
	}
	var c taskerCounts
	c.tasks, c.steps, c.retries = map[string]int64{}, map[string]int64{}, map[string]int64{}
	var total, pending, inProgress, complete, errorT, cancelled int64
	var sTotal, sPending, sInProgress, sComplete, sError int64
	var retryable, exhausted, backoff, active int64
	err = conn.QueryRow(ctx, "SELECT * FROM get_system_health_counts_v01()").Scan(
		&total, &pending, &inProgress, &complete, &errorT, &cancelled,
		&sTotal, &sPending, &sInProgress, &sComplete, &sError,
		&retryable, &exhausted, &backoff, &active, &c.maxConn)
	if err != nil {
		t.Fatal(err)
	}
	c.tasks = map[string]int64{"total": total, "pending": pending, "in_progress": inProgress, "complete": complete, "error": errorT, "cancelled": cancelled}
	c.steps = map[string]int64{"total": sTotal, "pending": sPending, "in_progress": sInProgress, "complete": sComplete, "error": sError}
	c.retries = map[string]int64{"retryable_errors": retryable, "exhausted_retries": exhausted, "in_backoff": backoff}
	return c
}

func TestRunStatusMatchesTasker(t *testing.T) {
	db := pgtest.New(t)
	seed(t, db.URL, 400)
	want := yardstick(t, db)
	if want.tasks["total"] == 0 || want.steps["error"] == 0 {
		t.Fatalf("seed is too thin to prove anything: %+v", want)
	}

	sc := startSidecar(t, nil, "--database-url", db.URL, "--refresh-interval", "1s")
	var body map[string]any
	eventually(t, 30*time.Second, "a status with data", func() bool {
		_, body = sc.get(t, "/tasker/health/status")
		_, ok := body["metrics"]
		return ok
	})
	for state, n := range want.tasks {
		if got := num(t, body, "metrics", "tasks", state); got != n {
			t.Errorf("tasks.%s = %d, Tasker says %d", state, got, n)
		}
	}
	for state, n := range want.steps {
		if got := num(t, body, "metrics", "steps", state); got != n {
			t.Errorf("steps.%s = %d, Tasker says %d", state, got, n)
		}
	}
	for class, n := range want.retries {
		if got := num(t, body, "metrics", "retries", class); got != n {
			t.Errorf("retries.%s = %d, Tasker says %d", class, got, n)
		}
	}
	if got := num(t, body, "database", "max_connections"); got != want.maxConn {
		t.Errorf("max_connections = %d, want %d", got, want.maxConn)
	}
	if got := num(t, body, "database", "active_connections"); got < 1 {
		t.Errorf("active_connections = %d, want >= 1 (the refresh itself)", got)
	}
	if code := sc.stop(); code != exitOK {
		t.Errorf("graceful stop exited %d", code)
	}
}

func TestRunSurvivesDatabaseOutage(t *testing.T) {
	srv := pgtest.StartServer(t)
	seed(t, srv.URL(), 150)
	const interval = time.Second
	sc := startSidecar(t, nil, "--database-url", srv.URL(), "--refresh-interval", interval.String())

	eventually(t, 30*time.Second, "ready before the outage", func() bool {
		code, _ := sc.get(t, "/tasker/health/ready")
		return code == 200
	})
	_, before := sc.get(t, "/tasker/health/status")
	total := num(t, before, "metrics", "tasks", "total")

	srv.Stop()
	took := eventually(t, 20*time.Second, "ready to turn 503", func() bool {
		code, _ := sc.get(t, "/tasker/health/ready")
		return code == 503
	})
	t.Logf("ready turned 503 %s after PostgreSQL stopped (refresh interval %s)", took.Round(time.Millisecond), interval)
	if code, _ := sc.get(t, "/tasker/health/live"); code != 200 {
		t.Errorf("live = %d during the outage, want 200", code)
	}
	var status map[string]any
	eventually(t, 20*time.Second, "status to report the error", func() bool {
		var code int
		code, status = sc.get(t, "/tasker/health/status")
		return code == 503 && status["error"] != nil
	})
	if got := num(t, status, "metrics", "tasks", "total"); got != total {
		t.Errorf("last good tasks.total = %d during the outage, want %d", got, total)
	}
	info, _ := status["cache_info"].(map[string]any)
	if info == nil || info["stale"] != true {
		t.Errorf("cache_info must say the data is stale: %v", status["cache_info"])
	}
	if age, _ := info["age_seconds"].(float64); age <= 0 {
		t.Errorf("cache_info.age_seconds = %v, want the real age", info["age_seconds"])
	}
	_, ready := sc.get(t, "/tasker/health/ready")
	if failed, _ := ready["failed_checks"].([]any); len(failed) == 0 {
		t.Errorf("ready must name the failed checks: %v", ready)
	}

	srv.Start()
	took = eventually(t, 60*time.Second, "recovery after PostgreSQL returns", func() bool {
		rc, _ := sc.get(t, "/tasker/health/ready")
		_, st := sc.get(t, "/tasker/health/status")
		return rc == 200 && st["error"] == nil
	})
	t.Logf("recovered %s after PostgreSQL started", took.Round(time.Millisecond))
	_, status = sc.get(t, "/tasker/health/status")
	if status["error"] != nil {
		t.Errorf("status still reports an error after recovery: %v", status["error"])
	}
	if code := sc.stop(); code != exitOK {
		t.Errorf("stop exited %d", code)
	}
}

func TestRunStartsWithDatabaseDown(t *testing.T) {
	sc := startSidecar(t, nil, "--database-url", "postgres://tasker:pw-not-logged@127.0.0.1:1/tasker?connect_timeout=1", "--refresh-interval", "1s")
	if code, _ := sc.get(t, "/tasker/health/live"); code != 200 {
		t.Errorf("live = %d, want 200", code)
	}
	code, ready := sc.get(t, "/tasker/health/ready")
	if code != 503 {
		t.Errorf("ready = %d, want 503", code)
	}
	checks, _ := ready["checks"].(map[string]any)
	if db, _ := checks["database"].(map[string]any); db == nil || db["status"] != "unhealthy" {
		t.Errorf("database check: %v", checks["database"])
	}
	// Nothing is turned away: the saturation check is wired and healthy.
	if adm, _ := checks["admission"].(map[string]any); adm == nil || adm["status"] != "healthy" {
		t.Errorf("admission check: %v", checks["admission"])
	}
	if code, _ := sc.get(t, "/tasker/health/status"); code != 503 {
		t.Errorf("status = %d, want 503", code)
	}
	// The password check below covers the refresh failure's log line.
	eventually(t, 30*time.Second, "a failed refresh in the log", func() bool {
		return strings.Contains(sc.stderr.String(), "refresh failed")
	})
	if strings.Contains(sc.stderr.String(), "pw-not-logged") {
		t.Errorf("the database password reached the logs:\n%s", sc.stderr)
	}
}

func TestRunMetricsPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is required (make services installs it): %v", err)
	}
	db := pgtest.New(t)
	seed(t, db.URL, 100)
	sc := startSidecar(t, nil, "--database-url", db.URL, "--refresh-interval", "1s")
	var text string
	eventually(t, 30*time.Second, "domain metrics", func() bool {
		_, m := sc.get(t, "/metrics")
		text, _ = m["text"].(string)
		return strings.Contains(text, "tasker_tasks{")
	})
	for _, want := range []string{
		`tasker_tasks{state="complete"}`, `tasker_steps{state="error"}`, "tasker_error_steps{",
		"tasker_tasks_by_name{", "tasker_database_connections_max", "tasker_sidecar_build_info",
		"tasker_sidecar_refresh_duration_seconds_bucket", "tasker_sidecar_refresh_last_success_timestamp_seconds",
		"tasker_sidecar_db_pool_", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The front page of a running sidecar links the exposition.
	code, front := sc.get(t, "/")
	if page, _ := front["text"].(string); code != 200 || !strings.Contains(page, `<a href="/metrics">`) ||
		!strings.Contains(page, "<!DOCTYPE html>") {
		t.Errorf("GET / = %d, want 200 HTML linking /metrics:\n%s", code, page)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestRunAuth(t *testing.T) {
	db := pgtest.New(t)
	seed(t, db.URL, 20)
	sc := startSidecar(t, []string{"SIDECAR_SERVER_AUTH_BEARER_TOKEN=tok-123"}, "--database-url", db.URL)
	if code, _ := sc.get(t, "/tasker/health/status"); code != 401 {
		t.Errorf("status without token = %d, want 401", code)
	}
	if code, _ := sc.get(t, "/metrics"); code != 401 {
		t.Errorf("metrics without token = %d, want 401", code)
	}
	if code, _ := sc.get(t, "/tasker/health/live"); code != 200 {
		t.Errorf("live = %d, want 200 without credentials", code)
	}
	if strings.Contains(sc.stderr.String(), "tok-123") {
		t.Error("the token reached the logs")
	}
}

func TestRunCacheReadinessAndCapabilities(t *testing.T) {
	db := pgtest.New(t)
	seed(t, db.URL, 20)
	cases := []struct {
		name, url, strategy, ready string
		code                       int
	}{
		{"redis", redisURL(), "distributed_atomic", "healthy", 200},
		{"memcached", memcachedURL(), "distributed_atomic", "healthy", 200},
		{"memory", "memory://", "local_only", "healthy", 200},
		{"unreachable", "redis://127.0.0.1:1", "local_only", "unhealthy", 503},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := startSidecar(t, nil, "--database-url", db.URL, "--cache-url", c.url, "--refresh-interval", "1s")
			eventually(t, 30*time.Second, "first refresh", func() bool {
				_, ready := sc.get(t, "/tasker/health/ready")
				checks, _ := ready["checks"].(map[string]any)
				refresh, _ := checks["refresh"].(map[string]any)
				return refresh != nil && refresh["status"] == "healthy"
			})
			code, ready := sc.get(t, "/tasker/health/ready")
			if code != c.code {
				t.Errorf("ready = %d, want %d: %v", code, c.code, ready)
			}
			checks, _ := ready["checks"].(map[string]any)
			cache, _ := checks["cache"].(map[string]any)
			// Readiness shows callers without credentials only the status
			// (issue 10); the strategy is checked on /capabilities below.
			if cache == nil || cache["status"] != c.ready {
				t.Errorf("cache check = %v, want status %s", cache, c.ready)
			}
			code, caps := sc.get(t, "/capabilities")
			if code != 200 || caps["strategy"] != c.strategy {
				t.Errorf("/capabilities = %d %v", code, caps["strategy"])
			}
		})
	}
}

func TestRunServesAnalytics(t *testing.T) {
	db := pgtest.New(t)
	seed(t, db.URL, 60)
	sc := startSidecar(t, nil, "--database-url", db.URL)
	var taskID int64
	conn := db.Conn(t)
	if err := conn.QueryRow(context.Background(), "SELECT min(task_id) FROM tasker_tasks").Scan(&taskID); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		code int
		key  string
	}{
		{"/tasker/analytics/performance", 200, "system_overview"},
		{"/tasker/analytics/bottlenecks?period=12", 200, "bottleneck_analysis"},
		{"/tasker/analytics/bottlenecks?period=soon", 400, "error"},
		{fmt.Sprintf("/tasker/tasks/%d/context", taskID), 200, "execution_status"},
		{fmt.Sprintf("/tasker/tasks/%d/graph", taskID), 200, "dependency_graph"},
		{"/tasker/tasks/999999999/context", 404, "error"},
		{"/tasker/handlers", 200, "namespaces"},
		{"/tasker/handlers/no_such_namespace", 404, "error"},
		// The single and batch forms of one id must not share a cache entry.
		{fmt.Sprintf("/tasker/tasks/context?ids=%d", taskID), 200, "tasks"},
		{"/tasker/tasks/graph?ids=999999999", 200, "missing_task_ids"},
		{"/tasker/tasks/999999999/graph", 404, "error"},
	}
	for _, c := range cases {
		code, body := sc.get(t, c.path)
		if code != c.code {
			t.Errorf("GET %s = %d, want %d: %v", c.path, code, c.code, body)
			continue
		}
		if _, ok := body[c.key]; !ok {
			t.Errorf("GET %s: no %q in %v", c.path, c.key, body)
		}
	}
	eventually(t, 30*time.Second, "analytics gauges", func() bool {
		_, m := sc.get(t, "/metrics")
		text, _ := m["text"].(string)
		return strings.Contains(text, "tasker_analytics_")
	})
}

// metricSum adds up every sample of a family whose line starts with prefix.
func metricSum(text, prefix string) float64 {
	var total float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		fields := strings.Fields(line)
		var v float64
		if _, err := fmt.Sscan(fields[len(fields)-1], &v); err == nil {
			total += v
		}
	}
	return total
}

func TestRunSharesHealthCountsAcrossReplicas(t *testing.T) {
	// Without the stream every refresh is a full recount; three replicas on
	// one Redis must share one recount per refresh interval between them.
	db := pgtest.New(t)
	seed(t, db.URL, 50)
	env := []string{
		"SIDECAR_STREAM_ENABLED=false",
		"SIDECAR_ANALYTICS_ENABLED=false",
		"SIDECAR_CACHE_KEY_PREFIX=" + strings.ReplaceAll(t.Name(), "/", "_") + fmt.Sprint(time.Now().UnixNano()) + ":",
	}
	var replicas []*sidecar
	for i := 0; i < 3; i++ {
		replicas = append(replicas, startSidecar(t, env, "--database-url", db.URL, "--cache-url", redisURL(), "--refresh-interval", "1s"))
	}
	// Real time on purpose: the share of recomputations is measured over
	// several refresh intervals of live replicas.
	time.Sleep(6 * time.Second)
	var recomputes, refreshes float64
	for _, sc := range replicas {
		_, m := sc.get(t, "/metrics")
		text, _ := m["text"].(string)
		recomputes += metricSum(text, `tasker_sidecar_cache_recomputations_total{reason=`)
		refreshes += metricSum(text, "tasker_sidecar_refresh_duration_seconds_count")
		if code, _ := sc.get(t, "/tasker/health/status"); code == 503 {
			_, body := sc.get(t, "/tasker/health/status")
			if body["error"] != nil {
				t.Errorf("status error on a replica: %v", body["error"])
			}
		}
	}
	t.Logf("%v recomputations for %v refreshes across 3 replicas", recomputes, refreshes)
	if refreshes < 9 {
		t.Fatalf("only %v refreshes: the replicas did not run", refreshes)
	}
	if recomputes == 0 || recomputes > refreshes*2/3 {
		t.Errorf("%v recomputations for %v refreshes: the replicas do not share the counts", recomputes, refreshes)
	}
}

func TestRunSharedCountsReportFailures(t *testing.T) {
	// Without the stream the counts come through the shared cache, which keeps
	// serving the last value while recomputes fail; the refresher must still
	// report the failure instead of calling the old counts fresh.
	db := pgtest.New(t)
	seed(t, db.URL, 20)
	sc := startSidecar(t, []string{"SIDECAR_STREAM_ENABLED=false", "SIDECAR_ANALYTICS_ENABLED=false"},
		"--database-url", db.URL, "--refresh-interval", "1s")
	eventually(t, 30*time.Second, "a healthy status", func() bool {
		code, body := sc.get(t, "/tasker/health/status")
		return code == 200 && body["error"] == nil
	})
	conn := db.Conn(t)
	if _, err := conn.Exec(context.Background(), "ALTER TABLE tasker_workflow_steps RENAME TO tasker_workflow_steps_moved"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the schema error in status", func() bool {
		_, body := sc.get(t, "/tasker/health/status")
		return body["error_class"] == "schema"
	})
}

func TestRunLongIntervalsStart(t *testing.T) {
	// Intervals longer than the cache policies' staleness used to pass
	// check-config and then fail at start.
	db := pgtest.New(t)
	seed(t, db.URL, 5)
	sc := startSidecar(t, []string{"SIDECAR_ANALYTICS_METRICS_INTERVAL=30m"}, "--database-url", db.URL, "--refresh-interval", "5m")
	if code, _ := sc.get(t, "/tasker/health/live"); code != 200 {
		t.Errorf("live = %d", code)
	}
}
