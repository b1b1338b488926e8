package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/readiness"
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
	r := s.readiness.Evaluate(c.Request.Context())
	full := s.auth != nil && s.auth.Authorized(c.Request)

	body := readyBody{Ready: r.Ready(), Checks: map[string]map[string]any{}, Message: "System is ready"}
	for i, ch := range s.readiness.Checks() {
		res := r.Results[i]
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
		if res.Status == readiness.StatusUnhealthy {
			body.FailedChecks = append(body.FailedChecks, ch.Name())
		}
	}
	if !body.Ready {
		body.Message = "System is not ready"
	}
	if r.TimedOut {
		body.Message = s.readiness.TimeoutMessage("Readiness check timed out after")
	}
	body.Timestamp = railsTime(s.now())
	body.CheckDuration = seconds(time.Since(start))
	code := http.StatusOK
	if !body.Ready {
		code = http.StatusServiceUnavailable
	}
	c.JSON(code, body)
}

// publicMessages replace the checks' own messages for callers without
// credentials: a message may carry the server's error text.
var publicMessages = map[string]string{
	readiness.StatusHealthy:   "Check passed",
	readiness.StatusDegraded:  "Check degraded; details are in the sidecar's log",
	readiness.StatusUnhealthy: "Check failed; details are in the sidecar's log",
}

// publicCheckJSON is a check as callers without credentials see it: its
// status, a generic message and its response time. Details and errors may
// name the role, the database, the host and port, or carry the server's
// error text.
func publicCheckJSON(r readiness.CheckResult) map[string]any {
	return map[string]any{
		"status":           r.Status,
		"message":          publicMessages[r.Status],
		"response_time_ms": jsonFloat(round(r.ResponseTimeMs, 2)),
	}
}

