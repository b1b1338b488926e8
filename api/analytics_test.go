package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/server"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// recordingCache computes every call, like ttl.Uncached, and remembers the
// keys it was asked for and how many options came with each (LocalOnly is
// the only one); its Info is fixed so the bodies can be checked.
type recordingCache struct {
	mu   sync.Mutex
	keys map[string]int
}

var fixedInfo = ttl.Info{Cached: true, AgeSeconds: 1.5, TTLSeconds: 90}

func (r *recordingCache) Get(ctx context.Context, resource, params string, compute func(context.Context) ([]byte, error), opts ...ttl.Option) ([]byte, ttl.Info, error) {
	r.mu.Lock()
	r.keys[resource+"?"+params] = len(opts)
	r.mu.Unlock()
	v, err := compute(ctx)
	return v, fixedInfo, err
}

// take returns the keys asked for since the last call, with their option
// counts.
func (r *recordingCache) take() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := r.keys
	r.keys = map[string]int{}
	return keys
}

// analyticsDB is a small Tasker database: namespace pay with handler
// charge 1.0.0 (two step templates) and one task whose first step is
// complete and whose second waits on it.
func analyticsDB(t *testing.T) (pgtest.DB, int64) {
	t.Helper()
	db := pgtest.NewTasker(t)
	conn := db.Conn(t)
	var task int64
	err := conn.QueryRow(context.Background(), `
WITH sys AS (INSERT INTO tasker_dependent_systems (name, created_at, updated_at) VALUES ('api', now(), now()) RETURNING dependent_system_id),
ns AS (INSERT INTO tasker_task_namespaces (name, created_at, updated_at) VALUES ('pay', now(), now()) RETURNING task_namespace_id),
nt AS (INSERT INTO tasker_named_tasks (name, task_namespace_id, version, created_at, updated_at)
       SELECT 'charge', task_namespace_id, '1.0.0', now(), now() FROM ns RETURNING named_task_id),
st AS (INSERT INTO tasker_named_steps (dependent_system_id, name, created_at, updated_at)
       SELECT dependent_system_id, n, now(), now() FROM sys, unnest(ARRAY['validate', 'charge_card']) n RETURNING named_step_id, name),
tpl AS (INSERT INTO tasker_named_tasks_named_steps (named_task_id, named_step_id, created_at, updated_at)
        SELECT named_task_id, named_step_id, now(), now() FROM nt, st RETURNING id),
t AS (INSERT INTO tasker_tasks (named_task_id, requested_at, identity_hash, context, created_at, updated_at)
      SELECT named_task_id, now() AT TIME ZONE 'UTC' - interval '10 minutes', 'h1', '{}',
             now() AT TIME ZONE 'UTC' - interval '10 minutes', now() AT TIME ZONE 'UTC' - interval '10 minutes' FROM nt
      RETURNING task_id)
SELECT task_id FROM t`).Scan(&task)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), `
WITH s AS (
  INSERT INTO tasker_workflow_steps (task_id, named_step_id, attempts, processed, created_at, updated_at)
  SELECT $1, named_step_id, CASE name WHEN 'validate' THEN 1 ELSE 0 END, name = 'validate',
         now() AT TIME ZONE 'UTC' - interval '10 minutes', now() AT TIME ZONE 'UTC' - interval '10 minutes'
  FROM tasker_named_steps RETURNING workflow_step_id, named_step_id),
named AS (SELECT s.workflow_step_id, ns.name FROM s JOIN tasker_named_steps ns USING (named_step_id)),
tr AS (INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key, most_recent, created_at, updated_at)
       SELECT workflow_step_id, 'complete', 10, true, now() AT TIME ZONE 'UTC' - interval '9 minutes', now() AT TIME ZONE 'UTC'
       FROM named WHERE name = 'validate' RETURNING id)
INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name, created_at, updated_at)
SELECT p.workflow_step_id, c.workflow_step_id, 'provides', now(), now()
FROM named p, named c WHERE p.name = 'validate' AND c.name = 'charge_card'`, task)
	if err != nil {
		t.Fatal(err)
	}
	return db, task
}

