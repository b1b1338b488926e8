package analytics

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

// readinessCase is one step of the readiness fixture and what facts §3.1
// says its row must hold. Durations are relative to NOW(): lastFailure is
// how long ago, nextRetry how far ahead (negative: in the past).
type readinessCase struct {
	name  string
	opts  stepOpts
	trans []tr
	// parents by case name
	parents []string

	state          string
	deps, elig     bool
	ready          bool
	total, done    int32
	attempts       int32
	limit          int32
	lastFailure    *time.Duration
	nextRetry      *time.Duration
	reason         string // "" for nil
	retryStatus    string
	depStatus      string
	timeUntilReady *int64
}

func i64(v int64) *int64 { return &v }

func readinessCases() []readinessCase {
	s := time.Second
	return []readinessCase{
		{name: "done", opts: stepOpts{attempts: i32(1), processed: true},
			trans: []tr{at("pending", 50*time.Minute), at("in_progress", 40*time.Minute), at("complete", 30*time.Minute)},
			state: "complete", deps: true, elig: true, attempts: 1, limit: 3,
			reason: "invalid_state", retryStatus: "retry_eligible", depStatus: "no_dependencies"},
		// No transition row: pending, but it does not make a child's parent complete.
		{name: "new", state: "pending", deps: true, elig: true, ready: true, limit: 3,
			retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(0)},
		{name: "resolved", opts: stepOpts{attempts: i32(3)},
			trans: []tr{at("error", 20*time.Minute), at("resolved_manually", 10*time.Minute)},
			state: "resolved_manually", deps: true, attempts: 3, limit: 3,
			reason: "retry_not_eligible", retryStatus: "max_retries_reached", depStatus: "no_dependencies"},
		// resolved_manually satisfies a dependency like complete.
		{name: "after_done_and_resolved", parents: []string{"done", "resolved"}, opts: stepOpts{attempts: i32(0)},
			trans: []tr{at("pending", time.Minute)},
			state: "pending", deps: true, elig: true, ready: true, total: 2, done: 2, limit: 3,
			retryStatus: "retry_eligible", depStatus: "all_satisfied", timeUntilReady: i64(0)},
		{name: "after_new_and_done", parents: []string{"new", "done"}, opts: stepOpts{attempts: i32(0)},
			state: "pending", deps: false, elig: true, total: 2, done: 1, limit: 3,
			reason: "dependencies_not_satisfied", retryStatus: "retry_eligible", depStatus: "1/2_satisfied"},
		// Failure backoff: min(2^attempts, 30) s after the error transition.
		{name: "error_in_backoff", opts: stepOpts{attempts: i32(2)}, trans: []tr{at("error", 1*s)},
			state: "error", deps: true, elig: true, attempts: 2, limit: 3,
			lastFailure: dur(1 * s), nextRetry: dur(3 * s),
			reason: "unknown", retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(3)},
		// The boundary is inclusive: error_at + backoff <= NOW() is ready.
		{name: "error_backoff_boundary", opts: stepOpts{attempts: i32(2)}, trans: []tr{at("error", 4*s)},
			state: "error", deps: true, elig: true, ready: true, attempts: 2, limit: 3,
			lastFailure: dur(4 * s), nextRetry: dur(0),
			retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(0)},
		// NULL attempts: the exponent coalesces to 1 (2 s), the output to 0.
		{name: "error_null_attempts", trans: []tr{at("error", 1500*time.Millisecond)},
			state: "error", deps: true, elig: true, attempts: 0, limit: 3,
			lastFailure: dur(1500 * time.Millisecond), nextRetry: dur(500 * time.Millisecond),
			reason: "unknown", retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(0)},
		// attempts 0: 2^0 = 1 s.
		{name: "error_zero_attempts", opts: stepOpts{attempts: i32(0)}, trans: []tr{at("error", 1500*time.Millisecond)},
			state: "error", deps: true, elig: true, ready: true, attempts: 0, limit: 3,
			lastFailure: dur(1500 * time.Millisecond), nextRetry: dur(-500 * time.Millisecond),
			retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(0)},
		// attempts 5 or more: capped at 30 s.
		{name: "error_capped_backoff", opts: stepOpts{attempts: i32(5), retryLimit: i32(10)}, trans: []tr{at("error", 29*s)},
			state: "error", deps: true, elig: true, attempts: 5, limit: 10,
			lastFailure: dur(29 * s), nextRetry: dur(1 * s),
			reason: "unknown", retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(1)},
		{name: "error_capped_elapsed", opts: stepOpts{attempts: i32(7), retryLimit: i32(10)}, trans: []tr{at("error", 31*s)},
			state: "error", deps: true, elig: true, ready: true, attempts: 7, limit: 10,
			lastFailure: dur(31 * s), nextRetry: dur(-1 * s),
			retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(0)},
		// Explicit backoff: last_attempted_at + backoff_request_seconds.
		{name: "explicit_backoff", opts: stepOpts{attempts: i32(1), lastAttemptedAgo: dur(10 * s), backoff: i32(30)},
			trans: []tr{at("pending", 10*s)},
			state: "pending", deps: true, elig: true, attempts: 1, limit: 3, nextRetry: dur(20 * s),
			reason: "unknown", retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(20)},
		{name: "explicit_backoff_boundary", opts: stepOpts{attempts: i32(1), lastAttemptedAgo: dur(30 * s), backoff: i32(30)},
			trans: []tr{at("pending", 30*s)},
			state: "pending", deps: true, elig: true, ready: true, attempts: 1, limit: 3, nextRetry: dur(0),
			retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(0)},
		// Both rules must hold; next_retry_at prefers the explicit one.
		{name: "both_backoffs", opts: stepOpts{attempts: i32(1), lastAttemptedAgo: dur(5 * s), backoff: i32(60)},
			trans: []tr{at("error", 100*s)},
			state: "error", deps: true, elig: true, attempts: 1, limit: 3,
			lastFailure: dur(100 * s), nextRetry: dur(55 * s),
			reason: "unknown", retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(55)},
		{name: "exhausted", opts: stepOpts{attempts: i32(3)}, trans: []tr{at("error", 100*s)},
			state: "error", deps: true, attempts: 3, limit: 3, lastFailure: dur(100 * s), nextRetry: dur(-92 * s),
			reason: "retry_not_eligible", retryStatus: "max_retries_reached", depStatus: "no_dependencies", timeUntilReady: i64(0)},
		// v02's retry_eligible ignores the retryable flag; readiness does not.
		{name: "not_retryable", opts: stepOpts{attempts: i32(1), notRetryable: true}, trans: []tr{at("error", 100*s)},
			state: "error", deps: true, elig: true, attempts: 1, limit: 3, lastFailure: dur(100 * s), nextRetry: dur(-98 * s),
			reason: "unknown", retryStatus: "retry_eligible", depStatus: "no_dependencies", timeUntilReady: i64(0)},
		{name: "in_process", opts: stepOpts{attempts: i32(0), inProcess: true}, trans: []tr{at("pending", s)},
			state: "pending", deps: true, elig: true, limit: 3,
			reason: "unknown", retryStatus: "retry_eligible", depStatus: "no_dependencies"},
		{name: "processed_pending", opts: stepOpts{attempts: i32(0), processed: true}, trans: []tr{at("pending", s)},
			state: "pending", deps: true, elig: true, limit: 3,
			reason: "unknown", retryStatus: "retry_eligible", depStatus: "no_dependencies"},
		// NULL retry_limit coalesces to 3.
		{name: "null_limit", opts: stepOpts{attempts: i32(3), nullRetryLimit: true},
			state: "pending", deps: true, attempts: 3, limit: 3,
			reason: "retry_not_eligible", retryStatus: "max_retries_reached", depStatus: "no_dependencies"},
		{name: "cancelled", opts: stepOpts{attempts: i32(0)}, trans: []tr{at("pending", 2*s), at("cancelled", s)},
			state: "cancelled", deps: true, elig: true, limit: 3,
			reason: "invalid_state", retryStatus: "retry_eligible", depStatus: "no_dependencies"},
	}
}

