package analytics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// tasker-core's analytics API (GET /v1/analytics/performance and
// /v1/analytics/bottlenecks), computed from the tables in schema tasker
// with the values tasker-core's AnalyticsQueryService builds from its SQL
// functions (crates/tasker-orchestration/src/services/analytics_query_service.rs),
// and the core engine's side of the gate. docs/analytics.md#tasker-cores-analytics-api
// and docs/tasker-semantics.md#tasker-core-analytics define every number.

var (
	coreHealthSQL        = mustSQL("core_health.sql")
	coreSlowestStepsSQL  = mustSQL("core_slowest_steps.sql")
	coreSlowestTasksSQL  = mustSQL("core_slowest_tasks.sql")
	errCoreParamOverflow = errors.New("the window starts before the earliest time PostgreSQL can represent")
)

// ErrNotCore is wrapped by the tasker-core computations when the attached
// database is not tasker-core's: its API does not exist there.
var ErrNotCore = errors.New("tasker-core's analytics API is served only on a tasker-core database")

// Attachment is the sidecar's attachment to the workflow database
// (collector.DB): the engine its last schema check found, and a way to
// check now. WithAttachment gives it to a Service.
type Attachment interface {
	Engine() (engine.Engine, bool)
	CheckSchema(ctx context.Context) ([]string, error)
}

// WithAttachment tells the Service which engine the database holds. The
// Rails computations are then refused on any other engine (Supported), and
// the tasker-core ones on any other than core, each computation checking
// for itself, so that one Service serves whichever engine is attached.
// Without it the Rails computations run (or WithSupported decides) and the
// core ones look the engine up in the catalogs themselves.
func WithAttachment(a Attachment) Option {
	return func(s *Service) { s.attachment = a }
}

// attachedEngine is the attachment's engine; when no schema check has
// found one yet (the first request can come before the first count) it
// checks now, briefly. ok is false when no attachment is set or the check
// found nothing.
func (s *Service) attachedEngine() (engine.Engine, bool) {
	if s.attachment == nil {
		return engine.Engine{}, false
	}
	e, ok := s.attachment.Engine()
	if !ok {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = s.attachment.CheckSchema(ctx)
		cancel()
		e, ok = s.attachment.Engine()
	}
	return e, ok
}

// railsSupported is the attachment's gate of the Rails computations.
func (s *Service) railsSupported() error {
	if e, ok := s.attachedEngine(); ok && e.Kind != engine.KindRails {
		return fmt.Errorf("%w: the database is %s's; the /tasker analytics are computed on the Rails engine's only",
			ErrEngineUnsupported, e.Name)
	}
	return nil
}

// requireCore fails with ErrNotCore unless the database is tasker-core's:
// the attachment's answer, else a look at the catalogs through q.
func (s *Service) requireCore(ctx context.Context, q querier) error {
	kind := engine.Kind("")
	if e, ok := s.attachedEngine(); ok {
		kind = e.Kind
	} else {
		k, err := engine.Detect(ctx, q)
		if err != nil {
			if errors.Is(err, engine.ErrNoTables) || errors.Is(err, engine.ErrBothEngines) {
				return fmt.Errorf("%w: %v", ErrNotCore, err)
			}
			return fmt.Errorf("find the database's engine: %w", err)
		}
		kind = k
	}
	if kind != engine.KindCore {
		return fmt.Errorf("%w; this database is %s's", ErrNotCore, kind)
	}
	return nil
}

// readCore is read for the tasker-core computations: the same admission,
// transaction and span, gated on the engine being core instead of on
// Supported.
func (s *Service) readCore(ctx context.Context, name string, fn func(q querier) error) error {
	return s.readGated(ctx, ClassExpensive, name, false, func(q querier) error {
		if err := s.requireCore(ctx, q); err != nil {
			return err
		}
		return fn(q)
	})
}

