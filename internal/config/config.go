// Package config loads the sidecar's configuration from defaults, a YAML file,
// SIDECAR_* environment variables and flags (in rising precedence), and
// validates it, reporting every problem with its key path.
package config

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/coreops"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/exporters"
	"github.com/tasker-systems/tasker-sidecar/server"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/traces"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// Config is the whole sidecar configuration. The yaml tags are the key paths
// used in files, in error messages and (upper-cased, dots as underscores,
// SIDECAR_ prefix) as environment variable names.
type Config struct {
	Log       LogConfig               `yaml:"log"`
	Server    server.Config           `yaml:"server"`
	Database  collector.DBConfig      `yaml:"database"`
	Collector collector.RefreshConfig `yaml:"collector"`
	Metrics   exporters.Config        `yaml:"metrics"`
	Cache     CacheConfig             `yaml:"cache"`
	Stream    StreamConfig            `yaml:"stream"`
	Analytics analytics.Config        `yaml:"analytics"`
	TTL       ttl.Config              `yaml:"ttl"`
	Tracing   traces.Config           `yaml:"tracing"`
	PGMQ      coreops.Config          `yaml:"pgmq"`
}

// StreamConfig is the transition stream (docs/stream.md). When enabled, the
// health counts are kept up to date from new transition rows instead of a
// full recount on every refresh.
type StreamConfig struct {
	Enabled                bool `yaml:"enabled"`
	collector.StreamConfig `yaml:",inline"`
}

// Validate checks the stream's settings only when it is enabled.
func (s StreamConfig) Validate() []error {
	if !s.Enabled {
		return nil
	}
	return s.StreamConfig.Validate()
}

// LogConfig selects the slog handler.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// CacheConfig is the cache store shared with the Tasker engine.
type CacheConfig struct {
	// The connection: cache.url, the timeouts, cache.key_prefix.
	store.Config `yaml:",inline"`
	// Detection is capability detection: declared capabilities, custom
	// rules and probe settings, at cache.capabilities, cache.detectors, ...
	Detection detector.Config `yaml:",inline"`
}

// Validate checks the connection and the detection settings, both keyed
// relative to the cache section.
func (c CacheConfig) Validate() []error {
	return append(c.Config.Validate(), c.Detection.Validate()...)
}

// Default returns the configuration used for every key not set elsewhere.
func Default() Config {
	return Config{
		Log:    LogConfig{Level: "info", Format: "text"},
		Server: server.DefaultConfig(),

		Database:  collector.DefaultDBConfig(),
		Collector: collector.DefaultRefreshConfig(),
		Metrics:   exporters.DefaultConfig(),
		Cache:     CacheConfig{Config: store.DefaultConfig(), Detection: detector.DefaultConfig()},

		Stream:    StreamConfig{Enabled: true, StreamConfig: collector.DefaultStreamConfig()},
		Analytics: analytics.DefaultConfig(),
		Tracing:   traces.DefaultConfig(),
		TTL:       ttl.DefaultConfig(),
	}
}

// Validate returns every problem, each prefixed with its key path.
func (c Config) Validate() []error {
	errs := sectionErrors(c)
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}

	if c.Metrics.MaxStaleness > 0 && c.Metrics.MaxStaleness < 2*c.Collector.Interval {
		add("metrics.max_staleness", "must be 0 or at least twice collector.refresh_interval (got %s)", c.Metrics.MaxStaleness)
	}

	// Rules across sections; each section checks its own keys.
	if c.Analytics.Enabled {
		if c.Server.WriteTimeout > 0 && c.Server.WriteTimeout <= c.Analytics.StatementTimeout {
			add("server.write_timeout", "must exceed analytics.statement_timeout (%s <= %s), or a slow cold analytics request fills the cache but its own answer is cut off", c.Server.WriteTimeout, c.Analytics.StatementTimeout)
		}
		// Analytics transactions hold their connection for seconds; the
		// health counts, the stream and the readiness ping need one too.
		if n := c.Analytics.MaxConcurrent + c.Analytics.LookupMaxConcurrent; c.Database.MaxConns >= 1 && n >= int(c.Database.MaxConns) {
			add("analytics.max_concurrent", "with analytics.lookup_max_concurrent must leave at least one of database.max_conns (%d) for health work (got %d + %d)",
				c.Database.MaxConns, c.Analytics.MaxConcurrent, c.Analytics.LookupMaxConcurrent)
		}
	}
	// The decoder refuses NaN and infinities from every source; this covers
	// a Config built in code.
	errs = append(errs, nonFinite(reflect.ValueOf(c), "")...)
	return errs
}

// section is a component's configuration: it checks its own keys and names
// each problem by its key relative to the section (ttl.Config, for
// example). sectionErrors prefixes them with the section's path.
type section interface{ Validate() []error }

// sectionErrors walks c's sections once, in the order of the Config struct,
// and returns every section's problems with their full key paths. An inline
// struct (yaml ",inline") shares its parent's path; a struct that is not a
// section is walked into.
func sectionErrors(c Config) []error {
	var errs []error
	v := reflect.ValueOf(c)
	for i := 0; i < v.NumField(); i++ {
		errs = append(errs, walkSections(v.Field(i), yamlName(v.Type().Field(i)))...)
	}
	return errs
}

func walkSections(v reflect.Value, path string) []error {
	if s, ok := v.Interface().(section); ok {
		var errs []error
		for _, err := range s.Validate() {
			errs = append(errs, fmt.Errorf("%s.%w", path, err))
		}
		return errs
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	var errs []error
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		name := yamlName(f)
		switch name {
		case "-":
			continue
		case "":
			errs = append(errs, walkSections(v.Field(i), path)...)
		default:
			errs = append(errs, walkSections(v.Field(i), path+"."+name)...)
		}
	}
	return errs
}

// yamlName is a field's key: "" for an inline field, "-" for one the
// decoder skips.
func yamlName(f reflect.StructField) string {
	tag := f.Tag.Get("yaml")
	name, opts, _ := strings.Cut(tag, ",")
	if opts == "inline" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// Validate checks the log section.
func (l LogConfig) Validate() []error {
	var errs []error
	if !oneOf(l.Level, "debug", "info", "warn", "error") {
		errs = append(errs, fmt.Errorf("level: must be one of debug, info, warn, error (got %q)", l.Level))
	}
	if !oneOf(l.Format, "text", "json") {
		errs = append(errs, fmt.Errorf("format: must be text or json (got %q)", l.Format))
	}
	return errs
}

func oneOf(s string, options ...string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}
