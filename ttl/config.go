package ttl

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/rubyjson"
)

// Resources with a built-in policy: the expensive results Tasker caches,
// with the base TTLs its endpoints use (docs/tasker-semantics.md#adaptive-ttl). Any other
// resource name gets the "default" policy.
const (
	ResourceStatus      = "status"       // GET /health/status body
	ResourcePerformance = "performance"  // GET /analytics/performance
	ResourceBottlenecks = "bottlenecks"  // GET /analytics/bottlenecks
	ResourceHandlers    = "handlers"     // the handler catalog
	ResourceTaskGraph   = "task_graph"   // per-task runtime graph analysis
	ResourceTaskContext = "task_context" // per-task execution context
	ResourceTaskSteps   = "task_steps"   // per-task step readiness
	ResourceDefault     = "default"      // policy of every other resource
)

// Modes of adaptive TTL.
const (
	ModeCostAware = "cost-aware"
	ModeTasker    = "tasker"
)

// Config is the cache configuration. Start from DefaultConfig: a zero value
// in a section means zero (Validate reports it where that is invalid), not
// "default", except inside Policies, whose entries only override the fields
// they set.
type Config struct {
	// Enabled false computes every request (ttl.Uncached behaviour).
	Enabled bool `yaml:"enabled"`
	// Mode picks the adaptive TTL: cost-aware (default) or tasker.
	Mode string `yaml:"mode"`
	// KeyVersion goes into every key, so that a different build,
	// database or configuration never reads another one's entries. sidecar
	// run sets it to a hash of the build (version, revisions, or the
	// executable's digest), the database URL and the configuration the
	// computations read; not of the live database's schema (docs/ttl.md,
	// Keys).
	KeyVersion string `yaml:"key_version"`
	// Policies override the built-in per-resource policies field by field;
	// the "default" entry applies to resources without their own.
	Policies map[string]Policy `yaml:"policies"`
	// L1MaxBytes bounds the in-process level by the bytes it holds: each
	// entry weighs its key, its parameters, its current value and a fixed
	// overhead (entryOverhead). A value larger than an eighth of it is
	// served but not kept in-process.
	L1MaxBytes int64 `yaml:"l1_max_bytes"`
	// MaxValueBytes is the largest value written to the shared store; a
	// larger one is kept in-process only (and counted).
	MaxValueBytes int64 `yaml:"max_value_bytes"`
	// RemovedL1MaxEntries catches the key l1_max_entries, replaced by
	// l1_max_bytes: setting it is an error that says so, rather than the
	// generic "unknown key" (internal/config reports those).
	RemovedL1MaxEntries any `yaml:"l1_max_entries,omitempty" json:"-"`
	// RefreshAheadFactor and RefreshAheadMin set the refresh-ahead window:
	// a value is refreshed once less than max(factor × its regeneration
	// cost, min) of its TTL is left, but never earlier than a tenth of its
	// TTL before expiry.
	RefreshAheadFactor float64       `yaml:"refresh_ahead_factor"`
	RefreshAheadMin    time.Duration `yaml:"refresh_ahead_min"`
	// StaleWhileRevalidate is the grace after expiry, as a fraction of the
	// TTL, during which a value is still served while one replica refreshes
	// it in the background. Past it, the request that wins the refresh gate
	// waits for the recomputation (unless recomputations are failing), and
	// every other request is served the value, flagged stale, until
	// MaxStaleness.
	StaleWhileRevalidate float64 `yaml:"stale_while_revalidate"`
	// RetryBackoffMin and RetryBackoffMax bound the exponential backoff
	// between failed refreshes of one key, cluster-wide: it doubles with
	// the cluster's count of failures, and the replica that failed holds
	// the refresh gate for it.
	RetryBackoffMin time.Duration `yaml:"retry_backoff_min"`
	RetryBackoffMax time.Duration `yaml:"retry_backoff_max"`
	// RecheckInterval is how often a shared store that failed is pinged to
	// return to it.
	RecheckInterval time.Duration `yaml:"recheck_interval"`
	// StoreTimeout bounds each shared-store operation.
	StoreTimeout time.Duration `yaml:"store_timeout"`
	// CostAware tunes the cost-aware TTL.
	CostAware CostAwareConfig `yaml:"cost_aware"`
	// Tasker holds Tasker's CacheConfig knobs for mode tasker.
	Tasker TaskerConfig `yaml:"tasker"`
}

