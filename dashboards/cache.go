package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

func cache() board {
	return board{
		uid:   "tasker-cache",
		title: "Tasker / Cache",
		description: "The cache store the replicas share: what it is, what it can do, the coordination strategy " +
			"chosen from that, how detection went, and how the coordinated results cache uses it: hits, stale " +
			"serves, recomputations, TTLs, waits and fallbacks.",
		variables: []cog.Builder[dashboard.VariableModel]{jobVariable()},
		rows: []row{
			{"Strategy", []panel{
				third(strategyNow()), third(replicasByStrategy()), third(conflictsNow()),
				full(storeTable()),
			}},
			{"Capabilities", []panel{
				half(capabilityTable()), half(conflictTable()),
			}},
			{"Detection", []panel{
				half(detectionRuns()), half(probeDurations()),
			}},
			{"Results cache: hits", []panel{
				third(resultHitRatio()), third(resultRequests()), third(resultStaleServes()),
			}},
			{"Results cache: recomputations", []panel{
				third(recomputationsPerTTL()), third(recomputations()), third(recomputeDuration()),
				third(resultTTLs()), third(resultAges()), third(resultRefreshes()),
			}},
			{"Results cache: coordination", []panel{
				third(resultDegraded()), third(resultMechanism()), third(resultWaits()),
				full(coordinationErrors()),
			}},
		},
	}
}

func strategyNow() cog.Builder[dashboard.Panel] {
	return singleStat("Strategy in use",
		"Coordination strategy per replica: distributed_atomic (shared values, atomic leases and counters), "+
			"distributed_basic (shared values, each replica coalesces its own misses) or local_only (nothing shared).",
		unitCount,
		promQuery(`max by (instance, strategy) (tasker_sidecar_cache_strategy{job="$job"}) == 1`, "{{instance}}: {{strategy}}")).
		TextMode(common.BigValueTextModeName).
		GraphMode(common.BigValueGraphModeNone)
}

func replicasByStrategy() cog.Builder[dashboard.Panel] {
	return stackedSeries("Replicas per strategy",
		"How many replicas use each strategy; a replica falling to local_only lost the store.", unitCount,
		promQuery(`count by (strategy) (tasker_sidecar_cache_strategy{job="$job"} == 1)`, "{{strategy}}"))
}

func conflictsNow() cog.Builder[dashboard.Panel] {
	return singleStat("Capability conflicts",
		"Declared capabilities (cache.capabilities) that a probe contradicts; the declaration wins.", unitCount,
		promQuery(`count(max by (capability) (tasker_sidecar_cache_capability_conflict{job="$job"}) == 1) or vector(0)`, "conflicts")).
		Thresholds(thresholds(step(1, "orange"))).
		ColorScheme(byThresholds())
}

func storeTable() cog.Builder[dashboard.Panel] {
	return tablePanel("Store",
		"The detected store per replica and the mechanism the coordinator uses on it.",
		instantQuery(`max by (instance, kind, product, version, role, mode, eviction_policy, mechanism) (tasker_sidecar_cache_store_info{job="$job"})`)).
		WithTransformation(hideValue())
}

func capabilityTable() cog.Builder[dashboard.Panel] {
	return tablePanel("Capabilities",
		"Each boolean capability and the source that decided it: declared (configuration) beats custom rules, "+
			"which beat built-in knowledge (constants), which beat runtime probes.",
		instantQuery(`max by (capability, source) (tasker_sidecar_cache_capability{job="$job"})`)).
		Mappings(mapping("no", "text", "yes", "green"))
}

func conflictTable() cog.Builder[dashboard.Panel] {
	return tablePanel("Conflicting declarations",
		"Capabilities whose declaration contradicts a probe, per replica. Drop the declaration, or add the probe "+
			"to cache.skip_probes when the contradiction is deliberate. A replica with none has one row without a "+
			"capability that reads \"none\" (every declarable capability is exported at 0 then); empty until a replica "+
			"has detected its store's capabilities.",
		instantQuery(`max by (instance, capability) (tasker_sidecar_cache_capability_conflict{job="$job"}) > 0
or on (instance) 0 * max by (instance) (tasker_sidecar_cache_capability_conflict{job="$job"})`)).
		Mappings(mapping("none", "green", "conflict", "red"))
}

func detectionRuns() cog.Builder[dashboard.Panel] {
	return timeSeries("Detection runs",
		"Capability detection runs by result; unreachable runs mean the store did not answer.", unitCount,
		promQuery(`sum by (result) (increase(tasker_sidecar_cache_detection_runs_total{job="$job"}[$__rate_interval]))`, "{{result}}"))
}

