package exporters

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// StateNew labels entities with no transition row yet. Tasker's health
// function counts them in the totals only; giving them a state makes the
// state series sum to the total.
const StateNew = "new"

// OtherGroup is the namespace and task label of the folded pairs.
const OtherGroup = "other"

// Config bounds what /metrics exports, the configuration's metrics section.
type Config struct {
	// MaxLabelGroups keeps this many (namespace, task) pairs with series of
	// their own, the largest first; the rest are summed into
	// namespace="other",task="other". The analytics gauges use the same cap.
	MaxLabelGroups int `yaml:"max_label_groups"`
	// MaxStaleness withdraws every domain series once the data is older than
	// this (collector.Snapshot.Age: since the refresh, plus a standby's
	// replication lag), so that a dead refresher shows up as absent data, not as flat
	// lines. Zero keeps serving the last snapshot forever.
	MaxStaleness time.Duration `yaml:"max_staleness"`
}

// DefaultConfig is the metrics section's defaults.
func DefaultConfig() Config {
	return Config{MaxLabelGroups: 100, MaxStaleness: 10 * time.Minute}
}

// Validate returns every problem, each starting with its key relative to
// the section. That max_staleness must cover two refresh intervals is
// checked where both are known (internal/config).
func (c Config) Validate() []error {
	var errs []error
	if c.MaxLabelGroups < 1 {
		errs = append(errs, fmt.Errorf("max_label_groups: must be at least 1 (got %d)", c.MaxLabelGroups))
	}
	if c.MaxStaleness < 0 {
		errs = append(errs, fmt.Errorf("max_staleness: must not be negative (got %s)", c.MaxStaleness))
	}
	return errs
}

type domainCollector struct {
	src HealthSource
	cfg Config
	now func() time.Time

	tasks, steps, errorSteps *prometheus.Desc
	connActive, connMax      *prometheus.Desc
	tasksByName, stepsByName *prometheus.Desc
	errorStepsByName         *prometheus.Desc
	groupsDropped            *prometheus.Desc
	oldestStep               *prometheus.Desc

	// The folded breakdown only changes with the snapshot, so it is built
	// once per snapshot rather than once per scrape.
	mu      sync.Mutex
	memoFor *collector.Snapshot
	memo    breakdown
}

// NewDomainCollector exports Tasker's task and step state at scrape time
// from src's last good snapshot. Nothing is exported before the first one.
// A cap below 1 takes DefaultConfig's.
func NewDomainCollector(src HealthSource, cfg Config) prometheus.Collector {
	if cfg.MaxLabelGroups <= 0 {
		cfg.MaxLabelGroups = DefaultConfig().MaxLabelGroups
	}
	name := func(sub, n string) string { return prometheus.BuildFQName("tasker", sub, n) }
	return &domainCollector{
		src: src,
		cfg: cfg,
		now: time.Now,
		tasks: prometheus.NewDesc(name("", "tasks"),
			"Tasker tasks by current state; state=\"new\" counts tasks with no transition yet, so the series sum to all tasks.",
			[]string{"state"}, nil),
		steps: prometheus.NewDesc(name("", "steps"),
			"Tasker workflow steps by current state; state=\"new\" counts steps with no transition yet, so the series sum to all steps.",
			[]string{"state"}, nil),
		errorSteps: prometheus.NewDesc(name("", "error_steps"),
			"Steps currently in error by retry class, as get_system_health_counts_v01 counts them; in_backoff is a subset of retryable.",
			[]string{"retry_class"}, nil),
		connActive: prometheus.NewDesc(name("database", "connections_active"),
			"Active sessions on the Tasker database (pg_stat_activity state='active', including the sidecar's own).",
			nil, nil),
		connMax: prometheus.NewDesc(name("database", "connections_max"),
			"PostgreSQL max_connections setting (0 if unknown).",
			nil, nil),
		tasksByName: prometheus.NewDesc(name("", "tasks_by_name"),
			"Tasker tasks by namespace, task name and current state; pairs beyond the cap are summed into namespace=\"other\",task=\"other\".",
			[]string{"namespace", "task", "state"}, nil),
		stepsByName: prometheus.NewDesc(name("", "steps_by_name"),
			"Tasker workflow steps by their task's namespace and name and by current state; pairs beyond the cap are summed into namespace=\"other\",task=\"other\".",
			[]string{"namespace", "task", "state"}, nil),
		oldestStep: prometheus.NewDesc(name("", "steps_oldest_age_seconds"),
			"How long the step waiting longest has been in its state: state=\"in_progress\" for steps in progress, "+
				"state=\"error\" for steps in error with a retry left whose task is still pending or in progress (the others wait for an operator). "+
				"0 when no step waits.",
			[]string{"state"}, nil),
		errorStepsByName: prometheus.NewDesc(name("", "error_steps_by_name"),
			"Steps currently in error by their task's namespace and name and by retry class (in_backoff is a subset of retryable); "+
				"pairs beyond the cap are summed into namespace=\"other\",task=\"other\". Classes with no step are left out.",
			[]string{"namespace", "task", "retry_class"}, nil),
		groupsDropped: prometheus.NewDesc(prometheus.BuildFQName("tasker_sidecar", "", "label_groups_dropped"),
			"(namespace, task) pairs folded into namespace=\"other\",task=\"other\" by the cardinality cap.",
			nil, nil),
	}
}

