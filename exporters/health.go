package exporters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/collector"
)

type liveBody struct {
	Alive     bool     `json:"alive"`
	Timestamp liveTime `json:"timestamp"`
	Service   string   `json:"service"`
}

// live touches nothing, so a slow database never gets the pod restarted.
func (s *Server) live(c *gin.Context) {
	c.JSON(http.StatusOK, liveBody{Alive: true, Timestamp: liveTime(s.now()), Service: "tasker"})
}

type readyBody struct {
	Ready          bool                      `json:"ready"`
	Checks         map[string]map[string]any `json:"checks"`
	Message        string                    `json:"message"`
	Timestamp      railsTime                 `json:"timestamp"`
	CheckDuration  jsonFloat                 `json:"check_duration"`
	FailedChecks   []string                  `json:"failed_checks,omitempty"`
	TimedOutChecks []string                  `json:"timed_out_checks,omitempty"`
}

// ready is what Tasker's ReadinessChecker#check was meant to return; Tasker's
// controller indexes a boolean and so answers 503 to every request.
//
// The route is open to the kubelet, so each check shows its status and a
// generic message; what failed and where (role, database, host:port, the
// server's error) goes to the log, and to callers with credentials when
// auth is on (issue 10).
func (s *Server) ready(c *gin.Context) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.opts.ReadinessTimeout)
	defer cancel()
	r := s.evaluate(ctx)
	full := s.auth != nil && s.auth.authorized(c.Request)

	body := readyBody{Ready: r.ready(), Checks: map[string]map[string]any{}, Message: "System is ready"}
	for i, ch := range s.opts.Checks {
		res := r.results[i]
		if res == nil {
			body.FailedChecks = append(body.FailedChecks, ch.Name())
			body.TimedOutChecks = append(body.TimedOutChecks, ch.Name())
			continue
		}
		if full {
			body.Checks[ch.Name()] = checkJSON(*res)
		} else {
			body.Checks[ch.Name()] = publicCheckJSON(*res)
		}
		if res.Status == StatusUnhealthy {
			body.FailedChecks = append(body.FailedChecks, ch.Name())
		}
	}
	if !body.Ready {
		body.Message = "System is not ready"
	}
	if r.timedOut {
		body.Message = "Readiness check timed out after " + rubySeconds(s.opts.ReadinessTimeout) + " seconds"
	}
	body.Timestamp = railsTime(s.now())
	body.CheckDuration = seconds(time.Since(start))
	code := http.StatusOK
	if !body.Ready {
		code = http.StatusServiceUnavailable
	}
	c.JSON(code, body)
}

// readiness is one evaluation of every check: results[i] belongs to
// Checks[i] and is nil for a check that did not answer before the deadline.
type readiness struct {
	results  []*CheckResult
	timedOut bool
}

// ready reports whether every check answered and none is unhealthy.
func (r readiness) ready() bool {
	for _, res := range r.results {
		if res == nil || res.Status == StatusUnhealthy {
			return false
		}
	}
	return true
}

// evaluate runs the checks concurrently until ctx is done, and logs the
// checks whose status changed.
func (s *Server) evaluate(ctx context.Context) readiness {
	r := s.runChecks(ctx)
	// A probe whose client went away says nothing about the dependencies.
	if !errors.Is(ctx.Err(), context.Canceled) {
		s.logChanges(ctx, r)
	}
	return r
}

func (s *Server) runChecks(ctx context.Context) readiness {
	type outcome struct {
		i   int
		res CheckResult
	}
	checks := s.opts.Checks
	// Buffered so that checks finishing after the deadline do not block.
	results := make(chan outcome, len(checks))
	for i, ch := range checks {
		go func() { results <- outcome{i, runCheck(ctx, ch)} }()
	}
	r := readiness{results: make([]*CheckResult, len(checks))}
	for range checks {
		select {
		case o := <-results:
			r.results[o.i] = &o.res
		case <-ctx.Done():
			r.timedOut = true
			return r
		}
	}
	return r
}