func analyticsServer(t *testing.T, url string, auth server.AuthConfig) (*Server, *recordingCache, *prometheus.Registry) {
	t.Helper()
	pool, err := collector.Open(collector.DBConfig{URL: secret.URL(url), ConnectTimeout: time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	reg := prometheus.NewRegistry()
	opts := baseOptions(&fakeSource{})
	opts.Auth, opts.Registerer, opts.Gatherer = auth, reg, reg
	s := newServer(t, opts)
	cache := &recordingCache{keys: map[string]int{}}
	MountAnalytics(s.Router(), analytics.New(pool.Pool(), analytics.Config{MaxBatch: 3}, nil), cache, nil)
	return s, cache, reg
}

func TestAnalyticsRoutes(t *testing.T) {
	db, task := analyticsDB(t)
	const token = "s3cret"
	s, cache, reg := analyticsServer(t, db.URL, server.AuthConfig{BearerToken: token})
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
	since := time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339)

	// cacheKeys are the keys the request must have asked the cache for,
	// with their option count (1: LocalOnly); every other key is an error.
	type keys = map[string]int
	// cacheInfo is the rendering of fixedInfo unless set.
	const cachedInfo = "map[age_seconds:1.5 cached:true stale:false ttl_seconds:90]"
	for _, tc := range []struct {
		path      string
		code      int
		cacheKeys keys
		cacheInfo string
		check     func(t *testing.T, body map[string]any, raw string)
	}{
		{PathPerformance, 200, keys{"performance?": 0}, "", func(t *testing.T, b map[string]any, raw string) {
			trends := b["performance_trends"].(map[string]any)
			for _, w := range []string{"last_hour", "last_4_hours", "last_24_hours"} {
				if _, ok := trends[w]; !ok {
					t.Errorf("no %s", w)
				}
			}
			hour := trends["last_hour"].(map[string]any)
			if hour["task_throughput"] != 1.0 || hour["completion_rate"] != 100.0 {
				t.Errorf("last hour %v", hour)
			}
			// Floats keep Ruby's rendering: 100.0, not 100.
			if !strings.Contains(raw, `"completion_rate":100.0`) || !strings.Contains(raw, `"system_health_score":1.0`) {
				t.Errorf("numbers not rendered as Tasker's floats: %s", raw)
			}
			if _, ok := b["period"]; ok {
				t.Error("period without since")
			}
		}},
		{PathPerformance + "?since=" + since, 200, keys{"performance?since=" + url.QueryEscape(since): 1}, "",
			func(t *testing.T, b map[string]any, _ string) {
				if p, ok := b["period"].(map[string]any); !ok || p["task_throughput"] != 1.0 {
					t.Errorf("period %v", b["period"])
				}
			}},
		{PathBottlenecks, 200, keys{"bottlenecks?name=&namespace=&period=24&version=": 0}, "", func(t *testing.T, b map[string]any, _ string) {
			if fmt.Sprint(b["scope"]) != "map[]" || b["analysis_period_hours"] != 24.0 {
				t.Errorf("scope %v period %v", b["scope"], b["analysis_period_hours"])
			}
			ba := b["bottleneck_analysis"].(map[string]any)
			if n := len(ba["slowest_steps"].([]any)); n != 1 {
				t.Errorf("%d slowest steps", n)
			}
		}},
		{PathBottlenecks + "?period=12&namespace=pay", 200, keys{"bottlenecks?name=&namespace=pay&period=12&version=": 1}, "", func(t *testing.T, b map[string]any, _ string) {
			if fmt.Sprint(b["scope"]) != "map[namespace:pay]" || b["analysis_period_hours"] != 12.0 {
				t.Errorf("scope %v period %v", b["scope"], b["analysis_period_hours"])
			}
		}},
		{fmt.Sprintf("/tasker/tasks/%d/context", task), 200, keys{fmt.Sprintf("task_context?id=%d", task): 1}, "", func(t *testing.T, b map[string]any, _ string) {
			if b["execution_status"] != "has_ready_steps" || b["completion_percentage"] != 50.0 || b["generated_at"] == nil {
				t.Errorf("context %v", b)
			}
		}},
		{fmt.Sprintf("/tasker/tasks/%d/steps", task), 200, keys{fmt.Sprintf("task_steps?id=%d", task): 1}, "", func(t *testing.T, b map[string]any, _ string) {
			if steps := b["steps"].([]any); len(steps) != 2 {
				t.Errorf("steps %v", steps)
			}
		}},
		{fmt.Sprintf("/tasker/tasks/%d/graph", task), 200, keys{fmt.Sprintf("task_graph?id=%d", task): 1}, "", func(t *testing.T, b map[string]any, _ string) {
			if lv := b["dependency_levels"].([]any); len(lv) != 2 {
				t.Errorf("levels %v", lv)
			}
		}},
		// The batch forms ask for each task's entry (in-process only: a
		// client can name any task); an unknown id is looked up in the
		// database, so the answer is not all cached.
		{fmt.Sprintf("/tasker/tasks/context?ids=%d,999999", task), 200,
			keys{fmt.Sprintf("task_context?id=%d", task): 1, "task_context?id=999999": 1},
			"map[age_seconds:1.5 cached:false stale:false ttl_seconds:90]",
			func(t *testing.T, b map[string]any, _ string) {
				if len(b["tasks"].([]any)) != 1 || fmt.Sprint(b["missing_task_ids"]) != "[999999]" {
					t.Errorf("batch %v", b)
				}
			}},
		{"/tasker/tasks/steps?ids=999999", 200, keys{"task_steps?id=999999": 1},
			"map[age_seconds:0 cached:false stale:false ttl_seconds:0]", func(t *testing.T, b map[string]any, _ string) {
				if len(b["tasks"].([]any)) != 0 {
					t.Errorf("batch %v", b)
				}
			}},
		{fmt.Sprintf("/tasker/tasks/graph?ids=%d", task), 200, keys{fmt.Sprintf("task_graph?id=%d", task): 1}, "", nil},
		{PathHandlers, 200, keys{"handlers?view=index": 0}, "", func(t *testing.T, b map[string]any, _ string) {
			if fmt.Sprint(b["namespaces"]) != "[map[handler_count:1 name:pay]]" {
				t.Errorf("handlers %v", b)
			}
		}},
		{"/tasker/handlers/pay", 200, keys{"handlers?namespace=pay&view=namespace": 0}, "", nil},
		{"/tasker/handlers/pay/charge?version=latest", 200, keys{"handlers?name=charge&namespace=pay&version=latest&view=handler": 0}, "",
			func(t *testing.T, b map[string]any, _ string) {
				h := b["handler"].(map[string]any)
				g := h["dependency_graph"].(map[string]any)
				if fmt.Sprint(g["execution_order"]) != "[validate charge_card]" {
					t.Errorf("handler %v", h)
				}
			}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			cache.take()
			r := do(t, s, http.MethodGet, tc.path, bearer)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			b := r.json(t)
			wantInfo := cmp.Or(tc.cacheInfo, cachedInfo)
			if b["cache_info"] == nil || fmt.Sprint(b["cache_info"]) != wantInfo {
				t.Errorf("cache_info %v, want %s", b["cache_info"], wantInfo)
			}
			if got := cache.take(); !maps.Equal(got, tc.cacheKeys) {
				t.Errorf("cache keys %v, want %v", got, tc.cacheKeys)
			}
			if r.header.Get("Cache-Control") != "no-cache, no-store, must-revalidate" {
				t.Errorf("headers %v", r.header)
			}
			if tc.check != nil {
				tc.check(t, b, string(r.body))
			}
		})
	}

	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{PathPerformance + "?since=yesterday", 400, `"error":"Bad Request"`},
		{PathPerformance + "?since=2999-01-01T00:00:00Z", 400, `must not be in the future`},
		{PathBottlenecks + "?period=abc", 400, `period: must be a whole number of hours`},
		{PathBottlenecks + "?period=0", 400, `"error":"Bad Request"`},
		{"/tasker/tasks/abc/context", 400, `id: must be a positive integer`},
		{"/tasker/tasks/0/steps", 400, `"error":"Bad Request"`},
		{"/tasker/tasks/context", 400, `ids: is required`},
		{"/tasker/tasks/context?ids=1,2,3,4", 400, `at most 3 task ids`},
		{"/tasker/tasks/graph?ids=1,x", 400, `ids: must be positive integers`},
		{"/tasker/tasks/999999/context", 404, `{"error":"Task not found"}`},
		{"/tasker/tasks/999999/graph", 404, `{"error":"Task not found"}`},
		{"/tasker/handlers/nope", 404, `{"error":"Namespace not found"}`},
		{"/tasker/handlers/pay/nope", 404, `{"error":"Handler not found in namespace"}`},
		{"/tasker/handlers/pay/charge?version=9.9.9", 404, `{"error":"Handler not found in namespace"}`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := do(t, s, http.MethodGet, tc.path, bearer)
			if r.code != tc.code || !strings.Contains(string(r.body), tc.body) {
				t.Errorf("got %d %s, want %d containing %s", r.code, r.body, tc.code, tc.body)
			}
		})
	}

	// The server's middleware covers the mounted routes.
	if r := do(t, s, http.MethodGet, PathPerformance); r.code != http.StatusUnauthorized {
		t.Errorf("without credentials: %d", r.code)
	}
	if n := testutil.ToFloat64(s.metrics.requests.WithLabelValues(PathTaskContext, "404")); n != 1 {
		t.Errorf("requests counted for %s: %v", PathTaskContext, n)
	}
	if _, err := reg.Gather(); err != nil {
		t.Error(err)
	}
}

