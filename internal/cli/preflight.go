package cli

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/api"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
	"github.com/tasker-systems/tasker-sidecar/readiness"
	"github.com/tasker-systems/tasker-sidecar/traces/otlp"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// Preflight builds, from a validated configuration, everything run builds
// before it serves that can fail without touching the network: the
// credentials and TLS files, the HTTP server, the database pool (created
// lazily, nothing dials), the cache store client and its detector, the OTLP
// exporter and the results cache's configuration as serve derives it. run
// and check-config both call it, so a configuration check-config accepts
// gets past start-up (issue 10: "whatever check-config accepts must start");
// what remains for run is what only the network decides (a port in use, a
// database down, which degrade rather than stop it).
//
// It returns nil or a *config.Error whose problems each start with the key
// path the component's options come from. config.Validate should already
// have reported all of them; FuzzLoad (internal/config) looks for
// configurations it lets through and Preflight does not.
func Preflight(cfg config.Config) error {
	var problems []error
	add := func(path string, err error) {
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", path, err))
		}
	}
	discard := slog.New(slog.DiscardHandler)

	if _, _, err := cfg.Server.Auth.Credentials(); err != nil {
		problems = append(problems, fmt.Errorf("server.%w", err))
	} else {
		_, err := api.New(cfg.Server, serverDeps(cfg, noHealth{}))
		add("server", err)
	}

	db, err := collector.Open(cfg.Database, nil, discard)
	if err == nil {
		db.Close()
	}
	add("database", err)

	if st, err := openStore(cfg.Cache); err != nil {
		problems = append(problems, err) // openStore names cache.url
	} else {
		_, err := detector.New(st, cfg.Cache.Detection, prometheus.NewRegistry(), discard)
		add("cache", err)
		_ = st.Close()
	}

	if cfg.Tracing.Enabled {
		exp, err := otlp.NewSpanExporter(context.Background(), cfg.Tracing)
		if err == nil {
			_ = exp.Shutdown(context.Background())
		}
		add("tracing", err)
	}

	if cfg.Stream.Enabled {
		_, err := checkpointConfig(cfg)
		add("stream.checkpoint", err)
	}

	for _, err := range resultsConfig(cfg).Validate() {
		problems = append(problems, fmt.Errorf("ttl.%w", err))
	}

	if len(problems) > 0 {
		return &config.Error{Problems: problems}
	}
	return nil
}

// noHealth stands in for the refresher, which Preflight does not start.
type noHealth struct{}

func (noHealth) State() collector.RefreshState { return collector.RefreshState{} }

// serverDeps is what the API reads besides cfg.Server; serve adds the
// registry, the checks and the logger.
func serverDeps(cfg config.Config, health readiness.HealthSource) api.Deps {
	return api.Deps{Health: health, RefreshInterval: cfg.Collector.Interval}
}

// checkpointConfig is the stream's checkpoint configuration with the local
// file resolved: stream.checkpoint.file, or one named after the database
// under stream.checkpoint.state_dir.
func checkpointConfig(cfg config.Config) (collector.CheckpointConfig, error) {
	c := cfg.Stream.Checkpoint
	var err error
	if c.File, err = c.Path(cfg.Database.URL.Value()); err != nil {
		return c, err
	}
	c.Key, err = collector.ScopedKey(c.Key, cfg.Database.URL.Value())
	return c, err
}

// leaseConfig is the stream's export lease, its key scoped to the database
// as the checkpoint's is.
func leaseConfig(cfg config.Config) (collector.LeaseConfig, error) {
	l := cfg.Stream.Lease
	var err error
	l.Key, err = collector.ScopedKey(l.Key, cfg.Database.URL.Value())
	return l, err
}

// resultsConfig is the results cache's configuration as serve uses it:
// cfg.TTL with the policies the sidecar's own intervals impose. The key
// version is left to newResults.
func resultsConfig(cfg config.Config) ttl.Config {
	tc := cfg.TTL
	// The status counts and the analytics gauges are refreshed on their own
	// intervals; a shared copy must not outlive them, or readiness would call
	// the data stale.
	tc.Policies = maps.Clone(tc.Policies)
	if tc.Policies == nil {
		tc.Policies = map[string]ttl.Policy{}
	}
	tc.Policies[ttl.ResourceStatus] = fixedTTL(tc.Policy(ttl.ResourceStatus), cfg.Collector.Interval)
	tc.Policies[analytics.ResourceMetrics] = fixedTTL(tc.Policy(analytics.ResourceMetrics), cfg.Analytics.MetricsInterval)
	// The cache bounds each computation by its policy's query timeout; an
	// analytics computation may take as long as its statement timeout.
	for _, r := range []string{ttl.ResourcePerformance, ttl.ResourceBottlenecks, ttl.ResourceHandlers,
		ttl.ResourceTaskGraph, ttl.ResourceTaskContext, ttl.ResourceTaskSteps, ttl.ResourceDefault, analytics.ResourceMetrics} {
		p := tc.Policy(r)
		p.QueryTimeout = max(p.QueryTimeout, cfg.Analytics.StatementTimeout)
		tc.Policies[r] = coverStaleness(p)
	}
	return tc
}

func fixedTTL(p ttl.Policy, d time.Duration) ttl.Policy {
	p.BaseTTL, p.MinTTL, p.MaxTTL = d, d, d
	return coverStaleness(p)
}

// coverStaleness widens max_staleness to what the cache needs after expiry:
// one refresh, and one more lease period if its holder died.
func coverStaleness(p ttl.Policy) ttl.Policy {
	p.MaxStaleness = max(p.MaxStaleness, p.MaxTTL+2*p.QueryTimeout+time.Second)
	return p
}

// preflight runs Preflight for a command and prints its problems; ok is
// false when the command must exit 2.
func preflight(env *environment, cfg config.Config) bool {
	if err := Preflight(cfg); err != nil {
		fmt.Fprintf(env.stderr, "%s\n", strings.TrimRight(err.Error(), "\n"))
		return false
	}
	return true
}
