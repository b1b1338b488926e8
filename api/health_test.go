package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/readiness"
	"github.com/tasker-systems/tasker-sidecar/server"
)

func assertNoCache(t *testing.T, h http.Header) {
	t.Helper()
	want := map[string]string{"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache", "Expires": "0"}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func assertJSON(t *testing.T, h http.Header) {
	t.Helper()
	if got := h.Get("Content-Type"); got != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", got)
	}
}

func TestLive(t *testing.T) {
	src := &fakeSource{} // no data: live must not care
	s := newServer(t, baseOptions(src))
	r := do(t, s, http.MethodGet, PathLive)
	if r.code != http.StatusOK {
		t.Fatalf("code = %d", r.code)
	}
	assertJSON(t, r.header)
	assertNoCache(t, r.header)
	if got, want := string(r.body), `{"alive":true,"timestamp":"2025-06-18T15:30:00Z","service":"tasker"}`; got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
}

type stubCheck struct {
	name string
	res  readiness.CheckResult
	wait time.Duration // blocks this long, or until ctx is done
}

func (c stubCheck) Name() string { return c.name }
func (c stubCheck) Check(ctx context.Context) readiness.CheckResult {
	if c.wait > 0 {
		select {
		case <-time.After(c.wait):
		case <-ctx.Done():
			// Answer late on purpose (real time): the endpoint must not
			// wait for it.
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c.res
}

func TestReady(t *testing.T) {
	healthy := stubCheck{name: "database", res: readiness.CheckResult{Status: readiness.StatusHealthy, Message: "Database connection active", ResponseTimeMs: 1.23456}}
	degraded := stubCheck{name: "cache", res: readiness.CheckResult{Status: readiness.StatusDegraded, Message: "local only",
		Details: map[string]any{"cache_store": "NullStore", "status": "overridden"}}}
	broken := stubCheck{name: "cache", res: readiness.CheckResult{Status: readiness.StatusUnhealthy, Message: "Cache read/write test failed", Error: "CacheTestFailed"}}
	blocked := stubCheck{name: "slow", wait: time.Hour}

	tests := []struct {
		name        string
		checks      []readiness.Checker
		wantCode    int
		wantMessage string
		wantFailed  []any
		wantChecks  []string
	}{
		{"no checks", nil, 200, "System is ready", nil, nil},
		{"all healthy", []readiness.Checker{healthy}, 200, "System is ready", nil, []string{"database"}},
		{"degraded is still ready", []readiness.Checker{healthy, degraded}, 200, "System is ready", nil, []string{"database", "cache"}},
		{"one unhealthy", []readiness.Checker{healthy, broken}, 503, "System is not ready", []any{"cache"}, []string{"database", "cache"}},
		{"timeout keeps finished checks", []readiness.Checker{healthy, blocked}, 503,
			"Readiness check timed out after 0.05 seconds", []any{"slow"}, []string{"database"}},
		{"panicking check", []readiness.Checker{readiness.CheckFunc("boom", func(context.Context) readiness.CheckResult { panic("kaboom") })}, 503,
			"System is not ready", []any{"boom"}, []string{"boom"}},
		{"unknown status is unhealthy", []readiness.Checker{readiness.CheckFunc("odd", func(context.Context) readiness.CheckResult { return readiness.CheckResult{Status: "fine"} })}, 503,
			"System is not ready", []any{"odd"}, []string{"odd"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := baseOptions(&fakeSource{})
			opts.Checks = tc.checks
			opts.ReadinessTimeout = 50 * time.Millisecond
			s := newServer(t, opts)
			begin := time.Now()
			r := do(t, s, http.MethodGet, PathReady)
			if elapsed := time.Since(begin); elapsed > 2*time.Second {
				t.Errorf("ready took %s; the timeout is 50ms", elapsed)
			}
			if r.code != tc.wantCode {
				t.Fatalf("code = %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			assertJSON(t, r.header)
			assertNoCache(t, r.header)
			m := r.json(t)
			if m["ready"] != (tc.wantCode == 200) {
				t.Errorf("ready = %v", m["ready"])
			}
			if m["message"] != tc.wantMessage {
				t.Errorf("message = %q, want %q", m["message"], tc.wantMessage)
			}
			failed, _ := m["failed_checks"].([]any)
			if !reflect.DeepEqual(failed, tc.wantFailed) {
				t.Errorf("failed_checks = %v, want %v", m["failed_checks"], tc.wantFailed)
			}
			checks := m["checks"].(map[string]any)
			if len(checks) != len(tc.wantChecks) {
				t.Errorf("checks = %v, want keys %v", checks, tc.wantChecks)
			}
			for _, name := range tc.wantChecks {
				c, ok := checks[name].(map[string]any)
				if !ok {
					t.Fatalf("check %q missing: %v", name, checks)
				}
				for _, k := range []string{"status", "message", "response_time_ms"} {
					if _, ok := c[k]; !ok {
						t.Errorf("check %q lacks %q: %v", name, k, c)
					}
				}
			}
			if _, ok := m["check_duration"].(float64); !ok {
				t.Errorf("check_duration = %v", m["check_duration"])
			}
			if ts, _ := m["timestamp"].(string); ts != "2025-06-18T15:30:00.123Z" {
				t.Errorf("timestamp = %q", ts)
			}
		})
	}
}

func TestReadyCheckJSON(t *testing.T) {
	opts := baseOptions(&fakeSource{})
	opts.Checks = []readiness.Checker{
		stubCheck{name: "database", res: readiness.CheckResult{Status: readiness.StatusHealthy, Message: "Database connection active", ResponseTimeMs: 1.23456}},
		stubCheck{name: "cache", res: readiness.CheckResult{Status: readiness.StatusDegraded, Message: "local only",
			Details: map[string]any{"cache_store": "NullStore", "status": "overridden", "error": "overridden"}}},
	}
	opts.Auth = server.AuthConfig{BearerToken: token}
	s := newServer(t, opts)
	body := string(do(t, s, http.MethodGet, PathReady, bearer(token)).body)
	for _, want := range []string{
		`"database":{"message":"Database connection active","response_time_ms":1.23,"status":"healthy"}`,
		`"cache":{"cache_store":"NullStore","message":"local only","response_time_ms":`,
		`"status":"degraded"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "overridden") {
		t.Errorf("details overrode the core keys: %s", body)
	}
}

func TestStatus(t *testing.T) {
	unhealthy := healthyCounts
	unhealthy.ActiveConnections, unhealthy.MaxConnections = 91, 100

	staleWithError := goodState(healthyCounts)
	staleWithError.Last.TakenAt = testNow.Add(-95 * time.Second)
	staleWithError.LastAttempt = testNow.Add(-5 * time.Second)
	staleWithError.LastError = errRefused
	staleWithError.Failures = 3

	stuck := goodState(healthyCounts)
	stuck.Last.TakenAt = testNow.Add(-61 * time.Second)

	firstFailed := collector.RefreshState{LastError: errRefused, LastAttempt: testNow.Add(-time.Second), Failures: 1}

	tests := []struct {
		name       string
		state      collector.RefreshState
		wantCode   int
		wantStatus string
		wantClass  string
		wantData   bool
		wantStale  bool
	}{
		{"healthy", goodState(healthyCounts), 200, "healthy", "", true, false},
		{"unhealthy verdict", goodState(unhealthy), 503, "unhealthy", "", true, false},
		{"refresh failing keeps last good data", staleWithError, 503, "error", collector.ReasonConnection, true, true},
		{"refresher stuck", stuck, 503, "error", readiness.ClassStale, true, true},
		{"first refresh pending", collector.RefreshState{}, 503, "error", readiness.ClassPending, false, false},
		{"first refresh failed", firstFailed, 503, "error", collector.ReasonConnection, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{}
			src.Set(tc.state)
			s := newServer(t, baseOptions(src))
			r := do(t, s, http.MethodGet, PathStatus)
			if r.code != tc.wantCode {
				t.Fatalf("code = %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			assertJSON(t, r.header)
			if r.header.Get("Cache-Control") != "" {
				t.Errorf("status sets Cache-Control; Tasker does not")
			}
			m := r.json(t)
			if m["healthy"] != (tc.wantCode == 200) || m["status"] != tc.wantStatus {
				t.Errorf("healthy = %v, status = %v", m["healthy"], m["status"])
			}
			if got, _ := m["error_class"].(string); got != tc.wantClass {
				t.Errorf("error_class = %q, want %q", got, tc.wantClass)
			}
			if (tc.wantClass != "") != (m["error"] != nil) {
				t.Errorf("error = %v with error_class %q", m["error"], tc.wantClass)
			}
			_, hasMetrics := m["metrics"]
			_, hasDB := m["database"]
			if hasMetrics != tc.wantData || hasDB != tc.wantData || m["cached"] != tc.wantData {
				t.Errorf("metrics %v database %v cached %v, want data %v", hasMetrics, hasDB, m["cached"], tc.wantData)
			}
			ci := m["cache_info"].(map[string]any)
			if ci["stale"] != tc.wantStale {
				t.Errorf("cache_info.stale = %v, want %v", ci["stale"], tc.wantStale)
			}
			if ci["refresh_interval_seconds"] != 30.0 {
				t.Errorf("refresh_interval_seconds = %v", ci["refresh_interval_seconds"])
			}
			if tc.wantData {
				age := testNow.Sub(tc.state.Last.TakenAt).Seconds()
				if ci["age_seconds"] != age {
					t.Errorf("age_seconds = %v, want %v", ci["age_seconds"], age)
				}
				if m["generation_duration"] != 0.042 {
					t.Errorf("generation_duration = %v", m["generation_duration"])
				}
			} else if _, ok := ci["age_seconds"]; ok {
				t.Errorf("age_seconds without data: %v", ci)
			}
			if tc.state.LastError != nil && ci["last_error"] == nil {
				t.Errorf("cache_info.last_error missing")
			}
		})
	}
}

func TestStatusBodyHealthy(t *testing.T) {
	src := &fakeSource{}
	src.Set(goodState(healthyCounts))
	s := newServer(t, baseOptions(src))
	got := string(do(t, s, http.MethodGet, PathStatus).body)
	want := `{"healthy":true,"status":"healthy",` +
		`"metrics":{"tasks":{"total":10,"pending":2,"in_progress":3,"complete":4,"error":1,"cancelled":0},` +
		`"steps":{"total":40,"pending":10,"in_progress":5,"complete":20,"error":3},` +
		`"retries":{"retryable_errors":2,"exhausted_retries":1,"in_backoff":1}},` +
		`"database":{"active_connections":5,"max_connections":100,"connection_utilization":5.0},` +
		`"cached":true,"timestamp":"2025-06-18T15:30:00.123Z","generation_duration":0.042,` +
		`"cache_info":{"cached":true,"age_seconds":10.0,"ttl_seconds":30.0,"refreshed_at":"2025-06-18T15:29:50.123Z",` +
		`"refresh_interval_seconds":30.0,"stale":false,"last_attempt_at":"2025-06-18T15:29:50.123Z","consecutive_failures":0}}`
	if got != want {
		t.Errorf("body\n got %s\nwant %s", got, want)
	}
}

// coreState is a tasker-core snapshot: 8 tasks (1 without a transition), 12
// steps (2 without), whose error shares decide the verdict.
func coreState(errorTasks, errorSteps int64) collector.RefreshState {
	st := goodState(collector.HealthCounts{
		TotalTasks: 8 + errorTasks, PendingTasks: 1, CompleteTasks: 2, ErrorTasks: errorTasks,
		TotalSteps: 12 + errorSteps, InProgressSteps: 3, ErrorSteps: errorSteps,
		RetryableErrorSteps: 4, ExhaustedRetrySteps: errorSteps, InBackoffSteps: 4,
		ActiveConnections: 5, MaxConnections: 100,
	})
	g := func(state string, n int64) collector.GroupCount {
		return collector.GroupCount{Namespace: "billing", TaskName: "invoice", State: state, Count: n}
	}
	st.Last.Engine = engine.KindCore
	st.Last.Tasks = []collector.GroupCount{g("", 1), g("pending", 1), g("steps_in_process", 2), g("blocked_by_failures", 1),
		g("waiting_for_retry", 1), g("complete", 2), g("error", errorTasks)}
	st.Last.Steps = []collector.GroupCount{g("", 2), g("in_progress", 3), g("waiting_for_retry", 4),
		g("enqueued_for_orchestration", 3), g("error", errorSteps)}
	return st
}

func TestStatusBodyCore(t *testing.T) {
	src := &fakeSource{}
	src.Set(coreState(1, 1))
	s := newServer(t, baseOptions(src))
	r := do(t, s, http.MethodGet, PathStatus)
	got := string(r.body)
	want := `{"healthy":true,"status":"healthy",` +
		`"metrics":{"tasks":{"blocked_by_failures":1,"cancelled":0,"complete":2,"enqueuing_steps":0,"error":1,` +
		`"evaluating_results":0,"initializing":0,"pending":1,"resolved_manually":0,"steps_in_process":2,"total":9,` +
		`"waiting_for_dependencies":0,"waiting_for_retry":1},` +
		`"steps":{"cancelled":0,"complete":0,"enqueued":0,"enqueued_as_error_for_orchestration":0,` +
		`"enqueued_for_orchestration":3,"error":1,"in_progress":3,"pending":0,"resolved_manually":0,"total":13,` +
		`"waiting_for_retry":4},` +
		`"retries":{"retryable_errors":4,"exhausted_retries":1,"in_backoff":4}},` +
		`"database":{"active_connections":5,"max_connections":100,"connection_utilization":5.0},` +
		`"cached":true,"timestamp":"2025-06-18T15:30:00.123Z","generation_duration":0.042,` +
		`"cache_info":{"cached":true,"age_seconds":10.0,"ttl_seconds":30.0,"refreshed_at":"2025-06-18T15:29:50.123Z",` +
		`"refresh_interval_seconds":30.0,"stale":false,"last_attempt_at":"2025-06-18T15:29:50.123Z","consecutive_failures":0}}`
	if r.code != http.StatusOK || got != want {
		t.Errorf("code %d body\n got %s\nwant %s", r.code, got, want)
	}
	// One key per core state plus total, on both families.
	m := r.json(t)["metrics"].(map[string]any)
	for family, states := range map[string][]string{"tasks": engine.Core().TaskStates.All, "steps": engine.Core().StepStates.All} {
		keys := m[family].(map[string]any)
		if len(keys) != len(states)+1 || keys["total"] == nil {
			t.Errorf("%s has keys %v, want the %d core states and total", family, keys, len(states))
		}
	}
}

// On core the verdict judges the core error state: tasks and steps in
// error (exhausted or not retryable), not those waiting for a retry or
// blocked by failures.
func TestStatusVerdictCore(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		errorTasks, errorSteps int64
		healthy                bool
	}{
		{"few errors", 1, 1, true},
		{"half the tasks in error", 8, 0, true},
		{"over half the tasks in error", 9, 0, false},
		{"over half the steps in error", 0, 13, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{}
			src.Set(coreState(tc.errorTasks, tc.errorSteps))
			s := newServer(t, baseOptions(src))
			r := do(t, s, http.MethodGet, PathStatus)
			if got := r.code == http.StatusOK; got != tc.healthy {
				t.Errorf("code = %d, want healthy %v: %s", r.code, tc.healthy, r.body)
			}
		})
	}
}

func TestJSONFloat(t *testing.T) {
	for in, want := range map[float64]string{5: "5.0", 0: "0.0", 1.25: "1.25", 90.01: "90.01", -2: "-2.0", 1e21: "1000000000000000000000.0"} {
		b, err := jsonFloat(in).MarshalJSON()
		if err != nil || string(b) != want {
			t.Errorf("jsonFloat(%v) = %s, %v; want %s", in, b, err, want)
		}
	}
}

// The readiness metrics say what /tasker/health/ready answers, check by check.
func TestReadinessMetrics(t *testing.T) {
	healthy := stubCheck{name: "database", res: readiness.CheckResult{Status: readiness.StatusHealthy}}
	degraded := stubCheck{name: "cache", res: readiness.CheckResult{Status: readiness.StatusDegraded}}
	broken := stubCheck{name: "cache", res: readiness.CheckResult{Status: readiness.StatusUnhealthy}}
	blocked := stubCheck{name: "refresh", wait: time.Hour, res: readiness.CheckResult{Status: readiness.StatusHealthy}}
	for _, tc := range []struct {
		name      string
		checks    []readiness.Checker
		wantReady string
		want      map[string]string // check -> the status whose series is 1
	}{
		{"healthy and degraded", []readiness.Checker{healthy, degraded}, "1", map[string]string{"database": "healthy", "cache": "degraded"}},
		{"one unhealthy", []readiness.Checker{healthy, broken}, "0", map[string]string{"database": "healthy", "cache": "unhealthy"}},
		{"a check past the timeout is unhealthy", []readiness.Checker{healthy, blocked}, "0", map[string]string{"database": "healthy", "refresh": "unhealthy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := baseOptions(&fakeSource{})
			opts.Checks = tc.checks
			opts.ReadinessTimeout = 50 * time.Millisecond
			s := newServer(t, opts)
			r := do(t, s, http.MethodGet, PathMetrics)
			if r.code != http.StatusOK {
				t.Fatalf("metrics: %d %s", r.code, r.body)
			}
			body := string(r.body)
			if !strings.Contains(body, "\ntasker_sidecar_ready "+tc.wantReady+"\n") {
				t.Errorf("tasker_sidecar_ready is not %s:\n%s", tc.wantReady, grepLines(body, "tasker_sidecar_ready"))
			}
			for check, status := range tc.want {
				for _, st := range readiness.Statuses {
					v := "0"
					if st == status {
						v = "1"
					}
					line := fmt.Sprintf(`tasker_sidecar_readiness_check{check=%q,status=%q} %s`, check, st, v)
					if !strings.Contains(body, line) {
						t.Errorf("missing %s in:\n%s", line, grepLines(body, "tasker_sidecar_readiness_check{"))
					}
				}
				if !strings.Contains(body, fmt.Sprintf(`tasker_sidecar_readiness_check_duration_seconds{check=%q}`, check)) {
					t.Errorf("no duration for %s", check)
				}
			}
			// /ready agrees.
			ready := do(t, s, http.MethodGet, PathReady).json(t)["ready"]
			if ready != (tc.wantReady == "1") {
				t.Errorf("/ready says ready=%v, the metric %s", ready, tc.wantReady)
			}
		})
	}
}

func grepLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Scrapes reuse one evaluation of the checks for a few seconds: a flood of
// scrapes must not become a flood of database pings.
func TestReadinessMetricsReuseOneEvaluation(t *testing.T) {
	var calls atomic.Int32
	opts := baseOptions(&fakeSource{})
	opts.Checks = []readiness.Checker{readiness.CheckFunc("database", func(context.Context) readiness.CheckResult {
		calls.Add(1)
		return readiness.CheckResult{Status: readiness.StatusHealthy}
	})}
	s := newServer(t, opts)
	for range 20 {
		if r := do(t, s, http.MethodGet, PathMetrics); r.code != http.StatusOK {
			t.Fatalf("metrics: %d", r.code)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the check ran %d times for 20 scrapes, want once", n)
	}
	// The readiness probe itself still evaluates every time.
	do(t, s, http.MethodGet, PathReady)
	if n := calls.Load(); n != 2 {
		t.Errorf("the check ran %d times after a readiness probe, want 2", n)
	}
}

// unknownRoleDB is a pool on the test server under a role and a database
// that do not exist, so its ping fails as a misconfigured sidecar's does:
// the error names the role, the database and the host:port.
func unknownRoleDB(t *testing.T) (*collector.DB, []string) {
	t.Helper()
	u, err := url.Parse(pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	const role, dbName = "sidecar_no_such_role", "sidecar_no_such_db"
	u.User, u.Path = url.User(role), "/"+dbName
	db, err := collector.Open(collector.DBConfig{URL: secret.URL(u.String()), ConnectTimeout: 5 * time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db, []string{role, dbName, u.Host, "SQLSTATE"}
}

// Without credentials, readiness shows each check's status and a generic
// message; the role, database, host:port and server error go to the log,
// once per change, and to callers with credentials when auth is on.
func TestReadyRedactsDetails(t *testing.T) {
	db, private := unknownRoleDB(t)
	both := server.AuthConfig{BearerToken: token, BasicUsername: user, BasicPassword: password}
	for _, tc := range []struct {
		name string
		auth server.AuthConfig
		cred func(*http.Request)
		full bool
	}{
		{"auth off", server.AuthConfig{}, nil, false},
		{"auth off, credentials sent anyway", server.AuthConfig{}, bearer(token), false},
		{"auth on, no credentials", both, nil, false},
		{"auth on, wrong token", both, bearer("nope"), false},
		{"auth on, wrong password", both, basic(user, "nope"), false},
		{"auth on, token", both, bearer(token), true},
		{"auth on, basic", both, basic(user, password), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			opts := baseOptions(&fakeSource{})
			opts.Auth = tc.auth
			opts.Logger = debugLogger(logs)
			opts.Checks = []readiness.Checker{readiness.NewDatabaseCheck(db.Ping, db.SchemaStatus, nil)}
			s := newServer(t, opts)
			var setup []func(*http.Request)
			if tc.cred != nil {
				setup = append(setup, tc.cred)
			}
			var r response
			for range 3 {
				r = do(t, s, http.MethodGet, PathReady, setup...)
			}
			if r.code != http.StatusServiceUnavailable {
				t.Fatalf("code = %d: %s", r.code, r.body)
			}
			check := r.json(t)["checks"].(map[string]any)["database"].(map[string]any)
			if check["status"] != readiness.StatusUnhealthy {
				t.Errorf("status = %v", check["status"])
			}
			body := string(r.body)
			for _, p := range private {
				if strings.Contains(body, p) != tc.full {
					t.Errorf("%q in the answer: %v, want %v:\n%s", p, !tc.full, tc.full, body)
				}
			}
			if !tc.full {
				want := map[string]any{"status": readiness.StatusUnhealthy, "message": "Check failed; details are in the sidecar's log",
					"response_time_ms": check["response_time_ms"]}
				if !reflect.DeepEqual(check, want) {
					t.Errorf("public check = %v, want %v", check, want)
				}
			}

			// The log has the details, once for three probes.
			out := logs.String()
			if n := strings.Count(out, `msg="readiness check changed"`); n != 1 {
				t.Errorf("%d status-change lines for 3 probes of one status, want 1:\n%s", n, out)
			}
			for _, p := range private {
				if !strings.Contains(out, p) {
					t.Errorf("%q not in the log:\n%s", p, out)
				}
			}
			if !strings.Contains(out, "level=WARN") {
				t.Errorf("the failing check is not logged at warn:\n%s", out)
			}
		})
	}
}

// The log follows each check's status, not each probe.
func TestReadinessLogsChanges(t *testing.T) {
	logs := &syncBuffer{}
	var status atomic.Value
	opts := baseOptions(&fakeSource{})
	opts.Logger = debugLogger(logs)
	opts.Checks = []readiness.Checker{readiness.CheckFunc("dep", func(ctx context.Context) readiness.CheckResult {
		if ctx.Err() != nil {
			return readiness.CheckResult{Status: readiness.StatusUnhealthy, Message: "cancelled"}
		}
		return readiness.CheckResult{Status: status.Load().(string), Message: "dep says " + status.Load().(string)}
	})}
	s := newServer(t, opts)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	lines := func() []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "readiness check changed") {
				out = append(out, l)
			}
		}
		return out
	}
	for i, step := range []struct {
		status string
		want   string // the new log line, "" for none
	}{
		{readiness.StatusHealthy, ""}, // first seen healthy: nothing to say
		{readiness.StatusHealthy, ""},
		{readiness.StatusDegraded, `level=WARN msg="readiness check changed" component=http check=dep status=degraded message="dep says degraded" previous=healthy`},
		{readiness.StatusUnhealthy, `level=WARN msg="readiness check changed" component=http check=dep status=unhealthy message="dep says unhealthy" previous=degraded`},
		{readiness.StatusUnhealthy, ""},
		{readiness.StatusHealthy, `level=INFO msg="readiness check changed" component=http check=dep status=healthy message="dep says healthy" previous=unhealthy`},
		{readiness.StatusHealthy, ""},
	} {
		before := len(lines())
		status.Store(step.status)
		do(t, s, http.MethodGet, PathReady)
		// A probe whose client left says nothing about the dependency.
		s.readiness.Evaluate(cancelled)
		got := lines()[before:]
		switch {
		case step.want == "" && len(got) != 0:
			t.Errorf("step %d (%s): logged %q", i, step.status, got)
		case step.want != "" && (len(got) != 1 || !strings.Contains(got[0], step.want)):
			t.Errorf("step %d (%s): logged %q, want %s", i, step.status, got, step.want)
		}
	}
}

// With auth off, anyone may read status: the refresh error shrinks to what
// failed and its class. With auth on, only callers with credentials get
// here, and they see the text.
func TestStatusRedactsErrors(t *testing.T) {
	refreshFailed := goodState(healthyCounts)
	refreshFailed.LastError, refreshFailed.Failures = errRefused, 1
	unreachable := goodState(healthyCounts)
	unreachable.LastError = &collector.UnreachableError{Err: errRefused}
	for _, tc := range []struct {
		name      string
		state     collector.RefreshState
		auth      bool
		wantError string
	}{
		{"refresh failed, auth off", refreshFailed, false, "refresh failed (connection); details are in the sidecar's log"},
		{"refresh failed, auth on", refreshFailed, true, "refresh failed: collect health counts: dial tcp 10.0.0.5:5432: connection refused"},
		{"unreachable, auth off", unreachable, false, "database unreachable (connection); details are in the sidecar's log"},
		{"unreachable, auth on", unreachable, true, "database unreachable: collect health counts: dial tcp 10.0.0.5:5432: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{}
			src.Set(tc.state)
			opts := baseOptions(src)
			var setup []func(*http.Request)
			if tc.auth {
				opts.Auth = server.AuthConfig{BearerToken: token}
				setup = append(setup, bearer(token))
			}
			s := newServer(t, opts)
			r := do(t, s, http.MethodGet, PathStatus, setup...)
			if r.code != http.StatusServiceUnavailable {
				t.Fatalf("code = %d", r.code)
			}
			m := r.json(t)
			if m["error"] != tc.wantError || m["error_class"] != collector.ReasonConnection {
				t.Errorf("error = %q (%v), want %q", m["error"], m["error_class"], tc.wantError)
			}
			if strings.Contains(string(r.body), "10.0.0.5") != tc.auth {
				t.Errorf("host:port shown: %v, want %v:\n%s", !tc.auth, tc.auth, r.body)
			}
			if ci := m["cache_info"].(map[string]any); ci["last_error"] == nil || ci["stale"] != true {
				t.Errorf("cache_info = %v", ci)
			}
		})
	}
}

// When the readiness ping finds the database gone, status turns 503 at
// once, with the last numbers and their age; a later successful ping does
// not turn it back, the next successful refresh does.
func TestStatusFollowsThePing(t *testing.T) {
	pg := pgtest.NewTasker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := collector.Open(collector.DBConfig{URL: secret.URL(pg.URL), ConnectTimeout: 5 * time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	refresher := collector.NewRefresher(db, collector.RefreshConfig{Interval: time.Hour}, nil, nil)
	if err := refresher.Refresh(ctx); err != nil {
		t.Fatalf("first refresh: %v", err)
	}
	opts := baseOptions(refresher)
	opts.RefreshInterval = time.Hour
	opts.Checks = []readiness.Checker{
		readiness.NewDatabaseCheck(db.Ping, db.SchemaStatus, refresher.ReportUnreachable),
		readiness.NewRefreshCheck(refresher, time.Hour),
	}
	s := newServer(t, opts)
	s.now = time.Now
	if r := do(t, s, http.MethodGet, PathStatus); r.code != http.StatusOK {
		t.Fatalf("status before the outage: %d %s", r.code, r.body)
	}

	admin, err := pgx.Connect(ctx, pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	ident := pgx.Identifier{pg.Name}.Sanitize()
	if _, err := admin.Exec(ctx, "DROP DATABASE "+ident+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	if r := do(t, s, http.MethodGet, PathReady); r.code != http.StatusServiceUnavailable {
		t.Fatalf("ready with the database dropped: %d %s", r.code, r.body)
	}
	assertFailing := func(when string) {
		t.Helper()
		r := do(t, s, http.MethodGet, PathStatus)
		m := r.json(t)
		if r.code != http.StatusServiceUnavailable || m["status"] != VerdictError || m["error_class"] != collector.ReasonConnection {
			t.Fatalf("status %s: %d %s", when, r.code, r.body)
		}
		if !strings.HasPrefix(m["error"].(string), "database unreachable") {
			t.Errorf("error = %q", m["error"])
		}
		ci := m["cache_info"].(map[string]any)
		if m["metrics"] == nil || m["cached"] != true || ci["age_seconds"] == nil || ci["stale"] != true {
			t.Errorf("status %s lost the last numbers or their age: %s", when, r.body)
		}
	}
	assertFailing("right after the ping failed")

	// The database returns: the ping succeeds, status stays failing until a
	// refresh reads the counts again.
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		t.Fatal(err)
	}
	if err := schema.Apply(ctx, pg.Conn(t)); err != nil {
		t.Fatal(err)
	}
	r := do(t, s, http.MethodGet, PathReady)
	if st := r.json(t)["checks"].(map[string]any)["database"].(map[string]any)["status"]; st != readiness.StatusHealthy {
		t.Fatalf("database check after recovery: %s", r.body)
	}
	assertFailing("after a successful ping")
	if err := refresher.Refresh(ctx); err != nil {
		t.Fatalf("refresh after recovery: %v", err)
	}
	if r := do(t, s, http.MethodGet, PathStatus); r.code != http.StatusOK {
		t.Errorf("status after a successful refresh: %d %s", r.code, r.body)
	}
}

// The status endpoint answers with Tasker's verdict.
func TestStatusVerdict(t *testing.T) {
	tests := []struct {
		name     string
		counts   collector.HealthCounts
		healthy  bool
		wantUtil float64 // checked by collector.TestVerdict
	}{
		{"empty database", collector.HealthCounts{ActiveConnections: 1, MaxConnections: 100}, true, 1.0},
		{"5 of 100 connections", collector.HealthCounts{ActiveConnections: 5, MaxConnections: 100}, true, 5.0},
		{"3 of 50 connections", collector.HealthCounts{ActiveConnections: 3, MaxConnections: 50}, true, 6.0},
		{"exactly 90% connections", collector.HealthCounts{ActiveConnections: 90, MaxConnections: 100}, true, 90.0},
		{"90.01% connections", collector.HealthCounts{ActiveConnections: 9001, MaxConnections: 10000}, false, 90.01},
		{"max connections 0", collector.HealthCounts{ActiveConnections: 500}, true, 0.0},
		{"2 of 3 connections rounds", collector.HealthCounts{ActiveConnections: 2, MaxConnections: 3}, true, 66.67},
		{"50% error tasks", collector.HealthCounts{TotalTasks: 2, ErrorTasks: 1}, true, 0},
		{"over 50% error tasks", collector.HealthCounts{TotalTasks: 10000, ErrorTasks: 5001}, false, 0},
		{"50% error steps", collector.HealthCounts{TotalSteps: 100, ErrorSteps: 50}, true, 0},
		{"over 50% error steps", collector.HealthCounts{TotalSteps: 100, ErrorSteps: 51}, false, 0},
		{"errors but no totals", collector.HealthCounts{ErrorTasks: 3, ErrorSteps: 3}, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// collector.TestVerdict checks the verdict itself; this is what
			// clients see.
			src := &fakeSource{}
			src.Set(goodState(tc.counts))
			s := newServer(t, baseOptions(src))
			wantCode := http.StatusOK
			if !tc.healthy {
				wantCode = http.StatusServiceUnavailable
			}
			if r := do(t, s, http.MethodGet, PathStatus); r.code != wantCode {
				t.Errorf("status code = %d, want %d", r.code, wantCode)
			}
		})
	}
}

// Readiness names the engine the sidecar attached to, for callers with
// credentials, on either engine.
func TestReadyReportsEngine(t *testing.T) {
	for _, tc := range []struct {
		engine string
		apply  func(context.Context, *pgx.Conn) error
	}{
		{"rails", schema.Apply},
		{"core", schema.ApplyCore},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			pg := pgtest.New(t)
			if err := tc.apply(context.Background(), pg.Conn(t)); err != nil {
				t.Fatal(err)
			}
			db, err := collector.Open(collector.DBConfig{URL: secret.URL(pg.URL)}, nil, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(db.Close)
			opts := baseOptions(&fakeSource{})
			opts.Auth = server.AuthConfig{BearerToken: token}
			opts.Checks = []readiness.Checker{readiness.NewDatabaseCheck(db.Ping, db.SchemaStatus, nil)}
			s := newServer(t, opts)
			r := do(t, s, http.MethodGet, PathReady, bearer(token))
			check := r.json(t)["checks"].(map[string]any)["database"].(map[string]any)
			if check["status"] != readiness.StatusHealthy || check["engine"] != tc.engine || check["configured_engine"] != "auto" {
				t.Errorf("database check = %v, want healthy on %s (configured auto)", check, tc.engine)
			}
			if _, ok := check["missing_tables"]; ok {
				t.Errorf("missing_tables on a complete schema: %v", check)
			}
		})
	}
}

// On a hot standby the replication lag is part of the data's age, and the
// connection figures (the standby's own) are shown but not judged.
func TestStatusStandby(t *testing.T) {
	busy := healthyCounts
	busy.ActiveConnections, busy.MaxConnections = 99, 100
	state := func(c collector.HealthCounts, r collector.Replication) collector.RefreshState {
		st := goodState(c) // taken 10 s before testNow; the bound is 60 s
		st.Last.Replication = r
		return st
	}
	standby := func(lag time.Duration) collector.Replication {
		return collector.Replication{Known: true, Standby: true, Lag: lag, SinceReplay: lag, Receiving: true}
	}
	primary := collector.Replication{Known: true}
	tests := []struct {
		name       string
		state      collector.RefreshState
		wantCode   int
		wantStatus string
		wantClass  string
		wantRole   string
		wantAge    float64
		wantStale  bool
	}{
		{"standby caught up, its own connections busy", state(busy, standby(0)), 200, "healthy", "", "standby", 10, false},
		{"standby lagging within the bound", state(healthyCounts, standby(45*time.Second)), 200, "healthy", "", "standby", 55, false},
		{"standby lagging past the bound", state(healthyCounts, standby(75*time.Second)), 503, "error", readiness.ClassStale, "standby", 85, true},
		{"primary with busy connections", state(busy, primary), 503, "unhealthy", "", "primary", 10, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{}
			src.Set(tc.state)
			s := newServer(t, baseOptions(src))
			r := do(t, s, http.MethodGet, PathStatus)
			if r.code != tc.wantCode {
				t.Fatalf("code = %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			m := r.json(t)
			if m["status"] != tc.wantStatus {
				t.Errorf("status = %v, want %v", m["status"], tc.wantStatus)
			}
			if got, _ := m["error_class"].(string); got != tc.wantClass {
				t.Errorf("error_class = %q, want %q", got, tc.wantClass)
			}
			ci := m["cache_info"].(map[string]any)
			if ci["age_seconds"] != tc.wantAge || ci["stale"] != tc.wantStale {
				t.Errorf("cache_info age %v stale %v, want %v %v", ci["age_seconds"], ci["stale"], tc.wantAge, tc.wantStale)
			}
			db := m["database"].(map[string]any)
			if db["role"] != tc.wantRole {
				t.Errorf("database.role = %v, want %v", db["role"], tc.wantRole)
			}
			_, hasNote := db["note"]
			_, hasLag := ci["replication_lag_seconds"]
			if standby := tc.wantRole == "standby"; hasNote != standby || hasLag != standby {
				t.Errorf("note %v, cache_info.replication_lag_seconds %v on a %s", hasNote, hasLag, tc.wantRole)
			}
			if db["max_connections"] != float64(tc.state.Last.Counts.MaxConnections) {
				t.Errorf("database.max_connections = %v: the figures must still be shown", db["max_connections"])
			}
			if tc.wantClass == readiness.ClassStale && !strings.Contains(m["error"].(string), "behind its primary") {
				t.Errorf("error %q does not name the lag", m["error"])
			}
		})
	}
}
