package detector

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	capability    *prometheus.GaugeVec
	strategy      *prometheus.GaugeVec
	storeInfo     *prometheus.GaugeVec
	probeDuration *prometheus.HistogramVec
	runs          *prometheus.CounterVec
	conflict      *prometheus.GaugeVec
	conflicts     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "tasker_sidecar", "cache"
	m := &metrics{
		capability: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "capability",
			Help: "Detected boolean cache capabilities: 1 supported, 0 not, labelled with the source that decided.",
		}, []string{"capability", "source"}),
		strategy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "strategy",
			Help: "The coordination strategy in use: 1 for the current one, 0 for the others.",
		}, []string{"strategy"}),
		storeInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "store_info",
			Help: "The detected cache store; always 1.",
		}, []string{"kind", "product", "version", "role", "mode", "eviction_policy", "mechanism"}),
		probeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "probe_duration_seconds",
			Help:    "Duration of each capability-detection probe.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}, []string{"probe"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "detection_runs_total",
			Help: "Capability detection runs by result (ok, unreachable).",
		}, []string{"result"}),
		conflict: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "capability_conflict",
			Help: "1 while a declared capability contradicts what a probe observed.",
		}, []string{"capability"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "capability_conflicts_total",
			Help: "Declared capabilities found to contradict a probe, counted once per distinct conflict.",
		}, []string{"capability"}),
	}
	for _, s := range Strategies() {
		m.strategy.WithLabelValues(s)
	}
	for _, r := range []string{"ok", "unreachable"} {
		m.runs.WithLabelValues(r)
	}
	// At zero from the start for every capability that can be declared
	// (and so contradict a probe), so that the conflict panels and alerts
	// tell "no conflict" from "not scraped".
	for _, c := range declarable() {
		m.conflict.WithLabelValues(c)
		m.conflicts.WithLabelValues(c)
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.capability, m.strategy, m.storeInfo, m.probeDuration, m.runs, m.conflict, m.conflicts} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register detector metrics: %w", err)
	}
	return m, nil
}

// publish replaces the per-run series with those of report r.
func (m *metrics) publish(r Report) {
	m.capability.Reset()
	for name, c := range r.Capabilities {
		b, ok := c.Value.(bool)
		if !ok {
			continue
		}
		v := 0.0
		if b {
			v = 1
		}
		m.capability.WithLabelValues(name, c.Source).Set(v)
	}
	for _, s := range Strategies() {
		v := 0.0
		if s == r.Strategy {
			v = 1
		}
		m.strategy.WithLabelValues(s).Set(v)
	}
	m.storeInfo.Reset()
	policy, _ := r.Capabilities[EvictionPolicy].Value.(string)
	m.storeInfo.WithLabelValues(r.Store.Kind, r.Store.Product, r.Store.Version, r.Store.Role, r.Store.Mode, policy, r.Mechanism).Set(1)
	m.conflict.Reset()
	for _, c := range declarable() {
		m.conflict.WithLabelValues(c).Set(0)
	}
	for _, c := range r.Conflicts {
		m.conflict.WithLabelValues(c.Capability).Set(1)
	}
}

// declarable lists the capabilities a configuration can declare: the
// boolean ones (capabilityTable).
func declarable() []string {
	var out []string
	for _, c := range capabilityTable {
		if c.boolean {
			out = append(out, c.name)
		}
	}
	return out
}
