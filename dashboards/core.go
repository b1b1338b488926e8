package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// coreOps is what the sidecar adds for tasker-core operators
// (docs/tasker-core.md, package coreops): PGMQ queues, the dead-letter queue
// and stale tasks. These series exist only on a tasker-core database, so
// the dashboard is tasker-core's alone; every replica reads the same
// database, so the panels take the max over replicas.
func coreOps() board {
	return board{
		uid:   "tasker-core",
		title: "Tasker / tasker-core",
		description: "tasker-core only: PGMQ queue depth and message ages against the engine's thresholds, the " +
			"dead-letter queue by reason and resolution, and active tasks nearing or past their staleness threshold.",
		variables: []cog.Builder[dashboard.VariableModel]{jobVariable()},
		rows: []row{
			{"At a glance", []panel{
				quarter(deepestQueue()), quarter(oldestMessage()), quarter(pendingDeadLetters()), quarter(staleTasks()),
			}},
			{"Queues", []panel{
				third(queueDepth()), third(queueMessageAge()), third(queueSendRate()),
			}},
			{"Dead letters", []panel{
				third(deadLettersByReason()), third(deadLettersCreated()), third(deadLetterTable()),
			}},
			{"Staleness", []panel{
				half(staleTasksByState()), half(oldestTaskPerState()),
			}},
		},
	}
}

// onRails ends every panel description: the series come from tasker-core's
// tables and queues (coreops), so on a Rails engine's database the whole
// dashboard is empty, and that is no fault.
const onRails = "Empty on a Rails engine's database: tasker-core only."

// The engine's queue depth thresholds (queue_depth_thresholds in
// tasker-core's config/tasker/base/common.toml), as the alert rules use them.
const (
	queueWarning  = 1000
	queueCritical = 5000
)

func deepestQueue() cog.Builder[dashboard.Panel] {
	return singleStat("Deepest queue",
		"Messages in the deepest PGMQ queue. tasker-core warns at 1,000 and refuses new work (503) at 5,000. "+
			"Empty while no queue exists, and when the sidecar finds no pgmq.metrics_all() (tasker_sidecar_pgmq_found is 0): "+
			"set pgmq.database_url when the queues live in a database of their own. "+onRails, unitCount,
		promQuery(`max(tasker_pgmq_queue_length{job="$job"})`, "messages")).
		Thresholds(thresholds(step(queueWarning, "orange"), step(queueCritical, "red"))).
		ColorScheme(byThresholds())
}

func oldestMessage() cog.Builder[dashboard.Panel] {
	return singleStat("Oldest waiting message",
		"Age of the oldest message in any PGMQ queue (0 when every queue is empty): how long the slowest consumer is behind. "+
			"Empty while no queue exists or PGMQ is not found. "+onRails,
		unitSeconds,
		promQuery(`max(tasker_pgmq_oldest_message_age_seconds{job="$job"})`, "age")).
		Thresholds(thresholds(step(60, "orange"), step(600, "red"))).
		ColorScheme(byThresholds())
}

func pendingDeadLetters() cog.Builder[dashboard.Panel] {
	return singleStat("Dead letters pending",
		"Dead-letter entries still waiting for investigation (resolution_status pending), every reason; 0 when "+
			"there are none (every reason and status is exported, zeros included). "+onRails, unitCount,
		promQuery(`max(sum by (instance) (tasker_dlq_entries{job="$job",resolution_status="pending"}))`, "pending")).
		Thresholds(thresholds(step(1, "orange"))).
		ColorScheme(byThresholds())
}

func staleTasks() cog.Builder[dashboard.Panel] {
	return singleStat("Stale tasks",
		"Active tasks past their staleness threshold, which the engine's staleness detector will move to the dead-letter "+
			"queue; 0 when none is (every monitored state is exported at both levels). "+onRails,
		unitCount,
		promQuery(`max(sum by (instance) (tasker_tasks_stale{job="$job",level="stale"}))`, "stale")).
		Thresholds(thresholds(step(1, "red"))).
		ColorScheme(byThresholds())
}

