package collector

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// The row check: the deletion signal that works everywhere. The stream
// cannot see a row that is gone, and the table statistics that tell it of
// deletions (churnSQL) are not replicated (a hot standby reports no
// deleted rows at all) and fall back to zero at a statistics reset or a
// failover. A row count of the task and step tables, taken in the poll's
// snapshot, is the same on a primary and on a standby: after a poll that
// read everything, it must equal the totals the stream keeps, and a
// difference asks for the early recount (docs/stream.md#deletions).

// rowCheckInterval is how often a poll counts the rows, at least. The two
// counts read every row of the task and step tables (index-only scans of
// the primary keys when the visibility map allows, parallel sequential
// scans otherwise: 350–450 ms per million rows on the loaded 2-core test
// machine), so on a large database the interval stretches to
// rowCheckCostFactor times the last check's duration, keeping the check
// under 4% of one backend's time. With earlyRecountSpacing it bounds how
// long deleted rows stay counted: about a minute up to a million tasks.
const rowCheckInterval = 20 * time.Second

// rowCheckCostFactor: see rowCheckInterval.
const rowCheckCostFactor = 25

// rowCountSQL counts e's task and step rows.
func rowCountSQL(e engine.Engine) string {
	return fmt.Sprintf(`SELECT (SELECT count(*) FROM %s), (SELECT count(*) FROM %s)`, e.Tables.Tasks, e.Tables.Steps)
}

// rowCheckMetrics are the row check's own series.
type rowCheckMetrics struct {
	checks     prometheus.Counter
	mismatches *prometheus.CounterVec
}

func newRowCheckMetrics(reg prometheus.Registerer) *rowCheckMetrics {
	m := &rowCheckMetrics{
		checks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "row_checks_total",
			Help: "Row counts of the task and step tables compared with the stream's totals (the deletion check that works on a standby and across statistics resets).",
		}),
		mismatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tasker_sidecar", Subsystem: "stream", Name: "row_check_mismatches_total",
			Help: "Row checks whose count of a table differed from the stream's total (rows deleted outside Statesman); each asks for an early recount.",
		}, []string{"table"}),
	}
	if reg != nil {
		reg.MustRegister(m.checks, m.mismatches)
	}
	return m
}

// rowCheckResult is what a poll's row check found.
type rowCheckResult struct {
	done bool
	took time.Duration // how long the count ran
	// table names the first table whose count differs, with its rows and
	// the stream's total after this poll.
	table      string
	rows, want int64
}

// rowCheckDue reports whether a poll at now counts the rows.
func (s *Stream) rowCheckDue(now time.Time) bool {
	return s.cfg.RecountInterval > 0 && now.Sub(s.rowCheckAt) >= max(rowCheckInterval, s.rowCheckEvery)
}

// rowCheckDone schedules the next check after one that took took.
func (s *Stream) rowCheckDone(now time.Time, took time.Duration) {
	s.rowCheckAt, s.rowCheckEvery = now, max(rowCheckInterval, rowCheckCostFactor*took)
}

// checkRows counts the task and step rows in tx (the poll's snapshot, after
// every read drained) and compares them with the totals the counts will
// have once res is applied. The count runs in a savepoint: a failure (a
// statement timeout on a huge table) costs the check, not the poll or its
// recount; it is logged and tried again at the next interval.
func (s *Stream) checkRows(ctx context.Context, tx pgx.Tx, res *pollResult) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		s.logger.Debug("could not count the task and step rows", "err", err)
		return
	}
	var tasks, steps int64
	start := time.Now()
	err = sp.QueryRow(ctx, rowCountSQL(s.eng)).Scan(&tasks, &steps)
	res.rowCheck.took = time.Since(start)
	if err != nil {
		_ = sp.Rollback(ctx)
		if ctx.Err() == nil {
			s.logger.Warn("could not count the task and step rows; deleted rows wait for the periodic recount", "err", err)
		}
		res.rowCheck.done = true // not before the next interval
		return
	}
	_ = sp.Commit(ctx)
	s.rowChecks.checks.Inc()
	res.rowCheck.done = true
	wantTasks, wantSteps := s.state.totals()
	for _, r := range res.rows[tableTasks] {
		if !s.base[tableTasks].Contains(r.id) {
			wantTasks++
		}
	}
	for _, r := range res.rows[tableSteps] {
		if !s.base[tableSteps].Contains(r.id) {
			wantSteps++
		}
	}
	switch {
	case tasks != wantTasks:
		res.rowCheck.table, res.rowCheck.rows, res.rowCheck.want = s.eng.Tables.Tasks, tasks, wantTasks
	case steps != wantSteps:
		res.rowCheck.table, res.rowCheck.rows, res.rowCheck.want = s.eng.Tables.Steps, steps, wantSteps
	}
	if res.rowCheck.table != "" {
		s.rowChecks.mismatches.WithLabelValues(res.rowCheck.table).Inc()
		if res.churnedTable == "" {
			res.churnedTable = res.rowCheck.table
		}
	}
}

// totals are the task and step totals of the counts.
func (s *countState) totals() (tasks, steps int64) {
	for _, n := range s.tasks {
		tasks += n
	}
	for _, n := range s.steps {
		steps += n
	}
	return tasks, steps
}
