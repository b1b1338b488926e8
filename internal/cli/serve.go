package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/api"
	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/coreops"
	"github.com/tasker-systems/tasker-sidecar/exporters"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/lifecycle"
	"github.com/tasker-systems/tasker-sidecar/readiness"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/traces"
	"github.com/tasker-systems/tasker-sidecar/traces/otlp"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// serve runs the sidecar until ctx is cancelled. It returns an error only for
// what stops it from serving at all (the listen address, unreadable secrets);
// a down database or cache store degrades it instead.
//
// Every long-lived part is a lifecycle.Component run by one supervisor. They
// start with a context that the signal does not cancel, so that at the end
// they stop one after the other, in the order of shutdownOrder, within one
// budget: server.shutdown_timeout.
func serve(ctx context.Context, cfg config.Config, logger *slog.Logger, ready func(addr string)) error {
	logger.Info("starting tasker-sidecar", "version", version.Version, "revision", version.Revision,
		"go", version.GoVersion, "database", cfg.Database.URL, "engine", cfg.Database.Engine, "cache", cfg.Cache.URL,
		"listen", cfg.Server.Listen)

	store.RouteDriverLogs(logger.With("component", "cache-driver"))
	// Unreadable credential files stop it before anything opens.
	if _, _, err := cfg.Server.Auth.Credentials(); err != nil {
		return fmt.Errorf("server.%w", err)
	}

	// What build waits for (the first detection, the lease probe) still
	// ends with the signal; the parts it builds run on life.
	sc, err := build(ctx, cfg, logger)
	if err != nil {
		return err
	}
	life := context.WithoutCancel(ctx)
	steps := sc.steps(cfg.Server.ShutdownTimeout)
	sup := lifecycle.New(steps.ordered(startOrder...), steps.ordered(shutdownOrder...))
	stop := func() error {
		sctx, cancel := context.WithTimeout(life, cfg.Server.ShutdownTimeout)
		defer cancel()
		logger.Info("shutting down", "budget", cfg.Server.ShutdownTimeout)
		return sup.Shutdown(sctx)
	}
	if err := sup.Start(life); err != nil {
		return errors.Join(err, stop())
	}

	addr := sc.srv.Addr().String()
	scheme := "http://"
	if cfg.Server.TLS.CertFile != "" {
		scheme = "https://"
	}
	logger.Info("serving", "addr", addr, "status", scheme+displayAddr(addr)+api.PathStatus)
	if ready != nil {
		ready(addr)
	}

	select {
	case <-ctx.Done():
	case <-sc.srv.Done(): // serving failed on its own
	}
	served := sc.srv.Err()
	err = errors.Join(served, stop())
	logger.Info("stopped")
	return err
}

// parts is every part serve runs, built but not started.
type parts struct {
	db        *collector.DB
	cache     *cacheRuntime
	results   *ttl.Cache
	workflows *traces.Workflows        // nil without tracing
	self      *sdktrace.TracerProvider // nil without the sidecar's own spans
	stream    *collector.Stream        // nil without the stream
	refresher *collector.Refresher
	coreops   *coreops.Refresher // tasker-core's queues, dead letters, staleness
	pgmq      *pgxpool.Pool      // nil unless pgmq.database_url names a database of its own
	gauges    *analytics.Metrics // nil without analytics
	srv       *api.Server
}