func queueDepth() cog.Builder[dashboard.Panel] {
	return timeSeries("Queue depth",
		"Messages in each PGMQ queue (pgmq.metrics_all() queue_length), with the engine's warning (1,000) and critical "+
			"(5,000) thresholds. worker_<namespace>_queue: that namespace's workers are behind; orchestration_*: the orchestrator. "+
			"Empty while no queue exists or PGMQ is not found. "+onRails,
		unitCount,
		promQuery(`max by (queue) (tasker_pgmq_queue_length{job="$job"})`, "{{queue}}")).
		Thresholds(thresholds(step(queueWarning, "orange"), step(queueCritical, "red"))).
		ThresholdsStyle(lineThresholds())
}

func queueMessageAge() cog.Builder[dashboard.Panel] {
	return timeSeries("Oldest message per queue",
		"Age of the oldest message in each PGMQ queue; 0 when the queue is empty. A rising age with a flat depth means "+
			"nothing consumes the queue. Empty while no queue exists or PGMQ is not found. "+onRails, unitSeconds,
		promQuery(`max by (queue) (tasker_pgmq_oldest_message_age_seconds{job="$job"})`, "{{queue}}"))
}

func queueSendRate() cog.Builder[dashboard.Panel] {
	return timeSeries("Messages sent per second",
		"Messages sent to each PGMQ queue, from its msg_id sequence (pgmq.metrics_all() total_messages). Empty while "+
			"no queue exists or PGMQ is not found. "+onRails, unitPerSecond,
		promQuery(`max by (queue) (rate(tasker_pgmq_messages_total{job="$job"}[$__rate_interval]))`, "{{queue}}"))
}

func deadLettersByReason() cog.Builder[dashboard.Panel] {
	return stackedSeries("Dead letters pending by reason",
		"Dead-letter entries still pending, by the reason the engine gave (staleness_timeout, max_retries_exceeded, "+
			"dependency_cycle_detected, worker_unavailable, manual_dlq); 0 for a reason with none. "+onRails, unitCount,
		promQuery(`max by (reason) (tasker_dlq_entries{job="$job",resolution_status="pending"})`, "{{reason}}"))
}

func deadLettersCreated() cog.Builder[dashboard.Panel] {
	return timeSeries("Dead letters created",
		"Entries that appeared in tasks_dlq, per reason, within each of Grafana's rate intervals "+
			"(tasker_dlq_entries_created_total: zero for "+
			"every reason from the sidecar's first read). "+onRails, unitCount,
		promQuery(`max by (reason) (increase(tasker_dlq_entries_created_total{job="$job"}[$__rate_interval]))`, "{{reason}}"))
}

func deadLetterTable() cog.Builder[dashboard.Panel] {
	return tablePanel("Dead letters by reason and resolution",
		"Every dead-letter entry by reason and resolution status, as tasker-core's v_dlq_dashboard counts them; every "+
			"pair is listed, zeros included. "+onRails,
		instantQuery(`max by (reason, resolution_status) (tasker_dlq_entries{job="$job"})`))
}

func staleTasksByState() cog.Builder[dashboard.Panel] {
	return timeSeries("Tasks nearing or past their staleness threshold",
		"Active tasks per state at 80 % of their threshold (warning) or past it (stale), as v_task_staleness_monitoring "+
			"judges them: 30 min in steps_in_process, 60 in waiting_for_dependencies, 30 in waiting_for_retry, unless the "+
			"template's configuration.lifecycle says otherwise; 0 for a state and level with none. "+onRails, unitCount,
		promQuery(`max by (state, level) (tasker_tasks_stale{job="$job"})`, "{{state}} {{level}}"))
}

func oldestTaskPerState() cog.Builder[dashboard.Panel] {
	return timeSeries("Oldest task per active state",
		"How long the incomplete task longest in each non-terminal state has been there; 0 when no task is in it. "+onRails,
		unitSeconds,
		promQuery(`max by (state) (tasker_tasks_oldest_age_seconds{job="$job"})`, "{{state}}"))
}
