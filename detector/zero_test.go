package detector

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Every capability a configuration can declare has its conflict gauge and
// counter at zero from the start, and keeps the gauge at zero while it does
// not conflict: the conflict panels and alerts tell "no conflict" from
// "not scraped".
func TestConflictSeriesExistAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var declarable []string
	for _, c := range Capabilities() {
		if c != EvictionPolicy { // string-valued: cannot be declared
			declarable = append(declarable, c)
		}
	}
	check := func(when string, conflicting string) {
		t.Helper()
		gauges := byCapability(t, reg, "tasker_sidecar_cache_capability_conflict")
		counters := byCapability(t, reg, "tasker_sidecar_cache_capability_conflicts_total")
		for _, c := range declarable {
			want := 0.0
			if c == conflicting {
				want = 1
			}
			if v, ok := gauges[c]; !ok || v != want {
				t.Errorf("%s: capability_conflict{capability=%q} = %v (present %v), want %v", when, c, v, ok, want)
			}
			if v, ok := counters[c]; !ok || v != 0 {
				t.Errorf("%s: capability_conflicts_total{capability=%q} = %v (present %v), want 0", when, c, v, ok)
			}
		}
		if _, ok := gauges[EvictionPolicy]; ok {
			t.Errorf("%s: a conflict gauge for %s, which cannot be declared", when, EvictionPolicy)
		}
	}
	check("after construction", "")
	m.publish(Report{Conflicts: []Conflict{{Capability: ClientSideCaching}}})
	check("after a run with one conflict", ClientSideCaching)
	m.publish(Report{Conflicts: []Conflict{}})
	check("after a run without conflicts", "")
}

func byCapability(t *testing.T, reg *prometheus.Registry, family string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	i := slices.IndexFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == family })
	if i < 0 {
		return out
	}
	for _, m := range mfs[i].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "capability" {
				out[l.GetValue()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return out
}
