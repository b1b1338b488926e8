package analytics

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tasker-systems/tasker-sidecar/collector"
)

// Limits of the computations, not configurable: they bound work per
// request rather than tune the sidecar to a deployment.
const (
	// slowestLimit is the length of the slowest-task and slowest-step lists.
	slowestLimit = 10
	// maxPaths caps the root-to-leaf paths enumerated for one task graph;
	// Tasker enumerates all of them, which is exponential in the DAG's
	// width.
	maxPaths = 1000
	// stepCreationSlack is how long after its task a step may have been
	// created and still be seen by the slowest-steps list: steps have no
	// creation-time index, so they are found through their tasks. Tasker
	// creates every step while initialising its task.
	stepCreationSlack = time.Hour
)

// Option supplies what a Service uses besides its configuration.
type Option func(*Service)

// WithTracerProvider gives every computation a span (the sidecar's own
// spans); without it nothing is recorded.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(s *Service) {
		if tp != nil {
			s.tracer = tp.Tracer(tracerName)
		}
	}
}

const tracerName = "github.com/tasker-systems/tasker-sidecar/analytics"

// ErrEngineUnsupported is wrapped by every computation while the attached
// database is one whose analytics the sidecar does not compute: tasker-core's
// analytics read other tables and functions (docs/endpoints.md#analytics).
var ErrEngineUnsupported = errors.New("analytics are not computed for this engine")

// WithSupported gates every computation: supported returns nil while the
// attached database's analytics can be computed (or its engine is not known
// yet), else an error wrapping ErrEngineUnsupported that says why.
func WithSupported(supported func() error) Option {
	return func(s *Service) { s.supported = supported }
}

// Service computes analytics from Tasker's database through the sidecar's
// read-only pool.
type Service struct {
	pool   *pgxpool.Pool
	cfg    Config
	log    *slog.Logger
	adm    *admission
	tracer trace.Tracer
	// supported is WithSupported's gate, nil for none.
	supported func() error
	// attachment is WithAttachment's, nil for none.
	attachment Attachment
}

// New returns a Service reading through pool, which must be the sidecar's
// read-only UTC pool (collector.DB.Pool): every windowed number compares
// Tasker's naive UTC timestamps with NOW() in the session's time zone. Zero
// fields of cfg take DefaultConfig's values.
func New(pool *pgxpool.Pool, cfg Config, logger *slog.Logger, opts ...Option) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	s := &Service{pool: pool, cfg: cfg, log: logger, adm: newAdmission(cfg),
		tracer: noop.NewTracerProvider().Tracer(tracerName)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Supported is nil when the attached database's analytics can be computed;
// else an error wrapping ErrEngineUnsupported (WithSupported).
func (s *Service) Supported() error {
	if s.supported != nil {
		if err := s.supported(); err != nil {
			return err
		}
	}
	return s.railsSupported()
}

// Config returns the effective configuration, defaults applied.
func (s *Service) Config() Config { return s.cfg }

// ErrNotFound reports an unknown task, namespace or handler.
var ErrNotFound = errors.New("not found")

// NotFoundError carries the message of a 404, in Tasker's words where Tasker
// has them.
type NotFoundError struct{ Message string }

func (e *NotFoundError) Error() string { return e.Message }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// ParamError reports an invalid request parameter.
type ParamError struct {
	Param  string
	Reason string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Reason }

//go:embed sql/*.sql
var sqlFiles embed.FS

func mustSQL(name string) string {
	b, err := sqlFiles.ReadFile("sql/" + name)
	if err != nil {
		panic(err) // the files are embedded at build time
	}
	return string(b)
}

var (
	performanceSQL = mustSQL("performance.sql")
	overviewSQL    = mustSQL("overview.sql")
	bottlenecksSQL = mustSQL("bottlenecks.sql")
	readinessSQL   = mustSQL("readiness.sql")
	taskGraphSQL   = mustSQL("task_graph.sql")
	catalogSQL     = mustSQL("catalog.sql")
	templateSQL    = mustSQL("handler_template.sql")
	dashboardSQL   = mustSQL("dashboard.sql")
)

// querier is the part of pgx.Tx the computations use; tests pass their own
// transaction so that a yardstick function shares its NOW().
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// read runs fn in a read-only REPEATABLE READ transaction: one snapshot and
// one NOW() for all of fn's queries, as inside one Tasker function call.
// class is its admission class (ClassExpensive, ClassLookup); name labels
// its span (analytics.<name>).
func (s *Service) read(ctx context.Context, class, name string, fn func(q querier) error) error {
	return s.readGated(ctx, class, name, true, fn)
}

// readGated is read; gated runs the Rails computations' Supported gate
// first (the tasker-core computations check their engine themselves).
func (s *Service) readGated(ctx context.Context, class, name string, gated bool, fn func(q querier) error) (err error) {
	ctx, span := s.tracer.Start(ctx, "analytics."+name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system", "postgresql"), attribute.String("analytics.class", class)))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	// Cold analytics hold a connection for seconds; bounding how many run at
	// once per class keeps a connection of the capped pool for readiness,
	// the refresh and the stream, and bounding the waiters keeps a flood
	// from queueing goroutines without end.
	if gated {
		if err := s.Supported(); err != nil {
			return err
		}
	}
	g := s.adm.gates[class]
	if g == nil {
		return fmt.Errorf("%w %q", errUnknownClass, class)
	}
	waitStart := time.Now()
	release, err := g.enter(ctx)
	if err != nil {
		return err
	}
	defer release()
	span.SetAttributes(attribute.Float64("analytics.slot_wait_ms", float64(time.Since(waitStart).Microseconds())/1000))
	// On a hot standby replay may cancel a long read whose rows it must
	// remove (SQLSTATE 40001); a new transaction sees a newer snapshot that
	// no longer needs them, so it is retried, a bounded number of times,
	// holding the same admission slot (docs/operations.md#read-replicas).
	return collector.RetryRecoveryConflict(ctx, func(ctx context.Context) error {
		return s.readOnce(ctx, fn)
	})
}

// readOnce runs fn in one read-only repeatable-read transaction.
func (s *Service) readOnce(ctx context.Context, fn func(q querier) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin read-only transaction: %w", err)
	}
	// A read-only transaction has nothing to commit; rolling back also ends
	// it when fn fails or ctx is cancelled.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// JIT compilation costs seconds on these one-off aggregates and buys
	// nothing; the statement timeout is the analytics budget, not the pool's.
	if _, err := tx.Exec(ctx, `SELECT set_config('statement_timeout', $1, true), set_config('jit', 'off', true)`,
		strconv.FormatInt(s.cfg.StatementTimeout.Milliseconds(), 10)); err != nil {
		return fmt.Errorf("configure analytics transaction: %w", err)
	}
	return fn(tx)
}