// Detection runs rarely (at start, on reconnects and errors), so a rate of
// the histogram would be empty most of the time; the mean since start is
// what there is to see.
func probeDurations() cog.Builder[dashboard.Panel] {
	return timeSeries("Probe duration (mean since start)",
		"Mean duration of each capability probe over the replica's lifetime.", unitSeconds,
		promQuery(`max by (probe) (
  tasker_sidecar_cache_probe_duration_seconds_sum{job="$job"}
  / tasker_sidecar_cache_probe_duration_seconds_count{job="$job"}
)`, "{{probe}}"))
}

// The coordinated results cache (ttl/, docs/ttl.md). Its counters count each
// replica's own requests and computations, so they are summed over replicas
// (unlike the Tasker numbers, which every replica reports alike).

const resultsJob = `job="$job"`

func resultHitRatio() cog.Builder[dashboard.Panel] {
	hits := `sum by (resource) (rate(tasker_sidecar_cache_hits_total{` + resultsJob + `}[$__rate_interval]))`
	requests := `(` + hits + `
  + sum by (resource) (rate(tasker_sidecar_cache_misses_total{` + resultsJob + `}[$__rate_interval]))
  + sum by (resource) (rate(tasker_sidecar_cache_coalesced_waits_total{` + resultsJob + `}[$__rate_interval])))`
	return timeSeries("Hit and stale ratio by resource",
		"Share of requests served from a cache level (in-process L1 or shared L2, fresh or stale) among all requests "+
			"(hits, misses and requests joining another's computation), and the share served past their TTL (stale) "+
			"while a refresh runs or after it failed. Empty while no request reached the cache in the window: a share "+
			"of nothing has no value (the counters are exported at zero from the start).", unitRatio,
		promQuery(hits+"\n/ "+requests, "{{resource}} hits"),
		promQuery(`sum by (resource) (rate(tasker_sidecar_cache_hits_total{`+resultsJob+`,freshness="stale"}[$__rate_interval]))`+"\n/ "+requests,
			"{{resource}} stale")).
		Max(1)
}

func resultRequests() cog.Builder[dashboard.Panel] {
	return timeSeries("Requests by outcome",
		"Requests per second over all resources: served from L1 or L2 (fresh or stale), missed (computed or waited for), "+
			"or joined a computation already running in the replica (coalesced).", unitPerSecond,
		promQuery(`sum by (level, freshness) (rate(tasker_sidecar_cache_hits_total{`+resultsJob+`}[$__rate_interval]))`, "{{level}} {{freshness}}"),
		promQuery(`sum(rate(tasker_sidecar_cache_misses_total{`+resultsJob+`}[$__rate_interval]))`, "miss"),
		promQuery(`sum(rate(tasker_sidecar_cache_coalesced_waits_total{`+resultsJob+`}[$__rate_interval]))`, "coalesced"))
}

func resultStaleServes() cog.Builder[dashboard.Panel] {
	return timeSeries("Stale serves",
		"Values served past their TTL per second, by resource and reason: refreshing (a refresh is under way: "+
			"refresh-ahead working) or error (the refresh failed; served until the policy's max staleness).", unitPerSecond,
		promQuery(`sum by (resource, reason) (rate(tasker_sidecar_cache_stale_serves_total{`+resultsJob+`}[$__rate_interval]))`,
			"{{resource}} {{reason}}"))
}

// recomputationsPerTTL is the coordination's result: a resource requested
// continuously is computed once per TTL across the cluster, so the value is
// 1 (below 1 for resources not requested all the time); one per replica
// means the replicas do not share.
func recomputationsPerTTL() cog.Builder[dashboard.Panel] {
	return timeSeries("Recomputations per TTL window",
		"Database recomputations of each resource across all replicas, per TTL of its value: about 1 when the replicas "+
			"share one computation per TTL, up to the number of replicas when each computes its own (store degraded, "+
			"local_only or distributed_basic). Empty until a value is first cached (it needs the TTL).", unitCount,
		promQuery(`sum by (resource) (rate(tasker_sidecar_cache_recomputations_total{`+resultsJob+`}[$__rate_interval]))
* on (resource) max by (resource) (tasker_sidecar_cache_ttl_seconds{`+resultsJob+`})`, "{{resource}}"))
}

func recomputations() cog.Builder[dashboard.Panel] {
	return timeSeries("Recomputations",
		"Calls of the computation per second across all replicas, by resource, reason (cold miss, refresh, retry "+
			"while failures are known, uncached) and result: the database load the cache lets through.", unitPerSecond,
		promQuery(`sum by (resource, reason, result) (rate(tasker_sidecar_cache_recomputations_total{`+resultsJob+`}[$__rate_interval]))`,
			"{{resource}} {{reason}} {{result}}"))
}

