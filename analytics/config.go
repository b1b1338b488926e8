package analytics

import (
	"fmt"
	"time"
)

// Config is the analytics endpoints and gauges, the configuration's
// analytics section.
type Config struct {
	// Enabled mounts the routes and runs the gauges; the wiring reads it.
	Enabled bool `yaml:"enabled"`
	// StatementTimeout bounds every query of a computation (SET LOCAL
	// statement_timeout). It replaces the pool's own timeout inside the
	// analytics transactions: the 24-hour aggregates on a large database
	// legitimately take longer than a health count (10-25 s on a million
	// tasks, docs/benchmarks.md), and the coordinated cache keeps them from
	// being repeated.
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// MetricsInterval is how often the dashboard gauges are recomputed.
	MetricsInterval time.Duration `yaml:"metrics_interval"`
	// MetricsWindow is how far back the task gauges look (tasks created
	// within it).
	MetricsWindow time.Duration `yaml:"metrics_window"`
	// MaxBatch is the most task ids one batch request may name.
	MaxBatch int `yaml:"max_batch"`
	// MaxConcurrent bounds the expensive class's transactions open at once
	// (performance, bottlenecks, dashboard gauges); MaxWaiters bounds its
	// computations waiting for one, past which they are refused with an
	// OverloadedError (docs/analytics.md#admission-control).
	MaxConcurrent int `yaml:"max_concurrent"`
	MaxWaiters    int `yaml:"max_waiters"`
	// LookupMaxConcurrent and LookupMaxWaiters are the same for the lookup
	// class (per-task routes, handler catalog), which has its own
	// connections so that a lookup never waits behind an aggregate. The two
	// classes together must leave the pool a connection for health work
	// (internal/config checks it against database.max_conns).
	LookupMaxConcurrent int `yaml:"lookup_max_concurrent"`
	LookupMaxWaiters    int `yaml:"lookup_max_waiters"`
}

// DefaultConfig is the analytics section's defaults. With database.max_conns
// 3 the two admission classes hold at most two connections, and readiness,
// the refresh and the stream keep the third.
func DefaultConfig() Config {
	return Config{
		Enabled:             true,
		StatementTimeout:    60 * time.Second,
		MetricsInterval:     time.Minute,
		MetricsWindow:       time.Hour,
		MaxBatch:            50,
		MaxConcurrent:       1,
		MaxWaiters:          8,
		LookupMaxConcurrent: 1,
		LookupMaxWaiters:    64,
	}
}

// withDefaults fills every zero field from DefaultConfig, so that tests and
// embedders can set only what they mean.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	for _, f := range []struct{ v, def *time.Duration }{
		{&c.StatementTimeout, &d.StatementTimeout}, {&c.MetricsInterval, &d.MetricsInterval}, {&c.MetricsWindow, &d.MetricsWindow},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	for _, f := range []struct{ v, def *int }{
		{&c.MaxBatch, &d.MaxBatch}, {&c.MaxConcurrent, &d.MaxConcurrent}, {&c.MaxWaiters, &d.MaxWaiters},
		{&c.LookupMaxConcurrent, &d.LookupMaxConcurrent}, {&c.LookupMaxWaiters, &d.LookupMaxWaiters},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return c
}

// Validate returns every problem, each starting with its key relative to
// the section; a disabled section has none.
func (c Config) Validate() []error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"metrics_interval", c.MetricsInterval}, {"metrics_window", c.MetricsWindow}, {"statement_timeout", c.StatementTimeout}} {
		if f.d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be a positive duration (got %s)", f.key, f.d))
		}
	}
	for _, f := range []struct {
		key      string
		v, limit int
	}{
		{"max_batch", c.MaxBatch, 1000},
		{"max_concurrent", c.MaxConcurrent, 20},
		{"lookup_max_concurrent", c.LookupMaxConcurrent, 20},
		{"max_waiters", c.MaxWaiters, 10000},
		{"lookup_max_waiters", c.LookupMaxWaiters, 10000},
	} {
		if f.v < 1 || f.v > f.limit {
			errs = append(errs, fmt.Errorf("%s: must be between 1 and %d (got %d)", f.key, f.limit, f.v))
		}
	}
	return errs
}