func TestReadinessFollowsTaskerRules(t *testing.T) {
	db := pgtest.NewTasker(t)
	installYardsticks(t, db)
	f := newFixture(t, db)
	nt := f.namedTask("ns", "wf", "1.0.0")
	task := f.task(nt, time.Hour, at("pending", time.Hour), at("in_progress", 59*time.Minute))
	cases := readinessCases()
	ids := map[string]int64{}
	for _, c := range cases {
		ids[c.name] = f.step(task, c.name, c.opts, c.trans...)
	}
	for _, c := range cases {
		for _, p := range c.parents {
			f.edge(ids[p], ids[c.name])
		}
	}
	now := f.now()

	rows, err := readiness(f.ctx, f.tx, []int64{task}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(cases) {
		t.Fatalf("got %d rows, want %d", len(rows), len(cases))
	}
	byID := map[int64]StepReadiness{}
	for _, r := range rows {
		byID[r.WorkflowStepID] = r
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := byID[ids[c.name]]
			check := func(field string, got, want any) {
				t.Helper()
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: got %v, want %v", field, got, want)
				}
			}
			check("current_state", r.CurrentState, c.state)
			check("dependencies_satisfied", r.DependenciesSatisfied, c.deps)
			check("retry_eligible", r.RetryEligible, c.elig)
			check("ready_for_execution", r.ReadyForExecution, c.ready)
			check("total_parents", r.TotalParents, c.total)
			check("completed_parents", r.CompletedParents, c.done)
			check("attempts", r.Attempts, c.attempts)
			check("retry_limit", r.RetryLimit, c.limit)
			check("last_failure_at", r.LastFailureAt.Std(), offset(now, c.lastFailure, -1))
			check("next_retry_at", r.NextRetryAt.Std(), offset(now, c.nextRetry, 1))
			reason := ""
			if r.BlockingReason != nil {
				reason = *r.BlockingReason
			}
			check("blocking_reason", reason, c.reason)
			check("retry_status", r.RetryStatus, c.retryStatus)
			check("dependency_status", r.DependencyStatus, c.depStatus)
			check("time_until_ready", fmt.Sprint(deref(r.TimeUntilReady)), fmt.Sprint(deref(c.timeUntilReady)))
			if (r.TimeUntilReady == nil) != (c.timeUntilReady == nil) {
				t.Errorf("time_until_ready: got %v, want %v", r.TimeUntilReady, c.timeUntilReady)
			}
		})
	}
	assertReadinessMatchesYardstick(t, f, []int64{task})
}