// logChanges logs each check once per change of its status, not once per
// probe: the kubelet probes every few seconds. This is where the details
// the public readiness answer leaves out are kept. A check first seen
// healthy is not logged.
func (s *Server) logChanges(ctx context.Context, r readiness) {
	s.checkMu.Lock()
	defer s.checkMu.Unlock()
	for i, ch := range s.opts.Checks {
		res := CheckResult{Status: StatusUnhealthy,
			Message: "Check did not answer within " + rubySeconds(s.opts.ReadinessTimeout) + " seconds"}
		if r.results[i] != nil {
			res = *r.results[i]
		}
		prev, seen := s.checkStatus[ch.Name()]
		if prev == res.Status || (!seen && res.Status == StatusHealthy) {
			s.checkStatus[ch.Name()] = res.Status
			continue
		}
		s.checkStatus[ch.Name()] = res.Status
		level := slog.LevelWarn
		if res.Status == StatusHealthy {
			level = slog.LevelInfo
		}
		attrs := []slog.Attr{
			slog.String("check", ch.Name()),
			slog.String("status", res.Status),
			slog.String("message", redact(res.Message)),
		}
		if seen {
			attrs = append(attrs, slog.String("previous", prev))
		}
		if res.Error != "" {
			attrs = append(attrs, slog.String("error", redact(res.Error)))
		}
		if len(res.Details) > 0 {
			attrs = append(attrs, slog.String("details", redact(fmt.Sprint(res.Details))))
		}
		s.log.LogAttrs(ctx, level, "readiness check changed", attrs...)
	}
}

// readinessCollector exports what /tasker/health/ready would answer at
// scrape time, so dashboards and alerts see each dependency as the
// kubelet does, not a guess from other metrics.
type readinessCollector struct {
	s        *Server
	ready    *prometheus.Desc
	check    *prometheus.Desc
	duration *prometheus.Desc

	// A flood of scrapes (several Prometheus replicas, a short interval)
	// evaluates the checks, and pings the database, at most once per
	// readinessReuse; concurrent scrapes wait for one evaluation.
	mu   sync.Mutex
	last readiness
	at   time.Time
}

// readinessReuse is how long one evaluation of the checks serves scrapes.
const readinessReuse = 5 * time.Second

func newReadinessCollector(s *Server) *readinessCollector {
	return &readinessCollector{
		s: s,
		ready: prometheus.NewDesc("tasker_sidecar_ready",
			"1 when every readiness check answered and none is unhealthy, as /tasker/health/ready would answer now.", nil, nil),
		check: prometheus.NewDesc("tasker_sidecar_readiness_check",
			"Readiness check status at scrape time: 1 for the check's current status, 0 for the others; a check that did not answer within the readiness timeout is unhealthy.",
			[]string{"check", "status"}, nil),
		duration: prometheus.NewDesc("tasker_sidecar_readiness_check_duration_seconds",
			"How long each readiness check took at scrape time.", []string{"check"}, nil),
	}
}

func (c *readinessCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ready
	ch <- c.check
	ch <- c.duration
}

var checkStatuses = []string{StatusHealthy, StatusDegraded, StatusUnhealthy}

func (c *readinessCollector) evaluate() readiness {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); c.at.IsZero() || now.Sub(c.at) >= readinessReuse {
		ctx, cancel := context.WithTimeout(context.Background(), c.s.opts.ReadinessTimeout)
		c.last = c.s.evaluate(ctx)
		cancel()
		c.at = time.Now()
	}
	return c.last
}

func (c *readinessCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.evaluate()
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, b2f(r.ready()))
	for i, chk := range c.s.opts.Checks {
		status, took := StatusUnhealthy, c.s.opts.ReadinessTimeout
		if res := r.results[i]; res != nil {
			status, took = res.Status, time.Duration(res.ResponseTimeMs*float64(time.Millisecond))
		}
		for _, st := range checkStatuses {
			ch <- prometheus.MustNewConstMetric(c.check, prometheus.GaugeValue, b2f(st == status), chk.Name(), st)
		}
		ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, took.Seconds(), chk.Name())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// runCheck contains a panicking check: it runs on its own goroutine, where a
// panic would take the whole process down.
func runCheck(ctx context.Context, ch Checker) (res CheckResult) {
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			res = CheckResult{Status: StatusUnhealthy, Message: "Check panicked", Error: redact(fmt.Sprint(v))}
		}
		if res.ResponseTimeMs <= 0 {
			res.ResponseTimeMs = float64(time.Since(start)) / float64(time.Millisecond)
		}
		switch res.Status {
		case StatusHealthy, StatusDegraded, StatusUnhealthy:
		default:
			res.Error = fmt.Sprintf("check returned unknown status %q", res.Status)
			res.Status = StatusUnhealthy
		}
	}()
	return ch.Check(ctx)
}

// publicMessages replace the checks' own messages for callers without
// credentials: a message may carry the server's error text.
var publicMessages = map[string]string{
	StatusHealthy:   "Check passed",
	StatusDegraded:  "Check degraded; details are in the sidecar's log",
	StatusUnhealthy: "Check failed; details are in the sidecar's log",
}