func TestAnalyticsDatabaseDown(t *testing.T) {
	s, _, _ := analyticsServer(t, "postgres://postgres@127.0.0.1:1/none?sslmode=disable", server.AuthConfig{})
	for _, tc := range []struct {
		path, title string
		scope       bool
	}{
		{PathPerformance, "Performance analytics failed", false},
		{PathBottlenecks + "?namespace=pay", "Bottleneck analysis failed", true},
		{"/tasker/tasks/1/context", "Task analysis failed", false},
		{"/tasker/tasks/steps?ids=1,2", "Task analysis failed", false},
		{PathHandlers, "Handler lookup failed", false},
		{"/tasker/handlers/pay/charge", "Handler lookup failed", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := do(t, s, http.MethodGet, tc.path)
			if r.code != http.StatusServiceUnavailable {
				t.Fatalf("status %d: %s", r.code, r.body)
			}
			if got := r.header.Get("Retry-After"); got != "5" {
				t.Errorf("Retry-After %q, want 5 (the default) on a failing database", got)
			}
			b := r.json(t)
			ts, _ := b["timestamp"].(string)
			if _, err := time.Parse("2006-01-02T15:04:05.000Z", ts); err != nil || b["error"] != tc.title ||
				!strings.Contains(fmt.Sprint(b["message"]), "connection refused") {
				t.Errorf("body %v", b)
			}
			if _, ok := b["scope"]; ok != tc.scope {
				t.Errorf("scope present %v, want %v: %v", ok, tc.scope, b)
			}
		})
	}
}

func TestWithCacheInfo(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		lag      time.Duration
	}{
		{`{"a":1}`, `{"a":1,"cache_info":{"cached":true,"age_seconds":1.5,"ttl_seconds":90.0,"stale":false}}`, 0},
		{"{}\n", `{"cache_info":{"cached":true,"age_seconds":1.5,"ttl_seconds":90.0,"stale":false}}`, 0},
		// Computed 1.5 s ago on a standby 75 s behind its primary.
		{`{"a":1}`, `{"a":1,"cache_info":{"cached":true,"age_seconds":76.5,"replication_lag_seconds":75.0,"ttl_seconds":90.0,"stale":false}}`, 75 * time.Second},
	} {
		in := []byte(tc.in)
		got, err := withCacheInfo(in, fixedInfo, tc.lag)
		if err != nil || string(got) != tc.want || string(in) != tc.in {
			t.Errorf("%q: got %s, %v (input now %q)", tc.in, got, err, in)
		}
		var v map[string]any
		if err := json.Unmarshal(got, &v); err != nil {
			t.Error(err)
		}
	}
	if _, err := withCacheInfo([]byte(`[1]`), fixedInfo, 0); err == nil {
		t.Error("accepted an array")
	}
}

// memoCache keeps every value until reset: a stand-in for the coordinated
// cache's in-process level, so that the benchmark's warm requests measure
// our handler, not a cache under development.
type memoCache struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *memoCache) Get(ctx context.Context, resource, params string, compute func(context.Context) ([]byte, error), _ ...ttl.Option) ([]byte, ttl.Info, error) {
	key := resource + "?" + params
	c.mu.Lock()
	v, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return v, ttl.Info{Cached: true, TTLSeconds: 90}, nil
	}
	v, err := compute(ctx)
	if err != nil {
		return nil, ttl.Info{}, err
	}
	c.mu.Lock()
	c.m[key] = v
	c.mu.Unlock()
	return v, ttl.Info{TTLSeconds: 90}, nil
}

