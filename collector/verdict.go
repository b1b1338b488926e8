package collector

import "github.com/tasker-systems/tasker-sidecar/internal/rubyjson"

// Verdict applies Tasker's StatusChecker rules to the health counts:
// unhealthy above 90% connection utilization, or when more than half of the
// tasks or of the steps are in error. It lives next to the counts it
// judges; /tasker/health/status (package api) shows it. The
// comparisons are strict and use the unrounded percentages, as Tasker does;
// utilization is rounded to two places for display.
//
// On tasker-core the same columns hold the core states of the same names
// (queryCounts tallies groups by state name): ErrorTasks and ErrorSteps
// count the state error, which on core means failed for good (exhausted or
// not retryable), so the rule keeps Rails' meaning for tasks; for steps it
// is stricter than on Rails, whose error also holds steps with retries
// left: core's waiting_for_retry, blocked_by_failures and the
// enqueued_as_error_for_orchestration hand-off count in the totals only.
func Verdict(c HealthCounts) (healthy bool, utilization float64) {
	healthy = true
	if c.MaxConnections > 0 {
		pct := float64(c.ActiveConnections) / float64(c.MaxConnections) * 100
		utilization = rubyjson.Round(pct, 2)
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

// VerdictOf is Verdict for a snapshot: on a hot standby the connection
// figures are the standby's own sessions and max_connections, which say
// nothing of the primary Tasker writes to, so the utilization rule is left
// out there (judged reports false); the state rules hold, since the
// standby's rows are the primary's. docs/operations.md#read-replicas says
// what to watch instead.
func VerdictOf(s *Snapshot) (healthy bool, utilization float64, judged bool) {
	c := s.Counts
	if s.Replication.Standby {
		_, utilization = Verdict(c)
		c.ActiveConnections, c.MaxConnections = 0, 0
		healthy, _ = Verdict(c)
		return healthy, utilization, false
	}
	healthy, utilization = Verdict(c)
	return healthy, utilization, true
}