// publicCheckJSON is a check as callers without credentials see it: its
// status, a generic message and its response time. Details and errors may
// name the role, the database, the host and port, or carry the server's
// error text.
func publicCheckJSON(r CheckResult) map[string]any {
	return map[string]any{
		"status":           r.Status,
		"message":          publicMessages[r.Status],
		"response_time_ms": jsonFloat(round(r.ResponseTimeMs, 2)),
	}
}

// checkJSON is a check with everything it reported, for callers with
// credentials.
func checkJSON(r CheckResult) map[string]any {
	m := make(map[string]any, len(r.Details)+4)
	for k, v := range r.Details {
		m[k] = v
	}
	m["status"] = r.Status
	m["message"] = redact(r.Message)
	m["response_time_ms"] = jsonFloat(round(r.ResponseTimeMs, 2))
	if r.Error != "" {
		m["error"] = redact(r.Error)
	} else {
		delete(m, "error")
	}
	return m
}

// Status values of /health/status, as in Tasker.
const (
	VerdictHealthy   = "healthy"
	VerdictUnhealthy = "unhealthy"
	VerdictError     = "error"
)

type statusBody struct {
	Healthy            bool            `json:"healthy"`
	Status             string          `json:"status"`
	Error              string          `json:"error,omitempty"`
	ErrorClass         string          `json:"error_class,omitempty"`
	Metrics            *statusMetrics  `json:"metrics,omitempty"`
	Database           *statusDatabase `json:"database,omitempty"`
	Cached             bool            `json:"cached"`
	Timestamp          railsTime       `json:"timestamp"`
	GenerationDuration *jsonFloat      `json:"generation_duration,omitempty"`
	CacheInfo          cacheInfo       `json:"cache_info"`
}

type statusMetrics struct {
	Tasks struct {
		Total      int64 `json:"total"`
		Pending    int64 `json:"pending"`
		InProgress int64 `json:"in_progress"`
		Complete   int64 `json:"complete"`
		Error      int64 `json:"error"`
		Cancelled  int64 `json:"cancelled"`
	} `json:"tasks"`
	Steps struct {
		Total      int64 `json:"total"`
		Pending    int64 `json:"pending"`
		InProgress int64 `json:"in_progress"`
		Complete   int64 `json:"complete"`
		Error      int64 `json:"error"`
	} `json:"steps"`
	Retries struct {
		RetryableErrors  int64 `json:"retryable_errors"`
		ExhaustedRetries int64 `json:"exhausted_retries"`
		InBackoff        int64 `json:"in_backoff"`
	} `json:"retries"`
}

type statusDatabase struct {
	ActiveConnections     int64     `json:"active_connections"`
	MaxConnections        int64     `json:"max_connections"`
	ConnectionUtilization jsonFloat `json:"connection_utilization"`
}

type cacheInfo struct {
	Cached     bool       `json:"cached"`
	AgeSeconds *jsonFloat `json:"age_seconds,omitempty"`
	// TTLSeconds is how long the data counts as fresh: the refresh interval,
	// which is also the shared cache entry's TTL when replicas share counts.
	TTLSeconds             jsonFloat  `json:"ttl_seconds"`
	RefreshedAt            *railsTime `json:"refreshed_at,omitempty"`
	RefreshIntervalSeconds jsonFloat  `json:"refresh_interval_seconds"`
	Stale                  bool       `json:"stale"`
	LastAttemptAt          *railsTime `json:"last_attempt_at,omitempty"`
	ConsecutiveFailures    uint64     `json:"consecutive_failures"`
	LastError              string     `json:"last_error,omitempty"`
}

// Verdict applies Tasker's StatusChecker rules to the health counts. The
// comparisons are strict and use the unrounded percentages, as Tasker does.
func Verdict(c collector.HealthCounts) (healthy bool, utilization float64) {
	healthy = true
	if c.MaxConnections > 0 {
		pct := float64(c.ActiveConnections) / float64(c.MaxConnections) * 100
		utilization = round(pct, 2)
		if pct > 90.0 {
			healthy = false
		}
	}
	if c.TotalTasks > 0 && float64(c.ErrorTasks)/float64(c.TotalTasks)*100 > 50.0 {
		healthy = false
	}
	if c.TotalSteps > 0 && float64(c.ErrorSteps)/float64(c.TotalSteps)*100 > 50.0 {
		healthy = false
	}
	return healthy, utilization
}

