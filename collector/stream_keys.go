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
// (an engine or tool that makes its own keys, a lagging host clock), and
// skips the keys it has
// already read at or above the floor (Cursor.Seen). The floor is the
// earliest time a row not yet visible can carry, so below it nothing is
// remembered. docs/stream.md explains the choice.

// xidSnapshot is what one poll's snapshot says about transactions.
type xidSnapshot struct {
	// xip are the transactions of this database running at the poll
	// (ascending, 64-bit). xmax is the first transaction id not handed out
	// yet, xmin the oldest running one (xmax when none runs); on a standby
	// both are the snapshot's own (see snapshotSQL).
	xmin, xmax uint64
	xip        []uint64
	at         time.Time
	// recovery is set on a hot standby, whose snapshots list no running
	// transactions (PostgreSQL keeps them in the sub-transaction list):
	// the tracker then works from xmin and xmax alone.
	recovery bool
}

// snapshotSQL must be the first statement of the poll's REPEATABLE READ
// transaction, so that the snapshot it reports is the transaction's.
// transaction_timestamp() is when BEGIN ran, before the snapshot was
// taken. xid8 has no cast to bigint; its text form is a decimal number.
//
// The snapshot alone does not list every running transaction: since
// PostgreSQL 14 its xmax is one past the last completed transaction, and
// a transaction that got a later id and is still running is in no list.
// pg_stat_activity has every backend's transaction id (backend_xid, 32
// bits, placed here in the snapshot's epoch), visible to any role, and
// pg_prepared_xacts the prepared ones; both are read after the snapshot,
// so they may also hold transactions that began after it (which only makes
// the stream wait a little longer).
//
// Transaction ids are cluster-wide: a transaction in another database (a
// migration, a session idle in a transaction) would hold the stream back
// for nothing. A backend never changes database, so those of other
// databases are left out, also from the snapshot's own list; what cannot
// be placed (a process without a database) is kept.
const snapshotSQL = `
WITH snap AS (SELECT pg_current_snapshot() AS s, pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax),
act AS (
    SELECT backend_xid::text::bigint AS x,
           datid = (SELECT oid FROM pg_database WHERE datname = current_database()) AS here
    FROM pg_stat_activity WHERE backend_xid IS NOT NULL
    UNION ALL
    SELECT transaction::text::bigint, database = current_database() FROM pg_prepared_xacts
),
run AS (
    SELECT x::text::bigint AS x FROM snap, pg_snapshot_xip(snap.s) AS x
    WHERE x::text::bigint % 4294967296 NOT IN (SELECT x FROM act WHERE NOT here)
    UNION
    SELECT CASE WHEN x8 > xmax + 2147483648 THEN x8 - 4294967296 ELSE x8 END
    FROM (SELECT snap.xmax / 4294967296 * 4294967296 + act.x AS x8, snap.xmax FROM snap, act WHERE act.here) e
)
SELECT pg_snapshot_xmin(s)::text::bigint, xmax, ARRAY(SELECT x FROM run ORDER BY 1),
       transaction_timestamp(), pg_is_in_recovery()
FROM snap`

