package collector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/redact"
)

// ErrClosed is returned by calls on a DB after Close.
var ErrClosed = errors.New("database handle is closed")

// SchemaError reports that the connected database does not hold the
// Tasker engine the sidecar should read: neither engine's tables, both, or
// only some of one engine's (in the session's search_path for Rails, in
// schema tasker for tasker-core). Err is engine.Resolve's error, which
// names what was found; errors.Is reaches engine.ErrNoTables and
// engine.ErrBothEngines through it.
type SchemaError struct {
	// Missing are the tables of the engine the sidecar looked for that do
	// not exist: the incomplete engine's, or with neither engine found the
	// configured engine's (Rails' under auto, as before detection existed).
	// Nil when both engines' tables were found.
	Missing []string
	Err     error
}

func (e *SchemaError) Error() string {
	if e.Err == nil {
		return "Tasker schema incomplete: missing tables " + strings.Join(e.Missing, ", ")
	}
	var mt *engine.MissingTablesError
	if errors.As(e.Err, &mt) {
		return "Tasker schema incomplete: " + e.Err.Error()
	}
	msg := "Tasker schema: " + e.Err.Error()
	if len(e.Missing) > 0 {
		msg += "; missing tables " + strings.Join(e.Missing, ", ")
	}
	return msg
}

func (e *SchemaError) Unwrap() error { return e.Err }

// schemaError turns engine.Resolve's error into a *SchemaError, or returns
// it unchanged when it is not about the tables (the query failed).
func schemaError(configured engine.Kind, err error) error {
	var mt *engine.MissingTablesError
	switch {
	case errors.As(err, &mt):
		return &SchemaError{Missing: slices.Clone(mt.Missing), Err: err}
	case errors.Is(err, engine.ErrNoTables):
		want := engine.Rails()
		if e, ferr := engine.For(configured); ferr == nil {
			want = e
		}
		return &SchemaError{Missing: want.Tables.List(), Err: err}
	case errors.Is(err, engine.ErrBothEngines):
		return &SchemaError{Err: err}
	}
	return err
}

// DB is a read-only view of Tasker's PostgreSQL database.
type DB struct {
	pool     *pgxpool.Pool
	logger   *slog.Logger
	redacted string
	closed   atomic.Bool

	// schemaStale is raised by every new physical connection, so the schema is
	// re-checked after a reconnect: the server may have been restored or
	// migrated while we were away.
	schemaStale atomic.Bool

	// configured is database.engine; eng the engine the last successful
	// resolution found (Kind empty before).
	configured engine.Kind

	replica replicaState // replica.go

	mu        sync.Mutex
	eng       engine.Engine
	missing   []string
	schemaErr error       // the last check's *SchemaError, nil when it found an engine
	announced engine.Kind // the engine last logged as found
	checked   bool
	reachable bool
	seen      bool // reachable holds a real observation
}

// Open builds the pool without connecting: the sidecar must start and serve
// while PostgreSQL is down, and pgxpool dials lazily and redials by itself.
// It fails only for an unusable URL or a metrics registration conflict. reg
// may be nil to skip metrics; logger is used as given (nil discards), so the
// caller scopes it.
func Open(opts DBConfig, reg prometheus.Registerer, logger *slog.Logger) (*DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := poolConfig(opts)
	if err != nil {
		return nil, err
	}
	db := &DB{
		logger:     logger,
		redacted:   redact.URL(opts.URL.Value()),
		configured: cmp.Or(opts.Engine, engine.KindAuto),
	}
	db.schemaStale.Store(true)
	cfg.AfterConnect = func(context.Context, *pgx.Conn) error {
		db.schemaStale.Store(true)
		return nil
	}

	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool for %s: %w", db.redacted, err)
	}
	db.pool = pool
	if reg != nil {
		if err := reg.Register(newPoolCollector(pool.Stat)); err != nil {
			pool.Close()
			return nil, fmt.Errorf("register pool metrics: %w", err)
		}
		if err := reg.Register(newReplicaCollector(db)); err != nil {
			pool.Close()
			return nil, fmt.Errorf("register replication metrics: %w", err)
		}
	}
	return db, nil
}

// OpenPool opens a pool on another database the sidecar reads, with the
// Tasker pool's rules (read-only, UTC, the timeouts of opts; lazy: it dials
// at the first query): tasker-core's PGMQ database when it keeps its queues
// apart (coreops, pgmq.database_url).
func OpenPool(opts DBConfig) (*pgxpool.Pool, error) {
	cfg, err := poolConfig(opts)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool for %s: %w", redact.URL(opts.URL.Value()), err)
	}
	return pool, nil
}

