// Package config loads the sidecar's configuration from defaults, a YAML file,
// SIDECAR_* environment variables and flags (in rising precedence), and
// validates it, reporting every problem with its key path.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/traces"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// Config is the whole sidecar configuration. The yaml tags are the key paths
// used in files, in error messages and (upper-cased, dots as underscores,
// SIDECAR_ prefix) as environment variable names.
type Config struct {
	Log       LogConfig       `yaml:"log"`
	Server    ServerConfig    `yaml:"server"`
	Database  DatabaseConfig  `yaml:"database"`
	Collector CollectorConfig `yaml:"collector"`
	Metrics   MetricsConfig   `yaml:"metrics"`
	Cache     CacheConfig     `yaml:"cache"`
	Stream    StreamConfig    `yaml:"stream"`
	Analytics AnalyticsConfig `yaml:"analytics"`
	TTL       ttl.Config      `yaml:"ttl"`
	Tracing   traces.Config   `yaml:"tracing"`
}

// AnalyticsConfig is the workflow analytics endpoints and gauges.
type AnalyticsConfig struct {
	Enabled bool `yaml:"enabled"`
	// StatementTimeout bounds one analytics computation; cold 24-hour
	// windows on a 1M-task database take 10-20 s.
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// MetricsInterval is how often the analytics gauges are recomputed.
	MetricsInterval time.Duration `yaml:"metrics_interval"`
	// MetricsWindow is how far back the task gauges look.
	MetricsWindow time.Duration `yaml:"metrics_window"`
	// MaxBatch caps the task ids of one batch request.
	MaxBatch int `yaml:"max_batch"`
	// MaxConcurrent and MaxWaiters bound the expensive computations
	// (performance, bottlenecks, dashboard gauges): transactions open at
	// once, and computations queued for one; past the queue a request gets
	// the last value (stale) or 503 with Retry-After (docs/analytics.md).
	MaxConcurrent int `yaml:"max_concurrent"`
	MaxWaiters    int `yaml:"max_waiters"`
	// LookupMaxConcurrent and LookupMaxWaiters are the same for the
	// per-task and handler lookups, which have connections of their own.
	LookupMaxConcurrent int `yaml:"lookup_max_concurrent"`
	LookupMaxWaiters    int `yaml:"lookup_max_waiters"`
}

// StreamConfig is the transition stream (docs/stream.md). When enabled, the
// health counts are kept up to date from new transition rows instead of a
// full recount on every refresh.
type StreamConfig struct {
	Enabled                bool `yaml:"enabled"`
	collector.StreamConfig `yaml:",inline"`
}

// LogConfig selects the slog handler.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// ServerConfig is the HTTP server.
type ServerConfig struct {
	Listen            string        `yaml:"listen" env:"SIDECAR_LISTEN"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout"`
	ReadinessTimeout  time.Duration `yaml:"readiness_timeout"`
	// RequestTimeout is the deadline of every request but the probes.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	TLS            TLSConfig     `yaml:"tls"`
	Auth           AuthConfig    `yaml:"auth"`
}

// TLSConfig turns on HTTPS when both files are set.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// AuthConfig protects every endpoint except liveness and readiness, which
// kubelet probes without credentials.
type AuthConfig struct {
	BearerToken       Secret `yaml:"bearer_token"`
	BearerTokenFile   string `yaml:"bearer_token_file"`
	BasicUsername     string `yaml:"basic_username"`
	BasicPassword     Secret `yaml:"basic_password"`
	BasicPasswordFile string `yaml:"basic_password_file"`
}

// DatabaseConfig is the read-only connection to the Tasker database.
type DatabaseConfig struct {
	URL              SecretURL     `yaml:"url"`
	MaxConns         int32         `yaml:"max_conns"`
	ConnectTimeout   time.Duration `yaml:"connect_timeout"`
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	ApplicationName  string        `yaml:"application_name"`
}

// CollectorConfig is the background refresh of the health counts.
type CollectorConfig struct {
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// RefreshTimeout bounds one refresh; 0 means the interval, at most 10s.
	RefreshTimeout time.Duration `yaml:"refresh_timeout"`
}