// build opens the pools (lazily: nothing waits for the database) and the
// cache store (one capability detection, bounded by cache.detect_timeout),
// and wires everything else without starting it.
func build(ctx context.Context, cfg config.Config, logger *slog.Logger) (_ *parts, err error) {
	sc := &parts{}
	// On failure, whatever was opened is closed again.
	defer func() {
		if err != nil {
			_ = errors.Join(sc.traces().Shutdown(ctx), sc.pools().Shutdown(ctx))
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("tasker_sidecar"),
	)
	if sc.db, err = collector.Open(cfg.Database, reg, logger.With("component", "database")); err != nil {
		return nil, err
	}
	if sc.cache, err = openCache(ctx, cfg, reg, logger); err != nil {
		return nil, err
	}
	// The engine is found at the first schema check (collector.DB logs it);
	// /capabilities and tasker_sidecar_engine_info report it from then on.
	sc.cache.engine, sc.cache.configured = sc.db.Engine, cmp.Or(cfg.Database.Engine, engine.KindAuto)
	sc.cache.replication = sc.db.Replication
	reg.MustRegister(exporters.NewEngineCollector(sc.db.Engine))

	var streamOpts []collector.StreamOption
	var selfTP trace.TracerProvider
	if cfg.Tracing.Enabled {
		if err := sc.buildTracing(ctx, cfg, reg, logger); err != nil {
			return nil, err
		}
		streamOpts = append(streamOpts, collector.WithSink(sc.workflows), collector.WithExemplars(sc.workflows.ExemplarTraceID))
		if sc.self != nil {
			selfTP = sc.self
			streamOpts = append(streamOpts, collector.WithTracerProvider(sc.self))
		}
	}

	results, err := newResults(cfg, sc.cache, reg, logger)
	if err != nil {
		return nil, err
	}
	sc.results = results
	sc.cache.results = results
	if selfTP != nil {
		results.SetTracerProvider(selfTP)
	}

	// With the stream, each replica's counts cost in proportion to new rows
	// and are fresher than any shared copy; without it, the full recount is
	// expensive, so the replicas share one per refresh interval.
	var source collector.CountSource = &sharedCounts{src: sc.db, cache: results, interval: cfg.Collector.Interval}
	if cfg.Stream.Enabled {
		sc.stream = newStream(ctx, cfg, sc.db, sc.cache, reg, logger, streamOpts)
		source = sc.stream
	} else if cfg.Tracing.Enabled {
		logger.Warn("tracing is enabled but the transition stream is not: no workflow traces will be exported")
	}

	sc.refresher = collector.NewRefresher(sc.db, cfg.Collector, reg, logger.With("component", "refresher"),
		collector.WithSource(source), collector.WithRefreshTracer(selfTP))
	reg.MustRegister(exporters.NewDomainCollector(sc.refresher, cfg.Metrics))
	if err := sc.buildCoreOps(cfg, reg, logger); err != nil {
		return nil, err
	}

	var svc *analytics.Service
	if cfg.Analytics.Enabled {
		svc = newAnalytics(cfg, sc.db, reg, selfTP, logger)
	}
	deps := serverDeps(cfg, sc.refresher) // preflight.go
	deps.Registerer, deps.Gatherer, deps.Logger = reg, reg, logger
	deps.Front = api.Front{
		Version: version.Version, Revision: version.Revision,
		// Redacted: the page reads only the host and database name, and
		// the password must not be in its reach at all.
		DatabaseURL: cfg.Database.URL.String(),
		Engine:      sc.db.Engine, ConfiguredEngine: sc.cache.configured,
		Replication: sc.db.Replication,
		// What /capabilities reports of the store (cache.go).
		Cache: func() api.FrontCache {
			r := sc.cache.det.Report()
			store := cmp.Or(r.Store.Product, r.Store.Kind)
			if r.Store.Version != "" {
				store += " " + r.Store.Version
			}
			return api.FrontCache{Store: store, Address: r.Store.Address, Reachable: r.Store.Reachable,
				Strategy: r.Strategy, Mechanism: r.Mechanism}
		},
		DocsURL: "https://github.com/tasker-systems/tasker-sidecar/blob/main/docs/",
	}
	deps.Checks = []readiness.Checker{
		// A ping that finds the database gone turns the status endpoint at once.
		readiness.NewDatabaseCheck(sc.db.Ping, sc.db.SchemaStatus, sc.refresher.ReportUnreachable),
		sc.cache.check(),
		readiness.NewRefreshCheck(sc.refresher, cfg.Collector.Interval),
		readiness.NewSaturationCheck("admission", saturation(results, svc)),
	}
	if sc.srv, err = api.New(cfg.Server, deps); err != nil {
		return nil, err
	}
	sc.cache.routes(sc.srv)
	if svc != nil {
		api.MountAnalytics(sc.srv.Router(), svc, results, logger, api.WithReplicationLag(func() time.Duration {
			r, _ := sc.db.Replication()
			return r.Lag
		}))
		share := func(ctx context.Context, resource, params string, compute func(context.Context) ([]byte, error)) ([]byte, error) {
			v, _, err := results.Get(ctx, resource, params, compute)
			return v, err
		}
		sc.gauges = analytics.NewMetrics(svc, cfg.Metrics.MaxLabelGroups, share, logger.With("component", "analytics"))
		reg.MustRegister(sc.gauges)
	}
	return sc, nil
}

// buildCoreOps builds the reader of tasker-core's queues, dead letters and
// staleness (docs/tasker-core.md). It reads nothing while the database is
// the Rails engine's; PGMQ is looked for in the Tasker database unless
// pgmq.database_url names its own, opened read-only with database's
// timeouts and one connection.
func (sc *parts) buildCoreOps(cfg config.Config, reg prometheus.Registerer, logger *slog.Logger) error {
	var queues coreops.Querier = sc.db.Pool()
	if cfg.PGMQ.DatabaseURL != "" {
		opts := cfg.Database
		opts.URL, opts.MaxConns = cfg.PGMQ.DatabaseURL, 1
		pool, err := collector.OpenPool(opts)
		if err != nil {
			return fmt.Errorf("pgmq.database_url: %w", err)
		}
		sc.pgmq, queues = pool, pool
	}
	sc.coreops = coreops.NewRefresher(sc.db, sc.db.Pool(), coreops.Options{
		Interval: cfg.Collector.Interval, Timeout: cfg.Collector.Timeout, Queues: queues,
		Logger: logger.With("component", "coreops"),
	})
	reg.MustRegister(sc.coreops.Metrics()...)
	reg.MustRegister(coreops.NewCollector(sc.coreops, cfg.Metrics.MaxLabelGroups, cfg.Metrics.MaxStaleness))
	return nil
}

// buildTracing builds the workflow trace pipeline and, when enabled, the
// tracer provider of the sidecar's own spans. Each has its own exporter
// because each shuts its exporter down.
func (sc *parts) buildTracing(ctx context.Context, cfg config.Config, reg prometheus.Registerer, logger *slog.Logger) error {
	exp, err := otlp.NewSpanExporter(ctx, cfg.Tracing)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	sc.workflows = traces.NewWorkflows(cfg.Tracing, exp, sc.db, reg, logger.With("component", "traces"))
	if !cfg.Tracing.SidecarSpans {
		return nil
	}
	selfExp, err := otlp.NewSpanExporter(ctx, cfg.Tracing)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	sc.self = traces.NewSidecarTracerProvider(cfg.Tracing, selfExp)
	return nil
}

// namedSteps are the supervisor's steps by name.
type namedSteps map[string]lifecycle.Component

// steps are the parts as supervisor steps, parts that are off left out. The
// HTTP drain gets at most two thirds of the shutdown budget, so that a
// request running long cannot leave the checkpoint, the traces and the
// pools without time.
func (sc *parts) steps(budget time.Duration) namedSteps {
	drain := budget * 2 / 3
	m := namedSteps{
		"pools":     sc.pools(),
		"detector":  sc.cache.det,
		"results":   sc.results,
		"refresher": sc.refresher,
		"coreops":   sc.coreops,
		"http": &lifecycle.Funcs{
			StartFunc: sc.srv.Start,
			ShutdownFunc: func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, drain)
				defer cancel()
				return sc.srv.Shutdown(ctx)
			},
		},
		"traces": sc.traces(),
	}
	if sc.stream != nil {
		m["stream"] = sc.stream
	}
	if sc.gauges != nil {
		m["analytics"] = sc.gauges
	}
	return m
}

