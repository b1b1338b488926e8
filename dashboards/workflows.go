package dashboards

import (
	"net/url"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// The per-task families are capped (metrics.max_label_groups); the pairs
// beyond the cap appear as namespace="other", task="other".
const byName = `job="$job",namespace=~"$namespace",task=~"$task"`

func workflows() board {
	return board{
		uid:   "tasker-workflows",
		title: "Tasker / Workflows",
		description: "Per namespace and named task: tasks and steps by state, throughput and error rates from the " +
			"transition stream, task and step durations with links to their traces, where steps pile up, retries " +
			"and backoff, and the analytics window.",
		variables: []cog.Builder[dashboard.VariableModel]{
			jobVariable(),
			multiVariable("namespace", "namespace", `tasker_tasks_by_name{job="$job"}`),
			multiVariable("task", "task", `tasker_tasks_by_name{job="$job",namespace=~"$namespace"}`),
		},
		links: []cog.Builder[dashboard.DashboardLink]{jaegerLink()},
		rows: []row{
			{"Named tasks", []panel{
				full(tasksByNameTable()),
				half(openTasksByName()), half(taskErrorShareByName()),
			}},
			{"Throughput", []panel{
				third(tasksFinishedByName()), third(taskOutcomes()), third(taskErrorRateByName()),
				half(stepAttemptsByName()), half(stepTransitionsByState()),
			}},
			{"Task duration", []panel{
				third(taskDuration("0.5", "p50")), third(taskDuration("0.95", "p95")), third(taskDuration("0.99", "p99")),
			}},
			{"Step duration", []panel{
				third(stepDuration("0.5", "p50")), third(stepDuration("0.95", "p95")), third(stepDuration("0.99", "p99")),
			}},
			{"Duration by outcome", []panel{
				half(taskDurationByOutcome()), half(stepDurationByOutcome()),
			}},
			{"Bottlenecks", []panel{
				third(stepsInProgressByName()), third(stepsWaitingByName()), third(stepsInErrorByName()),
			}},
			{"Retries and backoff", []panel{
				third(retryClasses()), third(exhaustedGrowth()), third(backoffShare()),
				third(retriesByName()), third(backoffTime()), third(longestWaiting()),
			}},
			{"Analytics window", []panel{
				full(analyticsTable()),
				third(stepReadiness()), third(stepsReadyByName()), third(stepsBlockedByName()),
			}},
		},
	}
}

// jaegerLink opens Jaeger's trace search in Explore. Histogram panels carry
// exemplars, which the provisioned Prometheus data source links to the
// trace itself.
func jaegerLink() cog.Builder[dashboard.DashboardLink] {
	panes := `{"traces":{"datasource":"` + JaegerUID + `","queries":[{"refId":"A","datasource":{"type":"jaeger","uid":"` +
		JaegerUID + `"},"queryType":"search"}],"range":{"from":"now-1h","to":"now"}}}`
	return dashboard.NewDashboardLinkBuilder("Traces in Jaeger").
		Type(dashboard.DashboardLinkTypeLink).
		Icon("external link").
		Url("/explore?schemaVersion=1&panes=" + url.QueryEscape(panes)).
		TargetBlank(true)
}

func tasksByNameTable() cog.Builder[dashboard.Panel] {
	return tablePanel("Tasks per named task and state",
		"Current count of tasks per (namespace, task, state); only non-zero combinations are exported. "+
			"namespace=\"other\" sums the pairs beyond the cardinality cap. Empty while the database has no task of the selected names.",
		instantQuery(`max by (namespace, task, state) (tasker_tasks_by_name{`+byName+`})`)).
		SortBy([]cog.Builder[common.TableSortByFieldState]{
			common.NewTableSortByFieldStateBuilder().DisplayName("Value").Desc(true),
		})
}

func openTasksByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Open tasks per named task",
		"Tasks not yet finished per named task: every state but complete, error, cancelled and resolved_manually "+
			"(new, pending, in_progress on Rails; pending and the running and waiting states on tasker-core). "+
			"Empty while the database has no task of the selected names.", unitCount,
		promQuery(`max by (namespace, task) (sum by (instance, namespace, task) (tasker_tasks_by_name{`+byName+`,state!~"`+finalTaskStates+`"}))`,
			"{{namespace}}/{{task}}"))
}

func taskErrorShareByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Error share per named task",
		"Share of each named task's tasks whose current state is error: 0 for a named task with none in error "+
			"(only non-zero counts are exported, so the zero comes from its other states); empty while the database "+
			"has no task of the selected names.", unitRatio,
		promQuery(`max by (namespace, task) (tasker_tasks_by_name{`+byName+`,state="error"})
/ max by (namespace, task) (sum by (instance, namespace, task) (tasker_tasks_by_name{`+byName+`}))
or on (namespace, task) 0 * max by (namespace, task) (tasker_tasks_by_name{`+byName+`})`,
			"{{namespace}}/{{task}}")).
		Max(1)
}

func stepsInProgressByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Steps in progress (top 10 tasks)",
		"Named tasks with the most steps being worked on: in_progress; on tasker-core also enqueued for a worker and "+
			"results waiting for orchestration. Where the workers' time goes. Empty while the database has no task of the selected names.", unitCount,
		promQuery(`topk(10, max by (namespace, task) (sum by (instance, namespace, task) (tasker_steps_by_name{`+byName+`,state=~"`+runningStepStates+`"})))`,
			"{{namespace}}/{{task}}"))
}

func stepsWaitingByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Steps waiting (top 10 tasks)",
		"Named tasks with the most steps not started (new or pending): a growing line is a backlog. Empty while the database has no task of the selected names.", unitCount,
		promQuery(`topk(10, max by (namespace, task) (sum by (instance, namespace, task) (tasker_steps_by_name{`+byName+`,state=~"new|pending"})))`,
			"{{namespace}}/{{task}}"))
}

func stepsInErrorByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Steps in error (top 10 tasks)",
		"Named tasks with the most steps whose current state is error (on tasker-core only failures that will not be "+
			"retried; retryable ones wait in waiting_for_retry). Empty while the database has no task of the selected names.", unitCount,
		promQuery(`topk(10, max by (namespace, task) (tasker_steps_by_name{`+byName+`,state="error"}))`,
			"{{namespace}}/{{task}}"))
}

func retryClasses() cog.Builder[dashboard.Panel] {
	return timeSeries("Steps in error by retry class",
		"Steps in error of the selected tasks by retry class: retryable (a retry left), exhausted (none left: needs "+
			"an operator); in_backoff is the subset of retryable already attempted. On tasker-core retryable and "+
			"in_backoff are both the steps in waiting_for_retry.", unitCount,
		promQuery(`max by (retry_class) (sum by (instance, retry_class) (tasker_error_steps_by_name{`+byName+`}))
or on (retry_class) 0 * max by (retry_class) (tasker_error_steps{job="$job"})`, "{{retry_class}}"))
}

func longestWaiting() cog.Builder[dashboard.Panel] {
	return timeSeries("Longest-waiting steps",
		"How long the oldest step in each running state (in_progress; on tasker-core also enqueued and the "+
			"orchestration hand-offs) and the one longest waiting for a retry (error on Rails, waiting_for_retry on "+
			"tasker-core) have waited (all namespaces). A line that only climbs is a stuck step: TaskerStepsStuckInProgress and "+
			"TaskerStepsStuckInBackoff fire past 30 min; docs/alerts.md has the query that finds it.", unitSeconds,
		promQuery(`max by (state) (tasker_steps_oldest_age_seconds{job="$job"})`, "{{state}}")).
		Thresholds(thresholds(step(1800, "red"))).
		ThresholdsStyle(lineThresholds())
}

func exhaustedGrowth() cog.Builder[dashboard.Panel] {
	return timeSeries("Steps running out of retries",
		"Net change per minute of steps in error with no retries left, per named task (top 10); above zero, steps "+
			"are newly exhausted and need an operator. 0 for a named task with no exhausted step (only non-zero counts are "+
			"exported, so the zero comes from its tasks); empty while the database has no task of the selected names.", "suffix: steps/min",
		promQuery(`topk(10, 60 * max by (namespace, task) (deriv(tasker_error_steps_by_name{`+byName+`,retry_class="exhausted"}[$__rate_interval]))
or on (namespace, task) 0 * max by (namespace, task) (tasker_tasks_by_name{`+byName+`}))`,
			"{{namespace}}/{{task}}"))
}

