package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Every sidecar panel is per replica.
const replica = `job="$job",instance=~"$instance"`

func sidecar() board {
	return board{
		uid:   "tasker-sidecar",
		title: "Tasker / Sidecar",
		description: "The sidecar itself, per replica: the background refresh, the transition stream, trace export, " +
			"the analytics refresh, its database pool, its HTTP endpoints and the process.",
		variables: []cog.Builder[dashboard.VariableModel]{jobVariable(), instanceVariable()},
		links:     []cog.Builder[dashboard.DashboardLink]{jaegerLink()},
		rows: []row{
			{"Readiness and refresh", []panel{
				half(readinessChecks()), half(readinessDuration()),
				half(refreshDuration()), half(refreshErrors()),
				half(refreshAge()), half(refreshSuccess()),
				half(replicationLag()), half(readsFrom()),
			}},
			{"Transition stream", []panel{
				half(streamCaughtUp()), half(streamLeader()),
				third(streamPollAge()), third(streamRows()), third(streamPollDuration()),
				third(streamErrors()), third(streamLateRows()), third(streamGaps()),
				third(streamDrift()), third(streamRecounts()), third(streamRecountFailures()),
				half(streamWatermark()), half(streamCheckpoints()),
			}},
			{"Trace export", []panel{
				third(traceRuns()), third(traceSpans()), third(traceErrors()),
				half(traceExportDuration()), half(tracePending()),
			}},
			{"Analytics refresh", []panel{
				third(analyticsAge()), third(analyticsRefreshDuration()), third(analyticsRefreshErrors()),
			}},
			{"Database pool", []panel{
				half(poolConnections()), half(poolAcquires()),
				half(poolWaiting()), half(poolChurn()),
			}},
			{"HTTP", []panel{
				third(httpRequests()), third(httpDuration()), third(scrapeErrors()),
			}},
			{"Process", []panel{
				third(memory()), third(cpu()), third(goroutines()),
				third(gcPauses()), third(fileDescriptors()), third(labelGroupsFolded()),
				full(buildInfo()),
			}},
		},
	}
}

func readinessChecks() cog.Builder[dashboard.Panel] {
	return stateTimeline("Readiness checks",
		"The checks of /tasker/health/ready, evaluated at every scrape, per replica. Unhealthy takes the replica out "+
			"of its Service; a check that does not answer within server.readiness_timeout counts as unhealthy.",
		promQuery(checkLevel(replica), "{{instance}} {{check}}")).
		Mappings(checkStates())
}

func readinessDuration() cog.Builder[dashboard.Panel] {
	return timeSeries("Readiness check duration",
		"How long each check took at the last scrape: the database check is a round trip through the sidecar's pool, "+
			"so a slow one means a slow database or a pool busy with analytics.", unitSeconds,
		promQuery(`max by (instance, check) (tasker_sidecar_readiness_check_duration_seconds{`+replica+`})`, "{{instance}} {{check}}"))
}

func refreshDuration() cog.Builder[dashboard.Panel] {
	return timeSeries("Refresh duration",
		"Duration of each refresh of the health counts, failed attempts included. Exemplars link to the trace.", unitSeconds,
		withExemplars(`histogram_quantile(0.99, sum by (instance, le) (rate(tasker_sidecar_refresh_duration_seconds_bucket{`+replica+`}[$__rate_interval])))`,
			"{{instance}} p99"),
		withExemplars(`histogram_quantile(0.5, sum by (instance, le) (rate(tasker_sidecar_refresh_duration_seconds_bucket{`+replica+`}[$__rate_interval])))`,
			"{{instance}} p50"))
}

func refreshErrors() cog.Builder[dashboard.Panel] {
	return timeSeries("Refresh errors",
		"Failed refreshes per second by reason: timeout, connection, query or schema (Tasker tables missing).", unitPerSecond,
		promQuery(`sum by (reason) (rate(tasker_sidecar_refresh_errors_total{`+replica+`}[$__rate_interval]))`, "{{reason}}"))
}