func (c *memoCache) reset() {
	c.mu.Lock()
	c.m = map[string][]byte{}
	c.mu.Unlock()
}

// BenchmarkAnalyticsEndpoints measures every analytics route on a real,
// preferably large, Tasker database (bench/analytics.sh runs it on
// bench_1m). cold/<route> empties the cache before each request, so every
// iteration runs the route's queries; warm/<route> serves the cached value.
// It is opt-in: set SIDECAR_BENCH_DATABASE_URL.
func BenchmarkAnalyticsEndpoints(b *testing.B) {
	url := os.Getenv("SIDECAR_BENCH_DATABASE_URL")
	if url == "" {
		b.Skip("set SIDECAR_BENCH_DATABASE_URL to a Tasker database to run this benchmark")
	}
	db, err := collector.Open(collector.DBConfig{URL: secret.URL(url)}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var ids []int64
	var namespace string
	// The newest tasks are the ones an operator looks at; on a bench
	// database they are also the ones still in flight.
	err = db.Pool().QueryRow(context.Background(), `SELECT array_agg(task_id ORDER BY task_id),
		(SELECT n.name FROM tasker_task_namespaces n ORDER BY n.name LIMIT 1)
		FROM (SELECT task_id FROM tasker_tasks ORDER BY task_id DESC LIMIT 50) t`).Scan(&ids, &namespace)
	if err != nil || len(ids) == 0 {
		b.Fatalf("pick tasks: %v", err)
	}
	var handler string
	if err := db.Pool().QueryRow(context.Background(), `SELECT n.name || '/' || nt.name FROM tasker_named_tasks nt
		JOIN tasker_task_namespaces n USING (task_namespace_id) ORDER BY nt.named_task_id LIMIT 1`).Scan(&handler); err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts := baseOptions(&fakeSource{})
	opts.Registerer, opts.Gatherer = reg, reg
	s, err := New(opts.Config, opts.Deps)
	if err != nil {
		b.Fatal(err)
	}
	cache := &memoCache{m: map[string][]byte{}}
	MountAnalytics(s.Router(), analytics.New(db.Pool(), analytics.Config{}, nil), cache, nil)
	idList := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(ids)), ","), "[]")
	one := ids[len(ids)-1]
	routes := []struct{ name, path string }{
		{"performance", PathPerformance},
		{"performance_since_48h", PathPerformance + "?since=" + time.Now().Add(-48*time.Hour).UTC().Format(time.RFC3339)},
		{"bottlenecks", PathBottlenecks},
		{"bottlenecks_namespace_1h", PathBottlenecks + "?period=1&namespace=" + namespace},
		{"task_context", fmt.Sprintf("/tasker/tasks/%d/context", one)},
		{"task_steps", fmt.Sprintf("/tasker/tasks/%d/steps", one)},
		{"task_graph", fmt.Sprintf("/tasker/tasks/%d/graph", one)},
		{"tasks_context_50", "/tasker/tasks/context?ids=" + idList},
		{"tasks_steps_50", "/tasker/tasks/steps?ids=" + idList},
		{"tasks_graph_50", "/tasker/tasks/graph?ids=" + idList},
		{"handlers", PathHandlers},
		{"handlers_namespace", "/tasker/handlers/" + strings.Split(handler, "/")[0]},
		{"handler", "/tasker/handlers/" + handler + "?version=latest"},
	}
	serve := func(b *testing.B, path string) {
		rec := httptest.NewRecorder()
		s.Router().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", path, rec.Code, rec.Body.String())
		}
	}
	for _, r := range routes {
		b.Run("cold/"+r.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				cache.reset()
				b.StartTimer()
				serve(b, r.path)
			}
		})
		b.Run("warm/"+r.name, func(b *testing.B) {
			cache.reset()
			serve(b, r.path)
			b.ResetTimer()
			for b.Loop() {
				serve(b, r.path)
			}
		})
	}
}

// A task's readiness changes with the clock alone, so the per-task routes
// must not be served from a cache entry minutes old (they once fell to the
// default policy's 300 s). Through the real coordinated cache.
func TestPerTaskRoutesStaySecondsBehind(t *testing.T) {
	db, task := analyticsDB(t)
	pool, err := collector.Open(collector.DBConfig{URL: secret.URL(db.URL), ConnectTimeout: time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	cache, err := ttl.New(store.NewMemory(""), nil, nil, ttl.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, baseOptions(&fakeSource{}))
	MountAnalytics(s.Router(), analytics.New(pool.Pool(), analytics.Config{}, nil), cache, nil)
	for _, path := range []string{
		fmt.Sprintf("/tasker/tasks/%d/context", task), fmt.Sprintf("/tasker/tasks/%d/steps", task),
		fmt.Sprintf("/tasker/tasks/context?ids=%d", task), fmt.Sprintf("/tasker/tasks/steps?ids=%d", task),
	} {
		r := do(t, s, http.MethodGet, path)
		if r.code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, r.code, r.body)
		}
		info, _ := r.json(t)["cache_info"].(map[string]any)
		if ttlSeconds, _ := info["ttl_seconds"].(float64); ttlSeconds <= 0 || ttlSeconds > 15 {
			t.Errorf("%s: cached for %v s, want at most 15", path, info["ttl_seconds"])
		}
	}
}

