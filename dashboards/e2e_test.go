package dashboards_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/tasker-systems/tasker-sidecar/dashboards"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

// The end-to-end test runs what an operator runs: a sidecar watching a
// Tasker database with live activity and exporting workflow traces to an
// OTLP receiver, scraped by Debian's Prometheus with the shipped rules
// loaded. Every panel query of the committed dashboards must return data
// through Prometheus's HTTP API, the workflow histograms must carry trace_id
// exemplars, every variable query must find values, and every rule must
// parse, evaluate and be healthy. A metric renamed in the code, a label typo
// in a panel or a rule that Prometheus rejects fails here.

const (
	e2eJob = "tasker-sidecar"
	// Short stand-in for Grafana's $__rate_interval (four scrapes and more
	// at the one-second scrape interval used here).
	e2eRateInterval = "15s"
	rulesPath       = "../deploy/prometheus/tasker-sidecar.rules.yaml"
)

// TestPrometheusEndToEnd runs once per engine: the same dashboards and
// rules must find data whether the sidecar reads a Rails engine's database
// or a tasker-core one, whose states differ (the state groups in
// panels.go).
func TestPrometheusEndToEnd(t *testing.T) {
	prometheusBin := lookPath(t, "prometheus")
	sidecarBin := buildSidecar(t)
	for _, eng := range []string{"rails", "core"} {
		t.Run(eng, func(t *testing.T) { endToEnd(t, prometheusBin, sidecarBin, eng) })
	}
}

