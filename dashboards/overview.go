package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Every replica of a sidecar deployment reports the same Tasker numbers, read
// from the same database, so the domain panels take the max over replicas
// (a sum would multiply them) and the per-replica panels keep the instance.

// Tasker's verdict clauses (status_checker.rb), as fractions. Tasker's test
// is strict (unhealthy above the limit), so healthy is <=.
const (
	taskErrorShare = `max(tasker_tasks{job="$job",state="error"}) / clamp_min(max(sum by (instance) (tasker_tasks{job="$job"})), 1)`
	stepErrorShare = `max(tasker_steps{job="$job",state="error"}) / clamp_min(max(sum by (instance) (tasker_steps{job="$job"})), 1)`
	connectionUse  = `max(tasker_database_connections_active{job="$job"}) / max(tasker_database_connections_max{job="$job"} > 0)`
)

func overview() board {
	return board{
		uid:   "tasker-overview",
		title: "Tasker / Overview",
		description: "Is Tasker healthy: its own verdict, tasks and steps by state, error shares, throughput and " +
			"error rates from the transition stream, and whether each sidecar replica reaches the database and the cache store.",
		variables: []cog.Builder[dashboard.VariableModel]{jobVariable()},
		rows: []row{
			{"Health", []panel{
				quarter(verdict()), quarter(taskErrorShareStat()), quarter(stepErrorShareStat()), quarter(connectionUseStat()),
				quarter(dataAge()), quarter(sidecarsUp()), quarter(tasksInError()), quarter(exhaustedSteps()),
				quarter(tasksFinishedStat()), quarter(taskErrorRateStat()), quarter(stepFailureRateStat()), quarter(streamState()),
			}},
			{"Dependencies", []panel{full(dependencyReadiness())}},
			{"Tasks and steps", []panel{
				third(openTasksByState()), third(openStepsByState()), third(errorStepsByRetryClass()),
			}},
			{"Throughput and errors", []panel{
				third(taskFlow()), third(stepFlow()), third(errorRates()),
				third(errorShares()), third(databaseConnections()), third(finishedTasksByState()),
			}},
		},
	}
}

func verdict() cog.Builder[dashboard.Panel] {
	return singleStat("Tasker verdict",
		"Tasker's /health/status verdict recomputed from the metrics: unhealthy when more than 50% of tasks "+
			"or of steps are in error, or more than 90% of max_connections are active.", unitCount,
		promQuery(`(`+taskErrorShare+` <= bool 0.5)
* (`+stepErrorShare+` <= bool 0.5)
* ((`+connectionUse+` <= bool 0.9) or vector(1))`, "verdict")).
		Mappings(mapping("unhealthy", "red", "healthy", "green")).
		ColorMode(common.BigValueColorModeBackground).
		NoValue("no data: is the sidecar refreshing?")
}

func taskErrorShareStat() cog.Builder[dashboard.Panel] {
	return singleStat("Task error share",
		"Share of all tasks whose current state is error; Tasker turns unhealthy above 50%.", unitRatio,
		promQuery(taskErrorShare, "tasks")).
		Thresholds(thresholds(step(0.25, "orange"), step(0.5, "red"))).
		ColorScheme(byThresholds())
}

func stepErrorShareStat() cog.Builder[dashboard.Panel] {
	return singleStat("Step error share",
		"Share of all workflow steps whose current state is error; Tasker turns unhealthy above 50%.", unitRatio,
		promQuery(stepErrorShare, "steps")).
		Thresholds(thresholds(step(0.25, "orange"), step(0.5, "red"))).
		ColorScheme(byThresholds())
}

func connectionUseStat() cog.Builder[dashboard.Panel] {
	return singleStat("Database connections in use",
		"Active sessions on the Tasker database over PostgreSQL's max_connections; Tasker turns unhealthy above 90%. "+
			"Empty when max_connections is unknown.", unitRatio,
		promQuery(connectionUse, "active / max")).
		Thresholds(thresholds(step(0.75, "orange"), step(0.9, "red"))).
		ColorScheme(byThresholds())
}

func dataAge() cog.Builder[dashboard.Panel] {
	return singleStat("Age of the data",
		"Age of the oldest data a replica serves. Past metrics.max_staleness (default 10 min) the Tasker series "+
			"are withdrawn and the panels above go empty.", unitSeconds,
		promQuery(`max(tasker_sidecar_refresh_age_seconds{job="$job"})`, "age")).
		Thresholds(thresholds(step(60, "orange"), step(600, "red"))).
		ColorScheme(byThresholds())
}