func readSnapshot(ctx context.Context, tx pgx.Tx) (xidSnapshot, error) {
	var (
		s          xidSnapshot
		xmin, xmax int64
		xip        []int64
	)
	if err := tx.QueryRow(ctx, snapshotSQL).Scan(&xmin, &xmax, &xip, &s.at, &s.recovery); err != nil {
		return s, fmt.Errorf("read the transaction snapshot: %w", err)
	}
	s.xmin, s.xmax = uint64(xmin), uint64(xmax)
	if s.recovery {
		return s, nil
	}
	s.xip = make([]uint64, len(xip))
	for i, x := range xip {
		s.xip[i] = uint64(x)
	}
	if n := len(s.xip); n > 0 {
		s.xmax = max(s.xmax, s.xip[n-1]+1)
		s.xmin = s.xip[0]
	} else {
		s.xmin = s.xmax
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
	// marks are the recent polls' (xmax, time), oldest first: a
	// transaction id at or above a poll's xmax was handed out after that
	// poll began, so it wrote after that time (markedSince).
	marks []xidMark
	// assumed bounds the transactions running when tracking started.
	assumed time.Time
	ok      bool
}

type xidMark struct {
	xmax uint64
	at   time.Time
}

// start begins tracking at a snapshot; the transactions running then may
// have written from assumed on.
func (x *xidTracker) start(s xidSnapshot, assumed time.Time) {
	x.prev, x.ok, x.assumed = s, true, assumed
	x.since = make(map[uint64]time.Time, len(s.xip))
	for _, id := range s.xip {
		x.since[id] = assumed
	}
	x.marks = []xidMark{{s.xmax, s.at}}
}

// markedSince is the earliest time the transaction id can have written:
// the time of the last poll whose xmax it is at or above.
func (x *xidTracker) markedSince(id uint64) time.Time {
	t := x.assumed
	for _, m := range x.marks {
		if m.xmax > id {
			break
		}
		t = m.at
	}
	return t
}

// advance moves to the next poll's snapshot. scanFrom is the earliest time
// a row that became visible since the previous snapshot can have been
// written; floor the earliest time a row not yet visible can have been
// written. Both are zero when there was no previous snapshot.
//
// On a primary it follows each running transaction (xip): one that stays
// open costs nothing until it ends. On a standby, whose snapshots do not
// list them, it assumes that every transaction from the previous xmin on
// may have ended: each poll then reads from when the oldest running
// transaction began, which a long transaction on the primary makes costly
// (docs/stream.md).
func (x *xidTracker) advance(s xidSnapshot) (scanFrom, floor time.Time) {
	if !x.ok {
		return time.Time{}, time.Time{}
	}
	scanFrom, floor = x.prev.at, s.at
	if s.recovery || x.prev.recovery {
		scanFrom = earlier(scanFrom, x.markedSince(x.prev.xmin))
		if s.xmin < s.xmax {
			floor = earlier(floor, x.markedSince(s.xmin))
		}
		x.since = nil
	} else {
		since := make(map[uint64]time.Time, len(s.xip))
		for _, id := range s.xip {
			t, ok := x.since[id]
			if !ok {
				// Not running at prev, and not ended either (it would not
				// be running now): it got its id after prev read the
				// running transactions, so it wrote after prev began.
				t = x.prev.at
			}
			since[id] = t
			floor = earlier(floor, t)
		}
		for id, t := range x.since {
			if _, running := since[id]; !running {
				scanFrom = earlier(scanFrom, t)
			}
		}
		x.since = since
	}
	x.prev = s
	x.marks = append(x.marks, xidMark{s.xmax, s.at})
	// Keep the last mark at or below xmin (it dates every running
	// transaction) and the ones after it.
	i := 0
	for i+1 < len(x.marks) && x.marks[i+1].xmax <= s.xmin {
		i++
	}
	x.marks = slices.Delete(x.marks, 0, i)
	return scanFrom, floor
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
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
	raised := false
	if x.assumed.Before(horizon) {
		x.assumed, raised = horizon, true
	}
	for i := range x.marks {
		if x.marks[i].at.Before(horizon) {
			x.marks[i].at, raised = horizon, true
		}
	}
	if raised && n == 0 {
		n = 1 // on a standby the transactions are not known one by one
	}
	return n
}

// seen reports whether a key at or above the floor has been read.
func (c Cursor) seen(id engine.ID) bool {
	_, ok := slices.BinarySearchFunc(c.Seen, id, engine.ID.Compare)
	return ok
}

// see records keys read in one batch (any order, none seen before): a
// merge of the sorted batch into the sorted list, not a sort of both.
func (c *Cursor) see(ids []engine.ID) {
	if len(ids) == 0 {
		return
	}
	ids = slices.Clone(ids)
	slices.SortFunc(ids, engine.ID.Compare)
	merged := make([]engine.ID, 0, len(c.Seen)+len(ids))
	i, j := 0, 0
	for i < len(c.Seen) || j < len(ids) {
		switch {
		case j == len(ids) || i < len(c.Seen) && c.Seen[i].Compare(ids[j]) < 0:
			merged = append(merged, c.Seen[i])
			i++
		case i == len(c.Seen) || ids[j].Compare(c.Seen[i]) < 0:
			merged = append(merged, ids[j])
			j++
		default: // the same key twice: keep one
			merged = append(merged, c.Seen[i])
			i, j = i+1, j+1
		}
	}
	c.Seen = merged
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
	x.marks = slices.Clone(x.marks)
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
		rows, err := readCoreRows(qctx, tx, t, from, s.cfg.BatchSize, cur.Seen[i:], s.audit)
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
			if !cur.Next.IsZero() && cur.Next.Compare(cut) < 0 {
				cut = cur.Next // rows above Next are unread: never past it
			}
			res.given += res.xids.giveUp(cut.UUIDTime().Add(s.cfg.KeyClockMargin))
			cur.raiseFloor(cut)
		}
	}
}

// ahead reports whether a checkpoint's cursor is past what the database
// holds (restored from a backup?): on Rails a higher watermark; on core a
// floor later than the database's clock (dbNow, the fresh count's snapshot
// time) allows.
func (c Cursor) ahead(pos Cursor, dbNow time.Time) bool {
	if c.Floor.IsUUID() {
		return c.Floor.UUIDTime().After(dbNow.Add(time.Minute))
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