func endToEnd(t *testing.T, prometheusBin, sidecarBin, eng string) {
	started := time.Now()
	db := pgtest.New(t)
	runOK(t, sidecarBin, "schema", "apply", "--engine", eng, "--database-url", db.URL)
	runOK(t, sidecarBin, "simulate", "--engine", eng, "--database-url", db.URL, "--tasks", "300", "--seed", "1")
	if eng == "core" {
		exhaustSomeCoreSteps(t, db)
		withPGMQ(t, db)
	}

	otlp := startOTLPReceiver(t)
	sidecarAddr := startSidecar(t, sidecarBin, db.URL, otlp.url)
	// Live activity while the sidecar runs: tasks start, steps fail and are
	// retried after a backoff, tasks end, so the transition counters and
	// histograms get samples and the gauges move.
	start(t, "simulate", nil, sidecarBin, "simulate", "--engine", eng, "--database-url", db.URL,
		"--rate", "20", "--duration", "120s", "--seed", "2")
	prom := startPrometheus(t, prometheusBin, sidecarAddr)
	t.Logf("setup took %s", time.Since(started).Round(time.Millisecond))

	panels := panelQueries(t)
	variables := variableQueries(t)
	rules := ruleExpressions(t)
	pending := onlyOnStandby
	if eng == "core" {
		pending = func(expr string) bool { return pendingOnCore(expr) || onlyOnStandby(expr) }
		panels = slices.DeleteFunc(panels, func(q promQuery) bool {
			return pending(q.expr) || strings.HasPrefix(q.where, engineFreeBoard)
		})
		t.Logf("no data required on core yet: %s (notYetOnCore, notYetServed), and %s (checked on rails)",
			strings.Join(append(slices.Clone(notYetOnCore), notYetServed...), ", "), engineFreeBoard)
	} else {
		panels = slices.DeleteFunc(panels, onCoreBoard)
		// The tasker-core alert rules name those series too.
		pending = func(expr string) bool { return coreOnly(expr) || onlyOnStandby(expr) }
		t.Logf("%s left out: its series exist only on a tasker-core database", coreOnlyBoard)
	}

	// Every metric named anywhere must be exported by the sidecar: this also
	// covers panels that stay non-empty without their metric (or vector(0)).
	waitFor(t, 30*time.Second, "every referenced metric to be scraped", func() []string {
		var missing []string
		for _, name := range metricNames(panels, variables, rules) {
			if pending(name) {
				continue
			}
			if n, err := prom.seriesCount(name); err != nil || n == 0 {
				missing = append(missing, fmt.Sprintf("%s: no series (%v)", name, err))
			}
		}
		return missing
	})

	waitFor(t, 60*time.Second, "every panel query to return data", func() []string {
		var failing []string
		for _, q := range panels {
			n, err := prom.query(q)
			var refused *refusedError
			if errors.As(err, &refused) {
				t.Fatalf("%s: %v\n    %s", q.where, err, q.expr)
			}
			if err != nil {
				failing = append(failing, fmt.Sprintf("%s: %v", q.where, err))
			} else if n == 0 {
				failing = append(failing, fmt.Sprintf("%s: no data\n    %s", q.where, q.expr))
			}
		}
		return failing
	})
	t.Logf("%d panel queries return data", len(panels))

	// The workflow histograms link to traces: their exemplars carry the
	// trace_id label the Prometheus data source turns into a Jaeger link,
	// and the receiver got the spans.
	var linked []promQuery
	for _, q := range panels {
		if q.exemplars && workflowHistogram.MatchString(q.expr) {
			linked = append(linked, q)
		}
	}
	if len(linked) == 0 {
		t.Fatal("no panel asks for the exemplars of the workflow histograms")
	}
	waitFor(t, 30*time.Second, "trace_id exemplars on the workflow histograms", func() []string {
		var failing []string
		for _, q := range linked {
			if n, err := prom.traceExemplars(q.expr); err != nil || n == 0 {
				failing = append(failing, fmt.Sprintf("%s: %d exemplars with trace_id (%v)", q.where, n, err))
			}
		}
		if otlp.spans.Load() == 0 {
			failing = append(failing, "the OTLP receiver got no spans")
		}
		return failing
	})
	t.Logf("%d panel queries have trace_id exemplars; the OTLP receiver got %d spans", len(linked), otlp.spans.Load())

	waitFor(t, 10*time.Second, "every variable to find values", func() []string {
		var failing []string
		for _, v := range variables {
			values, err := prom.labelValues(v.label, v.match)
			if err != nil || len(values) == 0 {
				failing = append(failing, fmt.Sprintf("%s: %v (%v)", v.where, values, err))
			}
		}
		return failing
	})

	for _, r := range rules {
		// Rules need not return data, but must parse and evaluate.
		if _, err := prom.query(r); err != nil {
			t.Errorf("%s: %v", r.where, err)
		}
	}
	waitFor(t, 15*time.Second, "every rule to be loaded and evaluated without error", func() []string {
		return prom.unhealthyRules(len(rules))
	})
	t.Logf("%d rules evaluate; end to end in %s", len(rules), time.Since(started).Round(time.Millisecond))

	if eng == "core" {
		// The exemption ends when the analytics work on core: then this
		// fails, and notYetOnCore goes.
		if n, err := prom.seriesCount(analyticsDoneOnCore); err != nil || n > 0 {
			t.Errorf("%s has %d series on core (%v): the analytics work on tasker-core now; remove notYetOnCore", analyticsDoneOnCore, n, err)
		}
		checkNotYetServed(t, prom)
	}
}

// coreOnlyBoard is the tasker-core operators' dashboard (core.go): every
// series on it comes from package coreops and exists only on a
// tasker-core database, so a Rails run leaves it out.
const coreOnlyBoard = "tasker-core.json"

func onCoreBoard(q promQuery) bool { return strings.HasPrefix(q.where, coreOnlyBoard) }

// coreOnlyFamilies are the metric families package coreops exports on a
// tasker-core database only (docs/tasker-core.md); the Rails run does not
// require them to be scraped.
var coreOnlyFamilies = []string{
	"tasker_pgmq_", "tasker_sidecar_pgmq_", "tasker_dlq_", "tasker_tasks_stale", "tasker_tasks_oldest_age_seconds",
	"tasker_sidecar_coreops_",
}

func coreOnly(expr string) bool {
	return slices.ContainsFunc(coreOnlyFamilies, func(f string) bool { return strings.Contains(expr, f) })
}