func sidecarsUp() cog.Builder[dashboard.Panel] {
	return singleStat("Sidecars scraped",
		"Replicas Prometheus scrapes successfully.", unitCount,
		promQuery(`sum(up{job="$job"})`, "up"))
}

func tasksInError() cog.Builder[dashboard.Panel] {
	return singleStat("Tasks in error",
		"Tasks whose current state is error.", unitCount,
		promQuery(`max(tasker_tasks{job="$job",state="error"})`, "error"))
}

func exhaustedSteps() cog.Builder[dashboard.Panel] {
	return singleStat("Steps out of retries",
		"Steps in error with attempts >= their limit (retry_limit on Rails, max_attempts on tasker-core): they will "+
			"not be retried without an operator.", unitCount,
		promQuery(`max(tasker_error_steps{job="$job",retry_class="exhausted"})`, "exhausted"))
}

// dependencyReadiness shows the readiness checks as the kubelet sees them,
// evaluated at scrape time (tasker_sidecar_readiness_check).
func dependencyReadiness() cog.Builder[dashboard.Panel] {
	return stateTimeline("Dependency readiness per replica",
		"Each readiness check of /tasker/health/ready, evaluated at every scrape: database (connection and Tasker "+
			"tables), refresh (the health counts are fresh), cache (the store answers; degraded while it coordinates "+
			"local_only). A replica is ready while none is unhealthy.",
		promQuery(checkLevel(`job="$job"`), "{{instance}} {{check}}")).
		Mappings(checkStates())
}

func openTasksByState() cog.Builder[dashboard.Panel] {
	return stackedSeries("Open tasks by state",
		"Tasks not finished, by current state (error included: it can be retried); new = no transition yet. "+
			"Rails has pending and in_progress; tasker-core its running and waiting states.", unitCount,
		promQuery(`max by (state) (tasker_tasks{job="$job",state!~"`+closedStates+`"})`, "{{state}}"))
}

func openStepsByState() cog.Builder[dashboard.Panel] {
	return stackedSeries("Open steps by state",
		"Workflow steps not finished, by current state (error included); new = no transition yet. tasker-core "+
			"adds enqueued, the orchestration hand-offs and waiting_for_retry.", unitCount,
		promQuery(`max by (state) (tasker_steps{job="$job",state!~"`+closedStates+`"})`, "{{state}}"))
}

func errorStepsByRetryClass() cog.Builder[dashboard.Panel] {
	return timeSeries("Steps in error by retry class",
		"Rails: retryable (error, attempts < retry_limit), exhausted (attempts >= retry_limit), in_backoff "+
			"(retryable and attempted at least once; a subset of retryable, not additive). tasker-core: retryable = "+
			"in_backoff = steps in waiting_for_retry, exhausted = error with attempts >= max_attempts.", unitCount,
		promQuery(`max by (retry_class) (tasker_error_steps{job="$job"})`, "{{retry_class}}"))
}

// The flows count transition rows (each once, when the stream reads it) and
// new task rows.
func taskFlow() cog.Builder[dashboard.Panel] {
	return timeSeries("Task flow",
		"Tasks created per second, and task runs reaching each final state per second (error included: a task "+
			"retried after an error can end again).", unitTasksPerS,
		promQuery(rateOf("tasker_sidecar_stream_rows_total", `job="$job",table=~"`+taskTables+`"`), "created"),
		promQuery(orZeroByState(rateOf("tasker_task_transitions_total", `job="$job",to_state=~"`+finalTaskStates+`"`, "to_state"),
			"to_state", "tasker_tasks", finalTaskStates, `job="$job"`), "{{to_state}}"))
}

func stepFlow() cog.Builder[dashboard.Panel] {
	return timeSeries("Step flow",
		"Step attempts started (in_progress), completed and failed (error; on tasker-core also waiting_for_retry, "+
			"a retryable failure) per second, and failed steps sent back for another attempt (retried).", unitStepsPerS,
		promQuery(orZeroByState(rateOf("tasker_step_transitions_total", `job="$job",to_state=~"in_progress|complete|`+failedAttemptStates+`"`, "to_state"),
			"to_state", "tasker_steps", "in_progress|complete|"+failedAttemptStates, `job="$job"`), "{{to_state}}"),
		promQuery(orZero(rateOf("tasker_step_retries_total", `job="$job"`), `job="$job"`), "retried"))
}