func backoffShare() cog.Builder[dashboard.Panel] {
	return timeSeries("Retryable steps already attempted (Rails)",
		"Share of retryable steps in error that were attempted at least once (Tasker's in_backoff); "+
			"near 100% with a flat count means retries are not being picked up (all namespaces). Rails only: on "+
			"tasker-core both classes are the steps in waiting_for_retry, so it is 100% whenever one waits. 0 while "+
			"no retryable step is in error (none waits); empty until the replicas have counted the steps.", unitRatio,
		promQuery(`max(tasker_error_steps{job="$job",retry_class="in_backoff"}) / max(tasker_error_steps{job="$job",retry_class="retryable"} > 0)
or on () 0 * max(tasker_error_steps{job="$job",retry_class="retryable"} == 0)`,
			"in_backoff / retryable")).
		Max(1)
}

// Throughput, from the transition counters: each transition row is counted
// once, when the stream reads it.

func tasksFinishedByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Tasks finished per named task",
		"Task runs reaching a final state (complete, error, cancelled, resolved_manually) per second, per named task. "+
			"A task retried after an error finishes again. Zero for a named task with tasks in the database that none "+
			"finished; empty while the database has no task of the selected names.", unitTasksPerS,
		promQuery(orZeroByName(rateOf("tasker_task_transitions_total", byName+`,to_state=~"`+finalTaskStates+`"`, "namespace", "task"),
			byName, `job="$job"`), "{{namespace}}/{{task}}"))
}

func taskOutcomes() cog.Builder[dashboard.Panel] {
	return stackedSeries("Task outcomes",
		"Task runs per second by the final state they reached, over the selected named tasks.", unitTasksPerS,
		promQuery(orZeroByState(rateOf("tasker_task_transitions_total", byName+`,to_state=~"`+finalTaskStates+`"`, "to_state"),
			"to_state", "tasker_tasks", finalTaskStates, `job="$job"`), "{{to_state}}"))
}

func taskErrorRateByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Task error rate per named task",
		"Share of the task runs that ended in error among those that ended in complete or error, over the window. "+
			"Unlike the error share (current states), this is what is failing now. 0 for a named task with tasks in the "+
			"database none of whose runs ended (nothing failed); empty while the database has no task of the selected names.", unitRatio,
		promQuery(failedShareByName(taskFailureRatio(byName, "namespace", "task"), byName, `job="$job"`),
			"{{namespace}}/{{task}}")).
		Max(1)
}

func stepAttemptsByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Step attempts per named task (top 10)",
		"Step attempts started (transitions to in_progress) per second: the work each named task gives the workers. "+
			"Zero for named tasks nothing moved; empty while the database has no task of the selected names.", unitStepsPerS,
		promQuery("topk(10, "+orZeroByName(rateOf("tasker_step_transitions_total", byName+`,to_state="in_progress"`, "namespace", "task"),
			byName, `job="$job"`)+")", "{{namespace}}/{{task}}"))
}

func stepTransitionsByState() cog.Builder[dashboard.Panel] {
	return stackedSeries("Step transitions by state entered",
		"Step transitions per second by the state entered, over the selected named tasks: attempts start (in_progress) "+
			"and end (complete, error, cancelled); error then pending is a retry on Rails, waiting_for_retry then pending "+
			"on tasker-core, which also shows enqueued and the orchestration hand-offs.", unitStepsPerS,
		promQuery(orZeroByState(rateOf("tasker_step_transitions_total", byName, "to_state"),
			"to_state", "tasker_steps", ".*", `job="$job"`), "{{to_state}}"))
}

// Durations, from the transition histograms. With tracing on, observations
// carry the trace_id of their task's trace as an exemplar, which the
// provisioned Prometheus data source links to Jaeger.

