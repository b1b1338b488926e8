package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/redact"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

const (
	defaultDemoDB     = "postgres://postgres@127.0.0.1:5432/tasker_demo?sslmode=disable"
	defaultCoreDemoDB = "postgres://postgres@127.0.0.1:5432/tasker_demo_core?sslmode=disable"
)

func simulateCmd(ctx context.Context, env *environment, args []string) int {
	fs := newFlagSet(env, "simulate", "simulate --database-url URL [--engine rails|core] [--tasks N] [--rate R --duration D] [--seed S]",
		"Writes workflow activity the way the Tasker engine does: DAG-shaped tasks across namespaces and\nversions, Statesman-style transitions, retries with backoff, errors, cancellations and manual\nresolution (--engine core: tasker-core's 12 task and 10 step states, late-committing and\nrolled-back transactions). --tasks N writes N historical tasks in bulk (COPY); --rate R keeps creating and\nadvancing tasks live for --duration (0 = until interrupted). Needs the schema ('schema apply').")
	dbURL := fs.String("database-url", envOr(env, "SIDECAR_DATABASE_URL", ""), "PostgreSQL URL (env SIDECAR_DATABASE_URL)")
	engineName := fs.String("engine", "rails", "which engine's schema to write: rails or core")
	tasks := fs.Int("tasks", 0, "bulk: number of historical tasks to write")
	rate := fs.Float64("rate", 0, "live: tasks created per second")
	duration := fs.Duration("duration", 0, "live: how long to run (0 = until interrupted)")
	seed := fs.Int64("seed", 0, "random seed; 0 picks one")
	conns := fs.Int("conns", 4, "connections the writer may use")
	skipFK := fs.Bool("skip-fk-checks", false, "bulk: load with session_replication_role=replica (needs superuser; about 25% faster)")
	if code, done := parse(fs, args); done {
		return code
	}
	w, ok := writerFor(*engineName)
	if !ok {
		fmt.Fprintf(env.stderr, "simulate: --engine %q: must be rails or core\n", *engineName)
		return exitUsage
	}
	if *dbURL == "" {
		fmt.Fprintln(env.stderr, "simulate: --database-url or SIDECAR_DATABASE_URL is required")
		return exitUsage
	}
	if *tasks < 0 || *rate < 0 || *duration < 0 || *conns < 1 {
		fmt.Fprintln(env.stderr, "simulate: --tasks, --rate and --duration must not be negative, --conns at least 1")
		return exitUsage
	}
	if *tasks == 0 && *rate == 0 {
		fmt.Fprintln(env.stderr, "simulate: nothing to do: give --tasks N (bulk), --rate R (live) or both")
		return exitUsage
	}
	pool, err := writerPool(ctx, *dbURL, *conns)
	if err != nil {
		fmt.Fprintf(env.stderr, "simulate: %v\n", err)
		return exitFailure
	}
	defer pool.Close()
	opts := simulate.Options{Seed: *seed, SkipFKChecks: *skipFK}
	if err := w.catalog(ctx, pool, opts); err != nil {
		fmt.Fprintf(env.stderr, "simulate: %v\n", redactErr(err, *dbURL))
		return exitFailure
	}
	if *tasks > 0 {
		if err := bulk(ctx, env.stderr, w, pool, *tasks, opts); err != nil {
			fmt.Fprintf(env.stderr, "simulate: %v\n", err)
			return exitFailure
		}
	}
	if *rate > 0 {
		fmt.Fprintf(env.stderr, "simulate: live activity at %.1f tasks/s on %s\n", *rate, redact.URL(*dbURL))
		st, err := w.live(ctx, pool, *rate, *duration, opts, nil)
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(env.stderr, "simulate: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(env.stdout, "live: %+v\n", st)
	}
	return exitOK
}

// writer is one engine's simulator.
type writer struct {
	catalog func(context.Context, *pgxpool.Pool, simulate.Options) error
	bulk    func(context.Context, *pgxpool.Pool, int, simulate.Options, func(int)) (simulate.Stats, error)
	live    func(context.Context, *pgxpool.Pool, float64, time.Duration, simulate.Options, func(simulate.Stats)) (simulate.Stats, error)
	// tasks is the table counted to see whether a database has tasks yet.
	tasks string
}

// writerFor returns the simulator for --engine; ok is false for an unknown one.
func writerFor(name string) (writer, bool) {
	switch engine.Kind(name) {
	case engine.KindRails:
		return writer{simulate.EnsureCatalog, simulate.Bulk, simulate.Live, engine.Rails().Tables.Tasks}, true
	case engine.KindCore:
		return writer{simulate.EnsureCoreCatalog, simulate.BulkCore, simulate.LiveCore, engine.Core().Tables.Tasks}, true
	}
	return writer{}, false
}

func bulk(ctx context.Context, w io.Writer, sim writer, pool *pgxpool.Pool, tasks int, opts simulate.Options) error {
	start := time.Now()
	last := time.Now()
	st, err := sim.bulk(ctx, pool, tasks, opts, func(done int) {
		if time.Since(last) > 2*time.Second {
			fmt.Fprintf(w, "simulate: %d/%d tasks\n", done, tasks)
			last = time.Now()
		}
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "simulate: wrote %d tasks, %d steps, %d task transitions, %d step transitions in %s\n",
		st.Tasks, st.Steps, st.TaskTransitions, st.StepTransitions, time.Since(start).Round(time.Millisecond))
	return nil
}

func writerPool(ctx context.Context, dbURL string, conns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("invalid database URL %s", redact.URL(dbURL))
	}
	cfg.MaxConns = int32(conns)
	cfg.ConnConfig.RuntimeParams["TimeZone"] = "UTC"
	cfg.ConnConfig.RuntimeParams["application_name"] = "tasker-sidecar-simulate"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, redactErr(err, dbURL)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s: %w", redact.URL(dbURL), redactErr(err, dbURL))
	}
	return pool, nil
}
