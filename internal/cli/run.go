package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/tasker-systems/tasker-sidecar/traces"
	"github.com/tasker-systems/tasker-sidecar/traces/otlp"
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
	if !ok || !preflight(env, cfg) {
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

	db, err := collector.Open(databaseOptions(cfg), reg, logger.With("component", "database"))
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

	var svc *analytics.Service
	if cfg.Analytics.Enabled {
		svc = newAnalytics(cfg, db, reg, selfTP, logger)
	}
	srvOpts := serverOptions(cfg, token, password) // preflight.go
	srvOpts.Registerer, srvOpts.Gatherer, srvOpts.Health, srvOpts.Logger = reg, reg, refresher, logger
	srvOpts.Checks = []exporters.Checker{
		// A ping that finds the database gone turns the status endpoint at once.
		exporters.NewDatabaseCheck(db.Ping, db.MissingTables, refresher.ReportUnreachable),
		cache.check(),
		exporters.NewRefreshCheck(refresher, cfg.Collector.RefreshInterval),
		exporters.NewSaturationCheck("admission", saturation(results, svc)),
	}
	srv, err := exporters.New(srvOpts)
	if err != nil {
		return err
	}
	cache.routes(srv)

	if svc != nil {
		stopAnalytics := startAnalytics(ctx, cfg, svc, results, srv, reg, logger)
		defer stopAnalytics()
	}

	refresher.Start(ctx)
	defer refresher.Stop()

	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	select {
	case <-srv.Bound():
		addr := srv.Addr().String()
		scheme := "http://"
		if cfg.Server.TLS.CertFile != "" {
			scheme = "https://"
		}
		logger.Info("serving", "addr", addr, "status", scheme+displayAddr(addr)+exporters.PathStatus)
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
	// Preflight resolved the same path, so this cannot fail here.
	ckptCfg, _ := checkpointConfig(cfg) // preflight.go
	ckpt := collector.NewCheckpointer(cache.st, ckptCfg)
	if collector.Distributed(cache.st) {
		leaseCfg, _ := leaseConfig(cfg) // preflight.go; resolved there like the checkpoint
		lease, err := collector.NewLease(cache.st, leaseCfg)
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
func startTracing(ctx context.Context, cfg config.Config, db *collector.DB, reg prometheus.Registerer, logger *slog.Logger) (*traces.Workflows, *sdktrace.TracerProvider, error) {
	exp, err := otlp.NewSpanExporter(ctx, cfg.Tracing)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	workflows := traces.NewWorkflows(cfg.Tracing, exp, db, reg, logger.With("component", "traces"))
	if !cfg.Tracing.SidecarSpans {
		return workflows, nil, nil
	}
	selfExp, err := otlp.NewSpanExporter(ctx, cfg.Tracing)
	if err != nil {
		_ = workflows.Shutdown(context.Background())
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	return workflows, traces.NewSidecarTracerProvider(cfg.Tracing, selfExp), nil
}

func shutdownTracing(workflows *traces.Workflows, self *sdktrace.TracerProvider) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = workflows.Shutdown(ctx)
	if self != nil {
		_ = self.Shutdown(ctx)
	}
}

// newAnalytics is the analytics service with its admission metrics.
func newAnalytics(cfg config.Config, db *collector.DB, reg prometheus.Registerer, tp trace.TracerProvider, logger *slog.Logger) *analytics.Service {
	svc := analytics.New(db.Pool(), analytics.Options{
		StatementTimeout: cfg.Analytics.StatementTimeout,
		MaxBatch:         cfg.Analytics.MaxBatch,
		TracerProvider:   tp,

		MaxConcurrent:       cfg.Analytics.MaxConcurrent,
		MaxWaiters:          cfg.Analytics.MaxWaiters,
		LookupMaxConcurrent: cfg.Analytics.LookupMaxConcurrent,
		LookupMaxWaiters:    cfg.Analytics.LookupMaxWaiters,
	}, logger.With("component", "analytics"))
	reg.MustRegister(svc) // admission metrics
	return svc
}

// saturation reports whether expensive work is being turned away: by the
// coordinated cache (too many requests waiting on one resource) or by the
// analytics connection queues (svc may be nil when analytics are off).
func saturation(results *ttl.Cache, svc *analytics.Service) func() (bool, string) {
	return func() (bool, string) {
		var msgs []string
		if sat, msg := results.Saturated(); sat {
			msgs = append(msgs, msg)
		}
		if svc != nil {
			if sat, msg := svc.Saturated(); sat {
				msgs = append(msgs, msg)
			}
		}
		return len(msgs) > 0, strings.Join(msgs, "; ")
	}
}

// startAnalytics mounts the analytics endpoints and starts the gauges'
// background refresh; the returned function stops it and waits.
func startAnalytics(ctx context.Context, cfg config.Config, svc *analytics.Service, results *ttl.Cache, srv *exporters.Server, reg prometheus.Registerer, logger *slog.Logger) func() {
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
	tc := resultsConfig(cfg) // preflight.go
	if tc.KeyVersion == "" {
		tc.KeyVersion = keyVersion(cfg)
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
