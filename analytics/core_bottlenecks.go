package analytics

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

var coreBottlenecksSQL = mustSQL("core_bottlenecks.sql")

// CoreBottlenecks is the body of GET /tasker/analytics/bottlenecks on
// tasker-core: Bottlenecks' shape with the engine's uuids in the slowest
// lists (sql/core_bottlenecks.sql says which fields follow the engine).
type CoreBottlenecks struct {
	ScopeSummary            ScopeSummary            `json:"scope_summary"`
	BottleneckAnalysis      CoreBottleneckLists     `json:"bottleneck_analysis"`
	PerformanceDistribution PerformanceDistribution `json:"performance_distribution"`
	Recommendations         []string                `json:"recommendations"`
	Scope                   Scope                   `json:"scope"`
	AnalysisPeriodHours     int                     `json:"analysis_period_hours"`
	GeneratedAt             Time                    `json:"generated_at"`
}

// CoreBottleneckLists is BottleneckAnalysis on tasker-core.
type CoreBottleneckLists struct {
	SlowestTasks          []CoreSlowTaskRun     `json:"slowest_tasks"`
	SlowestSteps          []CoreSlowStepRun     `json:"slowest_steps"`
	ErrorPatterns         ErrorPatterns         `json:"error_patterns"`
	DependencyBottlenecks DependencyBottlenecks `json:"dependency_bottlenecks"`
}

// CoreSlowTaskRun is one slow task: SlowTask with its uuid. Its duration,
// step_count and error_steps are the per-task values that
// get_slowest_tasks_aggregated averages and sums.
type CoreSlowTaskRun struct {
	TaskUUID        string  `json:"task_uuid"`
	TaskName        string  `json:"task_name"`
	NamespaceName   string  `json:"namespace_name"`
	Version         string  `json:"version"`
	DurationSeconds Decimal `json:"duration_seconds"`
	StepCount       int64   `json:"step_count"`
	CompletedSteps  int64   `json:"completed_steps"`
	ErrorSteps      int64   `json:"error_steps"`
	CreatedAt       Time    `json:"created_at"`
	CompletedAt     Time    `json:"completed_at"`
	Initiator       *string `json:"initiator"`
	SourceSystem    *string `json:"source_system"`
}

// CoreSlowStepRun is one slow step: SlowStep with uuids; its duration and
// step_status (complete or error) are the per-step values that
// get_slowest_steps_aggregated averages and counts.
type CoreSlowStepRun struct {
	WorkflowStepUUID string  `json:"workflow_step_uuid"`
	TaskUUID         string  `json:"task_uuid"`
	StepName         string  `json:"step_name"`
	TaskName         string  `json:"task_name"`
	NamespaceName    string  `json:"namespace_name"`
	Version          string  `json:"version"`
	DurationSeconds  Decimal `json:"duration_seconds"`
	Attempts         *int32  `json:"attempts"`
	CreatedAt        Time    `json:"created_at"`
	CompletedAt      Time    `json:"completed_at"`
	Retryable        *bool   `json:"retryable"`
	StepStatus       string  `json:"step_status"`
}

// BottlenecksReport is the body of GET /tasker/analytics/bottlenecks for
// the attached engine: Bottlenecks on the Rails engine's database,
// CoreBottlenecks on tasker-core's (known through WithAttachment).
func (s *Service) BottlenecksReport(ctx context.Context, q BottleneckQuery) (any, error) {
	if !s.OnCore() {
		return s.Bottlenecks(ctx, q)
	}
	var b *CoreBottlenecks
	err := s.readCore(ctx, "bottlenecks", func(tx querier) error {
		var err error
		b, err = coreBottleneckReport(ctx, tx, q, slowestLimit, stepCreationSlack)
		return err
	})
	return b, err
}

