package collector

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// tasker-core's keys are UUIDv7: ordered by the millisecond they were
// generated, but transactions commit out of that order, so a key cursor
// alone misses a row committed late. A poll also reads the transaction
// ids PostgreSQL exposes in its snapshot (pg_current_snapshot()): a row
// that became visible since the previous poll was written by a transaction
// that was running then (in its xip list) or that got its id after that
// snapshot. The second kind wrote its rows after the previous poll began,
// so their keys are at least that poll's statement time. For the first,
// the stream remembers, from the poll where each transaction id first
// appeared, the time before which it cannot have written. A poll reads
// the keys from the earliest of these times for the transactions that
// have ended since, minus a margin for keys made by an application's clock
// (tasker-core generates task keys in Rust), and skips the keys it has
// already read at or above the floor (Cursor.Seen). The floor is the
// earliest time a row not yet visible can carry, so below it nothing is
// remembered. docs/stream.md explains the choice.

// xidSnapshot is what one poll's snapshot says about transactions.
type xidSnapshot struct {
	xmin, xmax uint64
	xip        []uint64 // running transactions, ascending
	at         time.Time
}

// snapshotSQL must be the first statement of the poll's REPEATABLE READ
// transaction: the snapshot it reports is then the transaction's, and
// statement_timestamp() was taken just before it. xid8 has no cast to
// bigint; its text form is a decimal number.
const snapshotSQL = `
SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint,
       ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x ORDER BY 1),
       statement_timestamp()
FROM pg_current_snapshot() AS s`

func readSnapshot(ctx context.Context, tx pgx.Tx) (xidSnapshot, error) {
	var (
		s          xidSnapshot
		xmin, xmax int64
		xip        []int64
	)
	if err := tx.QueryRow(ctx, snapshotSQL).Scan(&xmin, &xmax, &xip, &s.at); err != nil {
		return s, fmt.Errorf("read the transaction snapshot: %w", err)
	}
	s.xmin, s.xmax = uint64(xmin), uint64(xmax)
	s.xip = make([]uint64, len(xip))
	for i, x := range xip {
		s.xip[i] = uint64(x)
	}
	return s, nil
}

// xidTracker follows the running transactions from poll to poll, for the
// core cursor. Owned by the loop goroutine; not checkpointed (a resumed
// stream starts from the checkpoint's floors).
type xidTracker struct {
	prev xidSnapshot
	// since holds, per transaction running at prev, the earliest time it
	// can have written a row.
	since map[uint64]time.Time
	ok    bool
}

// start begins tracking at a snapshot; the transactions running then may
// have written from assumed on.
func (x *xidTracker) start(s xidSnapshot, assumed time.Time) {
	x.prev, x.ok = s, true
	x.since = make(map[uint64]time.Time, len(s.xip))
	for _, id := range s.xip {
		x.since[id] = assumed
	}
}

// advance moves to the next poll's snapshot. scanFrom is the earliest time
// a row that became visible since the previous snapshot can have been
// written; floor the earliest time a row not yet visible can have been
// written. Both are zero when there was no previous snapshot.
func (x *xidTracker) advance(s xidSnapshot) (scanFrom, floor time.Time) {
	if !x.ok {
		return time.Time{}, time.Time{}
	}
	scanFrom, floor = x.prev.at, s.at
	since := make(map[uint64]time.Time, len(s.xip))
	for _, id := range s.xip {
		t, ok := x.since[id]
		if !ok {
			// Not running at prev, and not ended either (it would not be
			// running now): it got its id after prev's snapshot.
			t = x.prev.at
		}
		since[id] = t
		if t.Before(floor) {
			floor = t
		}
	}
	for id, t := range x.since {
		if _, running := since[id]; !running && t.Before(scanFrom) {
			scanFrom = t
		}
	}
	x.since, x.prev = since, s
	return scanFrom, floor
}

// giveUp stops waiting for transactions that may have written before
// horizon: their rows below the new floor, if they ever commit, are
// counted by the next recount. It returns how many it gave up on.
func (x *xidTracker) giveUp(horizon time.Time) int {
	n := 0
	for id, t := range x.since {
		if t.Before(horizon) {
			x.since[id] = horizon
			n++
		}
	}
	return n
}

// seen reports whether a key at or above the floor has been read.
func (c Cursor) seen(id engine.ID) bool {
	_, ok := slices.BinarySearchFunc(c.Seen, id, engine.ID.Compare)
	return ok
}

// see records keys read in one batch (any order, none seen before).
func (c *Cursor) see(ids []engine.ID) {
	if len(ids) == 0 {
		return
	}
	c.Seen = append(c.Seen, ids...)
	slices.SortFunc(c.Seen, engine.ID.Compare)
	c.Seen = slices.Compact(c.Seen)
}

// raiseFloor moves the floor up to floor (never down) and forgets the
// keys below it.
func (c *Cursor) raiseFloor(floor engine.ID) {
	if floor.Compare(c.Floor) <= 0 {
		return
	}
	c.Floor = floor
	i, _ := slices.BinarySearchFunc(c.Seen, floor, engine.ID.Compare)
	c.Seen = slices.Delete(c.Seen, 0, i)
}