// Policy is what a resource may cost and how old it may be. Zero fields in
// an override inherit the built-in value.
type Policy struct {
	// BaseTTL is the TTL before anything is measured, and Tasker's base.
	BaseTTL time.Duration `yaml:"base_ttl"`
	// MinTTL and MaxTTL bound the cost-aware TTL.
	MinTTL time.Duration `yaml:"min_ttl"`
	MaxTTL time.Duration `yaml:"max_ttl"`
	// MaxStaleness is the oldest a served value may ever be, stale serving
	// after failed refreshes included.
	MaxStaleness time.Duration `yaml:"max_staleness"`
	// QueryTimeout bounds one computation; leases last slightly longer.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// MaxWaiters bounds the requests of the resource that wait for cold
	// computations on this replica (nothing servable in the in-process
	// level), and the cold computations it runs at once. A request past it
	// is answered at once: with the last value within MaxStaleness, flagged
	// stale, or with an *OverloadedError.
	MaxWaiters int `yaml:"max_waiters"`
}

// CostAwareConfig tunes the cost-aware TTL (docs/ttl.md).
type CostAwareConfig struct {
	// StaleReadCost is w: how much database time one read of outdated data
	// is worth. Larger means shorter TTLs.
	StaleReadCost time.Duration `yaml:"stale_read_cost"`
	// Jitter spreads TTLs at random over a band this fraction of the TTL
	// wide (below it, or above min_ttl where the TTL is clamped there), so
	// keys written together do not expire together.
	Jitter float64 `yaml:"jitter"`
}

// TaskerConfig is Tasker's CacheConfig (docs/tasker-semantics.md#adaptive-ttl), same names and
// defaults. TTLs are whole seconds, as in Tasker.
type TaskerConfig struct {
	DefaultTTL         int  `yaml:"default_ttl"`
	AdaptiveTTLEnabled bool `yaml:"adaptive_ttl_enabled"`
	// PerformanceTrackingEnabled is accepted and ignored, as in Tasker.
	PerformanceTrackingEnabled bool    `yaml:"performance_tracking_enabled"`
	HitRateSmoothingFactor     float64 `yaml:"hit_rate_smoothing_factor"`
	AccessFrequencyDecayRate   float64 `yaml:"access_frequency_decay_rate"`
	MinAdaptiveTTL             int     `yaml:"min_adaptive_ttl"`
	MaxAdaptiveTTL             int     `yaml:"max_adaptive_ttl"`
	// DashboardCacheTTL, CachePressureThreshold and
	// AdaptiveCalculationInterval are validated as Tasker does and
	// otherwise unused, as in Tasker.
	DashboardCacheTTL           int     `yaml:"dashboard_cache_ttl"`
	CachePressureThreshold      float64 `yaml:"cache_pressure_threshold"`
	AdaptiveCalculationInterval int     `yaml:"adaptive_calculation_interval"`
}