func refreshAge() cog.Builder[dashboard.Panel] {
	return timeSeries("Age of the served data",
		"Time since the last successful refresh (since start before the first one), plus a standby's replication lag. "+
			"Past metrics.max_staleness "+
			"the Tasker series are withdrawn.", unitSeconds,
		promQuery(`max by (instance) (tasker_sidecar_refresh_age_seconds{`+replica+`})`, "{{instance}}"))
}

// replicationLag tells stuck replay (both lines grow) from an idle primary
// (the lag stays 0, the time since the last replayed transaction grows);
// docs/operations.md#read-replicas.
func replicationLag() cog.Builder[dashboard.Panel] {
	return timeSeries("Replication lag",
		"On a hot standby: how much older than the primary's the data is (added to the age of everything served; "+
			"TaskerSidecarReplicationLag past 60 s), and the time since the last replayed transaction, which alone "+
			"grows while the primary is idle. Both 0 on a primary.", unitSeconds,
		promQuery(`max by (instance) (tasker_sidecar_replication_lag_seconds{`+replica+`})`, "{{instance}} lag"),
		// Absent on a primary, where nothing is replayed: the lag's 0 instead.
		promQuery(`max by (instance) (tasker_sidecar_replication_last_replay_age_seconds{`+replica+`})
or max by (instance) (0 * tasker_sidecar_replication_lag_seconds{`+replica+`})`, "{{instance}} since last replay")).
		Thresholds(thresholds(step(60, "red"))).
		ThresholdsStyle(lineThresholds())
}

func readsFrom() cog.Builder[dashboard.Panel] {
	return stateTimeline("Reads from",
		"Whether each replica reads a primary or a hot standby (pg_is_in_recovery(), asked with every refresh and "+
			"after a reconnect, so a failover shows). On a standby the connection figures are the standby's own.",
		promQuery(`max by (instance) (tasker_sidecar_database_in_recovery{`+replica+`})`, "{{instance}}")).
		Mappings(mapping("primary", "green", "standby", "blue"))
}

func refreshSuccess() cog.Builder[dashboard.Panel] {
	return stateTimeline("Last refresh",
		"Whether each replica's last refresh attempt succeeded.",
		promQuery(`max by (instance) (tasker_sidecar_refresh_success{`+replica+`})`, "{{instance}}")).
		Mappings(readiness())
}

func poolConnections() cog.Builder[dashboard.Panel] {
	return timeSeries("Pool connections",
		"The sidecar's read-only pool: connections in use, idle and being opened, against its cap (database.max_conns).", unitCount,
		promQuery(`max by (instance) (tasker_sidecar_db_pool_acquired_connections{`+replica+`})`, "{{instance}} in use"),
		promQuery(`max by (instance) (tasker_sidecar_db_pool_idle_connections{`+replica+`})`, "{{instance}} idle"),
		promQuery(`max by (instance) (tasker_sidecar_db_pool_constructing_connections{`+replica+`})`, "{{instance}} opening"),
		promQuery(`max by (instance) (tasker_sidecar_db_pool_max_connections{`+replica+`})`, "{{instance}} max"))
}

func poolAcquires() cog.Builder[dashboard.Panel] {
	return timeSeries("Pool acquires",
		"Connections taken from the pool per second; empty = had to wait or dial, cancelled = gave up.", unitPerSecond,
		promQuery(`sum by (instance) (rate(tasker_sidecar_db_pool_acquires_total{`+replica+`}[$__rate_interval]))`, "{{instance}} acquired"),
		promQuery(`sum by (instance) (rate(tasker_sidecar_db_pool_empty_acquires_total{`+replica+`}[$__rate_interval]))`, "{{instance}} empty"),
		promQuery(`sum by (instance) (rate(tasker_sidecar_db_pool_canceled_acquires_total{`+replica+`}[$__rate_interval]))`, "{{instance}} cancelled"))
}

func poolWaiting() cog.Builder[dashboard.Panel] {
	return timeSeries("Time waiting for a connection",
		"Share of wall time spent waiting for a pool connection, and the mean time an acquire takes.", unitSeconds,
		promQuery(`sum by (instance) (rate(tasker_sidecar_db_pool_empty_acquire_wait_seconds_total{`+replica+`}[$__rate_interval]))`,
			"{{instance}} waiting (s/s)"),
		promQuery(`sum by (instance) (rate(tasker_sidecar_db_pool_acquire_duration_seconds_total{`+replica+`}[$__rate_interval]))
/ sum by (instance) (rate(tasker_sidecar_db_pool_acquires_total{`+replica+`}[$__rate_interval]))`,
			"{{instance}} mean acquire"))
}