func taskDuration(q, name string) cog.Builder[dashboard.Panel] {
	return timeSeries("Task duration "+name+" (complete)",
		"Time from a task's creation (or its previous final transition, for a retried task) to complete, "+name+
			" per named task. Exemplars (dots) open the task's trace in Jaeger. Empty while no task of the selected names "+
			"completed in the window: a quantile of nothing has no value.", unitSeconds,
		withExemplars(quantile(q, "tasker_task_duration_seconds", byName+`,state="complete"`, "namespace", "task"),
			"{{namespace}}/{{task}}"))
}

func stepDuration(q, name string) cog.Builder[dashboard.Panel] {
	return timeSeries("Step attempt duration "+name+" (complete)",
		"Time one successful step attempt took (in_progress to complete), "+name+" per named task. "+
			"Exemplars open the trace of the step's task. Empty while no step attempt of the selected names completed in "+
			"the window.", unitSeconds,
		withExemplars(quantile(q, "tasker_step_duration_seconds", byName+`,state="complete"`, "namespace", "task"),
			"{{namespace}}/{{task}}"))
}

func taskDurationByOutcome() cog.Builder[dashboard.Panel] {
	return timeSeries("Task duration p95 by outcome",
		"95th percentile time to each final state over the selected named tasks: how long failing or cancelled runs "+
			"take compared with complete ones. Exemplars open the trace. Empty while no task run ended in the window.", unitSeconds,
		withExemplars(quantile("0.95", "tasker_task_duration_seconds", byName, "state"), "{{state}}"))
}

func stepDurationByOutcome() cog.Builder[dashboard.Panel] {
	return timeSeries("Step attempt duration p95 by outcome",
		"95th percentile duration of step attempts by how they ended (complete, error, cancelled; waiting_for_retry "+
			"on tasker-core), over the selected "+
			"named tasks; failed attempts taking as long as the handler's timeout point at a hanging dependency. Empty "+
			"while no step attempt ended in the window.", unitSeconds,
		withExemplars(quantile("0.95", "tasker_step_duration_seconds", byName, "state"), "{{state}}"))
}

func retriesByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Step retries per named task (top 10)",
		"Steps sent back for another attempt per second (Rails: error to pending or in_progress; tasker-core: "+
			"waiting_for_retry to pending). Zero for named tasks nothing retried; empty while the database has no task of "+
			"the selected names.", "suffix: retries/s",
		promQuery("topk(10, "+orZeroByName(rateOf("tasker_step_retries_total", byName, "namespace", "task"), byName, `job="$job"`)+")",
			"{{namespace}}/{{task}}"))
}

func backoffTime() cog.Builder[dashboard.Panel] {
	return timeSeries("Time between a failed attempt and the next",
		"Backoff actually observed, from a step's failed attempt to the start of its next attempt, over the selected "+
			"named tasks (Rails' own backoff is 1 s to 300 s, tasker-core's up to 60 s unless a handler asks for "+
			"more; beyond that the retries wait for workers). "+
			"Exemplars open the trace. Empty while no step started a new attempt after a failure in the window.", unitSeconds,
		withExemplars(quantile("0.5", "tasker_step_backoff_seconds", byName), "p50"),
		withExemplars(quantile("0.95", "tasker_step_backoff_seconds", byName), "p95"),
		withExemplars(quantile("0.99", "tasker_step_backoff_seconds", byName), "p99"))
}

// The analytics gauges (tasker_analytics_*) describe the tasks created in
// the analytics window (analytics.metrics_window, default 1 h), refreshed
// every analytics.metrics_interval.

