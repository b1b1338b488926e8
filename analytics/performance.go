package analytics

import (
	"context"
	"fmt"
	"time"
)

// Performance is the body of GET /tasker/analytics/performance without the
// cache_info the HTTP layer adds.
type Performance struct {
	SystemOverview    SystemOverview `json:"system_overview"`
	PerformanceTrends Trends         `json:"performance_trends"`
	// Period is get_analytics_metrics_v01(since) for a caller-chosen since.
	Period      *Period `json:"period,omitempty"`
	GeneratedAt Time    `json:"generated_at"`
}

// SystemOverview holds the all-time figures and the fixed one-hour health
// score of get_analytics_metrics_v01.
type SystemOverview struct {
	ActiveTasks       int64   `json:"active_tasks"`
	TotalNamespaces   int64   `json:"total_namespaces"`
	UniqueTaskTypes   int64   `json:"unique_task_types"`
	SystemHealthScore Decimal `json:"system_health_score"`
}

// Trends are get_analytics_metrics_v01 over the last 1, 4 and 24 hours.
type Trends struct {
	LastHour    Trend `json:"last_hour"`
	Last4Hours  Trend `json:"last_4_hours"`
	Last24Hours Trend `json:"last_24_hours"`
}

// Trend is one window. The first six fields are Tasker's, under Tasker's
// (misleading) definitions; the rest are the sidecar's additions.
type Trend struct {
	TaskThroughput  int64   `json:"task_throughput"`
	CompletionRate  Decimal `json:"completion_rate"`
	ErrorRate       Decimal `json:"error_rate"`
	AvgTaskDuration Decimal `json:"avg_task_duration"`
	AvgStepDuration Decimal `json:"avg_step_duration"`
	StepThroughput  int64   `json:"step_throughput"`

	WindowStart     Time  `json:"window_start"`
	CompletionCount int64 `json:"completion_count"`
	ErrorCount      int64 `json:"error_count"`
	// TasksByState counts the window's tasks by their own current state.
	TasksByState       TaskStates    `json:"tasks_by_state"`
	TaskCompletionRate Decimal       `json:"task_completion_rate"`
	TaskErrorRate      Decimal       `json:"task_error_rate"`
	TaskDuration       DurationStats `json:"task_duration"`
}

// TaskStates counts tasks by current task state; NoTransitions are tasks
// with no transition row yet (Tasker reports them as pending).
type TaskStates struct {
	Pending          int64 `json:"pending"`
	InProgress       int64 `json:"in_progress"`
	Complete         int64 `json:"complete"`
	Error            int64 `json:"error"`
	Cancelled        int64 `json:"cancelled"`
	ResolvedManually int64 `json:"resolved_manually"`
	NoTransitions    int64 `json:"no_transitions"`
}

// DurationStats summarises durations in seconds. Percentiles interpolate
// linearly (percentile_cont); all values are rounded to milliseconds and are
// 0.0 when Count is 0.
type DurationStats struct {
	Count int64   `json:"count"`
	Avg   Decimal `json:"avg"`
	P50   Decimal `json:"p50"`
	P95   Decimal `json:"p95"`
	P99   Decimal `json:"p99"`
}

// MetricsColumns are the 14 columns of the engines' analytics function, in
// order: get_analytics_metrics_v01(since) on Rails and
// tasker.get_analytics_metrics(since) on tasker-core have the same ones.
// Period and CorePeriod embed them, so they come first in the JSON.
type MetricsColumns struct {
	ActiveTasksCount     int64   `json:"active_tasks_count"`
	TotalNamespacesCount int64   `json:"total_namespaces_count"`
	UniqueTaskTypesCount int64   `json:"unique_task_types_count"`
	SystemHealthScore    Decimal `json:"system_health_score"`
	TaskThroughput       int64   `json:"task_throughput"`
	CompletionCount      int64   `json:"completion_count"`
	ErrorCount           int64   `json:"error_count"`
	CompletionRate       Decimal `json:"completion_rate"`
	ErrorRate            Decimal `json:"error_rate"`
	AvgTaskDuration      Decimal `json:"avg_task_duration"`
	AvgStepDuration      Decimal `json:"avg_step_duration"`
	StepThroughput       int64   `json:"step_throughput"`
	AnalysisPeriodStart  Time    `json:"analysis_period_start"`
	CalculatedAt         Time    `json:"calculated_at"`
}

