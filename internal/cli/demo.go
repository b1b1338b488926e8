package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tasker-systems/tasker-sidecar/api"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/redact"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

func demoCmd(ctx context.Context, env *environment, args []string) int {
	fs := newFlagSet(env, "demo", "demo [--engine rails|core] [--database-url URL] [--listen ADDR] [--tasks N] [--rate R]",
		"Creates the database if needed, applies the engine's schema (--engine rails: the Rails engine's,\ncore: tasker-core's), seeds it with historical tasks\n(only when it has none), keeps live workflow activity going and runs the sidecar on it with the\nin-process cache. Stops on Ctrl-C.")
	dbURL := fs.String("database-url", envOr(env, "SIDECAR_DATABASE_URL", defaultDemoDB), "demo database URL; created if missing")
	engineName := fs.String("engine", "rails", "which engine's database to demo: rails or core")
	listen := fs.String("listen", envOr(env, "SIDECAR_LISTEN", ":9394"), "HTTP listen address")
	cacheURL := fs.String("cache-url", envOr(env, "SIDECAR_CACHE_URL", "memory://"), "cache store URL")
	tasks := fs.Int("tasks", 2000, "historical tasks to seed into an empty database")
	rate := fs.Float64("rate", 5, "live tasks created per second")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if code, done := parse(fs, args); done {
		return code
	}
	sim, simOK := writerFor(*engineName)
	_, applyEngine, schemaOK := schemaFor(*engineName)
	if !simOK || !schemaOK {
		fmt.Fprintf(env.stderr, "demo: --engine %q: must be rails or core\n", *engineName)
		return exitUsage
	}
	if engine.Kind(*engineName) == engine.KindCore && *dbURL == defaultDemoDB {
		// Its own database: one holding both engines' schemas is refused
		// by the sidecar's engine detection.
		*dbURL = defaultCoreDemoDB
	}
	if *tasks < 0 || *rate <= 0 {
		fmt.Fprintln(env.stderr, "demo: --tasks must not be negative and --rate must be positive")
		return exitUsage
	}

	cfg := config.Default()
	cfg.Database.URL = config.SecretURL(*dbURL)
	cfg.Server.Listen = *listen
	cfg.Cache.URL = config.SecretURL(*cacheURL)
	cfg.Log.Level = *logLevel
	// A short interval so the demo's numbers visibly move.
	cfg.Collector.Interval = 5 * time.Second
	if problems := cfg.Validate(); len(problems) > 0 {
		fmt.Fprintln(env.stderr, (&config.Error{Problems: problems}).Error())
		return exitUsage
	}
	logger := newLogger(env.stderr, cfg.Log)

	setupCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := ensureDatabase(setupCtx, *dbURL); err != nil {
		fmt.Fprintf(env.stderr, "demo: %v\n", err)
		return exitFailure
	}
	if err := applyEngineSchema(setupCtx, *dbURL, applyEngine); err != nil {
		fmt.Fprintf(env.stderr, "demo: %v\n", err)
		return exitFailure
	}
	// Core's live writer holds some transactions open for seconds: more
	// connections keep the rest moving.
	pool, err := writerPool(setupCtx, *dbURL, 5)
	if err != nil {
		fmt.Fprintf(env.stderr, "demo: %v\n", err)
		return exitFailure
	}
	defer pool.Close()
	opts := simulate.Options{}
	if err := sim.catalog(setupCtx, pool, opts); err != nil {
		fmt.Fprintf(env.stderr, "demo: %v\n", err)
		return exitFailure
	}
	var existing int64
	if err := pool.QueryRow(setupCtx, "SELECT count(*) FROM "+sim.tasks).Scan(&existing); err != nil {
		fmt.Fprintf(env.stderr, "demo: %v\n", err)
		return exitFailure
	}
	if existing == 0 && *tasks > 0 {
		if err := bulk(setupCtx, env.stderr, sim, pool, *tasks, opts); err != nil {
			fmt.Fprintf(env.stderr, "demo: %v\n", err)
			return exitFailure
		}
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	liveDone := make(chan error, 1)
	go func() {
		_, err := sim.live(ctx, pool, *rate, 0, opts, nil)
		if err != nil && !errors.Is(err, context.Canceled) {
			// Said at once: a demo with no live activity must not look healthy.
			logger.Error("live simulation stopped; the demo has no new activity", "err", err)
		}
		liveDone <- err
	}()

	ready := func(addr string) {
		base := "http://" + displayAddr(addr)
		fmt.Fprintf(env.stdout, "\ntasker-sidecar demo is running on %s (Ctrl-C to stop)\n", redact.URL(*dbURL))
		for _, p := range []string{api.PathStatus, api.PathReady, api.PathLive, api.PathMetrics} {
			fmt.Fprintf(env.stdout, "  %s%s\n", base, p)
		}
		fmt.Fprintln(env.stdout)
		if env.ready != nil {
			env.ready(addr)
		}
	}
	serveErr := serve(ctx, cfg, logger, ready)
	stop()
	<-liveDone
	if serveErr != nil {
		logger.Error("sidecar stopped", "err", serveErr)
		return exitFailure
	}
	return exitOK
}