// builtinPolicies are the defaults. Base TTLs are Tasker's; the bounds leave
// room for one refresh and one crashed lease inside MaxStaleness.
func builtinPolicies() map[string]Policy {
	ps := map[string]Policy{
		ResourceStatus:      {BaseTTL: 60 * time.Second, MinTTL: 15 * time.Second, MaxTTL: 120 * time.Second, MaxStaleness: 5 * time.Minute, QueryTimeout: 10 * time.Second},
		ResourcePerformance: {BaseTTL: 90 * time.Second, MinTTL: 30 * time.Second, MaxTTL: 5 * time.Minute, MaxStaleness: 10 * time.Minute, QueryTimeout: 30 * time.Second},
		ResourceBottlenecks: {BaseTTL: 120 * time.Second, MinTTL: 30 * time.Second, MaxTTL: 5 * time.Minute, MaxStaleness: 10 * time.Minute, QueryTimeout: 30 * time.Second},
		ResourceHandlers:    {BaseTTL: 120 * time.Second, MinTTL: 30 * time.Second, MaxTTL: 10 * time.Minute, MaxStaleness: 20 * time.Minute, QueryTimeout: 10 * time.Second},
		ResourceTaskGraph:   {BaseTTL: 90 * time.Second, MinTTL: 30 * time.Second, MaxTTL: 5 * time.Minute, MaxStaleness: 10 * time.Minute, QueryTimeout: 10 * time.Second},
		// Readiness depends on the clock (a backoff runs out with nothing
		// written), so these stay seconds behind at most; one task's query
		// takes milliseconds.
		ResourceTaskContext: {BaseTTL: 5 * time.Second, MinTTL: time.Second, MaxTTL: 15 * time.Second, MaxStaleness: time.Minute, QueryTimeout: 10 * time.Second},
		ResourceTaskSteps:   {BaseTTL: 5 * time.Second, MinTTL: time.Second, MaxTTL: 15 * time.Second, MaxStaleness: time.Minute, QueryTimeout: 10 * time.Second},
		ResourceDefault:     {BaseTTL: 300 * time.Second, MinTTL: 30 * time.Second, MaxTTL: 10 * time.Minute, MaxStaleness: 20 * time.Minute, QueryTimeout: 30 * time.Second},
	}
	for name, p := range ps {
		p.MaxWaiters = defaultMaxWaiters
		switch name {
		case ResourceTaskGraph, ResourceTaskContext, ResourceTaskSteps:
			p.MaxWaiters = lookupMaxWaiters
		}
		ps[name] = p
	}
	return ps
}

// defaultMaxWaiters: a few times the requests one slow computation of the
// analytics connection (one by default, analytics.max_concurrent) can
// answer before a route deadline, so that ordinary bursts wait and a flood
// is turned away.
const defaultMaxWaiters = 32

// lookupMaxWaiters is the per-task resources' bound. Each task of a batch
// request waits as one request (api/analytics.go looks up four at a
// time), a cold task costs milliseconds, and the database work behind them
// is bounded by the analytics lookup queue (analytics.lookup_max_waiters);
// 32 would turn away the eighth concurrent cold batch.
const lookupMaxWaiters = 256

// Bounds of the in-process level and the shared store's values.
const (
	// An eighth of the shipped 128 MiB container limit: the Go heap holds
	// about twice the accounted bytes (the decoded and re-encoded answers
	// around them, and free space the GC has not returned yet), and with
	// 32 MiB a flood of distinct batch requests took the sidecar to 130 MiB
	// (docs/benchmarks.md, "Hostile load").
	defaultL1MaxBytes    = 16 << 20
	minL1MaxBytes        = 1 << 20
	defaultMaxValueBytes = 1 << 20 // memcached's default item size limit
)

// DefaultConfig is the configuration every key not set elsewhere takes.
func DefaultConfig() Config {
	return Config{
		Enabled:              true,
		Mode:                 ModeCostAware,
		Policies:             builtinPolicies(),
		L1MaxBytes:           defaultL1MaxBytes,
		MaxValueBytes:        defaultMaxValueBytes,
		RefreshAheadFactor:   3,
		RefreshAheadMin:      100 * time.Millisecond,
		StaleWhileRevalidate: 0.1,
		RetryBackoffMin:      time.Second,
		RetryBackoffMax:      30 * time.Second,
		RecheckInterval:      time.Second,
		StoreTimeout:         time.Second,
		CostAware:            CostAwareConfig{StaleReadCost: 10 * time.Millisecond, Jitter: 0.1},
		Tasker: TaskerConfig{
			DefaultTTL:                  300,
			AdaptiveTTLEnabled:          true,
			PerformanceTrackingEnabled:  true,
			HitRateSmoothingFactor:      0.9,
			AccessFrequencyDecayRate:    0.95,
			MinAdaptiveTTL:              30,
			MaxAdaptiveTTL:              3600,
			DashboardCacheTTL:           120,
			CachePressureThreshold:      0.8,
			AdaptiveCalculationInterval: 30,
		},
	}
}