func (d *domainCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{
		d.tasks, d.steps, d.errorSteps, d.connActive, d.connMax, d.tasksByName, d.stepsByName, d.groupsDropped,
		d.oldestStep, d.errorStepsByName,
	} {
		ch <- desc
	}
}

func (d *domainCollector) Collect(ch chan<- prometheus.Metric) {
	snap := d.src.State().Last
	if snap == nil {
		return
	}
	// Age includes a standby's replication lag: numbers read a second ago
	// from a standby whose replay stopped an hour ago are an hour old.
	if d.cfg.MaxStaleness > 0 && snap.Age(d.now()) > d.cfg.MaxStaleness {
		return
	}
	gauge := func(desc *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(v), labels...)
	}
	c := snap.Counts

	eng := engineOf(snap)
	byState := func(desc *prometheus.Desc, total int64, states []string, counts map[string]int64) {
		rest := total
		for _, state := range states {
			v := counts[state]
			gauge(desc, v, state)
			rest -= v
		}
		// Rows with a state outside the engine's, which its state machine
		// rejects, would land in "new" too.
		gauge(desc, max(rest, 0), StateNew)
	}
	taskCounts, stepCounts := snap.TaskStates(), snap.StepStates()
	if eng.Kind == engine.KindRails {
		// The Rails columns, as the sidecar has always exported them: the
		// health function's six states.
		taskCounts = map[string]int64{
			engine.Pending: c.PendingTasks, engine.InProgress: c.InProgressTasks, engine.Complete: c.CompleteTasks,
			engine.Error: c.ErrorTasks, engine.Cancelled: c.CancelledTasks, engine.ResolvedManually: snap.ResolvedManuallyTasks,
		}
		stepCounts = map[string]int64{
			engine.Pending: c.PendingSteps, engine.InProgress: c.InProgressSteps, engine.Complete: c.CompleteSteps,
			engine.Error: c.ErrorSteps, engine.Cancelled: snap.CancelledSteps, engine.ResolvedManually: snap.ResolvedManuallySteps,
		}
	}
	byState(d.tasks, c.TotalTasks, eng.TaskStates.All, taskCounts)
	byState(d.steps, c.TotalSteps, eng.StepStates.All, stepCounts)

	gauge(d.errorSteps, c.RetryableErrorSteps, engine.RetryClassRetryable)
	gauge(d.errorSteps, c.ExhaustedRetrySteps, engine.RetryClassExhausted)
	gauge(d.errorSteps, c.InBackoffSteps, engine.RetryClassInBackoff)
	now := d.now()
	age := func(since time.Time) float64 {
		if since.IsZero() {
			return 0
		}
		return max(now.Sub(since).Seconds(), 0)
	}
	// One series per running step state of the engine (in_progress alone on
	// Rails), then the retry wait: steps in error with a retry left on
	// Rails, steps in waiting_for_retry on core.
	for _, state := range eng.StepStates.Running {
		since := snap.OldestStepByState[state]
		if state == engine.InProgress {
			since = snap.OldestInProgressStep
		}
		ch <- prometheus.MustNewConstMetric(d.oldestStep, prometheus.GaugeValue, age(since), state)
	}
	if !snap.OldestRetryableUnknown {
		ch <- prometheus.MustNewConstMetric(d.oldestStep, prometheus.GaugeValue, age(snap.OldestRetryableErrorStep), retryWaitState(eng))
	}
	gauge(d.connActive, c.ActiveConnections)
	gauge(d.connMax, c.MaxConnections)

	b := d.breakdown(snap)
	for _, s := range b.tasks {
		d.named(ch, d.tasksByName, s)
	}
	for _, s := range b.steps {
		d.named(ch, d.stepsByName, s)
	}
	for _, s := range b.errorSteps {
		d.named(ch, d.errorStepsByName, s)
	}
	gauge(d.groupsDropped, int64(b.dropped))
}

// named uses the non-panicking constructor: the names come from the
// database, and a bad one must cost one series, not the process.
func (d *domainCollector) named(ch chan<- prometheus.Metric, desc *prometheus.Desc, s series) {
	m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, float64(s.count), s.namespace, s.task, s.state)
	if err != nil {
		m = prometheus.NewInvalidMetric(desc, err)
	}
	ch <- m
}