func analyticsTable() cog.Builder[dashboard.Panel] {
	g := func(metric, extra string) query {
		return instantQuery(`max by (namespace, task) (` + metric + `{` + byName + extra + `})`)
	}
	// A count, or the error share, of an empty window is 0 once a refresh
	// says so: one row without a name. The complete share and the run
	// times of nothing have no value.
	zero := func(metric string) query {
		return instantQuery(orAnalyticsZero(`max by (namespace, task) (` + metric + `{` + byName + `})`))
	}
	columns := map[string]any{}
	for i, name := range []string{"created", "complete", "error", "complete share", "error share", "run time p50", "run time p95", "run time p99"} {
		columns["Value #"+string(rune('A'+i))] = name
	}
	return tablePanel("Tasks created in the analytics window",
		"Per named task, the tasks created within the analytics window (analytics.metrics_window, default 1 h): how many, "+
			"how many are now complete or in error, and the run time (creation to complete) of the complete ones. "+
			"While no task of the selected names was created in the window, one row without a name reads 0 created, "+
			"complete and in error, and an error share of 0; its complete share and run times are empty (a share or "+
			"quantile of nothing has no value). Empty until the first successful analytics refresh, and on tasker-core "+
			"(the analytics read the Rails engine's tables).",
		zero("tasker_analytics_tasks_created"),
		zero("tasker_analytics_tasks_completed"),
		zero("tasker_analytics_tasks_failed"),
		g("tasker_analytics_task_completion_ratio", ""),
		zero("tasker_analytics_task_error_ratio"),
		g("tasker_analytics_task_duration_seconds", `,percentile="p50"`),
		g("tasker_analytics_task_duration_seconds", `,percentile="p95"`),
		g("tasker_analytics_task_duration_seconds", `,percentile="p99"`)).
		WithTransformation(dashboard.DataTransformerConfig{Id: "merge", Options: map[string]any{}}).
		WithTransformation(dashboard.DataTransformerConfig{
			Id:      "organize",
			Options: map[string]any{"renameByName": columns},
		}).
		SortBy([]cog.Builder[common.TableSortByFieldState]{
			common.NewTableSortByFieldStateBuilder().DisplayName("created").Desc(true),
		}).
		WithOverride(byNames("complete share", "error share"), []dashboard.DynamicConfigValue{{Id: "unit", Value: unitRatio}}).
		WithOverride(byNames("run time p50", "run time p95", "run time p99"), []dashboard.DynamicConfigValue{{Id: "unit", Value: unitSeconds}})
}

// byNames matches the table columns with these names.
func byNames(names ...string) dashboard.MatcherConfig {
	return dashboard.MatcherConfig{Id: "byNames", Options: map[string]any{"mode": "include", "names": names}}
}

func stepReadiness() cog.Builder[dashboard.Panel] {
	return timeSeries("Steps of active tasks: ready, blocked, in backoff",
		"Unprocessed steps of active tasks over the selected named tasks: ready to run under Tasker's readiness rules "+
			"(waiting for a worker), blocked on a parent, or waiting out a backoff (by time, unlike the retry classes). "+
			"Zero when no active task has such steps; empty on tasker-core (the analytics read the Rails engine's tables).", unitCount,
		promQuery(orAnalyticsZero(`sum(max by (namespace, task) (tasker_analytics_steps_ready{`+byName+`}))`), "ready"),
		promQuery(orAnalyticsZero(`sum(max by (namespace, task) (tasker_analytics_steps_blocked{`+byName+`}))`), "blocked"),
		promQuery(orAnalyticsZero(`sum(max by (namespace, task) (tasker_analytics_steps_in_backoff{`+byName+`}))`), "in backoff"))
}

func stepsReadyByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Steps ready (top 10 tasks)",
		"Named tasks with the most steps ready to run: a growing line means the workers do not keep up. Empty while "+
			"no active task has a ready step, and on tasker-core.", unitCount,
		promQuery(`topk(10, max by (namespace, task) (tasker_analytics_steps_ready{`+byName+`}))`, "{{namespace}}/{{task}}"))
}

func stepsBlockedByName() cog.Builder[dashboard.Panel] {
	return timeSeries("Steps blocked (top 10 tasks)",
		"Named tasks with the most pending steps whose parents are not all complete or resolved: "+
			"slow or failed parents hold them. Empty while no active task has a blocked step, and on tasker-core.", unitCount,
		promQuery(`topk(10, max by (namespace, task) (tasker_analytics_steps_blocked{`+byName+`}))`, "{{namespace}}/{{task}}"))
}

// orAnalyticsZero gives expr, a sum without grouping over the analytics
// gauges (exported per named task with steps to count), the value 0 while
// it has no series and the last analytics refresh succeeded: then there is
// nothing to count, where without a refresh the value is unknown.
func orAnalyticsZero(expr string) string {
	return expr + "\nor on () 0 * max(tasker_sidecar_analytics_last_refresh_timestamp_seconds{job=\"$job\"} > 0)"
}