// checkJSON is a check with everything it reported, for callers with
// credentials: the members of the details' JSON object, then the result's
// own fields, which win. The object's members are sorted by name, as
// encoding/json writes every map.
func checkJSON(r readiness.CheckResult) map[string]any {
	m := detailMembers(r.Details)
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

// detailMembers is the details' JSON object as members, each kept as the
// JSON the details' own type writes. Details that are not an object are
// shown under "details".
func detailMembers(details any) map[string]any {
	m := map[string]any{}
	if details == nil {
		return m
	}
	b, err := json.Marshal(details)
	if err != nil {
		m["details_error"] = redact(err.Error())
		return m
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil {
		m["details"] = json.RawMessage(b)
		return m
	}
	for k, v := range members {
		m[k] = v
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
	Metrics            any             `json:"metrics,omitempty"` // *statusMetrics or *coreStatusMetrics
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
	Retries statusRetries `json:"retries"`
}

type statusRetries struct {
	RetryableErrors  int64 `json:"retryable_errors"`
	ExhaustedRetries int64 `json:"exhausted_retries"`
	InBackoff        int64 `json:"in_backoff"`
}

// coreStatusMetrics are the metrics on tasker-core: one key per state of
// the engine's task and step state machines, zeros included, plus total
// (which also counts entities without a transition row, as core's
// get_system_health_counts does), and the retry classes as on Rails
// (docs/endpoints.md).
type coreStatusMetrics struct {
	Tasks   map[string]int64 `json:"tasks"`
	Steps   map[string]int64 `json:"steps"`
	Retries statusRetries    `json:"retries"`
}

type statusDatabase struct {
	ActiveConnections     int64     `json:"active_connections"`
	MaxConnections        int64     `json:"max_connections"`
	ConnectionUtilization jsonFloat `json:"connection_utilization"`
	// Role is "standby" on a hot standby, "primary" otherwise (absent when
	// the snapshot does not say). On a standby the connection figures are
	// the standby's own and the verdict leaves them out (Note says so).
	Role                  string     `json:"role,omitempty"`
	ReplicationLagSeconds *jsonFloat `json:"replication_lag_seconds,omitempty"`
	Note                  string     `json:"note,omitempty"`
}

// standbyNote is statusDatabase.Note on a hot standby.
const standbyNote = "connection figures are the standby's own sessions and max_connections, not those of the primary Tasker writes to; " +
	"they do not count in the verdict (docs/operations.md#read-replicas)"

type cacheInfo struct {
	Cached     bool       `json:"cached"`
	AgeSeconds *jsonFloat `json:"age_seconds,omitempty"`
	// TTLSeconds is how long the data counts as fresh: the refresh interval,
	// which is also the shared cache entry's TTL when replicas share counts.
	TTLSeconds  jsonFloat  `json:"ttl_seconds"`
	RefreshedAt *railsTime `json:"refreshed_at,omitempty"`
	// ReplicationLagSeconds is the part of AgeSeconds the data was behind
	// the primary when read on a hot standby (absent on a primary).
	ReplicationLagSeconds  *jsonFloat `json:"replication_lag_seconds,omitempty"`
	RefreshIntervalSeconds jsonFloat  `json:"refresh_interval_seconds"`
	Stale                  bool       `json:"stale"`
	LastAttemptAt          *railsTime `json:"last_attempt_at,omitempty"`
	ConsecutiveFailures    uint64     `json:"consecutive_failures"`
	LastError              string     `json:"last_error,omitempty"`
}

// status serves the last good snapshot and never queries the database, so
// a burst of requests costs nothing and a down database still gets an
// answer that says how old the numbers are.
//
// With auth on, the route needs credentials and shows the error text; with
// auth off, anyone can ask, and the errors shrink to what failed and its
// class, as in readiness (the refresher logs the text).
func (s *Server) status(c *gin.Context) {
	st := s.deps.Health.State()
	full := s.auth != nil
	now := s.now()
	limit := 2 * s.deps.RefreshInterval
	body := statusBody{
		Timestamp: railsTime(now),
		CacheInfo: cacheInfo{
			TTLSeconds:             seconds(s.deps.RefreshInterval),
			RefreshIntervalSeconds: seconds(s.deps.RefreshInterval),
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
		// The data's age includes the replication lag on a standby: counts
		// read on a standby that stopped replaying are as frozen as those of
		// a stuck refresher.
		age, lag := snap.Age(now), snap.Replication.Lag
		ageS, at, gen := seconds(age), railsTime(snap.TakenAt), seconds(snap.Duration)
		body.CacheInfo.Cached, body.CacheInfo.AgeSeconds, body.CacheInfo.RefreshedAt = true, &ageS, &at
		body.CacheInfo.Stale = body.CacheInfo.Stale || age > limit
		body.Cached, body.GenerationDuration = true, &gen

		healthy, util, _ := collector.VerdictOf(snap)
		body.Metrics = metricsFor(snap)
		body.Database = &statusDatabase{
			ActiveConnections:     snap.Counts.ActiveConnections,
			MaxConnections:        snap.Counts.MaxConnections,
			ConnectionUtilization: jsonFloat(util),
			Role:                  snap.Replication.Role(),
		}
		if snap.Replication.Standby {
			lagS := seconds(lag)
			body.CacheInfo.ReplicationLagSeconds, body.Database.ReplicationLagSeconds = &lagS, &lagS
			body.Database.Note = standbyNote
		}
		body.Healthy = healthy
		body.Status = VerdictHealthy
		if !healthy {
			body.Status = VerdictUnhealthy
		}
		if st.LastError == nil && age > limit {
			// The refresher is stuck rather than failing; frozen numbers must
			// not pass for current ones.
			body.Healthy, body.Status, body.ErrorClass = false, VerdictError, readiness.ClassStale
			body.Error = fmt.Sprintf("data is stale: last successful refresh %s ago, more than %s",
				age.Round(time.Millisecond), limit)
			if lag > 0 {
				body.Error = fmt.Sprintf("data is stale: %s old (refreshed %s ago, the standby %s behind its primary), more than %s",
					age.Round(time.Millisecond), (age - lag).Round(time.Millisecond), lag.Round(time.Millisecond), limit)
			}
		}
	}
	if st.LastError != nil {
		body.Healthy, body.Status = false, VerdictError
		body.Error, body.ErrorClass = failure(st.LastError, full), errorClass(st.LastError)
	} else if st.Last == nil {
		body.Healthy, body.Status = false, VerdictError
		body.Error, body.ErrorClass = "no data yet: first refresh pending", readiness.ClassPending
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

// metricsFor is the metrics member for snap's engine: Rails' fixed keys on
// the Rails engine (and on snapshots that name no engine), one key per
// state on tasker-core.
func metricsFor(snap *collector.Snapshot) any {
	if snap.Engine != engine.KindCore {
		return metricsOf(snap.Counts)
	}
	e := engine.Core()
	perState := func(states []string, counts map[string]int64, total int64) map[string]int64 {
		m := make(map[string]int64, len(states)+1)
		for _, st := range states {
			m[st] = counts[st]
		}
		m["total"] = total
		return m
	}
	h := snap.Counts
	return &coreStatusMetrics{
		Tasks: perState(e.TaskStates.All, snap.TaskStates(), h.TotalTasks),
		Steps: perState(e.StepStates.All, snap.StepStates(), h.TotalSteps),
		Retries: statusRetries{RetryableErrors: h.RetryableErrorSteps, ExhaustedRetries: h.ExhaustedRetrySteps,
			InBackoff: h.InBackoffSteps},
	}
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
