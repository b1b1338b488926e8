package ttl

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type emptyL1 struct{}

func (emptyL1) WeightedSize() uint64 { return 0 }
func (emptyL1) EstimatedSize() int   { return 0 }

// The cache's counters and histograms exist at zero for every resource with
// a built-in policy as soon as the metrics are made, before any request:
// the cache dashboard then shows zero requests, not "No data". The gauges
// whose zero would be a false reading (a TTL, an age) stay absent.
func TestMetricsExistAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg, emptyL1{}); err != nil {
		t.Fatal(err)
	}
	got := gatherSeries(t, reg)
	var resources []string
	for r := range builtinPolicies() {
		if r != ResourceDefault {
			resources = append(resources, r)
		}
	}
	slices.Sort(resources)
	if len(resources) < 7 {
		t.Fatalf("built-in resources %v: fewer than the seven the sidecar uses", resources)
	}
	for _, r := range resources {
		want := map[string][][]string{
			"tasker_sidecar_cache_hits_total": {
				{"resource", r, "level", "l1", "freshness", "fresh"}, {"resource", r, "level", "l1", "freshness", "stale"},
				{"resource", r, "level", "l2", "freshness", "fresh"}, {"resource", r, "level", "l2", "freshness", "stale"}},
			"tasker_sidecar_cache_misses_total":          {{"resource", r}},
			"tasker_sidecar_cache_coalesced_waits_total": {{"resource", r}},
			"tasker_sidecar_cache_lease_waits_total":     {{"resource", r}},
			"tasker_sidecar_cache_stale_serves_total":    {{"resource", r, "reason", "refreshing"}, {"resource", r, "reason", "error"}},
			"tasker_sidecar_cache_rejections_total":      {{"resource", r, "reason", RejectWaiters}, {"resource", r, "reason", RejectDeadline}},
			"tasker_sidecar_cache_value_too_large_total": {{"resource", r, "level", "l1"}, {"resource", r, "level", "l2"}},
		}
		for _, res := range []string{"ok", "error", "elsewhere", "overloaded"} {
			want["tasker_sidecar_cache_refreshes_total"] = append(want["tasker_sidecar_cache_refreshes_total"], []string{"resource", r, "result", res})
		}
		for _, reason := range []string{"cold", "refresh", "retry", "uncached"} {
			for _, res := range []string{"ok", "error", "cancelled", "overloaded"} {
				want["tasker_sidecar_cache_recomputations_total"] = append(want["tasker_sidecar_cache_recomputations_total"],
					[]string{"resource", r, "reason", reason, "result", res})
			}
		}
		for _, reason := range []string{"cold", "refresh", "retry"} {
			want["tasker_sidecar_cache_recompute_duration_seconds"] = append(want["tasker_sidecar_cache_recompute_duration_seconds"],
				[]string{"resource", r, "reason", reason})
		}
		for _, op := range []string{"get", "lease", "put", "release", "backoff"} {
			want["tasker_sidecar_cache_coordination_errors_total"] = append(want["tasker_sidecar_cache_coordination_errors_total"],
				[]string{"resource", r, "op", op})
		}
		for _, family := range slices.Sorted(maps.Keys(want)) {
			for _, labels := range want[family] {
				key := seriesKey(family, labels...)
				v, ok := got[key]
				if !ok {
					t.Errorf("%s: absent before any request", key)
				} else if v != 0 {
					t.Errorf("%s = %v before any request, want 0", key, v)
				}
			}
		}
	}
	for _, family := range []string{"tasker_sidecar_cache_ttl_seconds", "tasker_sidecar_cache_value_age_seconds", "tasker_sidecar_cache_waiters"} {
		for key := range got {
			if strings.HasPrefix(key, family+"{") {
				t.Errorf("%s exists before any request: a zero there would be a false reading", key)
			}
		}
	}
}

// gatherSeries maps each series of reg, written family{label=value,...}
// with the labels sorted, to its value: a counter's or gauge's value, a
// histogram's observation count.
func gatherSeries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName(), l.GetValue())
			}
			var v float64
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				v = float64(m.GetHistogram().GetSampleCount())
			}
			out[seriesKey(mf.GetName(), labels...)] = v
		}
	}
	return out
}

// seriesKey writes family{name=value,...} with the names sorted; labels
// alternate names and values.
func seriesKey(family string, labels ...string) string {
	pairs := make([]string, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+"="+labels[i+1])
	}
	slices.Sort(pairs)
	return family + "{" + strings.Join(pairs, ",") + "}"
}
