package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/exporters"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

func runCmd(ctx context.Context, env *environment, args []string) int {
	fs := newFlagSet(env, "run", "run [--config FILE] [--database-url URL] [--cache-url URL] [--listen ADDR] [flags]",
		"Runs the sidecar: attaches read-only to the Tasker database and the cache store, refreshes the\nhealth counts in the background and serves /tasker/health/{live,ready,status} and /metrics.\nExits 2 on invalid configuration; keeps serving (degraded) while a dependency is down.")
	var f config.Flags
	f.Register(fs)
	if code, done := parse(fs, args); done {
		return code
	}
	cfg, ok := loadConfig(env, fs, &f)
	if !ok {
		return exitUsage
	}
	logger := newLogger(env.stderr, cfg.Log)
	if err := serve(ctx, cfg, logger, env.ready); err != nil {
		logger.Error("sidecar stopped", "err", err)
		return exitFailure
	}
	return exitOK
}

// serve runs the sidecar until ctx is cancelled. It returns an error only for
// what stops it from serving at all (the listen address, unreadable secrets);
// a down database or cache store degrades it instead.
func serve(ctx context.Context, cfg config.Config, logger *slog.Logger, ready func(addr string)) error {
	logger.Info("starting tasker-sidecar", "version", version.Version, "revision", version.Revision,
		"go", version.GoVersion, "database", cfg.Database.URL, "cache", cfg.Cache.URL, "listen", cfg.Server.Listen)

	store.RouteDriverLogs(logger.With("component", "cache-driver"))
	token, password, err := cfg.Server.Auth.Credentials()
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("tasker_sidecar"),
	)

	db, err := collector.Open(collector.Options{
		URL:              cfg.Database.URL.Value(),
		MaxConns:         cfg.Database.MaxConns,
		ConnectTimeout:   cfg.Database.ConnectTimeout,
		StatementTimeout: cfg.Database.StatementTimeout,
		ApplicationName:  cfg.Database.ApplicationName,
	}, reg, logger.With("component", "database"))
	if err != nil {
		return err
	}
	defer db.Close()

	cache, err := openCache(ctx, cfg, reg, logger)
	if err != nil {
		return err
	}
	defer cache.close()

	var streamOpts []collector.StreamOption
	var selfTP trace.TracerProvider
	if cfg.Tracing.Enabled {
		workflows, self, err := startTracing(ctx, cfg, db, reg, logger)
		if err != nil {
			return err
		}
		defer shutdownTracing(workflows, self)
		streamOpts = append(streamOpts, collector.WithSink(workflows), collector.WithExemplars(workflows.ExemplarTraceID))
		if self != nil {
			selfTP = self
			streamOpts = append(streamOpts, collector.WithTracerProvider(self))
		}
	}

	results, err := newResults(cfg, cache, reg, logger)
	if err != nil {
		return err
	}
	defer results.Stop()
	cache.results = results
	if selfTP != nil {
		results.SetTracerProvider(selfTP)
	}

	// With the stream, each replica's counts cost in proportion to new rows
	// and are fresher than any shared copy; without it, the full recount is
	// expensive, so the replicas share one per refresh interval.
	var source collector.CountSource = &sharedCounts{src: db, cache: results, interval: cfg.Collector.RefreshInterval}
	if cfg.Stream.Enabled {
		stream := newStream(cfg, db, cache, reg, logger, streamOpts)
		stream.Start(ctx)
		defer stream.Stop()
		source = stream
	} else if cfg.Tracing.Enabled {
		logger.Warn("tracing is enabled but the transition stream is not: no workflow traces will be exported")
	}

	refresher := collector.NewRefresher(db, collector.RefresherOptions{
		Interval:       cfg.Collector.RefreshInterval,
		Timeout:        cfg.Collector.Timeout(),
		Source:         source,
		TracerProvider: selfTP,
	}, reg, logger.With("component", "refresher"))
	reg.MustRegister(exporters.NewDomainCollector(refresher, exporters.DomainOptions{
		MaxGroups:    cfg.Metrics.MaxLabelGroups,
		MaxStaleness: cfg.Metrics.MaxStaleness,
	}))

	srv, err := exporters.New(exporters.Options{
		Listen:            cfg.Server.Listen,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
		ReadTimeout:       cfg.Server.ReadTimeout,
		WriteTimeout:      cfg.Server.WriteTimeout,
		IdleTimeout:       cfg.Server.IdleTimeout,
		ShutdownTimeout:   cfg.Server.ShutdownTimeout,
		TLSCertFile:       cfg.Server.TLS.CertFile,
		TLSKeyFile:        cfg.Server.TLS.KeyFile,
		Auth:              exporters.Auth{BearerToken: token, BasicUser: cfg.Server.Auth.BasicUsername, BasicPassword: password},
		ReadinessTimeout:  cfg.Server.ReadinessTimeout,
		RefreshInterval:   cfg.Collector.RefreshInterval,
		Registerer:        reg,
		Gatherer:          reg,
		Health:            refresher,
		Checks: []exporters.Checker{
			exporters.NewDatabaseCheck(db.Ping, db.MissingTables),
			cache.check(),
			exporters.NewRefreshCheck(refresher, cfg.Collector.RefreshInterval),
		},
		Logger: logger,
	})
	if err != nil {
		return err
	}
	cache.routes(srv)

	if cfg.Analytics.Enabled {
		stopAnalytics := startAnalytics(ctx, cfg, db, results, srv, reg, selfTP, logger)
		defer stopAnalytics()
	}

	refresher.Start(ctx)
	defer refresher.Stop()

	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	select {
	case <-srv.Bound():
		addr := srv.Addr().String()
		logger.Info("serving", "addr", addr, "status", "http://"+displayAddr(addr)+exporters.PathStatus)
		if ready != nil {
			ready(addr)
		}
	case err := <-errc:
		return err
	}
	err = <-errc
	logger.Info("stopped")
	return err
}