type series struct {
	namespace, task, state string
	count                  int64
}

type breakdown struct {
	tasks, steps, errorSteps []series
	kept                     map[pair]bool // the pairs with their own labels
	dropped                  int
}

type pair struct{ namespace, task string }

func (d *domainCollector) breakdown(snap *collector.Snapshot) breakdown {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.memoFor != snap {
		d.memo, d.memoFor = foldGroups(snap.Tasks, snap.Steps, d.cfg.MaxLabelGroups, engineOf(snap)), snap
		d.memo.errorSteps = fold(snap.ErrorStepsByName, d.memo.kept, retryClassLabel)
	}
	return d.memo
}

// foldGroups keeps the limit largest (namespace, task) pairs, ranked by task
// count, then step count, then name, so that the kept set is the same for
// both families and stable across scrapes. Everything else is summed into
// the "other" pair, so the per-state sums are preserved.
func foldGroups(tasks, steps []collector.GroupCount, limit int, eng engine.Engine) breakdown {
	taskLabel, stepLabel := stateLabel(eng.TaskStates), stateLabel(eng.StepStates)
	type totals struct{ tasks, steps int64 }
	sizes := map[pair]*totals{}
	size := func(g collector.GroupCount, label func(string) (string, bool)) *totals {
		if _, ok := label(g.State); !ok {
			return &totals{} // exported nowhere, so it must not win a slot
		}
		p := pair{clean(g.Namespace), clean(g.TaskName)}
		t := sizes[p]
		if t == nil {
			t = &totals{}
			sizes[p] = t
		}
		return t
	}
	for _, g := range tasks {
		size(g, taskLabel).tasks += g.Count
	}
	for _, g := range steps {
		size(g, stepLabel).steps += g.Count
	}
	ranked := make([]pair, 0, len(sizes))
	for p := range sizes {
		ranked = append(ranked, p)
	}
	slices.SortFunc(ranked, func(a, b pair) int {
		ta, tb := sizes[a], sizes[b]
		return cmp.Or(
			cmp.Compare(tb.tasks, ta.tasks),
			cmp.Compare(tb.steps, ta.steps),
			strings.Compare(a.namespace, b.namespace),
			strings.Compare(a.task, b.task),
		)
	})
	kept := map[pair]bool{}
	for _, p := range ranked[:min(limit, len(ranked))] {
		kept[p] = true
	}
	return breakdown{
		tasks:   fold(tasks, kept, taskLabel),
		steps:   fold(steps, kept, stepLabel),
		kept:    kept,
		dropped: len(ranked) - len(kept),
	}
}

// fold sums groups into the kept pairs and "other"; label maps a group's
// State to its label value, false to drop it.
func fold(groups []collector.GroupCount, kept map[pair]bool, label func(string) (string, bool)) []series {
	// Summing by label set also merges rows that differ only in what the
	// labels leave out (task versions) and a real pair named "other".
	sums := map[series]int64{}
	for _, g := range groups {
		state, ok := label(g.State)
		if !ok || g.Count == 0 {
			continue
		}
		p := pair{clean(g.Namespace), clean(g.TaskName)}
		if !kept[p] {
			p = pair{OtherGroup, OtherGroup}
		}
		sums[series{namespace: p.namespace, task: p.task, state: state}] += g.Count
	}
	out := make([]series, 0, len(sums))
	for s, n := range sums {
		s.count = n
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b series) int {
		return cmp.Or(strings.Compare(a.namespace, b.namespace), strings.Compare(a.task, b.task), strings.Compare(a.state, b.state))
	})
	return out
}

// stateLabel keeps label values to the engine's states: an unexpected state
// string from the database is dropped rather than becoming a new series.
func stateLabel(states engine.StateSets) func(string) (string, bool) {
	return func(s string) (string, bool) {
		if s == "" {
			return StateNew, true
		}
		return s, states.Has(s)
	}
}

// engineOf is the engine whose states snap holds: Rails when unset, as in
// snapshots from before engines were told apart.
func engineOf(snap *collector.Snapshot) engine.Engine {
	if e, err := engine.For(snap.Engine); err == nil {
		return e
	}
	return engine.Rails()
}

// retryWaitState labels the age of the oldest step waiting for a retry:
// the engine's backoff state (waiting_for_retry on core), or error on
// Rails, where such a step is in error with a retry left.
func retryWaitState(e engine.Engine) string {
	if len(e.StepStates.InBackoff) > 0 {
		return e.StepStates.InBackoff[0]
	}
	return engine.Error
}

// retryClassLabel keeps the retry_class label to the three classes.
func retryClassLabel(s string) (string, bool) {
	switch s {
	case engine.RetryClassRetryable, engine.RetryClassExhausted, engine.RetryClassInBackoff:
		return s, true
	}
	return "", false
}

func clean(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