// onlyOnStandby reports a metric only a sidecar reading a hot standby
// exports: the time since the last replayed transaction has no meaning on a
// primary (docs/metrics.md#read-replicas). These tests read a primary; its
// panel falls back to the lag, 0 there. The standby tests of collector and
// internal/cli scrape it.
func onlyOnStandby(expr string) bool {
	return expr == "tasker_sidecar_replication_last_replay_age_seconds"
}

// notYetServed are tasker-core metric families a running sidecar does not
// export yet, left out of the core runs' data checks; checkNotYetServed
// fails once one of them has a series, so that an exemption cannot outlive
// its reason. Empty since coreops is wired (docs/tasker-core.md); the core
// runs give the queue panels a PGMQ to read (withPGMQ).
var notYetServed []string

// servedSentinel is a family of notYetServed that the sidecar exports on
// every tasker-core database once coreops is wired (every dead-letter
// reason and status, zeros included).
const servedSentinel = "tasker_dlq_entries"

// checkNotYetServed fails when the sidecar exports a family listed as not
// yet served: the exemption has outlived its reason.
func checkNotYetServed(t *testing.T, prom prometheusAPI) {
	t.Helper()
	if len(notYetServed) == 0 {
		return
	}
	if n, err := prom.seriesCount(servedSentinel); err != nil || n > 0 {
		t.Errorf("%s has %d series on core (%v): the sidecar serves the tasker-core families now; empty notYetServed",
			servedSentinel, n, err)
	}
}

// notServedYet reports whether an expression or a metric name mentions a
// family of notYetServed.
func notServedYet(expr string) bool {
	return slices.ContainsFunc(notYetServed, func(prefix string) bool { return strings.Contains(expr, prefix) })
}

// exhaustSomeCoreSteps gives three steps in error their last attempt. The
// core simulator's bulk history fails steps before they use up their
// attempts (the Rails one leaves some exhausted), so the exhausted retry
// class, and the panels on it, would only have data once the live activity
// exhausts a step, which can take longer than the test waits. Done before
// the sidecar starts, so its first count already has them.
func exhaustSomeCoreSteps(t *testing.T, db pgtest.DB) {
	t.Helper()
	core := engine.Core()
	tag, err := db.Conn(t).Exec(context.Background(), fmt.Sprintf(`UPDATE %[1]s SET attempts = %[3]s
WHERE workflow_step_uuid IN (
    SELECT workflow_step_uuid FROM %[2]s
    WHERE most_recent AND to_state = 'error'
    ORDER BY workflow_step_uuid LIMIT 3)`, core.Tables.Steps, core.Tables.StepTransitions, core.RetryLimitColumn))
	if err != nil {
		t.Fatalf("exhaust core steps: %v", err)
	}
	if tag.RowsAffected() == 0 {
		t.Fatal("the core simulation left no step in error to exhaust")
	}
}

// withPGMQ installs PGMQ's documented layout (coreops/testdata/pgmq_layout.sql)
// into a tasker-core database and fills the engine's queues, one left
// with messages waiting, so that the queue panels have a queue to show.
func withPGMQ(t *testing.T, db pgtest.DB) {
	t.Helper()
	withPGMQQueues(t, db, map[string]int{"orchestration_step_results": 3, "orchestration_task_requests": 0, "worker_default_queue": 12})
}

