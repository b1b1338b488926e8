package exporters

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// recordingCache computes every call, like ttl.Uncached, and remembers the
// keys it was asked for; its Info is fixed so the bodies can be checked.
type recordingCache struct {
	mu   sync.Mutex
	keys []string
}

var fixedInfo = ttl.Info{Cached: true, AgeSeconds: 1.5, TTLSeconds: 90}

func (r *recordingCache) Get(ctx context.Context, resource, params string, compute func(context.Context) ([]byte, error)) ([]byte, ttl.Info, error) {
	r.mu.Lock()
	r.keys = append(r.keys, resource+"?"+params)
	r.mu.Unlock()
	v, err := compute(ctx)
	return v, fixedInfo, err
}

func (r *recordingCache) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.keys) == 0 {
		return ""
	}
	return r.keys[len(r.keys)-1]
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

func analyticsServer(t *testing.T, url string, auth Auth) (*Server, *recordingCache, *prometheus.Registry) {
	t.Helper()
	pool, err := collector.Open(collector.Options{URL: url, ConnectTimeout: time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	reg := prometheus.NewRegistry()
	opts := baseOptions(&fakeSource{})
	opts.Auth, opts.Registerer, opts.Gatherer = auth, reg, reg
	s := newServer(t, opts)
	cache := &recordingCache{}
	MountAnalytics(s.Router(), analytics.New(pool.Pool(), analytics.Options{MaxBatch: 3}, nil), cache, nil)
	return s, cache, reg
}

func TestAnalyticsRoutes(t *testing.T) {
	db, task := analyticsDB(t)
	const token = "s3cret"
	s, cache, reg := analyticsServer(t, db.URL, Auth{BearerToken: token})
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }

	for _, tc := range []struct {
		path     string
		code     int
		cacheKey string
		check    func(t *testing.T, body map[string]any, raw string)
	}{
		{PathPerformance, 200, "performance?", func(t *testing.T, b map[string]any, raw string) {
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
		{PathPerformance + "?since=" + time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339), 200, "performance?since=",
			func(t *testing.T, b map[string]any, _ string) {
				if p, ok := b["period"].(map[string]any); !ok || p["task_throughput"] != 1.0 {
					t.Errorf("period %v", b["period"])
				}
			}},
		{PathBottlenecks, 200, "bottlenecks?name=&namespace=&period=24&version=", func(t *testing.T, b map[string]any, _ string) {
			if fmt.Sprint(b["scope"]) != "map[]" || b["analysis_period_hours"] != 24.0 {
				t.Errorf("scope %v period %v", b["scope"], b["analysis_period_hours"])
			}
			ba := b["bottleneck_analysis"].(map[string]any)
			if n := len(ba["slowest_steps"].([]any)); n != 1 {
				t.Errorf("%d slowest steps", n)
			}
		}},
		{PathBottlenecks + "?period=12&namespace=pay", 200, "bottlenecks?name=&namespace=pay&period=12&version=", func(t *testing.T, b map[string]any, _ string) {
			if fmt.Sprint(b["scope"]) != "map[namespace:pay]" || b["analysis_period_hours"] != 12.0 {
				t.Errorf("scope %v period %v", b["scope"], b["analysis_period_hours"])
			}
		}},
		{fmt.Sprintf("/tasker/tasks/%d/context", task), 200, fmt.Sprintf("task_context?one:ids=%d", task), func(t *testing.T, b map[string]any, _ string) {
			if b["execution_status"] != "has_ready_steps" || b["completion_percentage"] != 50.0 || b["generated_at"] == nil {
				t.Errorf("context %v", b)
			}
		}},
		{fmt.Sprintf("/tasker/tasks/%d/steps", task), 200, "task_steps?", func(t *testing.T, b map[string]any, _ string) {
			if steps := b["steps"].([]any); len(steps) != 2 {
				t.Errorf("steps %v", steps)
			}
		}},
		{fmt.Sprintf("/tasker/tasks/%d/graph", task), 200, "task_graph?", func(t *testing.T, b map[string]any, _ string) {
			if lv := b["dependency_levels"].([]any); len(lv) != 2 {
				t.Errorf("levels %v", lv)
			}
		}},
		{fmt.Sprintf("/tasker/tasks/context?ids=%d,999999", task), 200, fmt.Sprintf("task_context?ids=%d,999999", task),
			func(t *testing.T, b map[string]any, _ string) {
				if len(b["tasks"].([]any)) != 1 || fmt.Sprint(b["missing_task_ids"]) != "[999999]" {
					t.Errorf("batch %v", b)
				}
			}},
		{"/tasker/tasks/steps?ids=999999", 200, "task_steps?ids=999999", func(t *testing.T, b map[string]any, _ string) {
			if len(b["tasks"].([]any)) != 0 {
				t.Errorf("batch %v", b)
			}
		}},
		{fmt.Sprintf("/tasker/tasks/graph?ids=%d", task), 200, "task_graph?", nil},
		{PathHandlers, 200, "handlers?view=index", func(t *testing.T, b map[string]any, _ string) {
			if fmt.Sprint(b["namespaces"]) != "[map[handler_count:1 name:pay]]" {
				t.Errorf("handlers %v", b)
			}
		}},
		{"/tasker/handlers/pay", 200, "handlers?namespace=pay&view=namespace", nil},
		{"/tasker/handlers/pay/charge?version=latest", 200, "handlers?name=charge&namespace=pay&version=latest&view=handler",
			func(t *testing.T, b map[string]any, _ string) {
				h := b["handler"].(map[string]any)
				g := h["dependency_graph"].(map[string]any)
				if fmt.Sprint(g["execution_order"]) != "[validate charge_card]" {
					t.Errorf("handler %v", h)
				}
			}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := do(t, s, http.MethodGet, tc.path, bearer)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			b := r.json(t)
			if b["cache_info"] == nil || fmt.Sprint(b["cache_info"]) != "map[age_seconds:1.5 cached:true stale:false ttl_seconds:90]" {
				t.Errorf("cache_info %v", b["cache_info"])
			}
			if got := cache.last(); !strings.HasPrefix(got, tc.cacheKey) {
				t.Errorf("cache key %q, want prefix %q", got, tc.cacheKey)
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
	s, _, _ := analyticsServer(t, "postgres://postgres@127.0.0.1:1/none?sslmode=disable", Auth{})
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
	for _, tc := range []struct{ in, want string }{
		{`{"a":1}`, `{"a":1,"cache_info":{"cached":true,"age_seconds":1.5,"ttl_seconds":90.0,"stale":false}}`},
		{"{}\n", `{"cache_info":{"cached":true,"age_seconds":1.5,"ttl_seconds":90.0,"stale":false}}`},
	} {
		in := []byte(tc.in)
		got, err := withCacheInfo(in, fixedInfo)
		if err != nil || string(got) != tc.want || string(in) != tc.in {
			t.Errorf("%q: got %s, %v (input now %q)", tc.in, got, err, in)
		}
		var v map[string]any
		if err := json.Unmarshal(got, &v); err != nil {
			t.Error(err)
		}
	}
	if _, err := withCacheInfo([]byte(`[1]`), fixedInfo); err == nil {
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

func (c *memoCache) Get(ctx context.Context, resource, params string, compute func(context.Context) ([]byte, error)) ([]byte, ttl.Info, error) {
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
	db, err := collector.Open(collector.Options{URL: url}, nil, slog.New(slog.DiscardHandler))
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
	s, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	cache := &memoCache{m: map[string][]byte{}}
	MountAnalytics(s.Router(), analytics.New(db.Pool(), analytics.Options{}, nil), cache, nil)
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
	pool, err := collector.Open(collector.Options{URL: db.URL, ConnectTimeout: time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	cache, err := ttl.New(store.NewMemory(""), nil, nil, ttl.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, baseOptions(&fakeSource{}))
	MountAnalytics(s.Router(), analytics.New(pool.Pool(), analytics.Options{}, nil), cache, nil)
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