// CheckDatabaseURL says what is wrong with a database URL as Open would
// take it, never quoting the URL (it may carry a password).
func CheckDatabaseURL(raw string) error { return checkDatabaseURL(raw) }

// forcedParams are startup parameters we never let the URL override: UTC
// because Tasker's naive timestamps are UTC and PostgreSQL interprets them in
// the session zone (docs/tasker-semantics.md#time-zone); read-only because the sidecar is an observer.
// Startup parameters outrank ALTER DATABASE/ROLE settings and -c options.
func forcedParams() [][2]string {
	return [][2]string{{"TimeZone", "UTC"}, {"default_transaction_read_only", "on"}}
}

// poolConfig is the pool's configuration: opts over the URL's parameters
// over DefaultDBConfig.
func poolConfig(opts DBConfig) (*pgxpool.Config, error) {
	def := DefaultDBConfig()
	cfg, err := pgxpool.ParseConfig(opts.URL.Value())
	if err != nil {
		return nil, parseError(opts.URL.Value(), err)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = def.MaxConns
	}
	// pgxpool's MinConns would dial at construction; we want laziness.
	cfg.MinConns, cfg.MinIdleConns = 0, 0

	cc := cfg.ConnConfig
	if opts.ConnectTimeout > 0 {
		cc.ConnectTimeout = opts.ConnectTimeout
	} else if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = def.ConnectTimeout
	}

	params := cc.RuntimeParams
	// GUC names are case-insensitive but RuntimeParams is a map: drop any
	// spelling of a key we set, or the startup packet would carry both.
	for k := range params {
		for _, f := range forcedParams() {
			if strings.EqualFold(k, f[0]) {
				delete(params, k)
			}
		}
	}
	millis := func(key string, opt, def time.Duration) {
		if opt > 0 {
			params[key] = strconv.FormatInt(opt.Milliseconds(), 10)
		} else if _, ok := params[key]; !ok {
			params[key] = strconv.FormatInt(def.Milliseconds(), 10)
		}
	}
	millis("statement_timeout", opts.StatementTimeout, def.StatementTimeout)
	millis("lock_timeout", opts.lockTimeout, defaultLockTimeout)
	if opts.ApplicationName != "" {
		params["application_name"] = opts.ApplicationName
	} else if params["application_name"] == "" {
		params["application_name"] = def.ApplicationName
	}
	for _, f := range forcedParams() {
		params[f[0]] = f[1]
	}
	return cfg, nil
}

// Close releases all connections. Calls after Close return ErrClosed.
func (db *DB) Close() {
	if db.closed.Swap(true) {
		return
	}
	db.pool.Close()
}

// Pool is the read-only pool, for the other readers of Tasker's database
// (analytics, the transition stream), so the whole sidecar stays within one
// connection cap and one set of session settings.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Redacted is the connection URL with any password masked, for logs.
func (db *DB) Redacted() string { return db.redacted }

// Ping runs SELECT 1 and returns how long it took, including acquiring a
// connection (which includes dialling when the pool is empty). After a
// reconnect it re-checks the schema; the latency excludes that check.
func (db *DB) Ping(ctx context.Context) (time.Duration, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	start := time.Now()
	var one int
	err := db.pool.QueryRow(ctx, "SELECT 1").Scan(&one)
	latency := time.Since(start)
	db.noteReachable(err)
	if err != nil {
		return latency, fmt.Errorf("ping database: %w", err)
	}
	if db.schemaStale.Load() {
		if _, err := db.CheckSchema(ctx); err != nil {
			db.logger.Warn("schema check after reconnect failed", "err", err)
		}
	}
	return latency, nil
}

// CheckSchema finds which engine's tables the database holds, as
// database.engine asks (see attach), and returns the tables missing for it
// (nil when an engine was found). It fails only when the check could not
// run; MissingTables, SchemaStatus and Engine remember the answer.
func (db *DB) CheckSchema(ctx context.Context) ([]string, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	_, err := db.attach(ctx, db.pool)
	db.noteReachable(err) // a schema error is an answer: reachable
	if err == nil {
		// At attach and after every reconnect: a failover may have made
		// the standby a primary while we were away. A failure here only
		// delays the answer to the next refresh, which asks too.
		if rerr := db.checkServer(ctx); rerr != nil {
			db.logger.Debug("could not read the server's role", "err", rerr)
		}
	}
	var se *SchemaError
	if errors.As(err, &se) {
		return slices.Clone(se.Missing), nil
	}
	if err != nil {
		return nil, err
	}
	return nil, nil
}