// Policy returns the effective policy of resource: the built-in one (or
// "default") with the configured overrides applied field by field.
func (c Config) Policy(resource string) Policy {
	builtin := builtinPolicies()
	p, ok := builtin[resource]
	if !ok {
		p = builtin[ResourceDefault]
		if o, ok := c.Policies[ResourceDefault]; ok {
			p = p.merge(o)
		}
	}
	if o, ok := c.Policies[resource]; ok {
		p = p.merge(o)
	}
	return p
}

func (p Policy) merge(o Policy) Policy {
	set := func(dst *time.Duration, v time.Duration) {
		if v != 0 {
			*dst = v
		}
	}
	set(&p.BaseTTL, o.BaseTTL)
	set(&p.MinTTL, o.MinTTL)
	set(&p.MaxTTL, o.MaxTTL)
	set(&p.MaxStaleness, o.MaxStaleness)
	set(&p.QueryTimeout, o.QueryTimeout)
	if o.MaxWaiters != 0 {
		p.MaxWaiters = o.MaxWaiters
	}
	return p
}

// ttlCap is the longest TTL that keeps every served value within
// MaxStaleness while the database is healthy: the value expires, one refresh
// runs (≤ QueryTimeout), and a refresher that died costs one more lease
// (≈ QueryTimeout) before another replica takes over.
func (p Policy) ttlCap() time.Duration {
	return p.MaxStaleness - 2*p.QueryTimeout
}

// leaseTTL outlives a computation that ends at its deadline, so an honest
// holder still writes under its own lease.
func (p Policy) leaseTTL() time.Duration {
	return p.QueryTimeout + 500*time.Millisecond
}

// Validate returns every problem with its key path relative to the section,
// e.g. "policies.status.max_ttl: ...". The tasker section is checked with
// Tasker's own rules and messages (CacheConfig#validate!).
func (c Config) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if c.Mode != ModeCostAware && c.Mode != ModeTasker {
		add("mode", "must be %s or %s (got: %q)", ModeCostAware, ModeTasker, c.Mode)
	}
	if c.RemovedL1MaxEntries != nil {
		add("l1_max_entries", "removed: the in-process level is bounded by bytes now; set l1_max_bytes instead (default %d, 16 MiB)", defaultL1MaxBytes)
	}
	if c.L1MaxBytes < minL1MaxBytes {
		add("l1_max_bytes", "must be at least %d (1 MiB) (got: %d)", minL1MaxBytes, c.L1MaxBytes)
	}
	if c.MaxValueBytes <= 0 {
		add("max_value_bytes", "must be positive (got: %d)", c.MaxValueBytes)
	}
	// Every float check is written so that NaN fails it (comparisons with
	// NaN are false), and infinities are out of range.
	switch f := c.RefreshAheadFactor; {
	case math.IsNaN(f) || math.IsInf(f, 0):
		add("refresh_ahead_factor", "must be a finite number (got: %v)", f)
	case f < 0:
		add("refresh_ahead_factor", "must not be negative (got: %v)", f)
	}
	if c.RefreshAheadMin < 0 {
		add("refresh_ahead_min", "must not be negative (got: %s)", c.RefreshAheadMin)
	}
	if !(c.StaleWhileRevalidate >= 0 && c.StaleWhileRevalidate <= 1) {
		add("stale_while_revalidate", "must be between 0 and 1 (got: %v)", c.StaleWhileRevalidate)
	}
	if c.RetryBackoffMin <= 0 {
		add("retry_backoff_min", "must be positive (got: %s)", c.RetryBackoffMin)
	}
	if c.RetryBackoffMax < c.RetryBackoffMin {
		add("retry_backoff_max", "must not be less than retry_backoff_min %s (got: %s)", c.RetryBackoffMin, c.RetryBackoffMax)
	}
	if c.RecheckInterval <= 0 {
		add("recheck_interval", "must be positive (got: %s)", c.RecheckInterval)
	}
	if c.StoreTimeout <= 0 {
		add("store_timeout", "must be positive (got: %s)", c.StoreTimeout)
	}
	if c.CostAware.StaleReadCost <= 0 {
		add("cost_aware.stale_read_cost", "must be positive (got: %s)", c.CostAware.StaleReadCost)
	}
	if !(c.CostAware.Jitter >= 0 && c.CostAware.Jitter <= 0.5) {
		add("cost_aware.jitter", "must be between 0 and 0.5 (got: %v)", c.CostAware.Jitter)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Policies)) {
		errs = append(errs, c.validatePolicy(name)...)
	}
	for _, err := range c.Tasker.validate() {
		errs = append(errs, fmt.Errorf("tasker.%w", err))
	}
	return errs
}