// Timeout is the effective refresh timeout.
func (c CollectorConfig) Timeout() time.Duration {
	if c.RefreshTimeout > 0 {
		return c.RefreshTimeout
	}
	return min(c.RefreshInterval, 10*time.Second)
}

// MetricsConfig bounds what /metrics exports.
type MetricsConfig struct {
	// MaxLabelGroups caps the (namespace, task) pairs with their own series;
	// the rest are summed into namespace="other",task="other".
	MaxLabelGroups int `yaml:"max_label_groups"`
	// MaxStaleness withdraws the domain series when the last good refresh is
	// older than this, so dashboards show a gap instead of frozen numbers.
	// 0 keeps them forever.
	MaxStaleness time.Duration `yaml:"max_staleness"`
}

// CacheConfig is the cache store shared with the Tasker engine.
type CacheConfig struct {
	URL          SecretURL     `yaml:"url"`
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// KeyPrefix keeps the sidecar's keys apart from the Tasker engine's in a
	// shared store.
	KeyPrefix string `yaml:"key_prefix"`
	// Detection is capability detection: declared capabilities, custom
	// rules and probe settings, at cache.capabilities, cache.detectors, ...
	Detection detector.Config `yaml:",inline"`
}

// Default returns the configuration used for every key not set elsewhere.
func Default() Config {
	return Config{
		Log: LogConfig{Level: "info", Format: "text"},
		Server: ServerConfig{
			Listen:            ":9394",
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			// Longer than analytics.statement_timeout, so a cold analytics
			// request can still answer.
			WriteTimeout:     75 * time.Second,
			IdleTimeout:      120 * time.Second,
			ShutdownTimeout:  15 * time.Second,
			ReadinessTimeout: 5 * time.Second, // Tasker's health.readiness_timeout_seconds
			RequestTimeout:   30 * time.Second,
		},
		Database: DatabaseConfig{
			// One connection each for the expensive analytics and the
			// per-task lookups, and one for health (counts, stream, pings).
			MaxConns:         3,
			ConnectTimeout:   5 * time.Second,
			StatementTimeout: 30 * time.Second,
			ApplicationName:  "tasker-sidecar",
		},
		Collector: CollectorConfig{
			RefreshInterval: 15 * time.Second, // Tasker's health.cache_duration_seconds
		},
		Metrics: MetricsConfig{MaxLabelGroups: 100, MaxStaleness: 10 * time.Minute},
		Cache: CacheConfig{
			URL:          "memory://",
			DialTimeout:  2 * time.Second,
			ReadTimeout:  time.Second,
			WriteTimeout: time.Second,
			KeyPrefix:    "tasker_sidecar:",
			Detection:    detector.DefaultConfig(),
		},
		Stream: StreamConfig{Enabled: true, StreamConfig: collector.DefaultStreamConfig()},
		Analytics: AnalyticsConfig{
			Enabled:          true,
			StatementTimeout: 60 * time.Second,
			MetricsInterval:  time.Minute,
			MetricsWindow:    time.Hour,
			MaxBatch:         50,
			// analytics.Default*: with database.max_conns 3, one
			// connection is left for health work.
			MaxConcurrent:       analytics.DefaultMaxConcurrent,
			MaxWaiters:          analytics.DefaultMaxWaiters,
			LookupMaxConcurrent: analytics.DefaultLookupMaxConcurrent,
			LookupMaxWaiters:    analytics.DefaultLookupMaxWaiters,
		},
		Tracing: traces.DefaultConfig(),
		TTL:     ttl.DefaultConfig(),
	}
}