// Period has every column of get_analytics_metrics_v01(since), in order,
// followed by the same additions as Trend.
type Period struct {
	MetricsColumns

	TasksByState       TaskStates    `json:"tasks_by_state"`
	TaskCompletionRate Decimal       `json:"task_completion_rate"`
	TaskErrorRate      Decimal       `json:"task_error_rate"`
	TaskDuration       DurationStats `json:"task_duration"`
}

// Performance computes the performance report. since, when not nil, adds
// the Period block for that window start.
func (s *Service) Performance(ctx context.Context, since *time.Time) (*Performance, error) {
	var p *Performance
	err := s.read(ctx, ClassExpensive, "performance", func(q querier) error {
		var err error
		p, err = performance(ctx, q, since)
		return err
	})
	return p, err
}

type window struct {
	trend       Trend
	healthScore Decimal
}

func performance(ctx context.Context, q querier, since *time.Time) (*Performance, error) {
	var ov SystemOverview
	var now time.Time
	if err := q.QueryRow(ctx, overviewSQL).Scan(&ov.ActiveTasks, &ov.TotalNamespaces, &ov.UniqueTaskTypes, &now); err != nil {
		return nil, fmt.Errorf("query system overview: %w", err)
	}
	windows, err := performanceWindows(ctx, q, since)
	if err != nil {
		return nil, err
	}
	hour, ok := windows["last_hour"]
	if !ok {
		return nil, fmt.Errorf("performance query returned no last_hour window")
	}
	ov.SystemHealthScore = hour.healthScore
	p := &Performance{
		SystemOverview: ov,
		PerformanceTrends: Trends{
			LastHour:    hour.trend,
			Last4Hours:  windows["last_4_hours"].trend,
			Last24Hours: windows["last_24_hours"].trend,
		},
		GeneratedAt: Time(now),
	}
	if since != nil {
		w := windows["period"].trend
		p.Period = &Period{
			MetricsColumns: MetricsColumns{
				ActiveTasksCount:     ov.ActiveTasks,
				TotalNamespacesCount: ov.TotalNamespaces,
				UniqueTaskTypesCount: ov.UniqueTaskTypes,
				SystemHealthScore:    hour.healthScore, // Tasker's score ignores since
				TaskThroughput:       w.TaskThroughput,
				CompletionCount:      w.CompletionCount,
				ErrorCount:           w.ErrorCount,
				CompletionRate:       w.CompletionRate,
				ErrorRate:            w.ErrorRate,
				AvgTaskDuration:      w.AvgTaskDuration,
				AvgStepDuration:      w.AvgStepDuration,
				StepThroughput:       w.StepThroughput,
				AnalysisPeriodStart:  w.WindowStart,
				CalculatedAt:         Time(now),
			},
			TasksByState:       w.TasksByState,
			TaskCompletionRate: w.TaskCompletionRate,
			TaskErrorRate:      w.TaskErrorRate,
			TaskDuration:       w.TaskDuration,
		}
	}
	return p, nil
}

func performanceWindows(ctx context.Context, q querier, since *time.Time) (map[string]window, error) {
	rows, err := q.Query(ctx, performanceSQL, since)
	if err != nil {
		return nil, fmt.Errorf("query performance windows: %w", err)
	}
	defer rows.Close()
	out := map[string]window{}
	for rows.Next() {
		var (
			name  string
			start time.Time
			w     window
			t     = &w.trend
			ts    = &t.TasksByState
			d     = &t.TaskDuration
		)
		if err := rows.Scan(&name, &start, &t.TaskThroughput, &t.CompletionCount, &t.ErrorCount,
			&t.CompletionRate, &t.ErrorRate, &t.AvgTaskDuration, &t.AvgStepDuration, &t.StepThroughput,
			&w.healthScore,
			&ts.Pending, &ts.InProgress, &ts.Complete, &ts.Error, &ts.Cancelled, &ts.ResolvedManually, &ts.NoTransitions,
			&t.TaskCompletionRate, &t.TaskErrorRate,
			&d.Avg, &d.P50, &d.P95, &d.P99); err != nil {
			return nil, fmt.Errorf("read performance window: %w", err)
		}
		t.WindowStart = Time(start)
		d.Count = ts.Complete
		out[name] = w
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read performance windows: %w", err)
	}
	return out, nil
}