func errorRates() cog.Builder[dashboard.Panel] {
	return timeSeries("Error rates",
		"Share of task runs ending in error among those ending in complete or error, and of step attempts failing "+
			"among those that ended, over the window: what fails now, unlike the error shares (current states). "+
			"0 while none ends and the transition stream reads (nothing failed); empty while no replica's stream has "+
			"read successfully.", unitRatio,
		promQuery(failedShare(taskFailureRatio(`job="$job"`), `job="$job"`), "task runs"),
		promQuery(failedShare(stepFailureRatio(`job="$job"`), `job="$job"`), "step attempts")).
		Max(1)
}

func tasksFinishedStat() cog.Builder[dashboard.Panel] {
	return singleStat("Tasks finished",
		"Task runs reaching a final state per second (complete, error, cancelled, resolved_manually).", unitTasksPerS,
		promQuery(orZero(rateOf("tasker_task_transitions_total", `job="$job",to_state=~"`+finalTaskStates+`"`), `job="$job"`), "finished"))
}

func taskErrorRateStat() cog.Builder[dashboard.Panel] {
	return singleStat("Task error rate",
		"Share of the task runs ending now that end in error (among complete and error); "+
			"TaskerTaskErrorRateHigh fires per named task above 10% over 15 minutes. 0 while no task run ends and the "+
			"transition stream reads (nothing failed); no data (\"not read\") while no replica's stream has read successfully.", unitRatio,
		promQuery(failedShare(taskFailureRatio(`job="$job"`), `job="$job"`), "error rate")).
		Thresholds(thresholds(step(0.1, "orange"), step(0.25, "red"))).
		ColorScheme(byThresholds()).
		NoValue("not read")
}

func stepFailureRateStat() cog.Builder[dashboard.Panel] {
	return singleStat("Step attempts failing",
		"Share of the step attempts ending now that fail; retryable failures are retried after a backoff. 0 while no "+
			"step attempt ends and the transition stream reads (nothing failed); no data (\"not read\") while no "+
			"replica's stream has read successfully.", unitRatio,
		promQuery(failedShare(stepFailureRatio(`job="$job"`), `job="$job"`), "failing")).
		Thresholds(thresholds(step(0.1, "orange"), step(0.25, "red"))).
		ColorScheme(byThresholds()).
		NoValue("not read")
}

// taskFailureRatio is the share of task runs ending in complete or error
// that end in error.
func taskFailureRatio(selector string, by ...string) string {
	return ratioOf("tasker_task_transitions_total", selector+`,to_state="error"`, selector+`,to_state=~"complete|error"`, by...)
}

// stepFailureRatio is the share of step attempts ending that fail: on
// Rails in error, on tasker-core in error or waiting_for_retry.
func stepFailureRatio(selector string, by ...string) string {
	return ratioOf("tasker_step_transitions_total", selector+`,to_state=~"`+failedAttemptStates+`"`,
		selector+`,to_state=~"complete|`+failedAttemptStates+`"`, by...)
}

// streamState says whether the counters and the health counts are current:
// every replica's transition stream has read everything committed.
func streamState() cog.Builder[dashboard.Panel] {
	return singleStat("Transition stream",
		"Whether every replica's transition stream has read every committed transition; the throughput and error "+
			"rates lag while it catches up. Details on Tasker / Sidecar.", unitCount,
		promQuery(`min(tasker_sidecar_stream_caught_up{job="$job"})`, "caught up")).
		Mappings(mapping("catching up", "orange", "caught up", "green")).
		ColorMode(common.BigValueColorModeBackground).
		NoValue("stream disabled")
}

func errorShares() cog.Builder[dashboard.Panel] {
	return timeSeries("Error shares",
		"Shares of tasks and steps in error, Tasker's health inputs; the line at 50% is its limit.", unitRatio,
		promQuery(taskErrorShare, "tasks"),
		promQuery(stepErrorShare, "steps")).
		Max(1).
		Thresholds(thresholds(step(0.5, "red"))).
		ThresholdsStyle(lineThresholds())
}

func databaseConnections() cog.Builder[dashboard.Panel] {
	return timeSeries("Tasker database connections",
		"Sessions with state = active in pg_stat_activity (the sidecar's own query included) against max_connections.", unitCount,
		promQuery(`max(tasker_database_connections_active{job="$job"})`, "active"),
		promQuery(`max(tasker_database_connections_max{job="$job"})`, "max_connections"))
}

func finishedTasksByState() cog.Builder[dashboard.Panel] {
	return timeSeries("Finished tasks by state",
		"Tasks in a final state; these grow with the history kept in the database.", unitCount,
		promQuery(`max by (state) (tasker_tasks{job="$job",state=~"`+closedStates+`"})`, "{{state}}"))
}
