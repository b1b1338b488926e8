package collector

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Reading from a hot standby (docs/operations.md#read-replicas): where the
// sidecar is (pg_is_in_recovery), how far behind the primary the data it
// reads is, and the statements a recovery conflict cancels.

// Replication is what the server said of its role with the counts.
type Replication struct {
	// Known is set once the server answered; a zero Replication is "not
	// asked" (a snapshot shared by a replica that did not ask).
	Known bool `json:"known"`
	// Standby is pg_is_in_recovery(): the server is a hot standby.
	Standby bool `json:"standby"`
	// Lag is how much older than the primary's the data on this server is:
	// 0 on a primary and on a standby that has replayed everything it
	// received while its WAL receiver runs (paused or not: nothing newer
	// arrived); otherwise the time since the last replayed transaction
	// (replay paused or slower than the primary, or the receiver gone,
	// when nothing says the primary is idle).
	Lag time.Duration `json:"lag"`
	// SinceReplay is, on a standby, the time since the last transaction it
	// replayed committed on the primary. With Lag zero it only says the
	// primary has been idle that long. Negative when the standby has
	// replayed no transaction since it started.
	SinceReplay time.Duration `json:"since_replay"`
	// Paused is pg_is_wal_replay_paused(); Receiving that a WAL receiver
	// runs (pg_stat_wal_receiver has a row).
	Paused    bool `json:"paused"`
	Receiving bool `json:"receiving"`
}

// Role is "standby" or "primary" ("" when not known).
func (r Replication) Role() string {
	switch {
	case !r.Known:
		return ""
	case r.Standby:
		return "standby"
	}
	return "primary"
}

// serverSQL is the connection figures (connectionsSQL: this server's, a
// standby's own on a standby) and where the server is, in one round trip.
// pg_last_xact_replay_timestamp is the commit time on the primary of the
// last transaction replayed; the receive and replay positions tell a
// standby that has replayed all it received (the primary is idle, or the
// standby keeps up) from one that is behind. Every function is callable by
// any role; pg_stat_wal_receiver shows unprivileged roles a row without
// details while the receiver runs.
const serverSQL = connectionsSQL + `,
       pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN
           extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 END,
       CASE WHEN pg_is_in_recovery() THEN
           COALESCE(pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn(), false) END,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver),
       CASE WHEN pg_is_in_recovery() THEN
           extract(epoch FROM clock_timestamp() - pg_postmaster_start_time())::float8 END`

// scanServer reads serverSQL's row into the connection counts and r.
func scanServer(row interface{ Scan(...any) error }, c *HealthCounts, r *Replication) error {
	var (
		since, up *float64
		replayed  *bool
	)
	if err := row.Scan(&c.ActiveConnections, &c.MaxConnections, &r.Standby, &since, &replayed, &r.Paused, &r.Receiving, &up); err != nil {
		return err
	}
	r.Known = true
	r.Lag, r.SinceReplay = 0, 0
	if !r.Standby {
		return nil
	}
	r.SinceReplay = -1
	if since != nil {
		r.SinceReplay = max(time.Duration(*since*float64(time.Second)), 0)
	}
	caughtUp := replayed != nil && *replayed && r.Receiving
	switch {
	case caughtUp:
	case r.SinceReplay > 0:
		r.Lag = r.SinceReplay
	case since == nil && up != nil:
		// Restarted and not caught up, with no transaction replayed since:
		// PostgreSQL has no replay time to give, but what the standby holds
		// is at least as old as its start. A lower bound, not zero.
		r.Lag = max(time.Duration(*up*float64(time.Second)), 0)
	}
	return nil
}

// replicaState is the DB's last word on where it is, for the metrics,
// /capabilities and readiness; logged when the role changes.
type replicaState struct {
	mu   sync.Mutex
	last Replication
	at   time.Time
}

// noteReplication records r (from a refresh or a schema check) and logs a
// change of role: the first answer, and a failover that turns a standby
// into a primary (or the sidecar pointed at another server).
func (db *DB) noteReplication(r Replication) {
	if !r.Known {
		return
	}
	db.replica.mu.Lock()
	prev := db.replica.last
	db.replica.last, db.replica.at = r, time.Now()
	db.replica.mu.Unlock()
	switch {
	case !prev.Known && r.Standby:
		db.logger.Info("the database is a hot standby (in recovery): counts are as old as its replication lag; connection figures are the standby's own",
			"database", db.redacted, "replication_lag", r.Lag, "replay_paused", r.Paused)
	case !prev.Known:
		db.logger.Info("the database is a primary (not in recovery)", "database", db.redacted)
	case prev.Standby && !r.Standby:
		db.logger.Warn("the database left recovery: the standby was promoted (failover), or the sidecar reaches another server now",
			"database", db.redacted)
	case !prev.Standby && r.Standby:
		db.logger.Warn("the database is in recovery now: the sidecar reaches a hot standby",
			"database", db.redacted)
	}
}

// Replication is the last answer of the server about its role and lag,
// and when it came; Known is false before the first.
func (db *DB) Replication() (Replication, time.Time) {
	db.replica.mu.Lock()
	defer db.replica.mu.Unlock()
	return db.replica.last, db.replica.at
}

// checkServer asks where the server is now, for a schema check after a
// reconnect (the server may have been promoted while we were away).
func (db *DB) checkServer(ctx context.Context) error {
	var (
		c HealthCounts
		r Replication
	)
	if err := scanServer(db.pool.QueryRow(ctx, serverSQL), &c, &r); err != nil {
		return fmt.Errorf("read the server's role: %w", err)
	}
	db.noteReplication(r)
	return nil
}

// IsRecoveryConflict reports whether err is a statement (or session) a hot
// standby cancelled because replaying the primary's changes needed what it
// held (PostgreSQL's postgres.c, ProcessInterrupts). It is worth retrying: a
// new snapshot no longer needs the removed rows.
//
// SQLSTATE 40001 is enough: the sidecar's reads are read-only transactions
// at READ COMMITTED or REPEATABLE READ, where no serialization failure can
// arise otherwise, and the message is translated under lc_messages, so it
// cannot be relied on. 40P01 (a buffer-pin deadlock with replay) is also a
// plain deadlock, which only the English message tells apart.
func IsRecoveryConflict(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == "40001" || pgErr.Code == "40P01" && strings.Contains(pgErr.Message, "conflict with recovery")
}

// conflictRetries bounds the attempts after a recovery conflict: a standby
// whose max_standby_streaming_delay is far below the statements' length
// would cancel every attempt, and the caller must hear of it.
const conflictRetries = 3

// conflictBackoff is the wait before the first retry; it doubles.
const conflictBackoff = 50 * time.Millisecond

// conflictCounter counts recovery conflicts by outcome (retried, or
// failed after the last attempt); shared by every reader of a DB.
var conflictCounter = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "tasker_sidecar", Subsystem: "db", Name: "recovery_conflicts_total",
	Help: "Statements a hot standby cancelled for a conflict with recovery (SQLSTATE 40001), by outcome: retried, or failed once the retries were spent.",
}, []string{"outcome"})

