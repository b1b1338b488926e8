package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/healthtest"
	"github.com/tasker-systems/tasker-sidecar/internal/testlog"
	"github.com/tasker-systems/tasker-sidecar/readiness"
	"github.com/tasker-systems/tasker-sidecar/server"
)

// The shared stand-ins (internal/healthtest) under this package's names.
type fakeSource = healthtest.Source

var (
	testNow    = healthtest.Now
	errRefused = healthtest.ErrRefused
)

// goodState is a successful refresh taken 10s before testNow.
func goodState(c collector.HealthCounts) collector.RefreshState {
	taken := testNow.Add(-10 * time.Second)
	return collector.RefreshState{
		Last:        &collector.Snapshot{Counts: c, TakenAt: taken, Duration: 42 * time.Millisecond},
		LastAttempt: taken,
		LastSuccess: taken,
	}
}

var healthyCounts = collector.HealthCounts{
	TotalTasks: 10, PendingTasks: 2, InProgressTasks: 3, CompleteTasks: 4, ErrorTasks: 1,
	TotalSteps: 40, PendingSteps: 10, InProgressSteps: 5, CompleteSteps: 20, ErrorSteps: 3,
	RetryableErrorSteps: 2, ExhaustedRetrySteps: 1, InBackoffSteps: 1,
	ActiveConnections: 5, MaxConnections: 100,
}

// syncBuffer is written by the code under test while the test reads it.
type syncBuffer = testlog.Buffer

func debugLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// options is a test server's configuration and dependencies in one value,
// so that a test sets the fields it exercises by name.
type options struct {
	server.Config
	Deps
}

// baseOptions is valid as is; tests override what they exercise.
func baseOptions(src readiness.HealthSource) options {
	cfg := server.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	return options{Config: cfg, Deps: Deps{RefreshInterval: 30 * time.Second, Health: src}}
}

func newServer(t *testing.T, opts options) *Server {
	t.Helper()
	s, err := New(opts.Config, opts.Deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.now = func() time.Time { return testNow }
	return s
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, r.body)
	}
	return m
}

// do serves one request in memory through what Run serves; the
// listener-level behaviour (TLS, shutdown, HEAD bodies) has its own tests.
func do(t *testing.T, s *Server, method, path string, setup ...func(*http.Request)) response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for _, f := range setup {
		f(req)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return response{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// start runs s on a real listener until the test ends and checks that Run
// returns nil then.
func start(t *testing.T, s *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	select {
	case <-s.Bound():
	case err := <-errc:
		cancel()
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run returned %v after cancel", err)
		}
	})
	return s.Addr().String()
}

func get(t *testing.T, c *http.Client, url string) response {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return response{code: res.StatusCode, header: res.Header, body: body}
}
