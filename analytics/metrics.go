package analytics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/internal/lifecycle"
)

// ResourceMetrics is the cache resource of the dashboard aggregates.
const ResourceMetrics = "analytics.metrics"

// OtherGroup labels the (namespace, task) pairs folded by the cap.
const OtherGroup = "other"

// Metrics is a prometheus.Collector of dashboard gauges. Scrapes read the
// result of the last refresh; only Run (or Refresh) queries the database.
type Metrics struct {
	svc       *Service
	loop      lifecycle.Loop
	interval  time.Duration
	windowLen time.Duration
	maxGroups int
	share     ShareFunc
	// maxStaleness withdraws the per-task series once the last successful
	// refresh is older than three intervals, so a stuck refresher shows as
	// missing data instead of flat lines.
	maxStaleness time.Duration
	log          *slog.Logger
	now          func() time.Time

	created, completed, failed, completionRatio, errorRatio *prometheus.Desc
	duration, ready, blocked, backoff                       *prometheus.Desc
	window, dropped, lastSuccess, refreshSeconds            *prometheus.Desc
	refreshErrors                                           prometheus.Counter

	mu       sync.Mutex
	snap     *dashboard
	tookLast time.Duration
}

// dashboard is one refresh, as cached: plain JSON so that replicas can
// share it through the coordinated cache.
type dashboard struct {
	TakenAt time.Time  `json:"taken_at"`
	Dropped int64      `json:"dropped"`
	Groups  []groupRow `json:"groups"`
}

type groupRow struct {
	Namespace string   `json:"namespace"`
	Task      string   `json:"task"`
	Created   int64    `json:"created"`
	Completed int64    `json:"completed"`
	Failed    int64    `json:"failed"`
	P50       *float64 `json:"p50"`
	P95       *float64 `json:"p95"`
	P99       *float64 `json:"p99"`
	Ready     int64    `json:"ready"`
	Blocked   int64    `json:"blocked"`
	InBackoff int64    `json:"in_backoff"`
}

// ShareFunc runs compute once for every caller and replica asking for the
// same resource and params within its freshness (the coordinated cache,
// ttl.Cache.Get, in the wiring), so that analytics does not depend on the
// cache store.
type ShareFunc func(ctx context.Context, resource, params string, compute func(context.Context) ([]byte, error)) ([]byte, error)

// NewMetrics builds the collector of svc's dashboard gauges, refreshed every
// analytics.metrics_interval over analytics.metrics_window (svc's Config);
// register it, then start Run. maxGroups keeps the most active (namespace,
// task) pairs by name and sums the rest into namespace="other",task="other"
// (metrics.max_label_groups; zero or less: no cap). share, when set, shares
// one refresh among replicas under ResourceMetrics; nil computes every
// refresh. logger nil discards.
func NewMetrics(svc *Service, maxGroups int, share ShareFunc, log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if maxGroups <= 0 {
		maxGroups = math.MaxInt32
	}
	cfg := svc.Config()
	group := []string{"namespace", "task"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("tasker", "analytics", name), help, labels, nil)
	}
	s := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("tasker_sidecar", "analytics", name), help, nil, nil)
	}
	return &Metrics{
		svc:          svc,
		interval:     cfg.MetricsInterval,
		windowLen:    cfg.MetricsWindow,
		maxGroups:    maxGroups,
		share:        share,
		maxStaleness: 3 * cfg.MetricsInterval,
		log:          log,
		now:          time.Now,
		created: d("tasks_created", "Tasks created within the analytics window (tasker_analytics_window_seconds), "+
			"by namespace and task name.", group...),
		completed: d("tasks_completed", "Tasks created within the analytics window whose own state is now complete.", group...),
		failed:    d("tasks_failed", "Tasks created within the analytics window whose own state is now error.", group...),
		completionRatio: d("task_completion_ratio", "Share (0-1) of the window's tasks that are complete; "+
			"absent when no task was created.", group...),
		errorRatio: d("task_error_ratio", "Share (0-1) of the window's tasks that are in error; "+
			"absent when no task was created.", group...),
		duration: d("task_duration_seconds", "Run time (creation to complete transition) of the window's complete tasks "+
			"at the given percentile (linear interpolation); absent when none completed.",
			"namespace", "task", "percentile"),
		ready: d("steps_ready", "Unprocessed steps of active tasks (pending or in progress) that are ready for "+
			"execution under Tasker's readiness rules.", group...),
		blocked: d("steps_blocked", "Pending unprocessed steps of active tasks whose parents are not all complete "+
			"or resolved.", group...),
		backoff: d("steps_in_backoff", "Unprocessed steps of active tasks with retries left whose explicit or "+
			"failure backoff has not yet elapsed.", group...),
		window:         d("window_seconds", "Length of the window the task gauges look back over."),
		dropped:        s("groups_dropped", "(namespace, task) pairs folded into namespace=\"other\",task=\"other\" by the cardinality cap."),
		lastSuccess:    s("last_refresh_timestamp_seconds", "Unix time of the last successful analytics refresh."),
		refreshSeconds: s("refresh_duration_seconds", "Duration of the last successful analytics refresh (including a cache hit)."),
		refreshErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: prometheus.BuildFQName("tasker_sidecar", "analytics", "refresh_errors_total"),
			Help: "Analytics refreshes that failed.",
		}),
	}
}