// moreTasks adds n tasks without steps to the database of analyticsDB.
func moreTasks(t *testing.T, db pgtest.DB, n int) []int64 {
	t.Helper()
	rows, err := db.Conn(t).Query(context.Background(), `
INSERT INTO tasker_tasks (named_task_id, requested_at, identity_hash, context, created_at, updated_at)
SELECT named_task_id, now() AT TIME ZONE 'UTC', 'more' || i, '{}', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
FROM tasker_named_tasks, generate_series(1, $1) i RETURNING task_id`, n)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// countingCache counts the compute calls of each key that reach the
// database through the cache it wraps.
type countingCache struct {
	ttl.Getter
	mu       sync.Mutex
	computed map[string]int
}

func (c *countingCache) Get(ctx context.Context, resource, params string, compute func(context.Context) ([]byte, error), opts ...ttl.Option) ([]byte, ttl.Info, error) {
	return c.Getter.Get(ctx, resource, params, func(ctx context.Context) ([]byte, error) {
		c.mu.Lock()
		c.computed[resource+"?"+params]++
		c.mu.Unlock()
		return compute(ctx)
	}, opts...)
}

// runLog records the batch computations of a task route.
type runLog struct {
	mu   sync.Mutex
	runs [][]int64
}

func logRuns[T any](l *runLog, load func(context.Context, []int64) ([]T, []int64, error)) func(context.Context, []int64) ([]T, []int64, error) {
	return func(ctx context.Context, ids []int64) ([]T, []int64, error) {
		l.mu.Lock()
		l.runs = append(l.runs, slices.Clone(ids))
		l.mu.Unlock()
		return load(ctx, ids)
	}
}

func (l *runLog) take() [][]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	runs := l.runs
	l.runs = nil
	return runs
}

// TestBatchFromTaskEntries: the batch routes are assembled from per-task
// cache entries shared with the single-task routes, so two id sets share
// the tasks they have in common; the misses of a request are computed in
// one batch query; and the answers are what the service computes for each
// task.
func TestBatchFromTaskEntries(t *testing.T) {
	db, first := analyticsDB(t)
	ids := append([]int64{first}, moreTasks(t, db, analytics.DefaultConfig().MaxBatch-1)...)
	pool, err := collector.Open(collector.DBConfig{URL: secret.URL(db.URL), ConnectTimeout: time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	results, err := ttl.New(store.NewMemory(""), nil, nil, ttl.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = results.Shutdown(context.Background()) })
	cache := &countingCache{Getter: results, computed: map[string]int{}}
	svc := analytics.New(pool.Pool(), analytics.Config{}, nil)
	s := newServer(t, baseOptions(&fakeSource{}))
	api := newAnalyticsAPI(svc, cache, nil)
	var runs, graphRuns runLog
	api.contexts.load = logRuns(&runs, api.contexts.load)
	api.graphs.load = logRuns(&graphRuns, api.graphs.load)
	api.mount(s.Router())

	get := func(path string) map[string]any {
		t.Helper()
		r := do(t, s, http.MethodGet, path)
		if r.code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, r.code, r.body)
		}
		return r.json(t)
	}
	list := func(ids ...int64) string {
		return strings.Trim(strings.ReplaceAll(fmt.Sprint(ids), " ", ","), "[]")
	}
	// want is the service's own answer for ids, as JSON values.
	want := func(ids ...int64) []any {
		t.Helper()
		got, _, err := svc.TaskContexts(t.Context(), ids)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(got)
		var v []any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}

	// Cold: one query for every id, the unknown one included.
	b := get("/tasker/tasks/context?ids=" + list(ids[0], ids[1], 999999))
	if got := runs.take(); !reflect.DeepEqual(got, [][]int64{{ids[0], ids[1], 999999}}) {
		t.Errorf("cold batch ran %v, want one run of all three ids", got)
	}
	if !reflect.DeepEqual(b["tasks"], want(ids[0], ids[1])) || fmt.Sprint(b["missing_task_ids"]) != "[999999]" {
		t.Errorf("cold batch %v, want %v", b, want(ids[0], ids[1]))
	}
	if info := b["cache_info"].(map[string]any); info["cached"] != false {
		t.Errorf("cold batch cache_info %v", info)
	}
	generated := b["generated_at"]

	// Another id set: only its new tasks are computed (in one query unless
	// a lookup that began late missed it), never the other request's.
	b = get("/tasker/tasks/context?ids=" + list(ids[1], ids[2], ids[3]))
	got := runs.take()
	if all := slices.Concat(got...); len(got) < 1 || len(got) > 2 || !slices.Contains(all, ids[2]) || !slices.Contains(all, ids[3]) || slices.Contains(all, ids[0]) {
		t.Errorf("second batch ran %v, want a run with %d and %d", got, ids[2], ids[3])
	}
	if !reflect.DeepEqual(b["tasks"], want(ids[1], ids[2], ids[3])) {
		t.Errorf("second batch %v", b["tasks"])
	}

	// The single-task route serves the entry the batch made: the same
	// task, the same generated_at.
	single := get(fmt.Sprintf("/tasker/tasks/%d/context", ids[0]))
	if got := runs.take(); len(got) != 0 {
		t.Errorf("single-task route ran %v", got)
	}
	if info := single["cache_info"].(map[string]any); info["cached"] != true || single["generated_at"] != generated {
		t.Errorf("single task %v, want the batch's entry generated at %v", single, generated)
	}
	delete(single, "cache_info")
	delete(single, "generated_at")
	if w := want(ids[0])[0]; !reflect.DeepEqual(any(single), w) {
		t.Errorf("single task %v, want %v", single, w)
	}

	// Every task cached: no query, cached, the oldest generated_at.
	b = get("/tasker/tasks/context?ids=" + list(ids[:4]...))
	if got := runs.take(); len(got) != 0 {
		t.Errorf("warm batch ran %v", got)
	}
	if info := b["cache_info"].(map[string]any); info["cached"] != true || b["generated_at"] != generated {
		t.Errorf("warm batch cache_info %v generated_at %v, want cached and %v", info, b["generated_at"], generated)
	}

	// Each existing task was computed once, whatever combinations named
	// it; the unknown id was looked up and left no entry.
	for _, id := range ids[:4] {
		if n := cache.computed[fmt.Sprintf("task_context?id=%d", id)]; n != 1 {
			t.Errorf("task %d computed %d times", id, n)
		}
	}
	get("/tasker/tasks/context?ids=999999")
	if n := cache.computed["task_context?id=999999"]; n != 2 {
		t.Errorf("unknown id computed %d times, want each time it is asked for", n)
	}

	// A cold batch of the most ids a request may name is one query, and
	// gets past the cache's bound on waiting requests.
	b = get("/tasker/tasks/graph?ids=" + list(ids...))
	if got := graphRuns.take(); !reflect.DeepEqual(got, [][]int64{ids}) {
		t.Errorf("cold %d-id batch ran %v", len(ids), got)
	}
	if n := len(b["tasks"].([]any)); n != len(ids) {
		t.Errorf("%d tasks, want %d", n, len(ids))
	}
	graphs, _, err := svc.TaskGraphs(t.Context(), ids[:1])
	if err != nil {
		t.Fatal(err)
	}
	if task := b["tasks"].([]any)[0].(map[string]any); task["task_id"] != float64(first) ||
		len(task["dependency_levels"].([]any)) != len(graphs[0].DependencyLevels) {
		t.Errorf("graph of task %d: %v", first, task)
	}
}

