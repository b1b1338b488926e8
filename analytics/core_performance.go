package analytics

import (
	"context"
	"fmt"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// GET /tasker/analytics/performance on a tasker-core database: the body of
// the Rails route (Performance) with tasker-core's numbers. Each window is
// get_analytics_metrics(window start), computed without the function,
// followed by the sidecar's additions over the same tasks by their own
// state, with tasker-core's 12 task states, all windows in one pass
// (sql/core_performance.sql; docs/analytics.md#performance-on-tasker-core).

var corePerformanceSQL = mustSQL("core_performance.sql")

// CorePerformance is the body of GET /tasker/analytics/performance on
// tasker-core, without the cache_info the HTTP layer adds.
type CorePerformance struct {
	SystemOverview    SystemOverview `json:"system_overview"`
	PerformanceTrends CoreTrends     `json:"performance_trends"`
	// Period is get_analytics_metrics(since) for a caller-chosen since.
	Period      *CorePeriod `json:"period,omitempty"`
	GeneratedAt Time        `json:"generated_at"`
}

// CoreTrends are get_analytics_metrics over the last 1, 4 and 24 hours.
type CoreTrends struct {
	LastHour    CoreTrend `json:"last_hour"`
	Last4Hours  CoreTrend `json:"last_4_hours"`
	Last24Hours CoreTrend `json:"last_24_hours"`
}

// CoreTrend is one window: Trend's fields, the task states tasker-core's.
type CoreTrend struct {
	TaskThroughput  int64   `json:"task_throughput"`
	CompletionRate  Decimal `json:"completion_rate"`
	ErrorRate       Decimal `json:"error_rate"`
	AvgTaskDuration Decimal `json:"avg_task_duration"`
	AvgStepDuration Decimal `json:"avg_step_duration"`
	StepThroughput  int64   `json:"step_throughput"`

	WindowStart        Time           `json:"window_start"`
	CompletionCount    int64          `json:"completion_count"`
	ErrorCount         int64          `json:"error_count"`
	TasksByState       CoreTaskStates `json:"tasks_by_state"`
	TaskCompletionRate Decimal        `json:"task_completion_rate"`
	TaskErrorRate      Decimal        `json:"task_error_rate"`
	TaskDuration       DurationStats  `json:"task_duration"`
}

// CoreTaskStates counts a window's tasks by their own current state;
// NoTransitions are tasks without a transition row yet.
type CoreTaskStates struct {
	Pending                int64 `json:"pending"`
	Initializing           int64 `json:"initializing"`
	EnqueuingSteps         int64 `json:"enqueuing_steps"`
	StepsInProcess         int64 `json:"steps_in_process"`
	EvaluatingResults      int64 `json:"evaluating_results"`
	WaitingForDependencies int64 `json:"waiting_for_dependencies"`
	WaitingForRetry        int64 `json:"waiting_for_retry"`
	BlockedByFailures      int64 `json:"blocked_by_failures"`
	Complete               int64 `json:"complete"`
	Error                  int64 `json:"error"`
	Cancelled              int64 `json:"cancelled"`
	ResolvedManually       int64 `json:"resolved_manually"`
	NoTransitions          int64 `json:"no_transitions"`
}

// CorePeriod has every column of tasker-core's get_analytics_metrics(since),
// in order, followed by the same additions as CoreTrend.
type CorePeriod struct {
	MetricsColumns

	TasksByState       CoreTaskStates `json:"tasks_by_state"`
	TaskCompletionRate Decimal        `json:"task_completion_rate"`
	TaskErrorRate      Decimal        `json:"task_error_rate"`
	TaskDuration       DurationStats  `json:"task_duration"`
}

// coreWindow is one row of core_performance.sql.
type coreWindow struct {
	metrics CoreMetrics
	trend   CoreTrend
}

func coreWindows(ctx context.Context, q querier, since *time.Time, trends bool) (map[string]coreWindow, error) {
	rows, err := q.Query(ctx, corePerformanceSQL, since, trends)
	if err != nil {
		return nil, fmt.Errorf("query tasker-core performance windows: %w", err)
	}
	defer rows.Close()
	out := map[string]coreWindow{}
	for rows.Next() {
		var (
			name                                 string
			w                                    coreWindow
			m                                    = &w.metrics
			s                                    = &w.trend.TasksByState
			d                                    = &w.trend.TaskDuration
			health, cr, er, avgT, avgS, tcr, ter string
			avg, p50, p95, p99                   string
		)
		if err := rows.Scan(&name, &m.AnalysisPeriodStart, &m.ActiveTasksCount, &m.TotalNamespacesCount,
			&m.UniqueTaskTypesCount, &health, &m.TaskThroughput, &m.CompletionCount, &m.ErrorCount, &cr, &er,
			&avgT, &avgS, &m.StepThroughput, &m.CalculatedAt,
			&s.Pending, &s.Initializing, &s.EnqueuingSteps, &s.StepsInProcess, &s.EvaluatingResults,
			&s.WaitingForDependencies, &s.WaitingForRetry, &s.BlockedByFailures, &s.Complete, &s.Error,
			&s.Cancelled, &s.ResolvedManually, &s.NoTransitions, &tcr, &ter, &avg, &p50, &p95, &p99); err != nil {
			return nil, fmt.Errorf("read tasker-core performance window: %w", err)
		}
		m.SystemHealthScore, m.CompletionRate, m.ErrorRate = Decimal(health), Decimal(cr), Decimal(er)
		m.AvgTaskDuration, m.AvgStepDuration = Decimal(avgT), Decimal(avgS)
		t := &w.trend
		t.TaskThroughput, t.CompletionRate, t.ErrorRate = m.TaskThroughput, m.CompletionRate, m.ErrorRate
		t.AvgTaskDuration, t.AvgStepDuration, t.StepThroughput = m.AvgTaskDuration, m.AvgStepDuration, m.StepThroughput
		t.WindowStart, t.CompletionCount, t.ErrorCount = Time(m.AnalysisPeriodStart), m.CompletionCount, m.ErrorCount
		t.TaskCompletionRate, t.TaskErrorRate = Decimal(tcr), Decimal(ter)
		d.Count, d.Avg, d.P50, d.P95, d.P99 = s.Complete, Decimal(avg), Decimal(p50), Decimal(p95), Decimal(p99)
		out[name] = w
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read tasker-core performance windows: %w", err)
	}
	return out, nil
}

func corePerformanceReport(ctx context.Context, q querier, since *time.Time) (*CorePerformance, error) {
	windows, err := coreWindows(ctx, q, since, true)
	if err != nil {
		return nil, err
	}
	hour, ok := windows["last_hour"]
	if !ok {
		return nil, fmt.Errorf("tasker-core performance query returned no last_hour window")
	}
	m := hour.metrics
	p := &CorePerformance{
		// The all-time figures and the one-hour health score are the same
		// in every window's row.
		SystemOverview: SystemOverview{ActiveTasks: m.ActiveTasksCount, TotalNamespaces: m.TotalNamespacesCount,
			UniqueTaskTypes: m.UniqueTaskTypesCount, SystemHealthScore: m.SystemHealthScore},
		PerformanceTrends: CoreTrends{LastHour: hour.trend, Last4Hours: windows["last_4_hours"].trend,
			Last24Hours: windows["last_24_hours"].trend},
		GeneratedAt: Time(m.CalculatedAt),
	}
	if since != nil {
		w := windows["period"]
		m, t := w.metrics, w.trend
		p.Period = &CorePeriod{
			MetricsColumns: m.columns(),
			TasksByState:   t.TasksByState, TaskCompletionRate: t.TaskCompletionRate, TaskErrorRate: t.TaskErrorRate,
			TaskDuration: t.TaskDuration,
		}
	}
	return p, nil
}

// CorePerformanceSupported is nil when GET /tasker/analytics/performance
// can be computed: on tasker-core once the attachment says the database is
// core's, else as Supported says.
func (s *Service) CorePerformanceSupported() error {
	if e, ok := s.attachedEngine(); ok && e.Kind == engine.KindCore {
		return nil
	}
	return s.Supported()
}

// PerformanceReport is the body of GET /tasker/analytics/performance for
// the attached engine: Performance on the Rails engine's database, a
// CorePerformance on tasker-core's (known through WithAttachment).
func (s *Service) PerformanceReport(ctx context.Context, since *time.Time) (any, error) {
	if e, ok := s.attachedEngine(); ok && e.Kind == engine.KindCore {
		var p *CorePerformance
		err := s.readCore(ctx, "performance", func(q querier) error {
			var err error
			p, err = corePerformanceReport(ctx, q, since)
			return err
		})
		return p, err
	}
	return s.Performance(ctx, since)
}