// CorePerformanceMetrics is tasker-core's PerformanceMetrics
// (crates/tasker-shared/src/types/api/orchestration.rs), field for field.
type CorePerformanceMetrics struct {
	TotalTasks                 int64     `json:"total_tasks"`
	ActiveTasks                int64     `json:"active_tasks"`
	CompletedTasks             int64     `json:"completed_tasks"`
	FailedTasks                int64     `json:"failed_tasks"`
	CompletionRate             RustFloat `json:"completion_rate"`
	ErrorRate                  RustFloat `json:"error_rate"`
	AverageTaskDurationSeconds RustFloat `json:"average_task_duration_seconds"`
	AverageStepDurationSeconds RustFloat `json:"average_step_duration_seconds"`
	TasksPerHour               int64     `json:"tasks_per_hour"`
	StepsPerHour               int64     `json:"steps_per_hour"`
	SystemHealthScore          RustFloat `json:"system_health_score"`
	AnalysisPeriodStart        string    `json:"analysis_period_start"`
	CalculatedAt               string    `json:"calculated_at"`
}

// CoreBottleneckAnalysis is tasker-core's BottleneckAnalysis.
type CoreBottleneckAnalysis struct {
	SlowSteps           []CoreSlowStep          `json:"slow_steps"`
	SlowTasks           []CoreSlowTask          `json:"slow_tasks"`
	ResourceUtilization CoreResourceUtilization `json:"resource_utilization"`
	Recommendations     []string                `json:"recommendations"`
}

// CoreSlowStep is tasker-core's SlowStepInfo.
type CoreSlowStep struct {
	NamespaceName          string    `json:"namespace_name"`
	TaskName               string    `json:"task_name"`
	Version                string    `json:"version"`
	StepName               string    `json:"step_name"`
	AverageDurationSeconds RustFloat `json:"average_duration_seconds"`
	MaxDurationSeconds     RustFloat `json:"max_duration_seconds"`
	ExecutionCount         int64     `json:"execution_count"`
	ErrorCount             int64     `json:"error_count"`
	ErrorRate              RustFloat `json:"error_rate"`
	LastExecutedAt         *string   `json:"last_executed_at"`
}

// CoreSlowTask is tasker-core's SlowTaskInfo; ErrorCount is the error steps
// of the group's tasks and ErrorRate those per task.
type CoreSlowTask struct {
	NamespaceName          string    `json:"namespace_name"`
	TaskName               string    `json:"task_name"`
	Version                string    `json:"version"`
	AverageDurationSeconds RustFloat `json:"average_duration_seconds"`
	MaxDurationSeconds     RustFloat `json:"max_duration_seconds"`
	ExecutionCount         int64     `json:"execution_count"`
	AverageStepCount       RustFloat `json:"average_step_count"`
	ErrorCount             int64     `json:"error_count"`
	ErrorRate              RustFloat `json:"error_rate"`
	LastExecutedAt         *string   `json:"last_executed_at"`
}

// CoreResourceUtilization is tasker-core's ResourceUtilization. The pool is
// the sidecar's own (tasker-core reports its orchestration pool, which the
// sidecar cannot see): docs/analytics.md#tasker-cores-analytics-api.
type CoreResourceUtilization struct {
	DatabasePoolUtilization RustFloat              `json:"database_pool_utilization"`
	SystemHealth            CoreSystemHealthCounts `json:"system_health"`
}