// withPGMQQueues installs PGMQ's layout and creates the queues, each
// left with its number of messages waiting (two more sent and deleted
// unless it is 0).
func withPGMQQueues(t *testing.T, db pgtest.DB, queues map[string]int) {
	t.Helper()
	layout, err := os.ReadFile("../coreops/testdata/pgmq_layout.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn := db.Conn(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, string(layout)); err != nil {
		t.Fatalf("pgmq layout: %v", err)
	}
	for q, waiting := range queues {
		if _, err := conn.Exec(ctx, `SELECT pgmq.create($1)`, q); err != nil {
			t.Fatal(err)
		}
		sent := waiting
		if waiting > 0 {
			sent += 2
		}
		for i := range sent {
			var id int64
			if err := conn.QueryRow(ctx, `SELECT * FROM pgmq.send($1::text, $2::jsonb)`, q, fmt.Sprintf(`{"n": %d}`, i)).Scan(&id); err != nil {
				t.Fatal(err)
			}
			if i >= waiting {
				if _, err := conn.Exec(ctx, `SELECT pgmq.delete($1::text, $2::bigint)`, q, id); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// notYetOnCore are the metrics the sidecar does not export on tasker-core
// yet: the analytics refresh still reads the Rails engine's tables (issue
// 12). The core run leaves the panels on them out of its data checks; their
// rules must still evaluate. analyticsDoneOnCore, which only a successful
// analytics refresh sets, shows when the gap closes.
var notYetOnCore = []string{"tasker_analytics_", "tasker_sidecar_analytics_"}

// engineFreeBoard is the dashboard that knows no engine: the cache store and
// the results cache. The Rails run checks it; in this test the results
// cache is fed by analytics.metrics alone (README.md, "Not covered"), so on
// core, while the analytics fail, its series come and go.
const engineFreeBoard = "tasker-cache.json"

const analyticsDoneOnCore = "tasker_sidecar_analytics_last_refresh_timestamp_seconds"

// pendingOnCore reports whether an expression or a metric name mentions a
// family of notYetServed, or a metric of notYetOnCore, except tasker_analytics_window_seconds, which the
// analytics collector exports on either engine.
func pendingOnCore(expr string) bool {
	if notServedYet(expr) {
		return true
	}
	expr = strings.ReplaceAll(expr, "tasker_analytics_window_seconds", "")
	return slices.ContainsFunc(notYetOnCore, func(prefix string) bool { return strings.Contains(expr, prefix) })
}

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required (make services installs Debian's prometheus package): %v", name, err)
	}
	return p
}

// buildSidecar builds the sidecar, or takes the binary named by
// TASKER_SIDECAR_E2E_BIN (to measure another build against these
// dashboards, as docs/metrics.md's before and after numbers are).
func buildSidecar(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("TASKER_SIDECAR_E2E_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "sidecar")
	// go test puts its own toolchain first on PATH.
	runOK(t, lookPath(t, "go"), "build", "-o", bin, "github.com/tasker-systems/tasker-sidecar/cmd/sidecar")
	return bin
}

func runOK(t *testing.T, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
}

// start runs a process until the test ends, with its output in a file that
// is shown when the test fails. env is added to the test's environment.
func start(t *testing.T, name string, env []string, bin string, args ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = logFile.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("--- %s log (last 3000 bytes) ---\n%s", name, tail(out, 3000))
		}
	})
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// otlpReceiver is an OTLP/HTTP trace receiver that accepts everything and
// counts the spans.
type otlpReceiver struct {
	url   string
	spans atomic.Int64
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var msg coltracepb.ExportTraceServiceRequest
		if err == nil && req.Method == http.MethodPost && req.URL.Path == "/v1/traces" {
			err = proto.Unmarshal(body, &msg)
		} else if err == nil {
			err = fmt.Errorf("%s %s", req.Method, req.URL.Path)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rs := range msg.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans.Add(int64(len(ss.Spans)))
			}
		}
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	// Registered before the sidecar's cleanup, so it runs after it: the
	// sidecar's last export at shutdown still lands.
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func startSidecar(t *testing.T, bin, dbURL, otlpURL string) string {
	t.Helper()
	// Declaring client-side caching unsupported on a Redis that has it is a
	// capability conflict (one that leaves the strategy alone): it gives the
	// conflict series a non-zero value, so the panels and the alert on them
	// are checked against a real conflict. A recount every few seconds
	// refreshes the drift gauge, and a short analytics interval refreshes
	// the analytics gauges while the test runs.
	return startSidecarWith(t, bin, dbURL, tracingTo(otlpURL), `cache:
  url: redis://127.0.0.1:6379
  key_prefix: "e2e_%d:"
  capabilities:
    client_side_caching: false
stream:
  recount_interval: 3s
analytics:
  metrics_interval: 5s
`)
}

// tracingTo is the environment that turns workflow tracing on, exporting
// to an OTLP/HTTP receiver at url. It makes the tasker_sidecar_traces_*
// series and the exemplars exist.
func tracingTo(url string) []string {
	return []string{
		"SIDECAR_TRACING_ENABLED=true",
		"SIDECAR_TRACING_PROTOCOL=http/protobuf",
		"SIDECAR_TRACING_ENDPOINT=" + url,
	}
}

// startSidecarWith runs the sidecar with config, in which %d is replaced
// by a number unique to the run (for the cache key prefix), and env added
// to the environment.
func startSidecarWith(t *testing.T, bin, dbURL string, env []string, config string) string {
	t.Helper()
	addr := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "sidecar.yaml")
	content := fmt.Sprintf(config, time.Now().UnixNano())
	if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, "sidecar", env, bin, "run", "--config", cfg, "--database-url", dbURL,
		"--listen", addr, "--refresh-interval", "1s")
	waitFor(t, 20*time.Second, "the sidecar to serve", func() []string {
		resp, err := http.Get("http://" + addr + "/tasker/health/live")
		if err != nil {
			return []string{err.Error()}
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return []string{resp.Status}
		}
		return nil
	})
	return addr
}