// errorCache fails every request with err, as the coordinated cache does
// when a resource is overloaded.
type errorCache struct{ err error }

func (c errorCache) Get(context.Context, string, string, func(context.Context) ([]byte, error), ...ttl.Option) ([]byte, ttl.Info, error) {
	return nil, ttl.Info{}, c.err
}

// TestAnalyticsOverloaded: an overload is a 503 with Retry-After and
// Tasker's failure body, logged at debug only.
func TestAnalyticsOverloaded(t *testing.T) {
	pool, err := collector.Open(collector.DBConfig{URL: secret.URL("postgres://postgres@127.0.0.1:1/none?sslmode=disable")}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	svc := analytics.New(pool.Pool(), analytics.Config{}, nil)
	for _, tc := range []struct {
		name, path, retryAfter, title string
		err                           error
	}{
		{"cache waiters", PathPerformance, "7", errPerformance,
			&ttl.OverloadedError{Resource: "performance", Reason: ttl.RejectWaiters, RetryAfter: 7 * time.Second}},
		{"cache waiters, fraction rounded up", PathBottlenecks, "2", errBottlenecks,
			&ttl.OverloadedError{Resource: "bottlenecks", Reason: ttl.RejectWaiters, RetryAfter: 1500 * time.Millisecond}},
		{"admission queue", "/tasker/tasks/1/context", "1", errTasks,
			fmt.Errorf("task_context: %w", &analytics.OverloadedError{Class: analytics.ClassLookup, Reason: analytics.ReasonQueueFull, After: time.Second})},
		{"admission queue, batch", "/tasker/tasks/graph?ids=1,2", "5", errTasks,
			fmt.Errorf("task_graph: %w", &analytics.OverloadedError{Class: analytics.ClassLookup, Reason: analytics.ReasonQueueFull, After: 5 * time.Second})},
		{"no estimate", PathHandlers, "5", errHandlers, fmt.Errorf("compute: %w", ttl.ErrOverloaded)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			s := newServer(t, baseOptions(&fakeSource{}))
			MountAnalytics(s.Router(), svc, errorCache{tc.err}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
			r := do(t, s, http.MethodGet, tc.path)
			if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != tc.retryAfter {
				t.Fatalf("got %d Retry-After %q, want 503 and %s: %s", r.code, r.header.Get("Retry-After"), tc.retryAfter, r.body)
			}
			if b := r.json(t); b["error"] != tc.title || !strings.Contains(fmt.Sprint(b["message"]), "overloaded") && !strings.Contains(fmt.Sprint(b["message"]), "busy") {
				t.Errorf("body %v", b)
			}
			if logs.String() != "" {
				t.Errorf("logged above debug: %s", logs.String())
			}
		})
	}
}

// TestAnalyticsClientGone: a request whose client disconnected is not a
// server error: no answer (499 in the request metrics) and no warning.
func TestAnalyticsClientGone(t *testing.T) {
	db, task := analyticsDB(t)
	pool, err := collector.Open(collector.DBConfig{URL: secret.URL(db.URL), ConnectTimeout: time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	svc := analytics.New(pool.Pool(), analytics.Config{}, nil)
	for _, path := range []string{
		PathPerformance, PathBottlenecks, fmt.Sprintf("/tasker/tasks/%d/graph", task),
		fmt.Sprintf("/tasker/tasks/steps?ids=%d,999999", task), PathHandlers,
	} {
		t.Run(path, func(t *testing.T) {
			var logs syncBuffer
			reg := prometheus.NewRegistry()
			opts := baseOptions(&fakeSource{})
			opts.Registerer, opts.Gatherer = reg, reg
			s := newServer(t, opts)
			MountAnalytics(s.Router(), svc, nil, debugLogger(&logs))
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			r := do(t, s, http.MethodGet, path, func(r *http.Request) { *r = *r.WithContext(ctx) })
			if r.code != StatusClientClosedRequest || len(r.body) != 0 {
				t.Errorf("got %d %s, want 499 and no body", r.code, r.body)
			}
			if strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "abandoned by its client") {
				t.Errorf("log: %s", logs.String())
			}
		})
	}
}

// TestAnalyticsInputs: every parameter is checked before it reaches the
// database or the cache (bottlenecks?namespace=%00 used to come back as a
// 503 with PostgreSQL's "invalid byte sequence"), refusals are short, and
// a repeated parameter is refused, or merged for ids.
func TestAnalyticsInputs(t *testing.T) {
	db, task := analyticsDB(t)
	s, cache, _ := analyticsServer(t, db.URL, server.AuthConfig{})
	huge := strings.Repeat("9", 64<<10)
	for _, tc := range []struct {
		path string
		want string
	}{
		{PathBottlenecks + "?namespace=%00", `namespace: must not contain control characters, got \"\\x00\"`},
		{PathBottlenecks + "?name=%00", `name: must not contain control characters`},
		{PathBottlenecks + "?version=%FF", `version: must be valid UTF-8`},
		{PathBottlenecks + "?namespace=" + strings.Repeat("n", 65), `namespace: must be at most 64 characters, got 65`},
		{PathBottlenecks + "?period=1&period=2", `period: given 2 times`},
		{PathBottlenecks + "?period=" + huge, `period: must be a whole number of hours from 1 to 8760, got \"999`},
		{PathBottlenecks + "?namespace=%zz", `query: invalid URL escape`},
		{PathPerformance + "?since=" + huge, `since: must be at most 64 characters`},
		{PathPerformance + "?since=2025-06-18T14:30:00Z%00", `since: must not contain control characters`},
		{PathPerformance + "?since=a&since=b", `since: given 2 times`},
		{"/tasker/tasks/" + huge + "/context", `id: must be a positive integer, got \"999`},
		{"/tasker/tasks/context?ids=" + huge, `ids: must be at most 72 bytes for 3 task ids`},
		{"/tasker/tasks/context?ids=1&ids=", `ids: must be positive integers, got \"\"`},
		{"/tasker/tasks/steps?ids=1;2", `query: invalid semicolon separator`},
		{"/tasker/handlers/%00", `namespace: must not contain control characters`},
		{"/tasker/handlers/pay/" + strings.Repeat("n", 65), `name: must be at most 64 characters`},
		{"/tasker/handlers/pay/ch%01arge", `name: must not contain control characters`},
		{"/tasker/handlers/pay/charge?version=%00", `version: must not contain control characters`},
		{"/tasker/handlers/pay/charge?version=1&version=2", `version: given 2 times`},
	} {
		t.Run(tc.path[:min(len(tc.path), 60)], func(t *testing.T) {
			cache.take()
			r := do(t, s, http.MethodGet, tc.path)
			if r.code != http.StatusBadRequest || !strings.Contains(string(r.body), tc.want) {
				t.Errorf("got %d %.300s, want 400 with %s", r.code, r.body, tc.want)
			}
			if len(r.body) > 400 {
				t.Errorf("%d-byte answer", len(r.body))
			}
			if keys := cache.take(); len(keys) != 0 {
				t.Errorf("reached the cache: %v", keys)
			}
		})
	}

	// ids given twice are merged.
	r := do(t, s, http.MethodGet, fmt.Sprintf("/tasker/tasks/context?ids=%d&ids=999999", task))
	if b := r.json(t); r.code != http.StatusOK || len(b["tasks"].([]any)) != 1 || fmt.Sprint(b["missing_task_ids"]) != "[999999]" {
		t.Errorf("repeated ids: %d %s", r.code, r.body)
	}
}

// TestFreelyVariedKeysStayLocal: with two replicas sharing Redis, the
// default performance and bottleneck answers are shared, while since=,
// non-default bottleneck scopes and task ids, which a client can vary
// without end, never reach the shared store.
func TestFreelyVariedKeysStayLocal(t *testing.T) {
	db, task := analyticsDB(t)
	pool, err := collector.Open(collector.DBConfig{URL: secret.URL(db.URL), ConnectTimeout: time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	redisURL := storetest.RedisURL(t)
	prefix := storetest.Prefix(t)
	report := func() detector.Report {
		return detector.Report{Mechanism: detector.MechanismRedisLua, Store: detector.StoreInfo{Reachable: true}}
	}
	replica := func() *Server {
		st, err := store.Open(store.Config{URL: secret.URL(redisURL), KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		results, err := ttl.New(st, report, nil, ttl.DefaultConfig(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = results.Shutdown(context.Background()) })
		s := newServer(t, baseOptions(&fakeSource{}))
		MountAnalytics(s.Router(), analytics.New(pool.Pool(), analytics.Config{}, nil), results, nil)
		return s
	}
	a, b := replica(), replica()
	cached := func(s *Server, path string) bool {
		t.Helper()
		r := do(t, s, http.MethodGet, path)
		if r.code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, r.code, r.body)
		}
		return r.json(t)["cache_info"].(map[string]any)["cached"] == true
	}
	since := PathPerformance + "?since=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		first, second string
		shared        bool
	}{
		{PathPerformance, PathPerformance, true},
		{PathBottlenecks, PathBottlenecks + "?period=24", true},
		{fmt.Sprintf("/tasker/tasks/steps?ids=%d", task), fmt.Sprintf("/tasker/tasks/%d/steps", task), false},
		{since, since, false},
		{PathBottlenecks + "?period=12", PathBottlenecks + "?period=12", false},
		{PathBottlenecks + "?namespace=pay", PathBottlenecks + "?namespace=pay", false},
	} {
		if cached(a, tc.first) {
			t.Errorf("%s: cached on the first request", tc.first)
		}
		if got := cached(b, tc.second); got != tc.shared {
			t.Errorf("%s after %s on another replica: cached %v, want %v", tc.second, tc.first, got, tc.shared)
		}
		if !cached(a, tc.first) {
			t.Errorf("%s: not cached in-process", tc.first)
		}
	}
	var perf, bottlenecks, tasks int
	for _, k := range storetest.RedisKeys(t, storetest.AdminRedis(t, redisURL), prefix) {
		switch {
		case strings.Contains(k, "{performance:"):
			perf++
		case strings.Contains(k, "{bottlenecks:"):
			bottlenecks++
		case strings.Contains(k, "{task_"):
			tasks++
		}
	}
	if perf != 1 || bottlenecks != 1 || tasks != 0 {
		t.Errorf("shared store holds %d performance, %d bottleneck and %d per-task keys, want the default one of each and no per-task key",
			perf, bottlenecks, tasks)
	}
}

// TestTaskBatchRuns: which computations share a run (pure logic, with a
// fake batch computation).
func TestTaskBatchRuns(t *testing.T) {
	var mu sync.Mutex
	var runs [][]int64
	load := func(_ context.Context, ids []int64) (map[int64][]byte, error) {
		mu.Lock()
		runs = append(runs, ids)
		mu.Unlock()
		out := map[int64][]byte{}
		for _, id := range ids {
			if id != 404 {
				out[id] = []byte(fmt.Sprint(id))
			}
		}
		return out, nil
	}
	take := func() [][]int64 {
		mu.Lock()
		defer mu.Unlock()
		r := runs
		runs = nil
		return r
	}
	ctx := t.Context()

	// A cold batch: the first miss covers every id, the others reuse it.
	b := newTaskBatch(load, []int64{1, 2, 404})
	for _, id := range []int64{1, 2, 404} {
		b.started(id)
	}
	for _, id := range []int64{2, 1, 404} {
		v, err := b.compute(ctx, id)
		if id == 404 {
			if !errors.Is(err, analytics.ErrNotFound) {
				t.Errorf("unknown id: %q %v", v, err)
			}
		} else if string(v) != fmt.Sprint(id) || err != nil {
			t.Errorf("id %d: %q %v", id, v, err)
		}
	}
	if got := take(); !reflect.DeepEqual(got, [][]int64{{1, 2, 404}}) {
		t.Errorf("cold runs %v", got)
	}

	// Once a lookup was a hit, ids not looked up yet are left to their
	// own lookups.
	b = newTaskBatch(load, []int64{1, 2, 3, 4})
	b.started(1)
	b.returned(1) // a hit
	b.started(2)
	b.started(3)
	if _, err := b.compute(ctx, 2); err != nil {
		t.Fatal(err)
	}
	b.returned(2)
	if _, err := b.compute(ctx, 3); err != nil { // covered by the run of 2
		t.Fatal(err)
	}
	b.returned(3)
	b.started(4)
	if _, err := b.compute(ctx, 4); err != nil {
		t.Fatal(err)
	}
	b.returned(4)
	if got := take(); !reflect.DeepEqual(got, [][]int64{{2, 3}, {4}}) {
		t.Errorf("warm runs %v", got)
	}

	// After the request: a refresh covers every id, and a run older than a
	// lookup's answer is never reused for it.
	if _, err := b.compute(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := b.compute(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := take(); !reflect.DeepEqual(got, [][]int64{{1, 2, 3, 4}}) {
		t.Errorf("refresh runs %v", got)
	}

	// A run nobody waits for any more is cancelled.
	cancelled := make(chan struct{})
	b = newTaskBatch(func(ctx context.Context, _ []int64) (map[int64][]byte, error) {
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}, []int64{1})
	b.started(1)
	short, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.compute(short, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("abandoned compute: %v", err)
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("the abandoned run was not cancelled")
	}
}

// TestAnalyticsUnsupportedEngine: attached to a database whose analytics
// the sidecar does not compute (tasker-core), every analytics route answers
// 501 naming why, before reading its parameters (a UUID is not a Rails
// id), and nothing reaches the cache or the database.
func TestAnalyticsUnsupportedEngine(t *testing.T) {
	pool, err := collector.Open(collector.DBConfig{URL: secret.URL("postgres://postgres@127.0.0.1:1/none?sslmode=disable")}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	supported := errors.New("not yet")
	svc := analytics.New(pool.Pool(), analytics.Config{}, nil, analytics.WithSupported(func() error {
		if supported != nil {
			return fmt.Errorf("%w: the database is tasker-core's", analytics.ErrEngineUnsupported)
		}
		return nil
	}))
	s := newServer(t, baseOptions(&fakeSource{}))
	cache := &recordingCache{keys: map[string]int{}}
	MountAnalytics(s.Router(), svc, cache, nil)
	const key = "0190a1b2-c3d4-7e5f-8a6b-0c1d2e3f4a5b"
	for _, path := range []string{PathPerformance, PathBottlenecks, "/tasker/tasks/" + key + "/context",
		"/tasker/tasks/steps?ids=" + key, PathHandlers} {
		r := do(t, s, http.MethodGet, path)
		if r.code != http.StatusNotImplemented || !strings.Contains(string(r.body), "tasker-core") {
			t.Errorf("%s: %d %s, want 501 naming the engine", path, r.code, r.body)
		}
	}
	if got := cache.take(); len(got) != 0 {
		t.Errorf("the cache was asked for %v", got)
	}
	supported = nil // the same routes compute again (and fail on the unreachable database)
	if r := do(t, s, http.MethodGet, "/tasker/tasks/x/context"); r.code != http.StatusBadRequest {
		t.Errorf("a Rails route after the gate opened: %d, want 400 for a bad id", r.code)
	}
}