// offset is now + sign*d in UTC, or the zero time for nil.
func offset(now time.Time, d *time.Duration, sign int) time.Time {
	if d == nil {
		return time.Time{}
	}
	return now.Add(time.Duration(sign) * *d).UTC()
}

// assertReadinessMatchesYardstick compares our rows with Tasker's v02
// function, column for column, on the fixture's transaction.
func assertReadinessMatchesYardstick(t *testing.T, f *fixture, tasks []int64) {
	t.Helper()
	rows, err := readiness(f.ctx, f.tx, tasks, f.now())
	if err != nil {
		t.Fatal(err)
	}
	want, err := f.tx.Query(f.ctx, `SELECT workflow_step_id, task_id, named_step_id, name, current_state,
		dependencies_satisfied, retry_eligible, ready_for_execution, last_failure_at, next_retry_at,
		total_parents, completed_parents, attempts, retry_limit, backoff_request_seconds, last_attempted_at
		FROM get_step_readiness_status_batch($1) ORDER BY task_id, workflow_step_id`, tasks)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	i := 0
	for want.Next() {
		var w StepReadiness
		var lf, nr, la *time.Time
		if err := want.Scan(&w.WorkflowStepID, &w.TaskID, &w.NamedStepID, &w.Name, &w.CurrentState,
			&w.DependenciesSatisfied, &w.RetryEligible, &w.ReadyForExecution, &lf, &nr,
			&w.TotalParents, &w.CompletedParents, &w.Attempts, &w.RetryLimit, &w.BackoffRequestSeconds, &la); err != nil {
			t.Fatal(err)
		}
		w.LastFailureAt, w.NextRetryAt, w.LastAttemptedAt = timeOf(lf), timeOf(nr), timeOf(la)
		if i >= len(rows) {
			t.Fatalf("yardstick has more rows than our %d", len(rows))
		}
		g := rows[i]
		i++
		gotCols := []any{g.WorkflowStepID, g.TaskID, g.NamedStepID, g.Name, g.CurrentState, g.DependenciesSatisfied,
			g.RetryEligible, g.ReadyForExecution, g.LastFailureAt.Std(), g.NextRetryAt.Std(), g.TotalParents,
			g.CompletedParents, g.Attempts, g.RetryLimit, deref(g.BackoffRequestSeconds), g.LastAttemptedAt.Std()}
		wantCols := []any{w.WorkflowStepID, w.TaskID, w.NamedStepID, w.Name, w.CurrentState, w.DependenciesSatisfied,
			w.RetryEligible, w.ReadyForExecution, w.LastFailureAt.Std(), w.NextRetryAt.Std(), w.TotalParents,
			w.CompletedParents, w.Attempts, w.RetryLimit, deref(w.BackoffRequestSeconds), w.LastAttemptedAt.Std()}
		if !reflect.DeepEqual(gotCols, wantCols) {
			t.Errorf("step %d differs from get_step_readiness_status:\n got  %v\n want %v", w.WorkflowStepID, gotCols, wantCols)
		}
	}
	if err := want.Err(); err != nil {
		t.Fatal(err)
	}
	if i != len(rows) {
		t.Errorf("yardstick has %d rows, we have %d", i, len(rows))
	}
}
