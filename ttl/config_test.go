package ttl

import (
	"math"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDefaultConfigValid(t *testing.T) {
	if errs := DefaultConfig().Validate(); len(errs) > 0 {
		t.Fatalf("default config invalid: %v", errs)
	}
	cfg := DefaultConfig()
	for _, tc := range []struct {
		resource string
		base     time.Duration
	}{
		{ResourceStatus, 60 * time.Second}, {ResourcePerformance, 90 * time.Second}, {ResourceBottlenecks, 120 * time.Second},
		{ResourceHandlers, 120 * time.Second}, {ResourceTaskGraph, 90 * time.Second}, {"anything_else", 300 * time.Second},
	} {
		if got := cfg.Policy(tc.resource).BaseTTL; got != tc.base {
			t.Errorf("%s base TTL = %s, want %s (Tasker's)", tc.resource, got, tc.base)
		}
	}
}

// YAML overrides replace only the fields they set, over DefaultConfig, as
// the sidecar's loader decodes them.
func TestYAMLOverrides(t *testing.T) {
	cfg := DefaultConfig()
	doc := `
mode: tasker
key_version: abc
policies:
  status:
    base_ttl: 30s
  default:
    query_timeout: 5s
  custom:
    max_ttl: 400s
tasker:
  hit_rate_smoothing_factor: 0.8
`
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("invalid: %v", errs)
	}
	if p := cfg.Policy(ResourceStatus); p.BaseTTL != 30*time.Second || p.MaxTTL != 120*time.Second || p.QueryTimeout != 10*time.Second {
		t.Fatalf("status policy %+v", p)
	}
	if p := cfg.Policy("custom"); p.MaxTTL != 400*time.Second || p.QueryTimeout != 5*time.Second || p.BaseTTL != 300*time.Second {
		t.Fatalf("custom policy %+v", p)
	}
	if cfg.Tasker.HitRateSmoothingFactor != 0.8 || cfg.Tasker.DefaultTTL != 300 || cfg.Mode != ModeTasker || cfg.KeyVersion != "abc" {
		t.Fatalf("config %+v", cfg)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"mode", func(c *Config) { c.Mode = "lru" }, []string{`mode: must be cost-aware or tasker (got: "lru")`}},
		{"max below base", func(c *Config) { c.Policies[ResourceStatus] = Policy{MaxTTL: 30 * time.Second} },
			[]string{"policies.status.max_ttl: 30s is below base_ttl 1m0s"}},
		{"min above base", func(c *Config) { c.Policies[ResourceStatus] = Policy{MinTTL: 90 * time.Second} },
			[]string{"policies.status.min_ttl: 1m30s is above base_ttl 1m0s"}},
		{"staleness budget", func(c *Config) { c.Policies[ResourceStatus] = Policy{MaxStaleness: 30 * time.Second} },
			[]string{"policies.status.max_staleness: 30s must cover min_ttl 15s plus two query timeouts of 10s (one refresh and one crashed lease)"}},
		{"negative", func(c *Config) { c.Policies["x"] = Policy{QueryTimeout: -time.Second} },
			[]string{"policies.x.query_timeout: must not be negative (got: -1s)"}},
		{"bad resource name", func(c *Config) { c.Policies["a b"] = Policy{} },
			[]string{"policies.a b: resource names must be non-empty without spaces or control characters"}},
		{"cost-aware", func(c *Config) { c.CostAware.StaleReadCost = 0; c.CostAware.Jitter = 0.7 },
			[]string{"cost_aware.stale_read_cost: must be positive (got: 0s)", "cost_aware.jitter: must be between 0 and 0.5 (got: 0.7)"}},
		{"backoff", func(c *Config) { c.RetryBackoffMin = 0; c.RetryBackoffMax = -1 },
			[]string{"retry_backoff_min: must be positive (got: 0s)", "retry_backoff_max: must not be less than retry_backoff_min 0s (got: -1ns)"}},
		{"l1 bytes", func(c *Config) { c.L1MaxBytes = 1<<20 - 1 }, []string{"l1_max_bytes: must be at least 1048576 (1 MiB) (got: 1048575)"}},
		{"l1 entries removed", func(c *Config) { c.RemovedL1MaxEntries = 10000 },
			[]string{"l1_max_entries: removed: the in-process level is bounded by bytes now; set l1_max_bytes instead (default 16777216, 16 MiB)"}},
		{"max value bytes", func(c *Config) { c.MaxValueBytes = 0 }, []string{"max_value_bytes: must be positive (got: 0)"}},
		{"max waiters", func(c *Config) { c.Policies[ResourcePerformance] = Policy{MaxWaiters: -1} },
			[]string{"policies.performance.max_waiters: must not be negative (got: -1)"}},
		// NaN fails every float check, and infinities are out of range.
		{"NaN jitter", func(c *Config) { c.CostAware.Jitter = math.NaN() }, []string{"cost_aware.jitter: must be between 0 and 0.5 (got: NaN)"}},
		{"infinite jitter", func(c *Config) { c.CostAware.Jitter = math.Inf(1) }, []string{"cost_aware.jitter: must be between 0 and 0.5 (got: +Inf)"}},
		{"NaN grace", func(c *Config) { c.StaleWhileRevalidate = math.NaN() }, []string{"stale_while_revalidate: must be between 0 and 1 (got: NaN)"}},
		{"NaN refresh-ahead", func(c *Config) { c.RefreshAheadFactor = math.NaN() }, []string{"refresh_ahead_factor: must be a finite number (got: NaN)"}},
		{"infinite refresh-ahead", func(c *Config) { c.RefreshAheadFactor = math.Inf(1) }, []string{"refresh_ahead_factor: must be a finite number (got: +Inf)"}},
		{"tasker NaN", func(c *Config) {
			c.Tasker.HitRateSmoothingFactor = math.NaN()
			c.Tasker.AccessFrequencyDecayRate = math.Inf(-1)
			c.Tasker.CachePressureThreshold = math.NaN()
		}, []string{
			"tasker.hit_rate_smoothing_factor: hit_rate_smoothing_factor must be between 0.0 and 1.0 (got: NaN)",
			"tasker.access_frequency_decay_rate: access_frequency_decay_rate must be between 0.0 and 1.0 (got: -Inf)",
			"tasker.cache_pressure_threshold: cache_pressure_threshold must be between 0.0 and 1.0 (got: NaN)",
		}},
		// Tasker's validate!, in Tasker's order and words.
		{"tasker", func(c *Config) {
			c.Tasker.DefaultTTL = 0
			c.Tasker.MinAdaptiveTTL, c.Tasker.MaxAdaptiveTTL = 3600, 1800
			c.Tasker.DashboardCacheTTL = -1
			c.Tasker.HitRateSmoothingFactor = 1.5
			c.Tasker.AccessFrequencyDecayRate = -0.1
			c.Tasker.CachePressureThreshold = 2
			c.Tasker.AdaptiveCalculationInterval = 0
		}, []string{
			"tasker.default_ttl: default_ttl must be positive (got: 0)",
			"tasker.min_adaptive_ttl: min_adaptive_ttl (3600) must be less than max_adaptive_ttl (1800)",
			"tasker.dashboard_cache_ttl: dashboard_cache_ttl must be positive (got: -1)",
			"tasker.hit_rate_smoothing_factor: hit_rate_smoothing_factor must be between 0.0 and 1.0 (got: 1.5)",
			"tasker.access_frequency_decay_rate: access_frequency_decay_rate must be between 0.0 and 1.0 (got: -0.1)",
			"tasker.cache_pressure_threshold: cache_pressure_threshold must be between 0.0 and 1.0 (got: 2.0)",
			"tasker.adaptive_calculation_interval: adaptive_calculation_interval must be positive (got: 0)",
		}},
		{"tasker non-positive ttls", func(c *Config) { c.Tasker.MinAdaptiveTTL, c.Tasker.MaxAdaptiveTTL = 0, 0 }, []string{
			"tasker.min_adaptive_ttl: min_adaptive_ttl must be positive (got: 0)",
			"tasker.max_adaptive_ttl: max_adaptive_ttl must be positive (got: 0)",
			"tasker.min_adaptive_ttl: min_adaptive_ttl (0) must be less than max_adaptive_ttl (0)",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.edit(&cfg)
			errs := cfg.Validate()
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Mode = ""
	if _, err := New(memoryStore(t, ""), nil, nil, cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("New with an invalid config: %v", err)
	}
}

// Keys as the sidecar's loader decodes them: the byte bounds and a policy's
// max_waiters override, and l1_max_entries, replaced by l1_max_bytes, named
// in an error rather than silently ignored.
func TestYAMLBounds(t *testing.T) {
	cfg := DefaultConfig()
	doc := `
l1_max_bytes: 8388608
max_value_bytes: 65536
policies:
  performance:
    max_waiters: 4
`
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("invalid: %v", errs)
	}
	if cfg.L1MaxBytes != 8<<20 || cfg.MaxValueBytes != 64<<10 {
		t.Fatalf("l1_max_bytes %d, max_value_bytes %d", cfg.L1MaxBytes, cfg.MaxValueBytes)
	}
	if p, q := cfg.Policy(ResourcePerformance), cfg.Policy(ResourceBottlenecks); p.MaxWaiters != 4 || q.MaxWaiters != 32 {
		t.Fatalf("max_waiters: performance %d, bottlenecks %d; want 4 and the default 32", p.MaxWaiters, q.MaxWaiters)
	}

	old := DefaultConfig()
	if err := yaml.Unmarshal([]byte("l1_max_entries: 10000\n"), &old); err != nil {
		t.Fatal(err)
	}
	errs := old.Validate()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "l1_max_entries: removed") || !strings.Contains(errs[0].Error(), "l1_max_bytes") {
		t.Fatalf("l1_max_entries: errors %v, want one naming l1_max_bytes", errs)
	}
}