func poolChurn() cog.Builder[dashboard.Panel] {
	return timeSeries("Connections opened and closed",
		"New connections per second, and connections closed for age or idleness. Steady opening means "+
			"connections do not survive: check the server's idle timeouts and a pooler in between.", unitPerSecond,
		promQuery(`sum by (instance) (rate(tasker_sidecar_db_pool_new_connections_total{`+replica+`}[$__rate_interval]))`, "{{instance}} opened"),
		promQuery(`sum by (instance) (rate(tasker_sidecar_db_pool_max_lifetime_destroyed_connections_total{`+replica+`}[$__rate_interval]))`, "{{instance}} closed (age)"),
		promQuery(`sum by (instance) (rate(tasker_sidecar_db_pool_max_idle_destroyed_connections_total{`+replica+`}[$__rate_interval]))`, "{{instance}} closed (idle)"))
}

func httpRequests() cog.Builder[dashboard.Panel] {
	return timeSeries("Requests",
		"Requests per second by route and status code; probes, scrapes and API calls.", unitRequests,
		promQuery(`sum by (handler, code) (rate(tasker_sidecar_http_requests_total{`+replica+`}[$__rate_interval]))`, "{{handler}} {{code}}"))
}

func httpDuration() cog.Builder[dashboard.Panel] {
	return timeSeries("Request duration p99",
		"99th percentile time to serve each route. Exemplars link to the trace.", unitSeconds,
		withExemplars(`histogram_quantile(0.99, sum by (handler, le) (rate(tasker_sidecar_http_request_duration_seconds_bucket{`+replica+`}[$__rate_interval])))`,
			"{{handler}}"))
}

func scrapeErrors() cog.Builder[dashboard.Panel] {
	return timeSeries("Scrape errors",
		"Errors while gathering or encoding /metrics, per second.", unitPerSecond,
		promQuery(`sum by (cause) (rate(promhttp_metric_handler_errors_total{`+replica+`}[$__rate_interval]))`, "{{cause}}"))
}

func memory() cog.Builder[dashboard.Panel] {
	return timeSeries("Memory",
		"Resident memory of the process and the Go heap in use; compare with the container's limit.", unitBytes,
		promQuery(`max by (instance) (process_resident_memory_bytes{`+replica+`})`, "{{instance}} resident"),
		promQuery(`max by (instance) (go_memstats_heap_inuse_bytes{`+replica+`})`, "{{instance}} heap in use"))
}

func cpu() cog.Builder[dashboard.Panel] {
	return timeSeries("CPU",
		"CPU time per second, in cores.", unitCPUSeconds,
		promQuery(`sum by (instance) (rate(process_cpu_seconds_total{`+replica+`}[$__rate_interval]))`, "{{instance}}"))
}

func goroutines() cog.Builder[dashboard.Panel] {
	return timeSeries("Goroutines",
		"Goroutines; a steady climb is a leak.", unitCount,
		promQuery(`max by (instance) (go_goroutines{`+replica+`})`, "{{instance}}"))
}

func gcPauses() cog.Builder[dashboard.Panel] {
	return timeSeries("GC pauses",
		"Time spent in garbage-collection pauses per second.", unitSeconds,
		promQuery(`sum by (instance) (rate(go_gc_duration_seconds_sum{`+replica+`}[$__rate_interval]))`, "{{instance}}"))
}

func fileDescriptors() cog.Builder[dashboard.Panel] {
	return timeSeries("File descriptors",
		"Open file descriptors over the process limit.", unitRatio,
		promQuery(`max by (instance) (process_open_fds{`+replica+`} / process_max_fds{`+replica+`})`, "{{instance}}"))
}