// CoreSystemHealthCounts is tasker-core's SystemHealthCounts: the columns
// of get_system_health_counts(), in order.
type CoreSystemHealthCounts struct {
	PendingTasks                         int64 `json:"pending_tasks"`
	InitializingTasks                    int64 `json:"initializing_tasks"`
	EnqueuingStepsTasks                  int64 `json:"enqueuing_steps_tasks"`
	StepsInProcessTasks                  int64 `json:"steps_in_process_tasks"`
	EvaluatingResultsTasks               int64 `json:"evaluating_results_tasks"`
	WaitingForDependenciesTasks          int64 `json:"waiting_for_dependencies_tasks"`
	WaitingForRetryTasks                 int64 `json:"waiting_for_retry_tasks"`
	BlockedByFailuresTasks               int64 `json:"blocked_by_failures_tasks"`
	CompleteTasks                        int64 `json:"complete_tasks"`
	ErrorTasks                           int64 `json:"error_tasks"`
	CancelledTasks                       int64 `json:"cancelled_tasks"`
	ResolvedManuallyTasks                int64 `json:"resolved_manually_tasks"`
	TotalTasks                           int64 `json:"total_tasks"`
	PendingSteps                         int64 `json:"pending_steps"`
	EnqueuedSteps                        int64 `json:"enqueued_steps"`
	InProgressSteps                      int64 `json:"in_progress_steps"`
	EnqueuedForOrchestrationSteps        int64 `json:"enqueued_for_orchestration_steps"`
	EnqueuedAsErrorForOrchestrationSteps int64 `json:"enqueued_as_error_for_orchestration_steps"`
	WaitingForRetrySteps                 int64 `json:"waiting_for_retry_steps"`
	CompleteSteps                        int64 `json:"complete_steps"`
	ErrorSteps                           int64 `json:"error_steps"`
	CancelledSteps                       int64 `json:"cancelled_steps"`
	ResolvedManuallySteps                int64 `json:"resolved_manually_steps"`
	TotalSteps                           int64 `json:"total_steps"`
}

// CoreMetrics is one row of tasker-core's get_analytics_metrics(since), its
// numerics as their exact text.
type CoreMetrics struct {
	ActiveTasksCount     int64
	TotalNamespacesCount int64
	UniqueTaskTypesCount int64
	SystemHealthScore    Decimal
	TaskThroughput       int64
	CompletionCount      int64
	ErrorCount           int64
	CompletionRate       Decimal
	ErrorRate            Decimal
	AvgTaskDuration      Decimal
	AvgStepDuration      Decimal
	StepThroughput       int64
	AnalysisPeriodStart  time.Time
	CalculatedAt         time.Time
}

// columns are m as the API writes them.
func (m CoreMetrics) columns() MetricsColumns {
	return MetricsColumns{
		ActiveTasksCount: m.ActiveTasksCount, TotalNamespacesCount: m.TotalNamespacesCount,
		UniqueTaskTypesCount: m.UniqueTaskTypesCount, SystemHealthScore: m.SystemHealthScore,
		TaskThroughput: m.TaskThroughput, CompletionCount: m.CompletionCount, ErrorCount: m.ErrorCount,
		CompletionRate: m.CompletionRate, ErrorRate: m.ErrorRate, AvgTaskDuration: m.AvgTaskDuration,
		AvgStepDuration: m.AvgStepDuration, StepThroughput: m.StepThroughput,
		AnalysisPeriodStart: Time(m.AnalysisPeriodStart), CalculatedAt: Time(m.CalculatedAt),
	}
}

// coreMetrics computes get_analytics_metrics(since); nil since is the
// function's default window (the last hour).
func coreMetrics(ctx context.Context, q querier, since *time.Time) (CoreMetrics, error) {
	windows, err := coreWindows(ctx, q, since, false)
	if err != nil {
		return CoreMetrics{}, err
	}
	w, ok := windows["period"]
	if !ok {
		return CoreMetrics{}, fmt.Errorf("tasker-core analytics query returned no window")
	}
	return w.metrics, nil
}

func coreHealth(ctx context.Context, q querier) (CoreSystemHealthCounts, error) {
	var h CoreSystemHealthCounts
	err := q.QueryRow(ctx, coreHealthSQL).Scan(&h.PendingTasks, &h.InitializingTasks, &h.EnqueuingStepsTasks,
		&h.StepsInProcessTasks, &h.EvaluatingResultsTasks, &h.WaitingForDependenciesTasks, &h.WaitingForRetryTasks,
		&h.BlockedByFailuresTasks, &h.CompleteTasks, &h.ErrorTasks, &h.CancelledTasks, &h.ResolvedManuallyTasks,
		&h.TotalTasks, &h.PendingSteps, &h.EnqueuedSteps, &h.InProgressSteps, &h.EnqueuedForOrchestrationSteps,
		&h.EnqueuedAsErrorForOrchestrationSteps, &h.WaitingForRetrySteps, &h.CompleteSteps, &h.ErrorSteps,
		&h.CancelledSteps, &h.ResolvedManuallySteps, &h.TotalSteps)
	if err != nil {
		return h, fmt.Errorf("query tasker-core health counts: %w", err)
	}
	return h, nil
}