// Params is the cache key part of the dashboard query.
func (m *Metrics) params() string {
	return fmt.Sprintf("window=%s&max_groups=%d", m.windowLen, m.maxGroups)
}

// Start refreshes at once and then every analytics.metrics_interval until
// ctx ends or Shutdown; a second Start does nothing.
func (m *Metrics) Start(ctx context.Context) error {
	m.loop.Start(ctx, func(ctx context.Context) {
		t := time.NewTicker(m.interval)
		defer t.Stop()
		for {
			if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("analytics metrics refresh failed", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return nil
}

// Shutdown stops the refreshes and waits, within ctx, for a running one to
// return. Safe before Start and twice.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.loop.Shutdown(ctx) }

// Refresh computes (or fetches from the cache) the dashboard aggregates.
func (m *Metrics) Refresh(ctx context.Context) error {
	if m.svc.Supported() != nil {
		return nil // nothing to compute on this engine: no gauges, no errors
	}
	start := time.Now()
	compute := func(ctx context.Context) ([]byte, error) {
		d, err := m.svc.dashboard(ctx, m.windowLen, m.maxGroups)
		if err != nil {
			return nil, err
		}
		return json.Marshal(d)
	}
	var raw []byte
	var err error
	if m.share != nil {
		raw, err = m.share(ctx, ResourceMetrics, m.params(), compute)
	} else {
		raw, err = compute(ctx)
	}
	if err == nil {
		var d dashboard
		if err = json.Unmarshal(raw, &d); err == nil {
			m.mu.Lock()
			m.snap, m.tookLast = &d, time.Since(start)
			m.mu.Unlock()
			return nil
		}
		err = fmt.Errorf("decode analytics metrics: %w", err)
	}
	m.refreshErrors.Inc()
	return err
}

func (s *Service) dashboard(ctx context.Context, window time.Duration, maxGroups int) (*dashboard, error) {
	d := &dashboard{Groups: []groupRow{}}
	err := s.read(ctx, ClassExpensive, "dashboard", func(q querier) error {
		if err := q.QueryRow(ctx, "SELECT now()").Scan(&d.TakenAt); err != nil {
			return fmt.Errorf("read transaction time: %w", err)
		}
		rows, err := q.Query(ctx, dashboardSQL, window, maxGroups)
		if err != nil {
			return fmt.Errorf("query analytics metrics: %w", err)
		}
		d.Groups, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (groupRow, error) {
			var g groupRow
			err := row.Scan(&g.Namespace, &g.Task, &g.Created, &g.Completed, &g.Failed, &g.P50, &g.P95, &g.P99,
				&g.Ready, &g.Blocked, &g.InBackoff, &d.Dropped)
			return g, err
		})
		if err != nil {
			return fmt.Errorf("read analytics metrics: %w", err)
		}
		return nil
	})
	return d, err
}

// Describe sends the descriptors of every metric Collect may send.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		m.created, m.completed, m.failed, m.completionRatio, m.errorRatio, m.duration,
		m.ready, m.blocked, m.backoff, m.window, m.dropped, m.lastSuccess, m.refreshSeconds,
	} {
		ch <- d
	}
	m.refreshErrors.Describe(ch)
}

// Collect sends the gauges of the last successful refresh; nothing per
// task before the first one or once it is older than MaxStaleness.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.refreshErrors.Collect(ch)
	ch <- prometheus.MustNewConstMetric(m.window, prometheus.GaugeValue, m.windowLen.Seconds())
	m.mu.Lock()
	snap, took := m.snap, m.tookLast
	m.mu.Unlock()
	if snap == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(m.lastSuccess, prometheus.GaugeValue, float64(snap.TakenAt.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(m.refreshSeconds, prometheus.GaugeValue, took.Seconds())
	if m.now().Sub(snap.TakenAt) > m.maxStaleness {
		return
	}
	ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.GaugeValue, float64(snap.Dropped))
	for _, g := range snap.Groups {
		ns, task := clean(g.Namespace), clean(g.Task)
		gauge := func(d *prometheus.Desc, v float64, extra ...string) {
			// The names come from the database: a bad one costs one series,
			// not the scrape.
			metric, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, append([]string{ns, task}, extra...)...)
			if err != nil {
				metric = prometheus.NewInvalidMetric(d, err)
			}
			ch <- metric
		}
		gauge(m.created, float64(g.Created))
		gauge(m.completed, float64(g.Completed))
		gauge(m.failed, float64(g.Failed))
		if g.Created > 0 {
			gauge(m.completionRatio, float64(g.Completed)/float64(g.Created))
			gauge(m.errorRatio, float64(g.Failed)/float64(g.Created))
		}
		for _, p := range []struct {
			label string
			v     *float64
		}{{"p50", g.P50}, {"p95", g.P95}, {"p99", g.P99}} {
			if p.v != nil && !math.IsNaN(*p.v) {
				gauge(m.duration, *p.v, p.label)
			}
		}
		gauge(m.ready, float64(g.Ready))
		gauge(m.blocked, float64(g.Blocked))
		gauge(m.backoff, float64(g.InBackoff))
	}
}

func clean(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

var _ prometheus.Collector = (*Metrics)(nil)

var errNoData = errors.New("no analytics refresh yet")

// LastRefresh reports when the last successful refresh was taken (database
// time), or an error before the first one.
func (m *Metrics) LastRefresh() (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.snap == nil {
		return time.Time{}, errNoData
	}
	return m.snap.TakenAt, nil
}
