package coreops

import (
	"cmp"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// OtherQueue is the queue label of the queues beyond the cap, summed.
const OtherQueue = "other"

type metricsCollector struct {
	r            *Refresher
	maxQueues    int
	maxStaleness time.Duration
	now          func() time.Time

	queueLength, queueOldest, queueNewest, queueTotal *prometheus.Desc
	queuesDropped, pgmqFound                          *prometheus.Desc
	dlqEntries, dlqOldest                             *prometheus.Desc
	stale, oldestActive                               *prometheus.Desc
}

// NewCollector exports r's last good values at scrape time. Queues beyond
// maxQueues (the first by name kept) are summed into queue="other". A part older
// than maxStaleness is withdrawn, so a dead reader shows as absent data
// (exporters.Config.MaxStaleness; zero keeps the last values).
func NewCollector(r *Refresher, maxQueues int, maxStaleness time.Duration) prometheus.Collector {
	if maxQueues < 1 {
		maxQueues = 1
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &metricsCollector{
		r: r, maxQueues: maxQueues, maxStaleness: maxStaleness, now: time.Now,
		queueLength: d("tasker_pgmq_queue_length",
			"Messages in a tasker-core PGMQ queue (pgmq.metrics_all() queue_length); the engine warns at 1,000 and refuses work at 5,000.", "queue"),
		queueOldest: d("tasker_pgmq_oldest_message_age_seconds",
			"Age of the oldest message in a PGMQ queue (whole seconds, as PGMQ computes it); 0 when the queue is empty.", "queue"),
		queueNewest: d("tasker_pgmq_newest_message_age_seconds",
			"Age of the newest message in a PGMQ queue (whole seconds); 0 when the queue is empty.", "queue"),
		queueTotal: d("tasker_pgmq_messages_total",
			"Messages ever sent to a PGMQ queue (its msg_id sequence, pgmq.metrics_all() total_messages).", "queue"),
		queuesDropped: d("tasker_sidecar_pgmq_queues_folded",
			"PGMQ queues summed into queue=\"other\" by the cardinality cap (metrics.max_label_groups)."),
		pgmqFound: d("tasker_sidecar_pgmq_found",
			"1 when pgmq.metrics_all() exists in the queue database (the Tasker database or pgmq.database_url), 0 when not."),
		dlqEntries: d("tasker_dlq_entries",
			"tasker-core dead-letter entries (tasks_dlq) by reason and resolution status, every enum pair present; as v_dlq_dashboard counts them.",
			"reason", "resolution_status"),
		dlqOldest: d("tasker_dlq_oldest_pending_age_seconds",
			"Age of the oldest dead-letter entry still pending investigation; 0 when none is."),
		stale: d("tasker_tasks_stale",
			"Active tasker-core tasks past their staleness threshold (level=\"stale\") or at 80 % of it (level=\"warning\"), "+
				"as v_task_staleness_monitoring's health_status counts them, per-template thresholds honoured.",
			"state", "level"),
		oldestActive: d("tasker_tasks_oldest_age_seconds",
			"How long the incomplete task longest in each non-terminal state has been in it; 0 when none is.", "state"),
	}
}

func (c *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queueLength, c.queueOldest, c.queueNewest, c.queueTotal,
		c.queuesDropped, c.pgmqFound, c.dlqEntries, c.dlqOldest, c.stale, c.oldestActive} {
		ch <- d
	}
}

func (c *metricsCollector) fresh(at map[string]time.Time, part string) bool {
	t, ok := at[part]
	return ok && (c.maxStaleness <= 0 || c.now().Sub(t) <= c.maxStaleness)
}

func (c *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	snap, at := c.r.Last()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.fresh(at, PartQueues) {
		found := 0.0
		if snap.QueuesFound {
			found = 1
		}
		gauge(c.pgmqFound, found)
		queues, folded := foldQueues(snap.Queues, c.maxQueues)
		for _, q := range queues {
			gauge(c.queueLength, float64(q.Length), q.Name)
			gauge(c.queueOldest, deref(q.OldestAge), q.Name)
			gauge(c.queueNewest, deref(q.NewestAge), q.Name)
			ch <- prometheus.MustNewConstMetric(c.queueTotal, prometheus.CounterValue, float64(q.Total), q.Name)
		}
		if snap.QueuesFound {
			gauge(c.queuesDropped, float64(folded))
		}
	}
	if c.fresh(at, PartDLQ) {
		for _, e := range snap.DLQ {
			gauge(c.dlqEntries, float64(e.Count), e.Reason, e.Status)
		}
		gauge(c.dlqOldest, deref(snap.DLQOldestPending))
	}
	if c.fresh(at, PartStaleness) {
		for _, s := range snap.Stale {
			gauge(c.stale, float64(s.Count), s.State, s.Level)
		}
		for st, age := range snap.OldestActive {
			gauge(c.oldestActive, age, st)
		}
	}
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// foldQueues keeps the first max-1 queues by name when there are more than
// max, and sums the rest into one "other" queue: the lengths and totals
// add, its oldest message is the oldest of theirs and its newest the newest.
// By name, not by depth: the set must not change from scrape to scrape, or
// tasker_pgmq_messages_total{queue="other"} would jump by a whole queue's
// history each time two queues swapped places; and the engine's
// orchestration_* queues sort before the worker_<namespace>_queue ones, so
// they always keep their own series. Only the queues added or dropped move
// the set. The depth alerts leave queue="other" out: its sum is no queue's.
func foldQueues(qs []Queue, max int) ([]Queue, int) {
	if len(qs) <= max {
		return qs, 0
	}
	sorted := slices.Clone(qs)
	slices.SortFunc(sorted, func(a, b Queue) int { return cmp.Compare(a.Name, b.Name) })
	keep, rest := sorted[:max-1], sorted[max-1:]
	other := Queue{Name: OtherQueue}
	for _, q := range rest {
		other.Length += q.Length
		other.Total += q.Total
		if q.OldestAge != nil && (other.OldestAge == nil || *q.OldestAge > *other.OldestAge) {
			other.OldestAge = q.OldestAge
		}
		if q.NewestAge != nil && (other.NewestAge == nil || *q.NewestAge < *other.NewestAge) {
			other.NewestAge = q.NewestAge
		}
	}
	return append(slices.Clone(keep), other), len(rest)
}