type prometheusAPI struct {
	base   string
	client *http.Client
}

func startPrometheus(t *testing.T, bin, target string) prometheusAPI {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	content := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: %s
    static_configs:
      - targets: [%q]
`, rules, e2eJob, target)
	if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	start(t, "prometheus", nil, bin,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--enable-feature=exemplar-storage",
		"--log.level=warn")
	p := prometheusAPI{base: "http://" + addr, client: &http.Client{Timeout: 10 * time.Second}}
	waitFor(t, 30*time.Second, "Prometheus to be ready", func() []string {
		resp, err := p.client.Get(p.base + "/-/ready")
		if err != nil {
			return []string{err.Error()}
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return []string{resp.Status}
		}
		return nil
	})
	return p
}

// waitFor polls check until it reports no problems, and fails the test with
// the last problems at the deadline.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() []string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		problems := check()
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s:\n  %s", timeout, what, strings.Join(problems, "\n  "))
		}
		time.Sleep(time.Second)
	}
}

type apiResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

// refusedError is Prometheus refusing a query (errorType bad_data: it does
// not parse or is invalid), which no amount of waiting mends.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return "prometheus refused the query: " + e.msg }

func (p prometheusAPI) get(path string, params url.Values) (json.RawMessage, error) {
	resp, err := p.client.Get(p.base + path + "?" + params.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if r.ErrorType == "bad_data" {
		return nil, &refusedError{r.Error}
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	return r.Data, nil
}

// query evaluates q the way Grafana would (instant or over a range) and
// returns the number of samples that are numbers. Exemplar queries are
// checked to parse as well.
func (p prometheusAPI) query(q promQuery) (int, error) {
	n, _, err := p.queryCounts(q)
	return n, err
}

// queryCounts is query, also returning the number of series, NaN-valued
// ones included (a quantile or a ratio of nothing observed).
func (p prometheusAPI) queryCounts(q promQuery) (numbers, series int, err error) {
	now := time.Now()
	params := url.Values{"query": {q.expr}}
	path := "/api/v1/query"
	if !q.instant {
		path = "/api/v1/query_range"
		params.Set("start", strconv.FormatInt(now.Add(-20*time.Second).Unix(), 10))
		params.Set("end", strconv.FormatInt(now.Unix(), 10))
		params.Set("step", "2")
	}
	data, err := p.get(path, params)
	if err != nil {
		return 0, 0, err
	}
	if q.exemplars {
		ex := url.Values{"query": {q.expr},
			"start": {strconv.FormatInt(now.Add(-time.Minute).Unix(), 10)}, "end": {strconv.FormatInt(now.Unix(), 10)}}
		if _, err := p.get("/api/v1/query_exemplars", ex); err != nil {
			return 0, 0, fmt.Errorf("exemplars: %w", err)
		}
	}
	var result struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &result); err != nil {
		return 0, 0, err
	}
	var values [][2]any
	switch result.ResultType {
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(result.Result, &v); err != nil {
			return 0, 0, err
		}
		values = append(values, v)
		series = 1
	case "vector":
		var vec []struct {
			Value [2]any `json:"value"`
		}
		if err := json.Unmarshal(result.Result, &vec); err != nil {
			return 0, 0, err
		}
		for _, s := range vec {
			values = append(values, s.Value)
		}
		series = len(vec)
	case "matrix":
		var mat []struct {
			Values [][2]any `json:"values"`
		}
		if err := json.Unmarshal(result.Result, &mat); err != nil {
			return 0, 0, err
		}
		for _, s := range mat {
			values = append(values, s.Values...)
		}
		series = len(mat)
	default:
		return 0, 0, fmt.Errorf("result type %q", result.ResultType)
	}
	// A histogram_quantile over an empty window is NaN: a line Grafana
	// cannot draw is no data.
	n := 0
	for _, v := range values {
		s, _ := v[1].(string)
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) {
			n++
		}
	}
	return n, series, nil
}

// workflowHistogram matches the transition histograms, whose exemplars
// carry the task's trace id when tracing is on.
var workflowHistogram = regexp.MustCompile(`\btasker_(task|step)_[a-z_]+_seconds_bucket\b`)

// traceExemplars counts the exemplars of the last minute with a trace_id
// label among the series an expression selects.
func (p prometheusAPI) traceExemplars(expr string) (int, error) {
	now := time.Now()
	data, err := p.get("/api/v1/query_exemplars", url.Values{"query": {expr},
		"start": {strconv.FormatInt(now.Add(-time.Minute).Unix(), 10)}, "end": {strconv.FormatInt(now.Unix(), 10)}})
	if err != nil {
		return 0, err
	}
	var series []struct {
		Exemplars []struct {
			Labels map[string]string `json:"labels"`
		} `json:"exemplars"`
	}
	if err := json.Unmarshal(data, &series); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range series {
		for _, e := range s.Exemplars {
			if len(e.Labels["trace_id"]) == 32 {
				n++
			}
		}
	}
	return n, nil
}

func (p prometheusAPI) seriesCount(metric string) (int, error) {
	now := time.Now()
	data, err := p.get("/api/v1/series", url.Values{"match[]": {metric},
		"start": {strconv.FormatInt(now.Add(-time.Minute).Unix(), 10)}, "end": {strconv.FormatInt(now.Unix(), 10)}})
	if err != nil {
		return 0, err
	}
	var series []map[string]string
	err = json.Unmarshal(data, &series)
	return len(series), err
}

func (p prometheusAPI) labelValues(label, match string) ([]string, error) {
	data, err := p.get("/api/v1/label/"+url.PathEscape(label)+"/values", url.Values{"match[]": {match}})
	if err != nil {
		return nil, err
	}
	var values []string
	err = json.Unmarshal(data, &values)
	return values, err
}

// unhealthyRules lists rules Prometheus has not loaded, not evaluated yet,
// or failed to evaluate.
func (p prometheusAPI) unhealthyRules(want int) []string {
	data, err := p.get("/api/v1/rules", nil)
	if err != nil {
		return []string{err.Error()}
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(data, &rules); err != nil {
		return []string{err.Error()}
	}
	var problems []string
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				problems = append(problems, fmt.Sprintf("%s: health %q %s", r.Name, r.Health, r.LastError))
			}
		}
	}
	if n != want {
		problems = append(problems, fmt.Sprintf("Prometheus loaded %d rules, the file has %d", n, want))
	}
	return problems
}

// promQuery is one expression to evaluate, with where it comes from.
type promQuery struct {
	where, expr        string
	instant, exemplars bool
	// description is the panel's (empty for rules).
	description string
}

// substitute fills in the dashboards' variables as Grafana would with the
// test's job selected and "All" everywhere else. A variable it does not know
// fails the test, so a new one cannot slip through unevaluated.
func substitute(t *testing.T, where, expr string) string {
	t.Helper()
	out := strings.NewReplacer(
		"$__rate_interval", e2eRateInterval,
		"$job", e2eJob,
		"$instance", ".*",
		"$namespace", ".*",
		"$task", ".*",
	).Replace(expr)
	if strings.Contains(out, "$") {
		t.Fatalf("%s: a variable the end-to-end test does not fill in: %s", where, out)
	}
	return out
}

func committedJSON(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, d := range dashboards.All() {
		raw, err := os.ReadFile(filepath.Join(committedDir, d.File))
		if err != nil {
			t.Fatal(err)
		}
		out[d.File] = raw
	}
	return out
}

func panelQueries(t *testing.T) []promQuery {
	t.Helper()
	var out []promQuery
	for file, raw := range committedJSON(t) {
		var b struct {
			Panels []struct {
				Title       string `json:"title"`
				Type        string `json:"type"`
				Description string `json:"description"`
				Targets     []struct {
					RefID    string `json:"refId"`
					Expr     string `json:"expr"`
					Instant  bool   `json:"instant"`
					Exemplar bool   `json:"exemplar"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		for _, p := range b.Panels {
			for _, tg := range p.Targets {
				where := fmt.Sprintf("%s: %q query %s", file, p.Title, tg.RefID)
				out = append(out, promQuery{where: where, expr: substitute(t, where, tg.Expr), instant: tg.Instant, exemplars: tg.Exemplar,
					description: p.Description})
			}
		}
	}
	slices.SortFunc(out, func(a, b promQuery) int { return strings.Compare(a.where, b.where) })
	if len(out) == 0 {
		t.Fatal("no panel queries found")
	}
	return out
}