// CoreSinceHours is the window start tasker-core's service passes for
// hours: none for 0 (the function's default hour), else hours before the
// transaction's now(). An hours the database cannot subtract is a
// ParamError (tasker-core fails it with a 500).
func coreSinceHours(ctx context.Context, q querier, hours uint32) (*time.Time, error) {
	if hours == 0 {
		return nil, nil
	}
	var since time.Time
	if err := q.QueryRow(ctx, `SELECT now() - $1::bigint * interval '1 hour'`, int64(hours)).Scan(&since); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "22008" { // datetime_field_overflow
			return nil, &ParamError{Param: "hours", Reason: errCoreParamOverflow.Error()}
		}
		return nil, fmt.Errorf("compute the window start: %w", err)
	}
	return &since, nil
}

// CorePerformanceMetrics is GET /v1/analytics/performance?hours=N: what
// tasker-core's AnalyticsQueryService::get_performance_metrics builds from
// get_analytics_metrics(since) and get_system_health_counts().
func (s *Service) CorePerformanceMetrics(ctx context.Context, hours uint32) (*CorePerformanceMetrics, error) {
	var out *CorePerformanceMetrics
	err := s.readCore(ctx, "core_performance", func(q querier) error {
		var err error
		out, err = corePerformance(ctx, q, hours)
		return err
	})
	return out, err
}

func corePerformance(ctx context.Context, q querier, hours uint32) (*CorePerformanceMetrics, error) {
	since, err := coreSinceHours(ctx, q, hours)
	if err != nil {
		return nil, err
	}
	m, err := coreMetrics(ctx, q, since)
	if err != nil {
		return nil, err
	}
	h, err := coreHealth(ctx, q)
	if err != nil {
		return nil, err
	}
	return &CorePerformanceMetrics{
		TotalTasks:                 h.TotalTasks,
		ActiveTasks:                m.ActiveTasksCount,
		CompletedTasks:             m.CompletionCount,
		FailedTasks:                m.ErrorCount,
		CompletionRate:             decimalFloat(m.CompletionRate),
		ErrorRate:                  decimalFloat(m.ErrorRate),
		AverageTaskDurationSeconds: decimalFloat(m.AvgTaskDuration),
		AverageStepDurationSeconds: decimalFloat(m.AvgStepDuration),
		TasksPerHour:               m.TaskThroughput,
		StepsPerHour:               m.StepThroughput,
		SystemHealthScore:          decimalFloat(m.SystemHealthScore),
		AnalysisPeriodStart:        ChronoRFC3339(m.AnalysisPeriodStart),
		CalculatedAt:               ChronoRFC3339(m.CalculatedAt),
	}, nil
}