// Engine is the engine the last successful resolution found; false before
// the first one. A later failed check does not forget it: the counts
// already served came from that engine.
func (db *DB) Engine() (engine.Engine, bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.eng, db.eng.Kind != ""
}

// SchemaStatus is what the last schema check found.
type SchemaStatus struct {
	Checked bool
	// Engine is the engine the last successful check found (Kind empty
	// before one); it stays set when a later check fails.
	Engine engine.Engine
	// Configured is database.engine.
	Configured engine.Kind
	// Missing and Err are the last check's *SchemaError's, nil when that
	// check found an engine.
	Missing []string
	Err     error
	// Replication is where the server said it was at the last check or
	// refresh (Known false before one answered).
	Replication Replication
}

// SchemaStatus reports the last schema check, for readiness.
func (db *DB) SchemaStatus() SchemaStatus {
	r, _ := db.Replication()
	db.mu.Lock()
	defer db.mu.Unlock()
	return SchemaStatus{Checked: db.checked, Engine: db.eng, Configured: db.configured,
		Missing: slices.Clone(db.missing), Err: db.schemaErr, Replication: r}
}

// resolveEngine finds which engine's tables q sees, as database.engine
// asks (engine.Resolve), and remembers it for Engine.
func (db *DB) resolveEngine(ctx context.Context, q engine.Querier) (engine.Engine, error) {
	e, err := engine.Resolve(ctx, q, db.configured)
	if err != nil {
		return engine.Engine{}, err
	}
	db.mu.Lock()
	db.eng = e
	db.mu.Unlock()
	return e, nil
}

// attach is the schema check every reader runs before it counts (Refresh,
// the transition stream, Ping after a reconnect): it resolves the engine
// inside q (a transaction, so that the check and the counts see the same
// catalogs), records the answer, logging it when it changes, and returns
// the engine. A database without a usable engine yields a *SchemaError
// naming what was found; a failed query its own error.
//
// Checked on every refresh, not just at connect: it costs one round trip
// and turns "relation does not exist" into an error naming every missing
// table, even when tables disappear while we are connected.
func (db *DB) attach(ctx context.Context, q engine.Querier) (engine.Engine, error) {
	e, err := db.resolveEngine(ctx, q)
	if err != nil {
		err = schemaError(db.configured, err)
		var se *SchemaError
		if !errors.As(err, &se) {
			return engine.Engine{}, fmt.Errorf("check Tasker schema: %w", err)
		}
		db.recordCheck(e, se)
		return engine.Engine{}, se
	}
	db.recordCheck(e, nil)
	return e, nil
}

// MissingTables is the result of the most recent schema check: nil before
// the first check and when nothing is missing.
func (db *DB) MissingTables() []string {
	db.mu.Lock()
	defer db.mu.Unlock()
	return slices.Clone(db.missing)
}

// querier is the part of pgxpool.Pool and pgx.Tx the readers need.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// recordCheck stores a check result and logs only when it changes, so a
// database that stays incomplete does not flood the log every refresh. e
// is the engine found (ignored when se is set). The engine is logged when
// first found and whenever it changes.
func (db *DB) recordCheck(e engine.Engine, se *SchemaError) {
	db.schemaStale.Store(false)
	var missing []string
	var errText string
	if se != nil {
		missing, errText = se.Missing, se.Error()
	}
	db.mu.Lock()
	prevErr := ""
	if db.schemaErr != nil {
		prevErr = db.schemaErr.Error()
	}
	changed := !db.checked || prevErr != errText
	had := db.schemaErr != nil
	prevKind := db.announced
	db.missing, db.checked = missing, true
	if se != nil {
		db.schemaErr = se
	} else {
		db.schemaErr = nil
		db.announced = e.Kind
	}
	db.mu.Unlock()
	switch {
	case se != nil && changed && len(missing) > 0:
		db.logger.Error("Tasker tables are missing; health counts cannot be computed until they exist",
			"missing_tables", strings.Join(missing, ","), "err", errText, "database", db.redacted)
	case se != nil && changed:
		db.logger.Error("cannot tell which Tasker engine the database holds; health counts cannot be computed until database.engine names one",
			"err", errText, "database", db.redacted)
	case se != nil:
	case prevKind == "":
		db.logger.Info("attached to a Tasker engine", "engine", e.Kind, "engine_name", e.Name,
			"configured", db.configured, "database", db.redacted)
	case prevKind != e.Kind:
		db.logger.Warn("the database now holds another Tasker engine", "engine", e.Kind, "engine_name", e.Name,
			"previous_engine", prevKind, "database", db.redacted)
	case had:
		db.logger.Info("Tasker schema is complete again", "engine", e.Kind, "database", db.redacted)
	}
}