// RetryRecoveryConflict runs fn, and again (at most conflictRetries more
// times, with a short growing wait, within ctx) while it fails with a
// recovery conflict. fn must be safe to run again: a read in a transaction
// of its own. Anything else is returned at once.
func RetryRecoveryConflict(ctx context.Context, fn func(context.Context) error) error {
	wait := conflictBackoff
	for attempt := 0; ; attempt++ {
		err := fn(ctx)
		if err == nil || !IsRecoveryConflict(err) {
			return err
		}
		if attempt == conflictRetries {
			conflictCounter.WithLabelValues("failed").Inc()
			return err
		}
		conflictCounter.WithLabelValues("retried").Inc()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

// replicaCollector exports where the database is and its lag, from the
// DB's last answer (each refresh asks), at scrape time. Nothing is
// exported before the first answer: a missing series is "not known", not
// "primary".
type replicaCollector struct {
	db                                 *DB
	inRecovery, lag, sinceReplay, paus *prometheus.Desc
}

func newReplicaCollector(db *DB) *replicaCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("tasker_sidecar", "", name), help, labels, nil)
	}
	return &replicaCollector{
		db: db,
		inRecovery: d("database_in_recovery",
			"1 when the database the sidecar reads is a hot standby (pg_is_in_recovery), 0 on a primary; absent until the first answer."),
		lag: d("replication_lag_seconds",
			"How much older than the primary's the data served is, added to every age the sidecar reports: 0 on a primary and on a standby that replayed all it received; otherwise seconds since the last replayed transaction. Absent until the first answer."),
		sinceReplay: d("replication_last_replay_age_seconds",
			"On a standby, seconds since the last replayed transaction committed on the primary; with replication_lag_seconds at 0 this is only how long the primary has been idle. Absent on a primary."),
		paus: d("replication_replay_paused", "1 while the standby's WAL replay is paused (pg_wal_replay_pause); absent on a primary."),
	}
}

func (c *replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inRecovery
	ch <- c.lag
	ch <- c.sinceReplay
	ch <- c.paus
	conflictCounter.Describe(ch)
}

func (c *replicaCollector) Collect(ch chan<- prometheus.Metric) {
	conflictCounter.Collect(ch)
	r, _ := c.db.Replication()
	if !r.Known {
		return
	}
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	g(c.inRecovery, float64(b2i(r.Standby)))
	g(c.lag, r.Lag.Seconds())
	if r.Standby {
		if r.SinceReplay >= 0 {
			g(c.sinceReplay, r.SinceReplay.Seconds())
		}
		g(c.paus, float64(b2i(r.Paused)))
	}
}

func init() {
	for _, o := range []string{"retried", "failed"} {
		conflictCounter.WithLabelValues(o)
	}
}