// displayAddr turns ":9394" or "[::]:9394" into something a person can click.
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// newStream follows the transition tables. With a distributed cache store the
// checkpoint is shared and a lease picks the one replica that exports traces;
// otherwise the checkpoint is a local file and this replica exports.
func newStream(cfg config.Config, db *collector.DB, cache *cacheRuntime, reg prometheus.Registerer, logger *slog.Logger, opts []collector.StreamOption) *collector.Stream {
	ckpt := collector.NewCheckpointer(cache.st, cfg.Stream.Checkpoint)
	if collector.Distributed(cache.st) {
		lease, err := collector.NewLease(cache.st, cfg.Stream.Lease)
		if err != nil {
			logger.Warn("no export lease on this cache store: every replica exports traces", "err", err)
		} else {
			opts = append(opts, collector.WithLease(lease))
		}
	}
	return collector.NewStream(db, cfg.Stream.StreamConfig, ckpt, reg, logger.With("component", "stream"), opts...)
}

// startTracing builds the workflow trace pipeline and, when enabled, the
// tracer provider of the sidecar's own spans. Each has its own exporter
// because each shuts its exporter down.
func startTracing(ctx context.Context, cfg config.Config, db *collector.DB, reg prometheus.Registerer, logger *slog.Logger) (*exporters.WorkflowTraces, *sdktrace.TracerProvider, error) {
	exp, err := exporters.NewSpanExporter(ctx, cfg.Tracing)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	workflows := exporters.NewWorkflowTraces(cfg.Tracing, exp, db, reg, logger.With("component", "traces"))
	if !cfg.Tracing.SidecarSpans {
		return workflows, nil, nil
	}
	selfExp, err := exporters.NewSpanExporter(ctx, cfg.Tracing)
	if err != nil {
		_ = workflows.Shutdown(context.Background())
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	return workflows, exporters.NewSidecarTracerProvider(cfg.Tracing, selfExp), nil
}

func shutdownTracing(workflows *exporters.WorkflowTraces, self *sdktrace.TracerProvider) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = workflows.Shutdown(ctx)
	if self != nil {
		_ = self.Shutdown(ctx)
	}
}

