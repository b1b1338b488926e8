package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
	"github.com/tasker-systems/tasker-sidecar/server"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// v1YardstickPath holds the yardstick functions the analytics package's
// tests use too (read, not embedded: go:embed cannot reach another
// package's directory).
const v1YardstickPath = "../analytics/testdata/tasker_core_analytics.sql"

// TestParseV1Query: the query strings tasker-core's handlers (axum's Query
// over MetricsQuery and BottleneckQuery) accept, with the values they read,
// and the ones they reject, with axum's message after "Failed to
// deserialize query string: ".
func TestParseV1Query(t *testing.T) {
	for _, tc := range []struct {
		raw            string
		hours          *int64 // nil: unset
		limit, minExec *int64
		err            string
	}{
		{raw: ""},
		{raw: "hours=48", hours: i64(48)},
		{raw: "hours=0", hours: i64(0)},
		{raw: "hours=4294967295", hours: i64(4294967295)},
		{raw: "hours=%2B5", hours: i64(5)},
		{raw: "hours=007", hours: i64(7)},
		{raw: "other=x&hours=2&&", hours: i64(2)},
		{raw: "h%6Furs=3", hours: i64(3)},
		{raw: "hours=4294967296", err: "hours: number too large to fit in target type"},
		{raw: "hours=-1", err: "hours: invalid digit found in string"},
		{raw: "hours=abc", err: "hours: invalid digit found in string"},
		{raw: "hours=1.5", err: "hours: invalid digit found in string"},
		{raw: "hours=+5", err: "hours: invalid digit found in string"}, // '+' is a space
		{raw: "hours=", err: "hours: cannot parse integer from empty string"},
		{raw: "hours", err: "hours: cannot parse integer from empty string"},
		{raw: "hours=+", err: "hours: invalid digit found in string"},
		{raw: "hours=%2B", err: "hours: invalid digit found in string"},
		{raw: "hours=1&hours=2", err: "duplicate field `hours`"},
		{raw: "hours=x&hours=2", err: "hours: invalid digit found in string"},
		{raw: "hours=%zz", err: "hours: invalid digit found in string"},
		{raw: "limit=5&min_executions=-2", limit: i64(5), minExec: i64(-2)},
		{raw: "limit=-1", limit: i64(-1)},
		{raw: "limit=2147483647&min_executions=-2147483648", limit: i64(2147483647), minExec: i64(-2147483648)},
		{raw: "limit=2147483648", err: "limit: number too large to fit in target type"},
		{raw: "min_executions=-2147483649", err: "min_executions: number too small to fit in target type"},
		{raw: "limit=-", err: "limit: invalid digit found in string"},
		{raw: "min_executions=1&limit=x&limit=y", err: "limit: invalid digit found in string"},
		{raw: "limit=1&min_executions=2&limit=3", err: "duplicate field `limit`"},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			hours := &v1Param{name: "hours", unsigned: true}
			limit, minExec := &v1Param{name: "limit"}, &v1Param{name: "min_executions"}
			err := parseV1Query(tc.raw, hours, limit, minExec)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				p    *v1Param
				want *int64
			}{{hours, tc.hours}, {limit, tc.limit}, {minExec, tc.minExec}} {
				if c.p.set != (c.want != nil) || c.want != nil && c.p.value != *c.want {
					t.Errorf("%s: set %v value %d, want %v", c.p.name, c.p.set, c.p.value, c.want)
				}
			}
		})
	}
}

func i64(v int64) *int64 { return &v }