func labelGroupsFolded() cog.Builder[dashboard.Panel] {
	return timeSeries("Named tasks folded into other",
		"(namespace, task) pairs beyond metrics.max_label_groups, summed into namespace=\"other\" by the health "+
			"gauges and by the analytics gauges; raise the cap if per-task detail for them matters. The analytics line "+
			"is empty until the first successful analytics refresh, and on tasker-core.", unitCount,
		promQuery(`max by (instance) (tasker_sidecar_label_groups_dropped{`+replica+`})`, "{{instance}} health"),
		promQuery(`max by (instance) (tasker_sidecar_analytics_groups_dropped{`+replica+`})`, "{{instance}} analytics"))
}

func buildInfo() cog.Builder[dashboard.Panel] {
	return tablePanel("Build",
		"Version of each replica, and the engine whose database it reads (rails or core: the state panels show that "+
			"engine's states; empty until the replica has attached). A mix means a rollout is under way or stuck.",
		instantQuery(`max by (instance, version, revision, branch, goversion, engine) (
  tasker_sidecar_build_info{`+replica+`}
    * on (job, instance) group_left (engine) max by (job, instance, engine) (tasker_sidecar_engine_info{`+replica+`})
  or on (job, instance) tasker_sidecar_build_info{`+replica+`}
)`)).
		WithTransformation(hideValue())
}

// The transition stream (tasker_sidecar_stream_*, docs/stream.md).

func streamCaughtUp() cog.Builder[dashboard.Panel] {
	return stateTimeline("Stream caught up",
		"Whether each replica's last poll read every committed transition; catching up for long means Tasker writes "+
			"faster than the stream reads (see poll duration and rows read).",
		promQuery(`max by (instance) (tasker_sidecar_stream_caught_up{`+replica+`})`, "{{instance}}")).
		Mappings(mapping("catching up", "orange", "caught up", "green"))
}

func streamLeader() cog.Builder[dashboard.Panel] {
	return stateTimeline("Export lease",
		"The replica holding the lease exports the workflow traces and writes the shared checkpoint; exactly one "+
			"should, with a distributed cache store (without one every replica exports).",
		promQuery(`max by (instance) (tasker_sidecar_stream_leader{`+replica+`})`, "{{instance}}")).
		Mappings(mapping("follower", "text", "leader", "blue"))
}

func streamPollAge() cog.Builder[dashboard.Panel] {
	return timeSeries("Time since the last successful poll",
		"How far behind the counts may be. Past stream.stale_after (default 1 min) the health counts are reported as "+
			"failing; TaskerSidecarStreamStalled fires after 2 min.", unitSeconds,
		promQuery(`time() - max by (instance) (tasker_sidecar_stream_last_success_timestamp_seconds{`+replica+`} > 0)`, "{{instance}}"))
}

func streamRows() cog.Builder[dashboard.Panel] {
	return timeSeries("Rows read",
		"Rows read per second by table: new tasks and steps, and their transitions. This is the rate Tasker writes at.", unitPerSecond,
		promQuery(`sum by (instance, table) (rate(tasker_sidecar_stream_rows_total{`+replica+`}[$__rate_interval]))`, "{{instance}} {{table}}"))
}

func streamPollDuration() cog.Builder[dashboard.Panel] {
	return timeSeries("Poll duration",
		"Duration of one poll's queries (a recount excluded); it follows the number of new rows, not the size of the tables.", unitSeconds,
		promQuery(`histogram_quantile(0.99, sum by (instance, le) (rate(tasker_sidecar_stream_poll_duration_seconds_bucket{`+replica+`}[$__rate_interval])))`,
			"{{instance}} p99"),
		promQuery(`histogram_quantile(0.5, sum by (instance, le) (rate(tasker_sidecar_stream_poll_duration_seconds_bucket{`+replica+`}[$__rate_interval])))`,
			"{{instance}} p50"))
}

func streamErrors() cog.Builder[dashboard.Panel] {
	return timeSeries("Stream errors",
		"Failed polls per second by reason (timeout, connection, query, schema), and errors returned by the trace "+
			"exporter to the stream (sink).", unitPerSecond,
		promQuery(`sum by (instance, reason) (rate(tasker_sidecar_stream_errors_total{`+replica+`}[$__rate_interval]))`, "{{instance}} {{reason}}"),
		promQuery(`sum by (instance) (rate(tasker_sidecar_stream_sink_errors_total{`+replica+`}[$__rate_interval]))`, "{{instance}} sink"))
}

