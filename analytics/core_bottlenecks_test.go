package analytics

import (
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// TestCoreBottlenecksMatchEngine: with lists long enough to hold every
// task and step of the period, the per-task and per-step values of the
// core bottleneck analysis, grouped as tasker-core groups them, equal the
// yardstick get_slowest_tasks_aggregated / get_slowest_steps_aggregated
// field by field (averages to the rounding of the per-row values), and
// the scope numbers equal direct counts. Scoped by namespace, only that
// namespace's groups remain.
func TestCoreBottlenecksMatchEngine(t *testing.T) {
	db := coreSimulated(t, 300)
	ctx, tx := coreTx(t, db)
	const hours = 48
	b, err := coreBottleneckReport(ctx, tx, BottleneckQuery{PeriodHours: hours}, 100000, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.BottleneckAnalysis.SlowestTasks) == 0 || len(b.BottleneckAnalysis.SlowestSteps) == 0 {
		t.Fatalf("empty lists: %+v", b.BottleneckAnalysis)
	}

	type agg struct {
		n, errs         int64
		sum, max, steps float64
		last            time.Time
	}
	add := func(m map[string]*agg, k string, d float64, errs int64, steps float64, at time.Time) {
		a := m[k]
		if a == nil {
			a = &agg{}
			m[k] = a
		}
		a.n++
		a.errs += errs
		a.sum += d
		a.max = math.Max(a.max, d)
		a.steps += steps
		if at.After(a.last) {
			a.last = at
		}
	}
	tasks, steps := map[string]*agg{}, map[string]*agg{}
	for _, x := range b.BottleneckAnalysis.SlowestTasks {
		add(tasks, x.NamespaceName+"/"+x.TaskName+"/"+x.Version, x.DurationSeconds.Float(), x.ErrorSteps, float64(x.StepCount), x.CompletedAt.Std())
	}
	for _, x := range b.BottleneckAnalysis.SlowestSteps {
		e := int64(0)
		if x.StepStatus == "error" {
			e = 1
		}
		add(steps, x.NamespaceName+"/"+x.TaskName+"/"+x.Version+"/"+x.StepName, x.DurationSeconds.Float(), e, 0, x.CompletedAt.Std())
	}
	compare := func(kind string, got map[string]*agg, rows pgx.Rows, err error, withSteps bool) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var key, avg, mx, stepAvg string
			var count, errs int64
			var last time.Time
			if withSteps {
				err = rows.Scan(&key, &avg, &mx, &count, &stepAvg, &errs, &last)
			} else {
				err = rows.Scan(&key, &avg, &mx, &count, &errs, &last)
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
			g := got[key]
			if g == nil {
				t.Errorf("%s %s: not in the analysis", kind, key)
				continue
			}
			wantAvg, _ := strconv.ParseFloat(avg, 64)
			wantMax, _ := strconv.ParseFloat(mx, 64)
			// The lists carry each duration rounded to the millisecond;
			// their average can differ from the rounded average by that.
			if g.n != count || g.errs != errs || math.Abs(g.max-wantMax) > 1e-9 ||
				math.Abs(g.sum/float64(g.n)-wantAvg) > 0.001 || !g.last.Equal(last) {
				t.Errorf("%s %s: n %d errs %d max %v avg %v last %v; engine %d %d %s %s %v",
					kind, key, g.n, g.errs, g.max, g.sum/float64(g.n), g.last, count, errs, mx, avg, last)
			}
			if withSteps {
				w, _ := strconv.ParseFloat(stepAvg, 64)
				if math.Abs(g.steps/float64(g.n)-w) > 0.005 {
					t.Errorf("%s %s: average step count %v, engine %s", kind, key, g.steps/float64(g.n), stepAvg)
				}
			}
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		if n != len(got) || n == 0 {
			t.Errorf("%s: engine has %d groups, the analysis %d", kind, n, len(got))
		}
	}
	since := fmt.Sprintf("now() - interval '%d hours'", hours)
	rows, err := tx.Query(ctx, `SELECT namespace_name||'/'||task_name||'/'||version, average_duration_seconds::text,
	    max_duration_seconds::text, execution_count, average_step_count::text, total_error_steps, last_executed_at
	    FROM yardstick.get_slowest_tasks_aggregated(`+since+`, 100000, 1, NULL, NULL, NULL)`)
	compare("tasks", tasks, rows, err, true)
	rows, err = tx.Query(ctx, `SELECT namespace_name||'/'||task_name||'/'||version||'/'||step_name, average_duration_seconds::text,
	    max_duration_seconds::text, execution_count, error_count, last_executed_at
	    FROM yardstick.get_slowest_steps_aggregated(`+since+`, 100000, 1, NULL, NULL, NULL)`)
	compare("steps", steps, rows, err, false)

	var total, inError, exhausted int64
	if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM tasker.tasks WHERE created_at > now() - interval '48 hours'),
	    count(*), count(*) FILTER (WHERE COALESCE(ws.attempts, 0) >= COALESCE(ws.max_attempts, 3))
	    FROM tasker.workflow_steps ws JOIN tasker.tasks t USING (task_uuid)
	    JOIN tasker.workflow_step_transitions x ON x.workflow_step_uuid = ws.workflow_step_uuid AND x.most_recent
	    WHERE x.to_state = 'error' AND t.created_at > now() - interval '48 hours'`).Scan(&total, &inError, &exhausted); err != nil {
		t.Fatal(err)
	}
	ep := b.BottleneckAnalysis.ErrorPatterns
	if b.ScopeSummary.TotalTasks != total || ep.StepsInError != inError || ep.ExhaustedRetrySteps != exhausted || inError == 0 {
		t.Errorf("scope: tasks %d, in error %d, exhausted %d; want %d %d %d", b.ScopeSummary.TotalTasks,
			ep.StepsInError, ep.ExhaustedRetrySteps, total, inError, exhausted)
	}
	// The simulated worker reports its error class in the failure event
	// the engine keeps in the transition metadata, not in results.
	if len(ep.ErrorTypes) == 0 || ep.ErrorTypes[0].ErrorClass != "RemoteError" || len(b.Recommendations) == 0 {
		t.Errorf("error types %v, recommendations %v", ep.ErrorTypes, b.Recommendations)
	}

	// Scoped to one namespace.
	ns := b.BottleneckAnalysis.SlowestTasks[0].NamespaceName
	scoped, err := coreBottleneckReport(ctx, tx, BottleneckQuery{Scope: Scope{Namespace: ns}, PeriodHours: hours}, 100000, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range scoped.BottleneckAnalysis.SlowestTasks {
		if x.NamespaceName != ns {
			t.Errorf("scoped to %s: task of %s", ns, x.NamespaceName)
		}
	}
	if scoped.ScopeSummary.TotalTasks == 0 || scoped.ScopeSummary.TotalTasks >= total {
		t.Errorf("scoped total %d of %d", scoped.ScopeSummary.TotalTasks, total)
	}

	// Through the service, with the default list length.
	svc := New(servicePool(t, db.URL), Config{}, nil, WithAttachment(&fixedAttachment{e: engine.Core()}))
	v, err := svc.BottlenecksReport(ctx, BottleneckQuery{PeriodHours: 24})
	if err != nil {
		t.Fatal(err)
	}
	if cb := v.(*CoreBottlenecks); len(cb.BottleneckAnalysis.SlowestTasks) != slowestLimit {
		t.Errorf("service: %d slowest tasks, want %d", len(cb.BottleneckAnalysis.SlowestTasks), slowestLimit)
	}
}
