package analytics

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/rubyjson"
)

// Scope narrows the bottleneck analysis; empty fields do not filter. It
// renders as Tasker's scope object, which only has the keys that were given.
type Scope struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	Version   string `json:"version,omitempty"`
}

// BottleneckQuery is a validated bottleneck request.
type BottleneckQuery struct {
	Scope       Scope
	PeriodHours int
}

// Params is the cache key part of q: every parameter, escaped, so that no
// two queries share a key.
func (q BottleneckQuery) Params() string {
	return url.Values{
		"namespace": {q.Scope.Namespace}, "name": {q.Scope.Name}, "version": {q.Scope.Version},
		"period": {strconv.Itoa(q.PeriodHours)},
	}.Encode()
}

// Bottlenecks is the body of GET /tasker/analytics/bottlenecks without the
// cache_info the HTTP layer adds.
type Bottlenecks struct {
	ScopeSummary            ScopeSummary            `json:"scope_summary"`
	BottleneckAnalysis      BottleneckAnalysis      `json:"bottleneck_analysis"`
	PerformanceDistribution PerformanceDistribution `json:"performance_distribution"`
	Recommendations         []string                `json:"recommendations"`
	Scope                   Scope                   `json:"scope"`
	AnalysisPeriodHours     int                     `json:"analysis_period_hours"`
	GeneratedAt             Time                    `json:"generated_at"`
}

// ScopeSummary describes the scoped task set T.
type ScopeSummary struct {
	TotalTasks      int64 `json:"total_tasks"`
	UniqueTaskTypes int64 `json:"unique_task_types"`
	TimeSpanHours   Float `json:"time_span_hours"`
}

// BottleneckAnalysis holds the lists Tasker's service meant to return.
type BottleneckAnalysis struct {
	SlowestTasks          []SlowTask            `json:"slowest_tasks"`
	SlowestSteps          []SlowStep            `json:"slowest_steps"`
	ErrorPatterns         ErrorPatterns         `json:"error_patterns"`
	DependencyBottlenecks DependencyBottlenecks `json:"dependency_bottlenecks"`
}