// Validate returns every problem, each prefixed with its key path.
func (c Config) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}

	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		add("log.level", "must be one of debug, info, warn, error (got %q)", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "text", "json") {
		add("log.format", "must be text or json (got %q)", c.Log.Format)
	}

	if err := checkListen(c.Server.Listen); err != nil { // checks.go
		add("server.listen", "%v", err)
	}
	positive := map[string]time.Duration{
		"server.read_header_timeout": c.Server.ReadHeaderTimeout,
		"server.read_timeout":        c.Server.ReadTimeout,
		"server.write_timeout":       c.Server.WriteTimeout,
		"server.idle_timeout":        c.Server.IdleTimeout,
		"server.shutdown_timeout":    c.Server.ShutdownTimeout,
		"server.readiness_timeout":   c.Server.ReadinessTimeout,
		"server.request_timeout":     c.Server.RequestTimeout,
		"database.connect_timeout":   c.Database.ConnectTimeout,
		"database.statement_timeout": c.Database.StatementTimeout,
		"collector.refresh_interval": c.Collector.RefreshInterval,
		"cache.dial_timeout":         c.Cache.DialTimeout,
		"cache.read_timeout":         c.Cache.ReadTimeout,
		"cache.write_timeout":        c.Cache.WriteTimeout,
	}
	for _, path := range sortedKeys(positive) {
		if positive[path] <= 0 {
			add(path, "must be a positive duration such as 5s (got %s)", positive[path])
		}
	}
	if c.Server.ReadinessTimeout > 0 && c.Server.WriteTimeout > 0 && c.Server.ReadinessTimeout >= c.Server.WriteTimeout {
		add("server.readiness_timeout", "must be shorter than server.write_timeout (%s >= %s), or a slow check cuts off the readiness answer", c.Server.ReadinessTimeout, c.Server.WriteTimeout)
	}
	if c.Server.RequestTimeout > 0 && c.Server.WriteTimeout > 0 && c.Server.RequestTimeout >= c.Server.WriteTimeout {
		add("server.request_timeout", "must be shorter than server.write_timeout (%s >= %s), or a request that uses all of it cannot write its answer", c.Server.RequestTimeout, c.Server.WriteTimeout)
	}
	if (c.Server.TLS.CertFile == "") != (c.Server.TLS.KeyFile == "") {
		add("server.tls", "cert_file and key_file must be set together")
	} else if err := checkTLSFiles(c.Server.TLS); err != nil {
		add("server.tls", "%v", err)
	}
	a := c.Server.Auth
	if a.BearerToken != "" && a.BearerTokenFile != "" {
		add("server.auth.bearer_token", "set bearer_token or bearer_token_file, not both")
	}
	if a.BasicPassword != "" && a.BasicPasswordFile != "" {
		add("server.auth.basic_password", "set basic_password or basic_password_file, not both")
	}
	if _, _, err := a.Credentials(); err != nil {
		path, msg, _ := strings.Cut(err.Error(), ": ")
		add(path, "%s", msg)
	}
	hasPassword := a.BasicPassword != "" || a.BasicPasswordFile != ""
	if (a.BasicUsername != "") != hasPassword {
		add("server.auth.basic_username", "basic_username and basic_password must be set together")
	}

	if c.Database.URL == "" {
		add("database.url", "required: set --database-url, SIDECAR_DATABASE_URL or database.url")
	} else if err := checkDatabaseURL(string(c.Database.URL)); err != nil {
		add("database.url", "%v", err)
	}
	if c.Database.MaxConns < 1 || c.Database.MaxConns > 20 {
		add("database.max_conns", "must be between 1 and 20 (got %d); the sidecar must stay cheap for the database", c.Database.MaxConns)
	}
	if c.Database.ApplicationName == "" {
		add("database.application_name", "must not be empty; it is how a DBA finds the sidecar in pg_stat_activity")
	}

	if c.Collector.RefreshInterval > 0 && c.Collector.RefreshInterval < time.Second {
		add("collector.refresh_interval", "must be at least 1s (got %s)", c.Collector.RefreshInterval)
	}
	if c.Collector.RefreshTimeout < 0 {
		add("collector.refresh_timeout", "must not be negative (got %s); 0 means the refresh interval, at most 10s", c.Collector.RefreshTimeout)
	}
	if c.Collector.RefreshTimeout > c.Collector.RefreshInterval && c.Collector.RefreshInterval > 0 {
		add("collector.refresh_timeout", "must not exceed collector.refresh_interval (%s > %s)", c.Collector.RefreshTimeout, c.Collector.RefreshInterval)
	}

	if c.Metrics.MaxLabelGroups < 1 {
		add("metrics.max_label_groups", "must be at least 1 (got %d)", c.Metrics.MaxLabelGroups)
	}
	if c.Metrics.MaxStaleness < 0 {
		add("metrics.max_staleness", "must not be negative (got %s)", c.Metrics.MaxStaleness)
	} else if c.Metrics.MaxStaleness > 0 && c.Metrics.MaxStaleness < 2*c.Collector.RefreshInterval {
		add("metrics.max_staleness", "must be 0 or at least twice collector.refresh_interval (got %s)", c.Metrics.MaxStaleness)
	}

	if err := checkCacheURL(string(c.Cache.URL)); err != nil {
		add("cache.url", "%v", err)
	} else if err := checkHostPorts(cacheHosts(string(c.Cache.URL))); err != nil {
		add("cache.url", "%v", err)
	} else if err := store.CheckKeyPrefix(string(c.Cache.URL), c.Cache.KeyPrefix); err != nil {
		add("cache.key_prefix", "%v", err)
	}
	for _, err := range c.Cache.Detection.Validate() {
		errs = append(errs, fmt.Errorf("cache.%w", err))
	}
	if c.Stream.Enabled {
		for _, err := range c.Stream.StreamConfig.Validate() {
			errs = append(errs, fmt.Errorf("stream.%w", err))
		}
	}
	if c.Analytics.Enabled {
		durations := map[string]time.Duration{
			"analytics.statement_timeout": c.Analytics.StatementTimeout,
			"analytics.metrics_interval":  c.Analytics.MetricsInterval,
			"analytics.metrics_window":    c.Analytics.MetricsWindow,
		}
		for _, path := range sortedKeys(durations) {
			if durations[path] <= 0 {
				add(path, "must be a positive duration (got %s)", durations[path])
			}
		}
		if c.Server.WriteTimeout > 0 && c.Server.WriteTimeout <= c.Analytics.StatementTimeout {
			add("server.write_timeout", "must exceed analytics.statement_timeout (%s <= %s), or a slow cold analytics request fills the cache but its own answer is cut off", c.Server.WriteTimeout, c.Analytics.StatementTimeout)
		}
		if c.Analytics.MaxBatch < 1 || c.Analytics.MaxBatch > 1000 {
			add("analytics.max_batch", "must be between 1 and 1000 (got %d)", c.Analytics.MaxBatch)
		}
		for _, f := range []struct {
			path     string
			v, limit int
		}{
			{"analytics.max_concurrent", c.Analytics.MaxConcurrent, 20},
			{"analytics.lookup_max_concurrent", c.Analytics.LookupMaxConcurrent, 20},
			{"analytics.max_waiters", c.Analytics.MaxWaiters, 10000},
			{"analytics.lookup_max_waiters", c.Analytics.LookupMaxWaiters, 10000},
		} {
			if f.v < 1 || f.v > f.limit {
				add(f.path, "must be between 1 and %d (got %d)", f.limit, f.v)
			}
		}
		// Analytics transactions hold their connection for seconds; the
		// health counts, the stream and the readiness ping need one too.
		if n := c.Analytics.MaxConcurrent + c.Analytics.LookupMaxConcurrent; c.Database.MaxConns >= 1 && n >= int(c.Database.MaxConns) {
			add("analytics.max_concurrent", "with analytics.lookup_max_concurrent must leave at least one of database.max_conns (%d) for health work (got %d + %d)",
				c.Database.MaxConns, c.Analytics.MaxConcurrent, c.Analytics.LookupMaxConcurrent)
		}
	}
	for _, err := range c.TTL.Validate() {
		errs = append(errs, fmt.Errorf("ttl.%w", err))
	}
	for _, err := range c.Tracing.Validate() {
		errs = append(errs, fmt.Errorf("tracing.%w", err))
	}
	// The decoder refuses NaN and infinities from every source; this covers
	// a Config built in code.
	errs = append(errs, nonFinite(reflect.ValueOf(c), "")...)
	return errs
}

func checkCacheURL(raw string) error {
	if raw == "" {
		return fmt.Errorf("required (use memory:// for an in-process cache)")
	}
	if err := store.CheckURL(raw); err != nil {
		// The store's message starts with the redacted URL; the key path
		// already says which setting it is.
		msg := err.Error()
		if _, rest, ok := strings.Cut(msg, ": "); ok && strings.Contains(msg, "://") {
			msg = rest
		}
		return errors.New(msg)
	}
	return nil
}

// scrubURLError drops the URL that net/url quotes in its errors, because it may
// carry a password.
func scrubURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return "malformed"
}

func oneOf(s string, options ...string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}
