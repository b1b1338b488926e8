package detector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/internal/lifecycle"
	"github.com/tasker-systems/tasker-sidecar/store"
)

// ErrUnreachable is wrapped by Run's error when the store did not answer.
// The report is still complete and says local_only.
var ErrUnreachable = errors.New("cache store unreachable")

// minRerunGap spaces out re-runs triggered by errors and reconnects, so a
// burst of failing operations costs one detection, not one each.
const minRerunGap = time.Second

// Detector detects a store's capabilities and keeps the latest report.
// Run detects once; Start keeps the report current in the background.
type Detector struct {
	st      store.Store
	cfg     Config
	logger  *slog.Logger
	metrics *metrics
	rules   []rule
	now     func() time.Time
	gap     time.Duration

	runMu sync.Mutex // one run at a time

	mu        sync.RWMutex
	custom    []CustomDetector
	report    Report
	hasReport bool
	methods   coord.Methods // Report.Methods before the first run
	lastRun   time.Time
	warned    map[string]bool

	trigger chan struct{}

	loop lifecycle.Loop
}

// New returns a detector for st. The configuration is validated (zero
// values take the defaults) and the metrics are registered on reg; reg may
// be nil. A nil logger discards logs.
func New(st store.Store, cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Detector, error) {
	if st == nil {
		return nil, errors.New("detector: nil store")
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("detector config: %w", errors.Join(errs...))
	}
	cfg = cfg.withDefaults()
	rules, err := compileRules(cfg.Detectors)
	if err != nil {
		return nil, fmt.Errorf("detector config: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Scripts are assumed until detection says otherwise; where no Lua
	// may ever be sent, not even before the first run.
	methods := coord.Methods{Swap: coord.CondScript, Delete: coord.CondScript}
	if cfg.noScripts(nil, nil) != "" {
		methods = coord.Methods{Swap: coord.CondNone, Delete: coord.CondNone}
	}
	return &Detector{
		methods: methods,
		st:      st,
		cfg:     cfg,
		logger:  logger.With("component", "cache_detector"),
		metrics: m,
		rules:   rules,
		now:     time.Now,
		gap:     minRerunGap,
		warned:  map[string]bool{},
		trigger: make(chan struct{}, 1),
	}, nil
}

// Register adds an embedder's detector to the custom source, after the
// config rules. It applies from the next run.
func (d *Detector) Register(cd CustomDetector) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.custom = append(d.custom, cd)
}

// Methods returns the latest report's compare-and-swap and
// compare-and-delete methods without copying the rest of the report: coord
// reads them before every conditional operation.
func (d *Detector) Methods() coord.Methods {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.hasReport {
		return d.report.Methods
	}
	return d.methods
}

// Report returns the latest report. Before the first run it describes the
// store as not yet detected, with strategy local_only.
func (d *Detector) Report() Report {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.hasReport {
		// A copy, so a caller that edits its report cannot change ours.
		r := d.report
		r.Capabilities = maps.Clone(r.Capabilities)
		r.Conflicts = slices.Clone(r.Conflicts)
		r.Store.Warnings = slices.Clone(r.Store.Warnings)
		return r
	}
	return Report{
		Store: StoreInfo{
			Identity: Identity{Kind: d.st.Kind(), Address: d.st.Address()},
			URL:      d.st.URL(),
			Error:    "capability detection has not run yet",
		},
		Capabilities: map[string]Capability{},
		Strategy:     StrategyLocalOnly,
		Mechanism:    MechanismInProcess,
		Conflicts:    []Conflict{},
		Methods:      d.methods,
	}
}

// Run detects the capabilities now, within detect_timeout, and returns the
// new report. The error is non-nil only when the store is unreachable
// (wrapping ErrUnreachable); the report then says local_only.
func (d *Detector) Run(ctx context.Context) (Report, error) {
	d.runMu.Lock()
	defer d.runMu.Unlock()
	start := d.now()
	runCtx, cancel := context.WithTimeout(ctx, d.cfg.DetectTimeout)
	defer cancel()

	res := d.probe(runCtx)
	// Custom rules run even for a store that is down: a rule on the
	// address alone still applies.
	custom := res.custom
	if !res.customDone {
		custom = d.customOpinions(runCtx, res.id)
	}
	constants := constantOpinions(res.id)

	caps := make(map[string]Capability, len(capabilityTable))
	for _, c := range capabilityTable {
		caps[c.name] = d.settle(c.name, custom, constants, res.obs)
	}
	conflicts := []Conflict{}
	if res.reachable {
		for _, name := range sortedKeys(d.cfg.Capabilities) {
			obs, ok := res.obs[name]
			if ok && obs.observed && obs.Value != d.cfg.Capabilities[name] {
				conflicts = append(conflicts, Conflict{Capability: name, Declared: d.cfg.Capabilities[name], Observed: obs.Value, Evidence: obs.Evidence})
			}
		}
	}
	strategy, mechanism := chooseStrategy(d.st.Kind(), res.reachable, caps)
	d.mu.RLock()
	methods := d.methods
	if d.hasReport {
		methods = d.report.Methods
	}
	d.mu.RUnlock()
	switch {
	case res.reachable && res.condKnown:
		methods = coord.Methods{Swap: res.swap, Delete: res.del}
	case d.cfg.noScripts(custom, constants) != "":
		// Not probed this time, but no Lua may be sent: keep only what an
		// earlier run proved natively.
		methods = coord.Methods{Swap: withoutScript(methods.Swap), Delete: withoutScript(methods.Delete)}
	}

	rep := Report{
		Store: StoreInfo{
			Identity:   res.id,
			URL:        d.st.URL(),
			Cluster:    res.id.Mode == store.TopologyCluster,
			Reachable:  res.reachable,
			Warnings:   res.warnings,
			DetectedAt: start.UTC().Truncate(time.Millisecond),
			DurationMS: float64(d.now().Sub(start).Microseconds()) / 1000,
		},
		Capabilities: caps,
		Strategy:     strategy,
		Mechanism:    mechanism,
		Conflicts:    conflicts,
		Methods:      methods,
	}
	if !res.reachable {
		rep.Store.Error = refusal(res.err)
		rep.Store.Warnings = append(rep.Store.Warnings,
			"the cache store did not answer: coordination is in-process only (local_only) until it is back; detection re-runs when it reconnects")
	}

	d.mu.Lock()
	prev, hadPrev := d.report, d.hasReport
	d.report, d.hasReport, d.lastRun = rep, true, d.now()
	d.mu.Unlock()

	d.metrics.publish(rep)
	d.logRun(prev, hadPrev, rep)
	if !res.reachable {
		d.metrics.runs.WithLabelValues("unreachable").Inc()
		return rep, fmt.Errorf("%w at %s: %w", ErrUnreachable, d.st.Address(), res.err)
	}
	d.metrics.runs.WithLabelValues("ok").Inc()
	return rep, nil
}

func withoutScript(c coord.Conditional) coord.Conditional {
	if c == coord.CondScript {
		return coord.CondNone
	}
	return c
}

// settle applies the precedence: declared > custom > constants > runtime.
func (d *Detector) settle(name string, custom, constants map[string]Opinion, obs map[string]observation) Capability {
	if v, ok := d.cfg.Capabilities[name]; ok {
		return Capability{Value: v, Source: SourceDeclared, Evidence: "cache.capabilities." + name + " in the configuration"}
	}
	if op, ok := custom[name]; ok {
		return Capability{Value: op.Value, Source: SourceCustom, Evidence: op.Evidence}
	}
	if op, ok := constants[name]; ok {
		return Capability{Value: op.Value, Source: SourceConstants, Evidence: op.Evidence}
	}
	o := obs[name]
	return Capability{Value: o.Value, Source: SourceRuntime, Evidence: o.Evidence}
}

func (d *Detector) logRun(prev Report, hadPrev bool, rep Report) {
	attrs := []any{"store", rep.Store.Address, "kind", rep.Store.Kind, "product", rep.Store.Product, "version", rep.Store.Version,
		"strategy", rep.Strategy, "mechanism", rep.Mechanism, "duration_ms", rep.Store.DurationMS}
	switch {
	case !rep.Store.Reachable && (!hadPrev || prev.Store.Reachable):
		d.logger.Warn("cache store unreachable: coordinating in-process only (local_only) until it is back",
			append(attrs, "err", rep.Store.Error)...)
	case rep.Store.Reachable && hadPrev && !prev.Store.Reachable:
		d.logger.Info("cache store reachable again; capabilities re-detected", attrs...)
	case !hadPrev || prev.Strategy != rep.Strategy || prev.Mechanism != rep.Mechanism:
		d.logger.Info("cache capabilities detected", attrs...)
	default:
		d.logger.Debug("cache capabilities re-detected", attrs...)
	}
	for _, c := range rep.Conflicts {
		key := fmt.Sprintf("conflict:%s:%v:%v", c.Capability, c.Declared, c.Observed)
		if d.warnOnce(key, "declared cache capability contradicts what a probe observed; the declaration wins",
			"capability", c.Capability, "declared", c.Declared, "observed", c.Observed, "evidence", c.Evidence) {
			d.metrics.conflicts.WithLabelValues(c.Capability).Inc()
		}
	}
}

// warnOnce logs a warning the first time key is seen and reports whether it
// did.
func (d *Detector) warnOnce(key, msg string, attrs ...any) bool {
	d.mu.Lock()
	seen := d.warned[key]
	d.warned[key] = true
	d.mu.Unlock()
	if !seen {
		d.logger.Warn(msg, attrs...)
	}
	return !seen
}

// Rerun asks the background loop (see Start) for a new detection soon.
// Bursts collapse into one run, and runs are at least a second apart.
func (d *Detector) Rerun() {
	select {
	case d.trigger <- struct{}{}:
	default:
	}
}

// NotifyError tells the detector that a store operation failed. A
// permission or protocol error means the capabilities may be stale (an ACL
// changed, a failover moved us to a replica, a proxy appeared), and a lost
// connection to a store believed reachable means it may be gone; both
// schedule a re-run, and NotifyError reports whether it did. Other errors
// are ignored. Re-runs need Start.
func (d *Detector) NotifyError(err error) bool {
	switch store.Classify(err) {
	case store.ClassPermission, store.ClassProtocol:
	case store.ClassUnavailable:
		if !d.Report().Store.Reachable {
			return false
		}
	default:
		return false
	}
	d.logger.Debug("store error; scheduling capability re-detection", "class", store.Classify(err).String(), "err", err)
	d.Rerun()
	return true
}

// Start runs the background loop until ctx ends or Shutdown is called: it runs
// detection at once if Run has not been called yet, re-runs it when
// NotifyError or Rerun asks, when the store reports a reconnect, every
// refresh_interval if set, and, while the store is unreachable, pings it
// every recheck_interval and re-runs as soon as it answers. Start after
// Shutdown does nothing.
func (d *Detector) Start(ctx context.Context) error {
	d.loop.Start(ctx, func(ctx context.Context) {
		if rn, ok := d.st.(store.ReconnectNotifier); ok {
			remove := rn.OnReconnect(func() {
				d.logger.Debug("cache store reconnected; scheduling capability re-detection")
				d.Rerun()
			})
			defer remove()
		}
		d.run(ctx)
	})
	return nil
}

// Shutdown ends the background loop, cancelling a detection under way, and
// waits for it, or for ctx to end. It is safe to call before Start and more
// than once.
func (d *Detector) Shutdown(ctx context.Context) error { return d.loop.Shutdown(ctx) }

// run is the background loop: its context ends at Shutdown.
func (d *Detector) run(ctx context.Context) {
	d.mu.RLock()
	has := d.hasReport
	d.mu.RUnlock()
	if !has {
		_, _ = d.Run(ctx)
	}
	recheck := time.NewTicker(d.cfg.RecheckInterval)
	defer recheck.Stop()
	var refresh <-chan time.Time
	if d.cfg.RefreshInterval > 0 {
		t := time.NewTicker(d.cfg.RefreshInterval)
		defer t.Stop()
		refresh = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.trigger:
			d.mu.RLock()
			wait := d.gap - d.now().Sub(d.lastRun)
			d.mu.RUnlock()
			if wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
			}
			_, _ = d.Run(ctx)
		case <-recheck.C:
			if d.Report().Store.Reachable {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, d.cfg.ProbeTimeout)
			err := d.st.Ping(pctx)
			cancel()
			if err == nil {
				_, _ = d.Run(ctx)
			}
		case <-refresh:
			_, _ = d.Run(ctx)
		}
	}
}