// startOrder: what the others use first, the HTTP server last, so that the
// first request finds everything running.
var startOrder = []string{"pools", "detector", "traces", "results", "stream", "refresher", "coreops", "analytics", "http"}

// shutdownOrder: stop accepting HTTP and drain the requests in flight
// first (for at most two thirds of the budget); then the background work
// that reads the database (the analytics gauges, tasker-core's operational
// reads, the refresher, the stream,
// which saves its checkpoint and gives its lease back); the results cache's
// refreshes and the detector; flush the traces the stream handed over;
// close the pools last.
var shutdownOrder = []string{"http", "analytics", "coreops", "refresher", "stream", "results", "detector", "traces", "pools"}

// ordered lists the steps named, in that order, skipping the absent ones.
func (m namedSteps) ordered(names ...string) []lifecycle.Step {
	var out []lifecycle.Step
	for _, n := range names {
		if c, ok := m[n]; ok {
			out = append(out, lifecycle.Step{Name: n, Component: c})
		}
	}
	return out
}

// pools closes the database pools and the cache store client.
func (sc *parts) pools() lifecycle.Component {
	return &lifecycle.Funcs{ShutdownFunc: func(context.Context) error {
		if sc.db != nil {
			sc.db.Close()
		}
		if sc.pgmq != nil {
			sc.pgmq.Close()
		}
		if sc.cache != nil {
			return sc.cache.st.Close()
		}
		return nil
	}}
}

// traces flushes and shuts down the trace exporters.
func (sc *parts) traces() lifecycle.Component {
	return &lifecycle.Funcs{ShutdownFunc: func(ctx context.Context) error {
		var errs []error
		if sc.workflows != nil {
			errs = append(errs, sc.workflows.Shutdown(ctx))
		}
		if sc.self != nil {
			errs = append(errs, sc.self.Shutdown(ctx))
		}
		return errors.Join(errs...)
	}}
}