// startAnalytics mounts the analytics endpoints and starts the gauges'
// background refresh; the returned function stops it and waits.
func startAnalytics(ctx context.Context, cfg config.Config, db *collector.DB, results *ttl.Cache, srv *exporters.Server, reg prometheus.Registerer, tp trace.TracerProvider, logger *slog.Logger) func() {
	svc := analytics.New(db.Pool(), analytics.Options{
		StatementTimeout: cfg.Analytics.StatementTimeout,
		MaxBatch:         cfg.Analytics.MaxBatch,
		TracerProvider:   tp,
	}, logger.With("component", "analytics"))
	exporters.MountAnalytics(srv.Router(), svc, results, logger)
	gauges := analytics.NewMetrics(svc, analytics.MetricsOptions{
		Interval:  cfg.Analytics.MetricsInterval,
		Window:    cfg.Analytics.MetricsWindow,
		MaxGroups: cfg.Metrics.MaxLabelGroups,
		Cache:     results,
		Logger:    logger.With("component", "analytics"),
	})
	reg.MustRegister(gauges)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		gauges.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// newResults is the coordinated cache every expensive result goes through.
// Entries are keyed by the build, the database and the configuration, so
// sidecars that would compute different answers never share one.
func newResults(cfg config.Config, cache *cacheRuntime, reg prometheus.Registerer, logger *slog.Logger) (*ttl.Cache, error) {
	tc := cfg.TTL
	if tc.KeyVersion == "" {
		tc.KeyVersion = keyVersion(cfg)
	}
	// The status counts and the analytics gauges are refreshed on their own
	// intervals; a shared copy must not outlive them, or readiness would call
	// the data stale.
	tc.Policies = maps.Clone(tc.Policies)
	if tc.Policies == nil {
		tc.Policies = map[string]ttl.Policy{}
	}
	tc.Policies[ttl.ResourceStatus] = fixedTTL(tc.Policy(ttl.ResourceStatus), cfg.Collector.RefreshInterval)
	tc.Policies[analytics.ResourceMetrics] = fixedTTL(tc.Policy(analytics.ResourceMetrics), cfg.Analytics.MetricsInterval)
	// The cache bounds each computation by its policy's query timeout; an
	// analytics computation may take as long as its statement timeout.
	for _, r := range []string{ttl.ResourcePerformance, ttl.ResourceBottlenecks, ttl.ResourceHandlers,
		ttl.ResourceTaskGraph, ttl.ResourceTaskContext, ttl.ResourceTaskSteps, ttl.ResourceDefault, analytics.ResourceMetrics} {
		p := tc.Policy(r)
		p.QueryTimeout = max(p.QueryTimeout, cfg.Analytics.StatementTimeout)
		tc.Policies[r] = coverStaleness(p)
	}
	det := cache.det
	return ttl.New(cache.st, det.Report, func(err error) { det.NotifyError(err) }, tc, reg, logger)
}

// keyVersion covers what changes a cached answer: the build, the database and
// the settings the computations read. Per-pod settings (listen address,
// checkpoint file) stay out, or replicas would never share an entry.
//
// The build is its version and revision as stamped with -ldflags (Makefile,
// Dockerfile) and the VCS revision Go stamps itself (debug.ReadBuildInfo,
// vcs.revision and vcs.modified). When none of them names the source
// exactly, a SHA-256 of the executable does: a build without a revision (a
// plain go build outside a checkout, the Dockerfile's defaults dev/unknown,
// where .git is not in the build context) or from a modified tree (vcs.modified,
// or a -dirty version). So two different builds never share an entry, and
// replicas running one binary always do. The build also fixes the SQL the
// computations run and the Tasker tables they read; the schema of the live
// database is not part of the key (it is not known before connecting, and a
// migration under a running sidecar only keeps old entries until they expire).
func keyVersion(cfg config.Config) string {
	tc := cfg.TTL
	tc.KeyVersion = ""
	build := map[string]string{"version": version.Version, "revision": version.Revision}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" || s.Key == "vcs.modified" {
				build[s.Key] = s.Value
			}
		}
	}
	named := (version.Revision != "" && version.Revision != "unknown") || build["vcs.revision"] != ""
	modified := build["vcs.modified"] == "true" || strings.Contains(version.Version, "dirty")
	if !named || modified {
		build["executable"] = "unreadable"
		if path, err := os.Executable(); err == nil {
			if f, err := os.Open(path); err == nil {
				h := sha256.New()
				if _, err := io.Copy(h, f); err == nil {
					build["executable"] = hex.EncodeToString(h.Sum(nil))
				}
				_ = f.Close()
			}
		}
	}
	parts, _ := json.Marshal([]any{build, cfg.Database.URL.String(), cfg.Metrics, cfg.Analytics, tc})
	sum := sha256.Sum256(parts)
	return hex.EncodeToString(sum[:6])
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

// sharedCounts computes the health counts once per refresh interval across
// all replicas that share the cache store.
type sharedCounts struct {
	src      collector.CountSource
	cache    *ttl.Cache
	interval time.Duration

	mu      sync.Mutex
	lastErr error // of this replica's latest computation, which may run in the background
}

func (s *sharedCounts) Refresh(ctx context.Context) (collector.Snapshot, error) {
	raw, info, err := s.cache.Get(ctx, ttl.ResourceStatus, "", func(ctx context.Context) ([]byte, error) {
		snap, err := s.src.Refresh(ctx)
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return json.Marshal(snap)
	})
	if err != nil {
		return collector.Snapshot{}, err
	}
	// The cache serves the last value while recomputes fail; the refresher
	// must still see the failure, or its metrics and readiness would call
	// old counts fresh.
	if info.Stale {
		s.mu.Lock()
		lastErr := s.lastErr
		s.mu.Unlock()
		if lastErr != nil {
			return collector.Snapshot{}, lastErr
		}
		if info.AgeSeconds > 2*s.interval.Seconds() {
			return collector.Snapshot{}, fmt.Errorf("shared health counts are %.0fs old: the replica refreshing them is failing", info.AgeSeconds)
		}
	}
	var snap collector.Snapshot
	if err := json.Unmarshal(raw, &snap); err != nil {
		return collector.Snapshot{}, fmt.Errorf("decode shared health counts: %w", err)
	}
	return snap, nil
}