// status serves the last good snapshot and never queries the database, so
// a burst of requests costs nothing and a down database still gets an
// answer that says how old the numbers are.
//
// With auth on, the route needs credentials and shows the error text; with
// auth off, anyone can ask, and the errors shrink to what failed and its
// class, as in readiness (the refresher logs the text).
func (s *Server) status(c *gin.Context) {
	st := s.opts.Health.State()
	full := s.auth != nil
	now := s.now()
	limit := 2 * s.opts.RefreshInterval
	body := statusBody{
		Timestamp: railsTime(now),
		CacheInfo: cacheInfo{
			TTLSeconds:             seconds(s.opts.RefreshInterval),
			RefreshIntervalSeconds: seconds(s.opts.RefreshInterval),
			ConsecutiveFailures:    st.Failures,
			Stale:                  st.LastError != nil,
		},
	}
	if st.LastError != nil {
		body.CacheInfo.LastError = errorText(st.LastError)
		if !full {
			body.CacheInfo.LastError = failure(st.LastError, false)
		}
	}
	if !st.LastAttempt.IsZero() {
		t := railsTime(st.LastAttempt)
		body.CacheInfo.LastAttemptAt = &t
	}

	if snap := st.Last; snap != nil {
		age := max(now.Sub(snap.TakenAt), 0)
		ageS, at, gen := seconds(age), railsTime(snap.TakenAt), seconds(snap.Duration)
		body.CacheInfo.Cached, body.CacheInfo.AgeSeconds, body.CacheInfo.RefreshedAt = true, &ageS, &at
		body.CacheInfo.Stale = body.CacheInfo.Stale || age > limit
		body.Cached, body.GenerationDuration = true, &gen

		healthy, util := Verdict(snap.Counts)
		body.Metrics = metricsOf(snap.Counts)
		body.Database = &statusDatabase{
			ActiveConnections:     snap.Counts.ActiveConnections,
			MaxConnections:        snap.Counts.MaxConnections,
			ConnectionUtilization: jsonFloat(util),
		}
		body.Healthy = healthy
		body.Status = VerdictHealthy
		if !healthy {
			body.Status = VerdictUnhealthy
		}
		if st.LastError == nil && age > limit {
			// The refresher is stuck rather than failing; frozen numbers must
			// not pass for current ones.
			body.Healthy, body.Status, body.ErrorClass = false, VerdictError, ClassStale
			body.Error = fmt.Sprintf("data is stale: last successful refresh %s ago, more than %s",
				age.Round(time.Millisecond), limit)
		}
	}
	if st.LastError != nil {
		body.Healthy, body.Status = false, VerdictError
		body.Error, body.ErrorClass = failure(st.LastError, full), errorClass(st.LastError)
	} else if st.Last == nil {
		body.Healthy, body.Status = false, VerdictError
		body.Error, body.ErrorClass = "no data yet: first refresh pending", ClassPending
	}

	code := http.StatusOK
	if !body.Healthy {
		code = http.StatusServiceUnavailable
	}
	c.JSON(code, body)
}

// failure describes the refresher's error: what failed and the error text
// for callers with credentials; what failed and its class for the others.
func failure(err error, full bool) string {
	var unreachable *collector.UnreachableError
	if errors.As(err, &unreachable) {
		// Its text starts with "database unreachable".
		if full {
			return errorText(err)
		}
		return "database unreachable (" + errorClass(err) + "); details are in the sidecar's log"
	}
	if full {
		return "refresh failed: " + errorText(err)
	}
	return "refresh failed (" + errorClass(err) + "); details are in the sidecar's log"
}

func metricsOf(h collector.HealthCounts) *statusMetrics {
	var m statusMetrics
	m.Tasks.Total, m.Tasks.Pending, m.Tasks.InProgress = h.TotalTasks, h.PendingTasks, h.InProgressTasks
	m.Tasks.Complete, m.Tasks.Error, m.Tasks.Cancelled = h.CompleteTasks, h.ErrorTasks, h.CancelledTasks
	m.Steps.Total, m.Steps.Pending, m.Steps.InProgress = h.TotalSteps, h.PendingSteps, h.InProgressSteps
	m.Steps.Complete, m.Steps.Error = h.CompleteSteps, h.ErrorSteps
	m.Retries.RetryableErrors = h.RetryableErrorSteps
	m.Retries.ExhaustedRetries = h.ExhaustedRetrySteps
	m.Retries.InBackoff = h.InBackoffSteps
	return &m
}