func recomputeDuration() cog.Builder[dashboard.Panel] {
	return timeSeries("Recomputation duration p95",
		"95th percentile duration of a recomputation, by resource and reason: a cold one is what a cold miss costs "+
			"its caller; refresh and retry run while the old value is served. The adaptive TTL weighs them all. Empty while "+
			"no recomputation ended in the window.", unitSeconds,
		promQuery(quantile("0.95", "tasker_sidecar_cache_recompute_duration_seconds", resultsJob, "resource", "reason"),
			"{{resource}} {{reason}}"))
}

func resultTTLs() cog.Builder[dashboard.Panel] {
	return timeSeries("TTL by resource",
		"TTL of the value each replica holds (the longest over replicas), as its policy or the adaptive TTL set it. "+
			"Empty until a value is first cached.", unitSeconds,
		promQuery(`max by (resource) (tasker_sidecar_cache_ttl_seconds{`+resultsJob+`})`, "{{resource}}"))
}

func resultAges() cog.Builder[dashboard.Panel] {
	return timeSeries("Age of the values served",
		"Age of the value last served per resource (the oldest over replicas); above the TTL, values are served stale. "+
			"Empty until a value is first served.", unitSeconds,
		promQuery(`max by (resource) (tasker_sidecar_cache_value_age_seconds{`+resultsJob+`})`, "{{resource}}"))
}

func resultRefreshes() cog.Builder[dashboard.Panel] {
	return timeSeries("Refreshes by result",
		"Refreshes of due or stale values per second: computed here (ok, error) or found done by another replica "+
			"(elsewhere, the lease at work).", unitPerSecond,
		promQuery(`sum by (result) (rate(tasker_sidecar_cache_refreshes_total{`+resultsJob+`}[$__rate_interval]))`, "{{result}}"))
}

func resultDegraded() cog.Builder[dashboard.Panel] {
	return stateTimeline("Shared store in use",
		"Whether each replica's results cache coordinates through the shared store, or fell back to in-process "+
			"caching because the store failed (it re-checks every cache recheck interval).",
		promQuery(`max by (instance) (tasker_sidecar_cache_degraded{`+resultsJob+`})`, "{{instance}}")).
		Mappings(mapping("shared", "green", "in-process only", "red"))
}

func resultMechanism() cog.Builder[dashboard.Panel] {
	return singleStat("Coordination mechanism",
		"The mechanism each replica's results cache used last (in_process while degraded); it follows the detected "+
			"strategy and capabilities. Empty until the results cache is first used.", unitCount,
		promQuery(`max by (instance, mechanism) (tasker_sidecar_cache_coordination_mechanism{`+resultsJob+`}) == 1`, "{{instance}}: {{mechanism}}")).
		TextMode(common.BigValueTextModeName).
		GraphMode(common.BigValueGraphModeNone)
}

func resultWaits() cog.Builder[dashboard.Panel] {
	return timeSeries("Lease and coalesced waits",
		"Requests per second that waited for another replica's computation under its lease (lease) or for one "+
			"already running in the same replica (coalesced): each is a recomputation saved.", unitPerSecond,
		promQuery(`sum by (resource) (rate(tasker_sidecar_cache_lease_waits_total{`+resultsJob+`}[$__rate_interval]))`, "{{resource}} lease"),
		promQuery(`sum by (resource) (rate(tasker_sidecar_cache_coalesced_waits_total{`+resultsJob+`}[$__rate_interval]))`, "{{resource}} coalesced"))
}

func coordinationErrors() cog.Builder[dashboard.Panel] {
	return timeSeries("Shared-store errors",
		"Failed shared-store operations of the results cache per second, by replica and operation (get, lease, put, "+
			"release, backoff): each one sends that request to in-process caching, and a run of them marks the store "+
			"degraded (TaskerSidecarResultsCacheDegraded).", unitPerSecond,
		promQuery(`sum by (instance, op) (rate(tasker_sidecar_cache_coordination_errors_total{`+resultsJob+`}[$__rate_interval]))`,
			"{{instance}} {{op}}"))
}

// hideValue drops the Value column of tables whose rows are label sets.
func hideValue() dashboard.DataTransformerConfig {
	return dashboard.DataTransformerConfig{
		Id:      "organize",
		Options: map[string]any{"excludeByName": map[string]any{"Value": true}},
	}
}