// SlowTask is a row of get_slowest_tasks_v01 as intended, with real counts.
type SlowTask struct {
	TaskID          int64   `json:"task_id"`
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

// SlowStep is a row of get_slowest_steps_v01 as intended.
type SlowStep struct {
	WorkflowStepID  int64   `json:"workflow_step_id"`
	TaskID          int64   `json:"task_id"`
	StepName        string  `json:"step_name"`
	TaskName        string  `json:"task_name"`
	NamespaceName   string  `json:"namespace_name"`
	Version         string  `json:"version"`
	DurationSeconds Decimal `json:"duration_seconds"`
	Attempts        *int32  `json:"attempts"`
	CreatedAt       Time    `json:"created_at"`
	CompletedAt     Time    `json:"completed_at"`
	Retryable       bool    `json:"retryable"`
	StepStatus      string  `json:"step_status"`
}

// ErrorPatterns are the failures of T. CommonErrorTypes keeps Tasker's shape
// (a list of names) with real error classes; ErrorTypes has their counts.
type ErrorPatterns struct {
	TotalErrors         int64        `json:"total_errors"`
	RecentErrorRate     Decimal      `json:"recent_error_rate"`
	CommonErrorTypes    []string     `json:"common_error_types"`
	RetrySuccessRate    Decimal      `json:"retry_success_rate"`
	ErrorTypes          []ClassCount `json:"error_types"`
	StepsInError        int64        `json:"steps_in_error"`
	ExhaustedRetrySteps int64        `json:"exhausted_retry_steps"`
	NonRetryableSteps   int64        `json:"non_retryable_error_steps"`
	RetriedSteps        int64        `json:"retried_steps"`
}

// ClassCount counts steps currently in error by their results' error_class.
type ClassCount struct {
	ErrorClass string `json:"error_class"`
	Count      int64  `json:"count"`
}

// DependencyBottlenecks describes steps of T waiting on their parents.
type DependencyBottlenecks struct {
	BlockingDependencies int64     `json:"blocking_dependencies"`
	AvgWaitTime          Decimal   `json:"avg_wait_time"`
	MostBlockedSteps     []string  `json:"most_blocked_steps"`
	PendingSteps         int64     `json:"pending_steps"`
	BlockedSteps         int64     `json:"blocked_steps"`
	BlockedByStep        []Blocked `json:"blocked_by_step"`
	BlockingSteps        []Blocker `json:"blocking_steps"`
}

// Blocked counts waiting steps of one name whose parents are not done.
type Blocked struct {
	Name  string `json:"name"`
	Count int64  `json:"count"`
}

// Blocker counts the waiting steps held up by unfinished parents of a name.
type Blocker struct {
	Name         string `json:"name"`
	BlockedSteps int64  `json:"blocked_steps"`
}

// PerformanceDistribution summarises the durations of T's completed tasks.
type PerformanceDistribution struct {
	Percentiles         Percentiles `json:"percentiles"`
	DistributionBuckets []Bucket    `json:"distribution_buckets"`
	SampleSize          int64       `json:"sample_size"`
}

// Percentiles of task durations in seconds.
type Percentiles struct {
	P50 Decimal `json:"p50"`
	P95 Decimal `json:"p95"`
	P99 Decimal `json:"p99"`
}

// Bucket counts durations in a range.
type Bucket struct {
	Range string `json:"range"`
	Count int64  `json:"count"`
}

// Bottlenecks runs the bottleneck analysis for q.
func (s *Service) Bottlenecks(ctx context.Context, q BottleneckQuery) (*Bottlenecks, error) {
	var b *Bottlenecks
	err := s.read(ctx, ClassExpensive, "bottlenecks", func(tx querier) error {
		var err error
		b, err = bottlenecks(ctx, tx, q, slowestLimit, stepCreationSlack)
		return err
	})
	return b, err
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func bottlenecks(ctx context.Context, q querier, bq BottleneckQuery, limit int, slack time.Duration) (*Bottlenecks, error) {
	b := &Bottlenecks{
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
	err := q.QueryRow(ctx, bottlenecksSQL, bq.PeriodHours, nullable(bq.Scope.Namespace), nullable(bq.Scope.Name),
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
	b.Recommendations = recommend(b)
	return b, nil
}

// maxRecommendations is Tasker's cap.
const maxRecommendations = 5

// recommend derives advice from the findings, most pressing first. The
// first two rules are Tasker's (which never fired, its slowest lists being
// always empty).
func recommend(b *Bottlenecks) []string {
	var out []string
	a := b.BottleneckAnalysis
	if n, total := slowOver(a.SlowestTasks, 60); n > 0 {
		out = append(out, fmt.Sprintf("Consider optimizing long-running tasks (%ss average)",
			Float(rubyjson.Round(total/float64(len(a.SlowestTasks)), 1))))
	}
	retried := 0
	for _, s := range a.SlowestSteps {
		if s.Attempts != nil && *s.Attempts > 1 {
			retried++
		}
	}
	if retried > 0 {
		out = append(out, fmt.Sprintf("Review retry policies: %d of the %d slowest steps needed more than one attempt",
			retried, len(a.SlowestSteps)))
	}
	ep := a.ErrorPatterns
	if ep.TotalErrors > 0 {
		msg := fmt.Sprintf("%d tasks (%s%%) ended in error", ep.TotalErrors, ep.RecentErrorRate.Ruby())
		if len(ep.ErrorTypes) > 0 {
			msg += fmt.Sprintf("; most common error class among failing steps: %s (%d)",
				ep.ErrorTypes[0].ErrorClass, ep.ErrorTypes[0].Count)
		}
		out = append(out, msg)
	}
	if ep.ExhaustedRetrySteps > 0 {
		out = append(out, fmt.Sprintf("%d failing steps have exhausted their retries and need manual resolution",
			ep.ExhaustedRetrySteps))
	}
	if ep.RetriedSteps > 0 && ep.RetrySuccessRate.Float() < 50 {
		out = append(out, fmt.Sprintf("Only %s%% of retried steps completed; retries are not fixing these failures",
			ep.RetrySuccessRate.Ruby()))
	}
	db := a.DependencyBottlenecks
	if len(db.BlockingSteps) > 0 {
		top := db.BlockingSteps[0]
		out = append(out, fmt.Sprintf("Step %q holds up %d waiting steps; %d steps wait on unfinished dependencies",
			top.Name, top.BlockedSteps, db.BlockedSteps))
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("No bottlenecks found in the last %d hours%s", b.AnalysisPeriodHours, scopeText(b.Scope)))
	}
	if len(out) > maxRecommendations {
		out = out[:maxRecommendations]
	}
	return out
}

func slowOver(tasks []SlowTask, limit float64) (n int, total float64) {
	for _, t := range tasks {
		d := t.DurationSeconds.Float()
		total += d
		if d > limit {
			n++
		}
	}
	return n, total
}

func scopeText(s Scope) string {
	var parts []string
	for _, p := range [][2]string{{"namespace", s.Namespace}, {"name", s.Name}, {"version", s.Version}} {
		if p[1] != "" {
			parts = append(parts, p[0]+" "+p[1])
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " for " + strings.Join(parts, ", ")
}
