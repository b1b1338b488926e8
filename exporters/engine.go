package exporters

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

type engineCollector struct {
	engine func() (engine.Engine, bool)
	info   *prometheus.Desc
}

// NewEngineCollector exports tasker_sidecar_engine_info{engine} 1 for the
// Tasker engine the sidecar attached to (collector.DB.Engine): "rails" or
// "core". Nothing is exported until the first schema check has found one,
// so a sidecar pointed at the wrong database shows no engine rather than a
// guess.
func NewEngineCollector(found func() (engine.Engine, bool)) prometheus.Collector {
	return &engineCollector{
		engine: found,
		info: prometheus.NewDesc(prometheus.BuildFQName("tasker_sidecar", "", "engine_info"),
			"The Tasker engine whose database the sidecar reads (database.engine, detected when auto): rails or core; always 1.",
			[]string{"engine"}, nil),
	}
}

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.info }

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	e, ok := c.engine()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, string(e.Kind))
}