func (c Config) validatePolicy(name string) []error {
	var errs []error
	path := "policies." + name
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", path, field, fmt.Sprintf(format, args...)))
	}
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		errs = append(errs, fmt.Errorf("%s: resource names must be non-empty without spaces or control characters", path))
		return errs
	}
	o := c.Policies[name]
	for field, v := range map[string]time.Duration{"base_ttl": o.BaseTTL, "min_ttl": o.MinTTL, "max_ttl": o.MaxTTL,
		"max_staleness": o.MaxStaleness, "query_timeout": o.QueryTimeout} {
		if v < 0 {
			add(field, "must not be negative (got: %s)", v)
		}
	}
	if o.MaxWaiters < 0 {
		add("max_waiters", "must not be negative (got: %d)", o.MaxWaiters)
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return errs
	}
	p := c.Policy(name)
	switch {
	case p.MinTTL > p.BaseTTL:
		add("min_ttl", "%s is above base_ttl %s", p.MinTTL, p.BaseTTL)
	case p.BaseTTL > p.MaxTTL:
		add("max_ttl", "%s is below base_ttl %s", p.MaxTTL, p.BaseTTL)
	}
	if p.MinTTL > p.ttlCap() {
		add("max_staleness", "%s must cover min_ttl %s plus two query timeouts of %s (one refresh and one crashed lease)",
			p.MaxStaleness, p.MinTTL, p.QueryTimeout)
	}
	return errs
}

// validate reproduces Tasker's CacheConfig#validate!: the same checks in the
// same order with the same messages, each prefixed by its key.
func (t TaskerConfig) validate() []error {
	var errs []error
	positive := func(key string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s: %s must be positive (got: %d)", key, key, v))
		}
	}
	unit := func(key string, v float64) {
		if !(v >= 0 && v <= 1) { // NaN fails too
			errs = append(errs, fmt.Errorf("%s: %s must be between 0.0 and 1.0 (got: %s)", key, key, rubyjson.Float(v)))
		}
	}
	positive("default_ttl", t.DefaultTTL)
	positive("min_adaptive_ttl", t.MinAdaptiveTTL)
	positive("max_adaptive_ttl", t.MaxAdaptiveTTL)
	if t.MinAdaptiveTTL >= t.MaxAdaptiveTTL {
		errs = append(errs, fmt.Errorf("min_adaptive_ttl: min_adaptive_ttl (%d) must be less than max_adaptive_ttl (%d)", t.MinAdaptiveTTL, t.MaxAdaptiveTTL))
	}
	positive("dashboard_cache_ttl", t.DashboardCacheTTL)
	unit("hit_rate_smoothing_factor", t.HitRateSmoothingFactor)
	unit("access_frequency_decay_rate", t.AccessFrequencyDecayRate)
	unit("cache_pressure_threshold", t.CachePressureThreshold)
	positive("adaptive_calculation_interval", t.AdaptiveCalculationInterval)
	return errs
}