func streamLateRows() cog.Builder[dashboard.Panel] {
	return timeSeries("Late rows and expired gaps",
		"Rows found in a gap below the watermark (committed after a higher id was read: normal under concurrent writers), "+
			"and ids given up after stream.gap_horizon; a row committed under an expired id is only corrected by the next recount.",
		unitPerSecond,
		promQuery(`sum by (instance, table) (rate(tasker_sidecar_stream_late_rows_total{`+replica+`}[$__rate_interval]))`, "{{instance}} late {{table}}"),
		promQuery(`sum by (instance, table) (rate(tasker_sidecar_stream_gap_ids_expired_total{`+replica+`}[$__rate_interval]))`,
			"{{instance}} expired {{table}}"))
}

func streamGaps() cog.Builder[dashboard.Panel] {
	return timeSeries("Open gaps",
		"Ids below the watermark with no visible row yet, re-checked every poll: transactions still open, or rolled back. "+
			"A steady climb means long transactions writing Tasker rows.", unitCount,
		promQuery(`sum by (instance) (tasker_sidecar_stream_gap_ids{`+replica+`})`, "{{instance}} ids"),
		promQuery(`sum by (instance) (tasker_sidecar_stream_gaps{`+replica+`})`, "{{instance}} gaps"))
}

func streamDrift() cog.Builder[dashboard.Panel] {
	return timeSeries("Drift found by the last recount",
		"Difference between the incremental counts and a full recount, by kind; above zero, something changes Tasker rows "+
			"behind Statesman's back or stream.gap_horizon is too short (TaskerSidecarStreamDriftDetected). Empty until "+
			"the first recount after start (stream.recount_interval, default 1 h).", unitCount,
		promQuery(`max by (instance, kind) (tasker_sidecar_stream_drift{`+replica+`})`, "{{instance}} {{kind}}"))
}

// Recounts run every stream.recount_interval (default 1 h), so a rate of
// their histogram would be empty most of the time; the mean since start is
// what there is to see, as for the cache probes.
func streamRecounts() cog.Builder[dashboard.Panel] {
	return timeSeries("Recount duration (mean since start)",
		"Mean duration of the full counts: the one at start and one every stream.recount_interval; the database's work.", unitSeconds,
		promQuery(`max by (instance) (
  tasker_sidecar_stream_recount_duration_seconds_sum{`+replica+`}
  / tasker_sidecar_stream_recount_duration_seconds_count{`+replica+`}
)`, "{{instance}}"))
}

func streamRecountFailures() cog.Builder[dashboard.Panel] {
	return timeSeries("Recount failures",
		"Recounts that failed since the last successful one (retried after 1, 2, 4 ... minutes, at most "+
			"stream.recount_interval), and failed recounts per second by reason. While recounts fail, drift is neither "+
			"measured nor corrected (TaskerSidecarStreamRecountFailing).", unitCount,
		promQuery(`max by (instance) (tasker_sidecar_stream_recount_consecutive_failures{`+replica+`})`, "{{instance}} in a row"),
		promQuery(`sum by (instance, reason) (rate(tasker_sidecar_stream_recount_errors_total{`+replica+`}[$__rate_interval]))`,
			"{{instance}} {{reason}} /s"))
}

func streamWatermark() cog.Builder[dashboard.Panel] {
	return timeSeries("Stream position",
		"Highest id read per table. It should climb with Tasker's writes; flat while rows are being written means "+
			"the stream is stuck (compare rows read and poll errors).", unitCount,
		promQuery(`max by (instance, table) (tasker_sidecar_stream_watermark{`+replica+`})`, "{{instance}} {{table}}"))
}

func streamCheckpoints() cog.Builder[dashboard.Panel] {
	return timeSeries("Checkpoint saves and replays",
		"Checkpoint saves per second by result; failed saves mean a restart emits (and exports) the same rows again. "+
			"Replayed: terminal task transitions handed to the exporter again after a lease takeover.", unitPerSecond,
		promQuery(`sum by (instance, result) (rate(tasker_sidecar_stream_checkpoint_saves_total{`+replica+`}[$__rate_interval]))`, "{{instance}} {{result}}"),
		promQuery(`sum by (instance) (rate(tasker_sidecar_stream_replayed_transitions_total{`+replica+`}[$__rate_interval]))`, "{{instance}} replayed"))
}