func coreBottleneckReport(ctx context.Context, q querier, bq BottleneckQuery, limit int, slack time.Duration) (*CoreBottlenecks, error) {
	b := &CoreBottlenecks{
		Scope:               bq.Scope,
		AnalysisPeriodHours: bq.PeriodHours,
		ScopeSummary:        ScopeSummary{TimeSpanHours: Float(bq.PeriodHours)},
	}
	var (
		ep                                      = &b.BottleneckAnalysis.ErrorPatterns
		db                                      = &b.BottleneckAnalysis.DependencyBottlenecks
		pd                                      = &b.PerformanceDistribution
		errorClasses, blockedBy, blockers       []byte
		slowestTasks, slowestSteps              []byte
		under10, under30, over30, completedTask int64
		now                                     time.Time
	)
	err := q.QueryRow(ctx, coreBottlenecksSQL, bq.PeriodHours, nullable(bq.Scope.Namespace), nullable(bq.Scope.Name),
		nullable(bq.Scope.Version), limit, slack).Scan(
		&b.ScopeSummary.TotalTasks, &b.ScopeSummary.UniqueTaskTypes,
		&ep.TotalErrors, &ep.RecentErrorRate, &ep.RetriedSteps, &ep.RetrySuccessRate,
		&ep.StepsInError, &ep.ExhaustedRetrySteps, &ep.NonRetryableSteps, &errorClasses,
		&db.BlockingDependencies, &db.AvgWaitTime, &db.PendingSteps, &db.BlockedSteps, &blockedBy, &blockers,
		&completedTask, &pd.Percentiles.P50, &pd.Percentiles.P95, &pd.Percentiles.P99,
		&under10, &under30, &over30,
		&slowestTasks, &slowestSteps, &now)
	if err != nil {
		return nil, fmt.Errorf("query bottlenecks: %w", err)
	}
	b.GeneratedAt = Time(now)
	pd.SampleSize = completedTask
	pd.DistributionBuckets = []Bucket{{"0-10s", under10}, {"10-30s", under30}, {"30s+", over30}}
	for _, d := range []struct {
		raw  []byte
		into any
	}{
		{errorClasses, &ep.ErrorTypes}, {blockedBy, &db.BlockedByStep}, {blockers, &db.BlockingSteps},
		{slowestTasks, &b.BottleneckAnalysis.SlowestTasks}, {slowestSteps, &b.BottleneckAnalysis.SlowestSteps},
	} {
		if err := json.Unmarshal(d.raw, d.into); err != nil {
			return nil, fmt.Errorf("decode bottleneck lists: %w", err)
		}
	}
	ep.CommonErrorTypes = []string{}
	for _, c := range ep.ErrorTypes[:min(len(ep.ErrorTypes), 5)] {
		ep.CommonErrorTypes = append(ep.CommonErrorTypes, c.ErrorClass)
	}
	db.MostBlockedSteps = []string{}
	for _, c := range db.BlockedByStep[:min(len(db.BlockedByStep), 3)] {
		db.MostBlockedSteps = append(db.MostBlockedSteps, c.Name)
	}
	// The recommendations are the Rails analysis' rules over the same
	// numbers; they read only durations and attempts of the lists.
	r := &Bottlenecks{Scope: b.Scope, AnalysisPeriodHours: b.AnalysisPeriodHours,
		BottleneckAnalysis: BottleneckAnalysis{ErrorPatterns: *ep, DependencyBottlenecks: *db}}
	for _, t := range b.BottleneckAnalysis.SlowestTasks {
		r.BottleneckAnalysis.SlowestTasks = append(r.BottleneckAnalysis.SlowestTasks, SlowTask{DurationSeconds: t.DurationSeconds})
	}
	for _, s := range b.BottleneckAnalysis.SlowestSteps {
		r.BottleneckAnalysis.SlowestSteps = append(r.BottleneckAnalysis.SlowestSteps, SlowStep{Attempts: s.Attempts})
	}
	b.Recommendations = recommend(r)
	return b, nil
}