// noteReachable logs transitions between reachable and unreachable. Any
// answer from the server, even an error, means it is reachable; connection
// errors mean it is not; a timeout or cancellation tells us nothing.
func (db *DB) noteReachable(err error) {
	up := err == nil
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return
		}
		switch classify(err) {
		case ReasonTimeout:
			return
		case ReasonConnection:
		default:
			up = true
		}
	}
	db.mu.Lock()
	was, first := db.reachable, !db.seen
	db.reachable, db.seen = up, true
	db.mu.Unlock()
	switch {
	case up && !was:
		db.schemaStale.Store(true)
		if first {
			db.logger.Info("connected to database", "database", db.redacted)
		} else {
			db.logger.Info("database reachable again", "database", db.redacted)
		}
	case !up && (was || first):
		db.logger.Warn("database unreachable; will keep retrying", "database", db.redacted, "err", err)
	}
}

// parseError describes an unusable URL without its password. pgx's own text
// quotes the input, redacted only on a best-effort basis, so we keep just the
// reason that follows the quoted input and scrub that as well.
func parseError(conn string, err error) error {
	reason := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		if i := strings.LastIndex(reason, "`: "); i >= 0 {
			reason = reason[i+len("`: "):]
		}
	}
	return fmt.Errorf("invalid database URL %s: %s", redact.URL(conn), redact.Scrub(reason, redact.Secrets(conn)...))
}

// poolCollector exports pgxpool.Stat at scrape time, shaped after
// client_golang's DBStatsCollector.
type poolCollector struct {
	stat func() *pgxpool.Stat

	acquired, idle, constructing, total, max                   *prometheus.Desc
	acquires, acquireSeconds, emptyAcquires, emptyWaitSeconds  *prometheus.Desc
	canceledAcquires, newConns, lifetimeDestroys, idleDestroys *prometheus.Desc
}

func newPoolCollector(stat func() *pgxpool.Stat) *poolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("tasker_sidecar", "db_pool", name), help, nil, nil)
	}
	return &poolCollector{
		stat:             stat,
		acquired:         d("acquired_connections", "Connections currently checked out of the pool."),
		idle:             d("idle_connections", "Connections currently idle in the pool."),
		constructing:     d("constructing_connections", "Connections currently being established."),
		total:            d("connections", "Connections currently in the pool (acquired, idle and constructing)."),
		max:              d("max_connections", "Configured maximum size of the pool."),
		acquires:         d("acquires_total", "Successful connection acquisitions from the pool."),
		acquireSeconds:   d("acquire_duration_seconds_total", "Total time spent in successful acquisitions."),
		emptyAcquires:    d("empty_acquires_total", "Successful acquisitions that had to wait because no connection was idle."),
		emptyWaitSeconds: d("empty_acquire_wait_seconds_total", "Total time successful acquisitions waited because no connection was idle."),
		canceledAcquires: d("canceled_acquires_total", "Acquisitions abandoned because their context ended."),
		newConns:         d("new_connections_total", "Connections opened."),
		lifetimeDestroys: d("max_lifetime_destroyed_connections_total", "Connections closed for exceeding the maximum lifetime."),
		idleDestroys:     d("max_idle_destroyed_connections_total", "Connections closed for exceeding the maximum idle time."),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stat()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	n := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	g(c.acquired, float64(s.AcquiredConns()))
	g(c.idle, float64(s.IdleConns()))
	g(c.constructing, float64(s.ConstructingConns()))
	g(c.total, float64(s.TotalConns()))
	g(c.max, float64(s.MaxConns()))
	n(c.acquires, float64(s.AcquireCount()))
	n(c.acquireSeconds, s.AcquireDuration().Seconds())
	n(c.emptyAcquires, float64(s.EmptyAcquireCount()))
	n(c.emptyWaitSeconds, s.EmptyAcquireWaitTime().Seconds())
	n(c.canceledAcquires, float64(s.CanceledAcquireCount()))
	n(c.newConns, float64(s.NewConnsCount()))
	n(c.lifetimeDestroys, float64(s.MaxLifetimeDestroyCount()))
	n(c.idleDestroys, float64(s.MaxIdleDestroyCount()))
}