type variableQuery struct {
	where, label, match string
}

func variableQueries(t *testing.T) []variableQuery {
	t.Helper()
	labelValuesCall := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
	var out []variableQuery
	for file, raw := range committedJSON(t) {
		var b struct {
			Templating struct {
				List []struct {
					Type  string `json:"type"`
					Name  string `json:"name"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		for _, v := range b.Templating.List {
			if v.Type != "query" {
				continue
			}
			where := fmt.Sprintf("%s: variable %s", file, v.Name)
			q, _ := v.Query.(string)
			m := labelValuesCall.FindStringSubmatch(q)
			if m == nil {
				t.Fatalf("%s: query %v is not label_values(selector, label)", where, v.Query)
			}
			out = append(out, variableQuery{where: where, match: substitute(t, where, m[1]), label: m[2]})
		}
	}
	return out
}

func ruleExpressions(t *testing.T) []promQuery {
	t.Helper()
	raw, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatal(err)
	}
	var out []promQuery
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out = append(out, promQuery{where: "rule " + r.Alert + r.Record, expr: r.Expr, instant: true})
		}
	}
	return out
}

// metricNames finds the metric names in the expressions: words with the
// exporters' prefixes, not preceded by a colon (the outputs of recording
// rules, job:metric:op, are not exported by anyone).
func metricNames(panels []promQuery, variables []variableQuery, rules []promQuery) []string {
	metricName := regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:])((?:tasker|go|process|promhttp)_[a-zA-Z0-9_]+)`)
	seen := map[string]bool{}
	exprs := []string{}
	for _, q := range append(slices.Clone(panels), rules...) {
		exprs = append(exprs, q.expr)
	}
	for _, v := range variables {
		exprs = append(exprs, v.match)
	}
	for _, e := range exprs {
		for _, m := range metricName.FindAllStringSubmatch(e, -1) {
			seen[m[1]] = true
		}
	}
	var out []string
	for name := range seen {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