// Workflow trace export (tasker_sidecar_traces_*, docs/traces.md). Only the
// lease holder exports.

func traceRuns() cog.Builder[dashboard.Panel] {
	return stackedSeries("Task runs by export result",
		"Ended task runs per second by what the exporter did: exported, unsampled (tracing.sampling_ratio), "+
			"rate_limited (tracing.max_spans_per_second), retrying (export failed, kept), dropped (retry queue full), "+
			"missing (gone from the database).", unitTasksPerS,
		promQuery(`sum by (result) (rate(tasker_sidecar_traces_task_runs_total{`+replica+`}[$__rate_interval]))`, "{{result}}"))
}

func traceSpans() cog.Builder[dashboard.Panel] {
	return timeSeries("Spans exported",
		"Workflow spans accepted by the OTLP receiver per second.", "suffix: spans/s",
		promQuery(`sum by (instance) (rate(tasker_sidecar_traces_spans_exported_total{`+replica+`}[$__rate_interval]))`, "{{instance}}"))
}

func traceErrors() cog.Builder[dashboard.Panel] {
	return timeSeries("Export errors",
		"Failed exports per second: the receiver refused or timed out, or the task histories could not be read. "+
			"Runs are kept and tried again after 15 s.", unitPerSecond,
		promQuery(`sum by (instance) (rate(tasker_sidecar_traces_export_errors_total{`+replica+`}[$__rate_interval]))`, "{{instance}}"))
}

func traceExportDuration() cog.Builder[dashboard.Panel] {
	return timeSeries("Export duration",
		"Time to read the histories of the runs that ended in one poll and export their spans; bounded by tracing.timeout. "+
			"Empty while no task run ended in the window (nothing to export), or with tracing off.", unitSeconds,
		promQuery(`histogram_quantile(0.99, sum by (instance, le) (rate(tasker_sidecar_traces_export_duration_seconds_bucket{`+replica+`}[$__rate_interval])))`,
			"{{instance}} p99"),
		promQuery(`histogram_quantile(0.5, sum by (instance, le) (rate(tasker_sidecar_traces_export_duration_seconds_bucket{`+replica+`}[$__rate_interval])))`,
			"{{instance}} p50"))
}

func tracePending() cog.Builder[dashboard.Panel] {
	return timeSeries("Runs waiting for another export",
		"Ended task runs kept after a failed export; beyond tracing.max_pending_tasks they are dropped.", unitCount,
		promQuery(`max by (instance) (tasker_sidecar_traces_pending_task_runs{`+replica+`})`, "{{instance}}"))
}

// The analytics gauges' background refresh (docs/analytics.md).

func analyticsAge() cog.Builder[dashboard.Panel] {
	return timeSeries("Age of the analytics gauges",
		"Time since the database time of the last successful analytics refresh (every analytics.metrics_interval); "+
			"past three intervals the per-task gauges are withdrawn. Empty until the first successful refresh, and on "+
			"tasker-core (the analytics read the Rails engine's tables).", unitSeconds,
		promQuery(`time() - max by (instance) (tasker_sidecar_analytics_last_refresh_timestamp_seconds{`+replica+`})`, "{{instance}}"))
}

func analyticsRefreshDuration() cog.Builder[dashboard.Panel] {
	return timeSeries("Analytics refresh duration",
		"Duration of the last successful analytics refresh (a cache hit included). Empty until the first successful "+
			"refresh, and on tasker-core.", unitSeconds,
		promQuery(`max by (instance) (tasker_sidecar_analytics_refresh_duration_seconds{`+replica+`})`, "{{instance}}"))
}

func analyticsRefreshErrors() cog.Builder[dashboard.Panel] {
	return timeSeries("Analytics refresh errors",
		"Failed analytics refreshes per second; the sidecar's log says why (usually analytics.statement_timeout).", unitPerSecond,
		promQuery(`sum by (instance) (rate(tasker_sidecar_analytics_refresh_errors_total{`+replica+`}[$__rate_interval]))`, "{{instance}}"))
}