// CoreBottleneckAnalysis is GET /v1/analytics/bottlenecks: what tasker-core's
// AnalyticsQueryService::get_bottleneck_analysis builds from
// get_slowest_steps_aggregated and get_slowest_tasks_aggregated (default
// window, 24 hours) and get_system_health_counts(), with its
// recommendations. limit must not be negative (PostgreSQL refuses a
// negative LIMIT, which tasker-core answers with a 500).
func (s *Service) CoreBottleneckAnalysis(ctx context.Context, limit, minExecutions int32) (*CoreBottleneckAnalysis, error) {
	if limit < 0 {
		return nil, &ParamError{Param: "limit", Reason: "must not be negative"}
	}
	var out *CoreBottleneckAnalysis
	err := s.readCore(ctx, "core_bottlenecks", func(q querier) error {
		var err error
		out, err = coreBottlenecks(ctx, q, nil, limit, minExecutions)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Measured once the computation's connection is back in the pool, as
	// tasker-core measures its pool after its queries have returned.
	out.ResourceUtilization.DatabasePoolUtilization = RustFloat(s.poolUtilization())
	out.Recommendations = coreRecommendations(out.SlowSteps, float64(out.ResourceUtilization.DatabasePoolUtilization))
	return out, nil
}

// poolUtilization is (open - idle) / open of the sidecar's pool, 0 with no
// connection open: calculate_pool_utilization's formula on the pool the
// sidecar has.
func (s *Service) poolUtilization() float64 {
	if s.pool == nil {
		return 0
	}
	st := s.pool.Stat()
	size, idle := float64(st.TotalConns()), float64(st.IdleConns())
	if size <= 0 {
		return 0
	}
	return (size - idle) / size
}

func coreBottlenecks(ctx context.Context, q querier, since *time.Time, limit, minExecutions int32) (*CoreBottleneckAnalysis, error) {
	out := &CoreBottleneckAnalysis{SlowSteps: []CoreSlowStep{}, SlowTasks: []CoreSlowTask{}, Recommendations: []string{}}
	rows, err := q.Query(ctx, coreSlowestStepsSQL, since, limit, minExecutions)
	if err != nil {
		return nil, fmt.Errorf("query tasker-core slowest steps: %w", err)
	}
	out.SlowSteps, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (CoreSlowStep, error) {
		var s CoreSlowStep
		var avg, maxD, rate string
		var last *time.Time
		err := row.Scan(&s.NamespaceName, &s.TaskName, &s.Version, &s.StepName, &avg, &maxD,
			&s.ExecutionCount, &s.ErrorCount, &rate, &last)
		s.AverageDurationSeconds, s.MaxDurationSeconds = decimalFloat(Decimal(avg)), decimalFloat(Decimal(maxD))
		s.ErrorRate, s.LastExecutedAt = decimalFloat(Decimal(rate)), chronoOpt(last)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("read tasker-core slowest steps: %w", err)
	}
	rows, err = q.Query(ctx, coreSlowestTasksSQL, since, limit, minExecutions)
	if err != nil {
		return nil, fmt.Errorf("query tasker-core slowest tasks: %w", err)
	}
	out.SlowTasks, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (CoreSlowTask, error) {
		var t CoreSlowTask
		var avg, maxD, steps, rate string
		var last *time.Time
		err := row.Scan(&t.NamespaceName, &t.TaskName, &t.Version, &avg, &maxD, &t.ExecutionCount,
			&steps, &t.ErrorCount, &rate, &last)
		t.AverageDurationSeconds, t.MaxDurationSeconds = decimalFloat(Decimal(avg)), decimalFloat(Decimal(maxD))
		t.AverageStepCount, t.ErrorRate, t.LastExecutedAt = decimalFloat(Decimal(steps)), decimalFloat(Decimal(rate)), chronoOpt(last)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("read tasker-core slowest tasks: %w", err)
	}
	if out.ResourceUtilization.SystemHealth, err = coreHealth(ctx, q); err != nil {
		return nil, err
	}
	return out, nil
}

// coreRecommendations is AnalyticsQueryService::generate_recommendations,
// its texts and thresholds verbatim: the highest step error rate above
// 0.2, pool utilization above 0.8, and the slowest step group averaging
// over 30 s.
func coreRecommendations(steps []CoreSlowStep, pool float64) []string {
	out := []string{}
	if len(steps) > 0 {
		highest := 0.0
		for _, s := range steps {
			highest = max(highest, float64(s.ErrorRate))
		}
		if highest > 0.2 {
			out = append(out, fmt.Sprintf("High error rate detected (%s%%). Review error handling and retry logic.",
				strconv.FormatFloat(highest*100, 'f', 1, 64)))
		}
	}
	if pool > 0.8 {
		out = append(out, fmt.Sprintf("Database pool utilization is high (%s%%). Consider increasing pool size or optimizing queries.",
			strconv.FormatFloat(pool*100, 'f', 0, 64)))
	}
	if len(steps) > 0 && float64(steps[0].AverageDurationSeconds) > 30 {
		s := steps[0]
		out = append(out, fmt.Sprintf("Step '%s/%s@%s::%s' averages %ss. Consider optimization or timeout adjustment.",
			s.NamespaceName, s.TaskName, s.Version, s.StepName,
			strconv.FormatFloat(float64(s.AverageDurationSeconds), 'f', 1, 64)))
	}
	return out
}

// decimalFloat is BigDecimal::to_f64 of a numeric's text: the nearest
// float64 (bigdecimal 0.4 parses the digits with Rust's correctly rounded
// parser, as strconv does); unparsable text is 0, as unwrap_or(0.0).
func decimalFloat(d Decimal) RustFloat {
	f, err := strconv.ParseFloat(string(d), 64)
	if err != nil {
		return 0
	}
	return RustFloat(f)
}

func chronoOpt(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := ChronoRFC3339(*t)
	return &s
}

// ChronoRFC3339 formats t as chrono's DateTime<Utc>::to_rfc3339 does: UTC,
// "+00:00", and the fraction with 0, 3, 6 or 9 digits, the fewest that
// show every non-zero digit (SecondsFormat::AutoSi).
func ChronoRFC3339(t time.Time) string {
	t = t.UTC()
	ns := t.Nanosecond()
	var frac string
	switch {
	case ns == 0:
	case ns%1_000_000 == 0:
		frac = fmt.Sprintf(".%03d", ns/1_000_000)
	case ns%1_000 == 0:
		frac = fmt.Sprintf(".%06d", ns/1_000)
	default:
		frac = fmt.Sprintf(".%09d", ns)
	}
	return t.Format("2006-01-02T15:04:05") + frac + "+00:00"
}

// RustFloat is an f64 that marshals as serde_json writes one (the ryu
// crate's layout): the shortest digits that read back as the same float,
// always with a decimal point or an exponent ("100.0", "0.25", "1e16",
// "1.5e-7"), and null when not finite.
type RustFloat float64

// MarshalJSON implements json.Marshaler.
func (f RustFloat) MarshalJSON() ([]byte, error) {
	return []byte(formatRustFloat(float64(f))), nil
}

func formatRustFloat(v float64) string {
	if v != v || v > 1.7976931348623157e308 || v < -1.7976931348623157e308 {
		return "null"
	}
	if v == 0 {
		if 1/v < 0 {
			return "-0.0"
		}
		return "0.0"
	}
	// 'e' with the shortest digits: d.ddde±XX.
	e := strconv.FormatFloat(v, 'e', -1, 64)
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, expStr, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	exp, _ := strconv.Atoi(expStr)
	length := len(digits)
	// ryu: value = digits × 10^k, kk = length + k is the position of the
	// decimal point.
	kk := exp + 1
	k := kk - length
	var b strings.Builder
	b.WriteString(sign)
	switch {
	case k >= 0 && kk <= 16:
		b.WriteString(digits)
		b.WriteString(strings.Repeat("0", k))
		b.WriteString(".0")
	case kk > 0 && kk <= 16:
		b.WriteString(digits[:kk])
		b.WriteByte('.')
		b.WriteString(digits[kk:])
	case kk > -5 && kk <= 0:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", -kk))
		b.WriteString(digits)
	case length == 1:
		b.WriteString(digits)
		b.WriteByte('e')
		b.WriteString(strconv.Itoa(kk - 1))
	default:
		b.WriteString(digits[:1])
		b.WriteByte('.')
		b.WriteString(digits[1:])
		b.WriteByte('e')
		b.WriteString(strconv.Itoa(kk - 1))
	}
	return b.String()
}