// keysSince returns, for a replay, whether a key c has read is one old
// had not: old's floor and seen keys, against c's.
func (c Cursor) readSince(old Cursor, id engine.ID) bool {
	return c.Contains(id) && !old.Contains(id)
}

// maxSeenKeys bounds the keys one table's cursor remembers above its
// floor (32 bytes each): they pile up only while a transaction that
// writes stays open. Past it the stream stops waiting for the oldest
// such transactions, as past gap_horizon.
const maxSeenKeys = 200_000

// clone copies the tracker, so a poll can advance a copy and the stream
// keeps the original when the poll fails.
func (x xidTracker) clone() xidTracker {
	x.since = maps.Clone(x.since)
	return x
}

// scanStart is where a poll reads t's keys from: the earliest time a row
// that became visible since the previous poll can carry (scanFrom, zero
// when the tracker has not started: the floor), less the key clock margin,
// never below the floor; and never above where a poll cut short stopped.
func (s *Stream) scanStart(cur Cursor, scanFrom time.Time) engine.ID {
	from := cur.Floor
	if !scanFrom.IsZero() {
		if b := engine.UUIDLowerBound(scanFrom.Add(-s.cfg.KeyClockMargin)); b.Compare(from) > 0 {
			from = b
		}
	}
	if !cur.Next.IsZero() && cur.Next.Compare(from) < 0 {
		from = cur.Next
	}
	return from
}

// readKeys reads t's new rows on core, in key order from scanStart, the
// keys already read skipped, until a batch comes back short (drained) or
// the poll's batch budget is spent; then the next poll goes on from the
// last key read (Cursor.Next).
func (s *Stream) readKeys(ctx context.Context, tx pgx.Tx, t table, res *pollResult, scanFrom time.Time) (bool, error) {
	cur := &res.pos[t]
	from := s.scanStart(*cur, scanFrom)
	var newest engine.ID
	if n := len(cur.Seen); n > 0 {
		newest = cur.Seen[n-1]
	}
	for range s.cfg.MaxBatchesPerPoll {
		qctx, span := s.tracer.Start(ctx, "stream.read", trace.WithAttributes(
			attribute.String("db.system", "postgresql"), attribute.String("db.sql.table", t.name(s.eng))))
		i, _ := slices.BinarySearchFunc(cur.Seen, from, engine.ID.Compare)
		rows, err := readCoreRows(qctx, tx, t, from, s.cfg.BatchSize, cur.Seen[i:])
		span.SetAttributes(attribute.Int("rows", len(rows)))
		endSpan(span, err)
		if err != nil {
			return false, err
		}
		ids := make([]engine.ID, len(rows))
		for j, r := range rows {
			ids[j] = r.id
			if !newest.IsZero() && r.id.Compare(newest) < 0 {
				res.late[t]++ // committed after a newer key had been read
			}
		}
		cur.see(ids)
		res.rows[t] = append(res.rows[t], rows...)
		if len(rows) < s.cfg.BatchSize {
			cur.Next = engine.ID{}
			return true, nil
		}
		from = rows[len(rows)-1].id
	}
	cur.Next = from
	return false, nil
}

// raiseFloors moves each table's floor up to what the poll's snapshot
// allows (floor, from the tracker), gives up on transactions older than
// gap_horizon or keeping more than maxSeenKeys keys remembered, and makes
// a table this poll did not read start its next read where this one would
// have.
func (s *Stream) raiseFloors(res *pollResult, scanFrom, floor time.Time) {
	horizon := res.xids.prev.at.Add(-s.cfg.GapHorizon)
	if floor.Before(horizon) {
		res.given += res.xids.giveUp(horizon)
		floor = horizon
	}
	for t := range numTables {
		cur := &res.pos[t]
		if !res.checked[t] {
			cur.Next = s.scanStart(*cur, scanFrom)
			continue
		}
		key := engine.UUIDLowerBound(floor.Add(-s.cfg.KeyClockMargin))
		if !cur.Next.IsZero() && cur.Next.Compare(key) < 0 {
			key = cur.Next
		}
		cur.raiseFloor(key)
		if n := len(cur.Seen); n > maxSeenKeys {
			cut := cur.Seen[n-maxSeenKeys]
			res.given += res.xids.giveUp(cut.UUIDTime().Add(s.cfg.KeyClockMargin))
			cur.raiseFloor(cut)
		}
	}
}

// ahead reports whether a checkpoint's cursor is past what the database
// holds (restored from a backup?): on Rails a higher watermark; on core a
// floor in the future.
func (c Cursor) ahead(pos Cursor) bool {
	if c.Floor.IsUUID() {
		return c.Floor.UUIDTime().After(time.Now().Add(time.Minute))
	}
	return c.Watermark > pos.Watermark
}

// resumed is a checkpoint's cursor to continue from: on core the first
// poll reads from its floor up.
func (c Cursor) resumed() Cursor {
	c = c.clone()
	if c.Floor.IsUUID() {
		c.Next = c.Floor
	}
	return c
}

// describe is the cursor's position for logs.
func (c Cursor) describe() string {
	if c.Floor.IsUUID() {
		return "floor " + c.Floor.UUIDTime().Format(time.RFC3339Nano)
	}
	return "watermark " + strconv.FormatInt(c.Watermark, 10)
}