// v1CoreDB is a tasker-core database with a simulated workload of the 20
// hours up to two hours ago (so that neither the 1-hour nor the 24-hour
// window boundary moves over a task between the sidecar's answer and the
// yardstick's), with the yardstick functions in schema yardstick.
func v1CoreDB(t *testing.T) pgtest.DB {
	t.Helper()
	db := pgtest.NewCore(t)
	pool, err := pgxpool.New(context.Background(), db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := simulate.BulkCore(ctx, pool, 500, simulate.Options{Seed: 3, History: 20 * time.Hour,
		Now: time.Now().Add(-2 * time.Hour), ErrorRate: 0.2}, nil); err != nil {
		t.Fatal(err)
	}
	yardsticks, err := os.ReadFile(v1YardstickPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, string(yardsticks)); err != nil {
		t.Fatalf("install yardsticks: %v", err)
	}
	return db
}

// orderedKeys returns the keys of a JSON object in order.
func orderedKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", raw)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// expectV1 computes, with the yardstick functions, what tasker-core's
// AnalyticsQueryService returns, as decoded JSON (times left out: they
// depend on the moment of the call).
func expectV1(t *testing.T, db pgtest.DB, query string, args ...any) map[string]any {
	t.Helper()
	conn := db.Conn(t)
	var raw []byte
	if err := conn.QueryRow(context.Background(), query, args...).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

const expectPerformanceSQL = `
SELECT json_build_object(
  'total_tasks', h.total_tasks, 'active_tasks', m.active_tasks_count, 'completed_tasks', m.completion_count,
  'failed_tasks', m.error_count, 'completion_rate', m.completion_rate::float8, 'error_rate', m.error_rate::float8,
  'average_task_duration_seconds', m.avg_task_duration::float8, 'average_step_duration_seconds', m.avg_step_duration::float8,
  'tasks_per_hour', m.task_throughput, 'steps_per_hour', m.step_throughput,
  'system_health_score', m.system_health_score::float8)
FROM yardstick.get_analytics_metrics(CASE WHEN $1::bigint > 0 THEN now() - $1::bigint * interval '1 hour' END) m,
     yardstick.get_system_health_counts() h`

// The engine's service converts last_executed_at with to_rfc3339; here it
// is compared as an instant.
const expectBottlenecksSQL = `
SELECT json_build_object(
  'slow_steps', COALESCE((SELECT json_agg(json_build_object('namespace_name', namespace_name, 'task_name', task_name,
      'version', version, 'step_name', step_name, 'average_duration_seconds', average_duration_seconds::float8,
      'max_duration_seconds', max_duration_seconds::float8, 'execution_count', execution_count, 'error_count', error_count,
      'error_rate', error_rate::float8, 'last_executed_at', extract(epoch FROM last_executed_at)))
    FROM yardstick.get_slowest_steps_aggregated(NULL, $1, $2, NULL, NULL, NULL)), '[]'),
  'slow_tasks', COALESCE((SELECT json_agg(json_build_object('namespace_name', namespace_name, 'task_name', task_name,
      'version', version, 'average_duration_seconds', average_duration_seconds::float8,
      'max_duration_seconds', max_duration_seconds::float8, 'execution_count', execution_count,
      'average_step_count', average_step_count::float8, 'error_count', total_error_steps,
      'error_rate', error_rate::float8, 'last_executed_at', extract(epoch FROM last_executed_at)))
    FROM yardstick.get_slowest_tasks_aggregated(NULL, $1, $2, NULL, NULL, NULL)), '[]'),
  'system_health', (SELECT row_to_json(h) FROM yardstick.get_system_health_counts() h))`

var rfc3339Chrono = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?\+00:00$`)

// TestV1AnalyticsOnCore: the drop-in routes on a tasker-core database the
// sidecar has never seen (the yardsticks are in their own schema, the
// tasker schema has no function) equal, field by field, what tasker-core's
// service computes from its functions, in its field order and number
// layout, through the cache with tasker-core's parameters as the key.
func TestV1AnalyticsOnCore(t *testing.T) {
	db := v1CoreDB(t)
	s, cache, _ := analyticsServer(t, db.URL, server.AuthConfig{})

	for _, path := range []string{PathV1Performance + "?hours=24", PathV1Performance, PathV1Performance + "?hours=0", PathV1Performance + "?hours=30"} {
		r := do(t, s, http.MethodGet, path)
		if r.code != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %s %s", path, r.code, r.header.Get("Content-Type"), r.body)
		}
		wantKeys := []string{"total_tasks", "active_tasks", "completed_tasks", "failed_tasks", "completion_rate", "error_rate",
			"average_task_duration_seconds", "average_step_duration_seconds", "tasks_per_hour", "steps_per_hour",
			"system_health_score", "analysis_period_start", "calculated_at"}
		if keys := orderedKeys(t, r.body); !reflect.DeepEqual(keys, wantKeys) {
			t.Errorf("%s: keys %v", path, keys)
		}
		got := r.json(t)
		hours := 24
		switch {
		case strings.HasSuffix(path, "=0"):
			hours = 0
		case strings.HasSuffix(path, "=30"):
			hours = 30
		}
		want := expectV1(t, db, expectPerformanceSQL, hours)
		start, at := got["analysis_period_start"].(string), got["calculated_at"].(string)
		delete(got, "analysis_period_start")
		delete(got, "calculated_at")
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got  %v\n want %v", path, got, want)
		}
		if !rfc3339Chrono.MatchString(start) || !rfc3339Chrono.MatchString(at) {
			t.Errorf("%s: times %q %q are not chrono's to_rfc3339", path, start, at)
		}
		ts, _ := time.Parse(time.RFC3339Nano, start)
		ta, _ := time.Parse(time.RFC3339Nano, at)
		window := time.Duration(max(hours, 1)) * time.Hour // hours=0: the function's hour
		if ta.Sub(ts) != window {
			t.Errorf("%s: window %v, want %v", path, ta.Sub(ts), window)
		}
		if hours == 24 && (got["tasks_per_hour"].(float64) == 0 || got["failed_tasks"].(float64) == 0) {
			t.Errorf("the workload does not reach the 24-hour window: %s", r.body)
		}
	}
	// Floats keep serde_json's layout: 100.0, never 100.
	if r := do(t, s, http.MethodGet, PathV1Performance+"?hours=0"); !bytes.Contains(r.body, []byte(`"system_health_score":1.0,`)) {
		t.Errorf("an empty hour's health score: %s", r.body)
	}

	for _, tc := range []struct {
		query          string
		limit, minExec int
	}{{"", 10, 5}, {"?limit=3&min_executions=1", 3, 1}, {"?min_executions=0&limit=1000", 1000, 0}, {"?limit=0", 0, 5}} {
		r := do(t, s, http.MethodGet, PathV1Bottlenecks+tc.query)
		if r.code != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.query, r.code, r.body)
		}
		if keys := orderedKeys(t, r.body); !reflect.DeepEqual(keys, []string{"slow_steps", "slow_tasks", "resource_utilization", "recommendations"}) {
			t.Errorf("keys %v", keys)
		}
		var got struct {
			SlowSteps           []map[string]any `json:"slow_steps"`
			SlowTasks           []map[string]any `json:"slow_tasks"`
			ResourceUtilization struct {
				DatabasePoolUtilization float64        `json:"database_pool_utilization"`
				SystemHealth            map[string]any `json:"system_health"`
			} `json:"resource_utilization"`
			Recommendations []string `json:"recommendations"`
		}
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Fatal(err)
		}
		want := expectV1(t, db, expectBottlenecksSQL, tc.limit, tc.minExec)
		for _, list := range [][]map[string]any{got.SlowSteps, got.SlowTasks} {
			for _, e := range list {
				if s, ok := e["last_executed_at"].(string); ok {
					if !rfc3339Chrono.MatchString(s) {
						t.Errorf("last_executed_at %q is not chrono's to_rfc3339", s)
					}
					at, _ := time.Parse(time.RFC3339Nano, s)
					e["last_executed_at"] = float64(at.UnixMicro()) / 1e6
				}
			}
		}
		gotBody := map[string]any{"slow_steps": toAny(t, got.SlowSteps), "slow_tasks": toAny(t, got.SlowTasks),
			"system_health": got.ResourceUtilization.SystemHealth}
		if !reflect.DeepEqual(roundTrip(t, gotBody), roundTrip(t, want)) {
			t.Errorf("%s:\n got  %s\n want %s", tc.query, mustJSON(gotBody), mustJSON(want))
		}
		if tc.limit == 10 && (len(got.SlowSteps) == 0 || len(got.SlowTasks) == 0) {
			t.Errorf("the workload gives no bottleneck: %s", r.body)
		}
		if u := got.ResourceUtilization.DatabasePoolUtilization; u < 0 || u > 1 {
			t.Errorf("pool utilization %v", u)
		}
		if got.Recommendations == nil {
			t.Errorf("recommendations must be a list: %s", r.body)
		}
	}

	keys := cache.take()
	for key, opts := range map[string]int{
		"performance?api=v1&hours=24": 0, "performance?api=v1&hours=0": 1, "performance?api=v1&hours=30": 1,
		"bottlenecks?api=v1&limit=10&min_executions=5": 0, "bottlenecks?api=v1&limit=3&min_executions=1": 1,
	} {
		if got, ok := keys[key]; !ok || got != opts {
			t.Errorf("cache key %s: asked %v with %d options, want %d (keys %v)", key, ok, got, opts, keys)
		}
	}
}

func toAny(t *testing.T, v any) any { return roundTrip(t, v) }

func roundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestV1Answers: tasker-core's answers to what its handlers reject, and the
// sidecar's where it differs on purpose (docs/endpoints.md#tasker-cores-api-v1).
func TestV1Answers(t *testing.T) {
	core := pgtest.NewCore(t)
	s, cache, _ := analyticsServer(t, core.URL, server.AuthConfig{})
	for _, tc := range []struct {
		path, contentType, body string
		code                    int
	}{
		{PathV1Performance + "?hours=abc", "text/plain; charset=utf-8",
			"Failed to deserialize query string: hours: invalid digit found in string", http.StatusBadRequest},
		{PathV1Performance + "?hours=-1", "text/plain; charset=utf-8",
			"Failed to deserialize query string: hours: invalid digit found in string", http.StatusBadRequest},
		{PathV1Performance + "?hours=1&hours=2", "text/plain; charset=utf-8",
			"Failed to deserialize query string: duplicate field `hours`", http.StatusBadRequest},
		{PathV1Bottlenecks + "?limit=99999999999", "text/plain; charset=utf-8",
			"Failed to deserialize query string: limit: number too large to fit in target type", http.StatusBadRequest},
		{PathV1Bottlenecks + "?limit=-1", "application/json; charset=utf-8",
			`{"error":{"code":"BAD_REQUEST","message":"limit: must not be negative"}}`, http.StatusBadRequest},
		{PathV1Performance + "?hours=4294967295", "application/json; charset=utf-8",
			`{"error":{"code":"BAD_REQUEST","message":"hours: the window starts before the earliest time PostgreSQL can represent"}}`,
			http.StatusBadRequest},
		{PathV1Bottlenecks + "?limit=1&min_executions=-7&unknown=x", "application/json", "", http.StatusOK},
	} {
		r := do(t, s, http.MethodGet, tc.path)
		if r.code != tc.code || r.header.Get("Content-Type") != tc.contentType || tc.body != "" && string(r.body) != tc.body {
			t.Errorf("%s: %d %q %s\nwant %d %q %s", tc.path, r.code, r.header.Get("Content-Type"), r.body, tc.code, tc.contentType, tc.body)
		}
	}
	_ = cache.take()

	rails := pgtest.NewTasker(t)
	s, cache, _ = analyticsServer(t, rails.URL, server.AuthConfig{})
	for _, path := range []string{PathV1Performance, PathV1Bottlenecks + "?limit=2"} {
		r := do(t, s, http.MethodGet, path)
		body := r.json(t)
		e, _ := body["error"].(map[string]any)
		if r.code != http.StatusNotFound || e["code"] != "NOT_FOUND" || !strings.Contains(e["message"].(string), "tasker-core") {
			t.Errorf("%s on Rails: %d %s", path, r.code, r.body)
		}
	}
	// The Rails routes still answer there.
	if r := do(t, s, http.MethodGet, PathPerformance); r.code != http.StatusOK {
		t.Errorf("Rails performance: %d %s", r.code, r.body)
	}
	_ = cache
}

// TestV1Failures: a database that cannot be reached is tasker-core's 500
// DATABASE_ERROR; an overloaded cache its 503 BACKPRESSURE with
// Retry-After.
func TestV1Failures(t *testing.T) {
	pool, err := collector.Open(collector.DBConfig{URL: secret.URL("postgres://postgres@127.0.0.1:1/none?sslmode=disable"), ConnectTimeout: time.Second},
		nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	svc := analytics.New(pool.Pool(), analytics.Config{}, nil)
	s := newServer(t, baseOptions(&fakeSource{}))
	MountAnalytics(s.Router(), svc, nil, nil)
	r := do(t, s, http.MethodGet, PathV1Performance)
	if e, _ := r.json(t)["error"].(map[string]any); r.code != http.StatusInternalServerError || e["code"] != "DATABASE_ERROR" {
		t.Errorf("database down: %d %s", r.code, r.body)
	}

	s = newServer(t, baseOptions(&fakeSource{}))
	MountAnalytics(s.Router(), svc, errorCache{&ttl.OverloadedError{Resource: ttl.ResourcePerformance, RetryAfter: 3 * time.Second}}, nil)
	r = do(t, s, http.MethodGet, PathV1Performance)
	e, _ := r.json(t)["error"].(map[string]any)
	if r.code != http.StatusServiceUnavailable || e["code"] != "BACKPRESSURE" || e["retry_after_seconds"] != 3.0 || r.header.Get("Retry-After") != "3" {
		t.Errorf("overloaded: %d %v %s", r.code, r.header, r.body)
	}
	if !errors.Is(&ttl.OverloadedError{}, ttl.ErrOverloaded) {
		t.Fatal("ttl.OverloadedError no longer wraps ttl.ErrOverloaded")
	}
}

type coreAttachment struct{}

func (coreAttachment) Engine() (engine.Engine, bool)                 { return engine.Core(), true }
func (coreAttachment) CheckSchema(context.Context) ([]string, error) { return nil, nil }

// TestPerformanceOnCore: with the attachment saying tasker-core,
// /tasker/analytics/performance is computed (its period has the columns of
// get_analytics_metrics(since) first, in order, with the function's
// values), while the routes not computed on core still answer 501.
func TestPerformanceOnCore(t *testing.T) {
	db := v1CoreDB(t)
	pool, err := collector.Open(collector.DBConfig{URL: secret.URL(db.URL)}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newServer(t, baseOptions(&fakeSource{}))
	MountAnalytics(s.Router(), analytics.New(pool.Pool(), analytics.Config{}, nil, analytics.WithAttachment(coreAttachment{})), nil, nil)

	since := time.Now().Add(-10 * time.Hour).UTC().Truncate(time.Second)
	r := do(t, s, http.MethodGet, PathPerformance+"?since="+since.Format(time.RFC3339))
	if r.code != http.StatusOK {
		t.Fatalf("%d %s", r.code, r.body)
	}
	var body struct {
		Period            json.RawMessage `json:"period"`
		PerformanceTrends map[string]any  `json:"performance_trends"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	cols := []string{"active_tasks_count", "total_namespaces_count", "unique_task_types_count", "system_health_score",
		"task_throughput", "completion_count", "error_count", "completion_rate", "error_rate", "avg_task_duration",
		"avg_step_duration", "step_throughput"}
	keys := orderedKeys(t, body.Period)
	if len(keys) < 14 || !reflect.DeepEqual(keys[:12], cols) || keys[12] != "analysis_period_start" || keys[13] != "calculated_at" {
		t.Errorf("period keys %v", keys)
	}
	var period map[string]any
	if err := json.Unmarshal(body.Period, &period); err != nil {
		t.Fatal(err)
	}
	got := map[string]any{}
	for _, c := range cols {
		got[c] = period[c]
	}
	want := expectV1(t, db, `SELECT row_to_json(m) FROM (SELECT active_tasks_count, total_namespaces_count, unique_task_types_count,
	    system_health_score::float8, task_throughput, completion_count, error_count, completion_rate::float8, error_rate::float8,
	    avg_task_duration::float8, avg_step_duration::float8, step_throughput FROM yardstick.get_analytics_metrics($1)) m`, since)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("period\n got  %v\n want %v", got, want)
	}
	if got["task_throughput"] == 0.0 {
		t.Errorf("the workload does not reach the period: %s", body.Period)
	}
	states, _ := body.PerformanceTrends["last_24_hours"].(map[string]any)["tasks_by_state"].(map[string]any)
	if _, ok := states["blocked_by_failures"]; !ok || len(states) != 13 {
		t.Errorf("tasks_by_state on core: %v", states)
	}
	// The graph works on core too (api/core_tasks_test.go): an unknown
	// task is a 404, no longer a 501.
	for _, path := range []string{"/tasker/tasks/0190a1b2-c3d4-7e5f-8a6b-0c1d2e3f4a5b/graph"} {
		if r := do(t, s, http.MethodGet, path); r.code != http.StatusNotFound {
			t.Errorf("%s on core: %d %s, want 404", path, r.code, r.body)
		}
	}
}
