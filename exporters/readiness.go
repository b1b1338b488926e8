package exporters

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/readiness"
)

// HealthSource is what the domain collector reads: the refresher's view of
// its last attempts (readiness.HealthSource, which the refresh check and
// the status route read too).
type HealthSource = readiness.HealthSource

// readinessCollector exports what /tasker/health/ready would answer at
// scrape time, so dashboards and alerts see each dependency as the
// kubelet does, not a guess from other metrics.
type readinessCollector struct {
	eval     *readiness.Evaluator
	ready    *prometheus.Desc
	check    *prometheus.Desc
	duration *prometheus.Desc

	// A flood of scrapes (several Prometheus replicas, a short interval)
	// evaluates the checks, and pings the database, at most once per
	// readinessReuse; concurrent scrapes wait for one evaluation.
	mu   sync.Mutex
	last readiness.Result
	at   time.Time
}

// readinessReuse is how long one evaluation of the checks serves scrapes.
const readinessReuse = 5 * time.Second

// NewReadinessCollector exports eval's checks at scrape time. The ready
// route (package api) shares eval, so that the log of status changes
// follows the checks whichever asked.
func NewReadinessCollector(eval *readiness.Evaluator) prometheus.Collector {
	return &readinessCollector{
		eval: eval,
		ready: prometheus.NewDesc("tasker_sidecar_ready",
			"1 when every readiness check answered and none is unhealthy, as /tasker/health/ready would answer now.", nil, nil),
		check: prometheus.NewDesc("tasker_sidecar_readiness_check",
			"Readiness check status at scrape time: 1 for the check's current status, 0 for the others; a check that did not answer within the readiness timeout is unhealthy.",
			[]string{"check", "status"}, nil),
		duration: prometheus.NewDesc("tasker_sidecar_readiness_check_duration_seconds",
			"How long each readiness check took at scrape time.", []string{"check"}, nil),
	}
}

func (c *readinessCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ready
	ch <- c.check
	ch <- c.duration
}

func (c *readinessCollector) evaluate() readiness.Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); c.at.IsZero() || now.Sub(c.at) >= readinessReuse {
		c.last = c.eval.Evaluate(context.Background())
		c.at = time.Now()
	}
	return c.last
}

func (c *readinessCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.evaluate()
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, b2f(r.Ready()))
	for i, chk := range c.eval.Checks() {
		status, took := readiness.StatusUnhealthy, c.eval.Timeout()
		if res := r.Results[i]; res != nil {
			status, took = res.Status, time.Duration(res.ResponseTimeMs*float64(time.Millisecond))
		}
		for _, st := range readiness.Statuses {
			ch <- prometheus.MustNewConstMetric(c.check, prometheus.GaugeValue, b2f(st == status), chk.Name(), st)
		}
		ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, took.Seconds(), chk.Name())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
