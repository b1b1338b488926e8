package collector

import (
	"reflect"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func gaps(pairs ...int64) []Gap {
	var out []Gap
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, Gap{Lo: pairs[i], Hi: pairs[i+1], Since: t0})
	}
	return out
}

func TestCursorAdvanceRecordsGaps(t *testing.T) {
	t.Parallel()
	c := Cursor{Watermark: 10}
	c.advance([]int64{11, 14, 15, 20}, t0, 0)
	want := Cursor{Watermark: 20, Gaps: gaps(12, 13, 16, 19)}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("advance = %+v, want %+v", c, want)
	}
	c.advance(nil, t0, 0)
	if c.Watermark != 20 {
		t.Errorf("empty batch moved the watermark to %d", c.Watermark)
	}
	// Ids at or below the watermark are never new gaps.
	c.advance([]int64{5, 21}, t0, 0)
	if c.Watermark != 21 || len(c.Gaps) != 2 {
		t.Errorf("after a stale id: %+v", c)
	}
}

func TestCursorContains(t *testing.T) {
	t.Parallel()
	c := Cursor{Watermark: 20, Gaps: gaps(12, 13, 16, 19)}
	for id, want := range map[int64]bool{1: true, 11: true, 12: false, 13: false, 14: true, 15: true, 16: false, 19: false, 20: true, 21: false} {
		if got := c.Contains(engine.IntID(id)); got != want {
			t.Errorf("Contains(%d) = %v, want %v", id, got, want)
		}
	}
}

func TestCursorFillSplitsGaps(t *testing.T) {
	t.Parallel()
	c := Cursor{Watermark: 30, Gaps: gaps(10, 20, 25, 25)}
	c.fill([]int64{25, 15, 10, 20, 99})
	want := gaps(11, 14, 16, 19)
	if !reflect.DeepEqual(c.Gaps, want) {
		t.Fatalf("fill = %+v, want %+v", c.Gaps, want)
	}
	if c.gapIDs() != 8 {
		t.Errorf("gapIDs = %d, want 8", c.gapIDs())
	}
}

func TestCursorExpire(t *testing.T) {
	t.Parallel()
	c := Cursor{Watermark: 30, Gaps: []Gap{
		{Lo: 1, Hi: 3, Since: t0},
		{Lo: 5, Hi: 5, Since: t0.Add(time.Minute)},
	}}
	if n := c.expire(t0.Add(time.Minute), time.Minute); n != 0 {
		t.Errorf("expired %d ids at exactly the horizon, want 0", n)
	}
	if n := c.expire(t0.Add(time.Minute+time.Second), time.Minute); n != 3 {
		t.Errorf("expired %d ids, want 3", n)
	}
	if !reflect.DeepEqual(c.Gaps, []Gap{{Lo: 5, Hi: 5, Since: t0.Add(time.Minute)}}) {
		t.Errorf("kept %+v", c.Gaps)
	}
}

func TestCursorSince(t *testing.T) {
	t.Parallel()
	old := Cursor{Watermark: 100, Gaps: gaps(50, 52, 90, 90)}
	cur := Cursor{Watermark: 130, Gaps: gaps(51, 51, 120, 125)}
	got := cur.since(old)
	// Old gaps now read (50, 52; 90) and the new range minus cur's gaps.
	want := []Gap{{Lo: 50, Hi: 50}, {Lo: 52, Hi: 52}, {Lo: 90, Hi: 90}, {Lo: 101, Hi: 119}, {Lo: 126, Hi: 130}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("since = %+v, want %+v", got, want)
	}
	// A cursor behind the old one has nothing the old one lacks, except
	// the old gaps it has read.
	behind := Cursor{Watermark: 60}
	if got := behind.since(old); !reflect.DeepEqual(got, []Gap{{Lo: 50, Hi: 52}}) {
		t.Errorf("since from behind = %+v", got)
	}
}

func TestNormalizeGaps(t *testing.T) {
	t.Parallel()
	got := normalizeGaps([]Gap{{Lo: 8, Hi: 9}, {Lo: 1, Hi: 2}, {Lo: 3, Hi: 4}, {Lo: 9, Hi: 12}})
	want := []Gap{{Lo: 1, Hi: 4}, {Lo: 8, Hi: 12}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("normalizeGaps = %+v, want %+v", got, want)
	}
}

func TestCursorResolve(t *testing.T) {
	t.Parallel()
	settled := t0.Add(gapSettle)
	for _, tc := range []struct {
		name     string
		gaps     []Gap
		xmin     uint64
		now      time.Time
		want     []Gap
		resolved int64
	}{
		{name: "every transaction that could fill it ended",
			gaps: []Gap{{Lo: 5, Hi: 9, Since: t0, XMax: 100}}, xmin: 100, now: settled, resolved: 5},
		{name: "one may still commit",
			gaps: []Gap{{Lo: 5, Hi: 9, Since: t0, XMax: 100}}, xmin: 99, now: settled,
			want: []Gap{{Lo: 5, Hi: 9, Since: t0, XMax: 100}}},
		{name: "a statement may still be inserting the id it drew",
			gaps: []Gap{{Lo: 5, Hi: 9, Since: t0, XMax: 100}}, xmin: 120, now: t0.Add(gapSettle - time.Millisecond),
			want: []Gap{{Lo: 5, Hi: 9, Since: t0, XMax: 100}}},
		{name: "a gap from an older checkpoint waits for the horizon",
			gaps: []Gap{{Lo: 5, Hi: 9, Since: t0}}, xmin: 1 << 40, now: settled.Add(time.Hour),
			want: []Gap{{Lo: 5, Hi: 9, Since: t0}}},
		{name: "only the settled ones go",
			gaps: []Gap{{Lo: 1, Hi: 1, Since: t0, XMax: 50}, {Lo: 3, Hi: 4, Since: t0, XMax: 150}}, xmin: 100, now: settled,
			want: []Gap{{Lo: 3, Hi: 4, Since: t0, XMax: 150}}, resolved: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Cursor{Watermark: 200, Gaps: tc.gaps}
			if n := c.resolve(tc.xmin, tc.now); n != tc.resolved {
				t.Errorf("resolved %d ids, want %d", n, tc.resolved)
			}
			if !reflect.DeepEqual(c.Gaps, tc.want) && (len(c.Gaps) != 0 || len(tc.want) != 0) {
				t.Errorf("gaps = %+v, want %+v", c.Gaps, tc.want)
			}
		})
	}
}

// uuidAt is a version 7 key of the millisecond t; n tells keys of the
// same millisecond apart.
func uuidAt(t time.Time, n byte) engine.ID {
	u := engine.UUIDLowerBound(t).UUID()
	u[6], u[15] = 0x70, n
	return engine.UUIDID(u)
}

func TestCoreCursor(t *testing.T) {
	t.Parallel()
	a, b, c := uuidAt(t0, 1), uuidAt(t0.Add(time.Second), 1), uuidAt(t0.Add(2*time.Second), 1)
	cur := Cursor{Floor: engine.UUIDLowerBound(t0)}
	cur.see([]engine.ID{c, a})
	cur.see([]engine.ID{b, a})
	if !reflect.DeepEqual(cur.Seen, []engine.ID{a, b, c}) {
		t.Fatalf("seen = %v", cur.Seen)
	}
	below := uuidAt(t0.Add(-time.Second), 9)
	unread := uuidAt(t0.Add(time.Second), 2)
	for id, want := range map[engine.ID]bool{below: true, a: true, b: true, c: true, unread: false} {
		if got := cur.Contains(id); got != want {
			t.Errorf("Contains(%s) = %v, want %v", id, got, want)
		}
	}
	cur.raiseFloor(engine.UUIDLowerBound(t0.Add(time.Second)))
	if !reflect.DeepEqual(cur.Seen, []engine.ID{b, c}) || !cur.Contains(a) || cur.Contains(unread) {
		t.Errorf("after raising the floor: seen %v", cur.Seen)
	}
	cur.raiseFloor(engine.UUIDLowerBound(t0)) // never down
	if cur.Floor != engine.UUIDLowerBound(t0.Add(time.Second)) {
		t.Errorf("the floor went down to %s", cur.Floor)
	}
	if got := cur.ReadBelow(); got != cur.Floor {
		t.Errorf("ReadBelow = %s, want the floor", got)
	}
	old := Cursor{Floor: cur.Floor, Seen: []engine.ID{b}}
	if !cur.readSince(old, c) || cur.readSince(old, b) || cur.readSince(old, unread) {
		t.Error("readSince: want c only")
	}
}

func TestXidTracker(t *testing.T) {
	t.Parallel()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	snap := func(s int, xmin, xmax uint64, xip ...uint64) xidSnapshot {
		return xidSnapshot{xmin: xmin, xmax: xmax, xip: xip, at: at(s)}
	}
	var x xidTracker
	if from, floor := x.advance(snap(0, 10, 10)); !from.IsZero() || !floor.IsZero() {
		t.Fatal("an unstarted tracker gave bounds")
	}
	x.start(snap(0, 7, 10, 7), at(-60)) // 7 was running before the stream
	for _, step := range []struct {
		name        string
		snap        xidSnapshot
		from, floor time.Time
	}{
		// 7 still runs: nothing below its assumed start is read, and the
		// floor stays there; 12 got its id after the previous poll.
		{"a transaction keeps running", snap(1, 7, 13, 7, 12), at(0), at(-60)},
		// 7 ended: its rows may be as old as its assumed start.
		{"the old one ends", snap(2, 12, 14, 12), at(-60), at(0)},
		// 12 ended; it appeared at poll 1, so wrote after poll 0.
		{"the newer one ends", snap(3, 14, 14), at(0), at(3)},
		{"idle", snap(4, 14, 14), at(3), at(4)},
	} {
		from, floor := x.advance(step.snap)
		if !from.Equal(step.from) || !floor.Equal(step.floor) {
			t.Errorf("%s: scan from %v, floor %v; want %v, %v", step.name, from, floor, step.from, step.floor)
		}
	}
	// On a standby the snapshots list no transactions: from xmin and xmax.
	standby := func(s int, xmin, xmax uint64) xidSnapshot {
		return xidSnapshot{xmin: xmin, xmax: xmax, at: at(s), recovery: true}
	}
	x.start(standby(0, 20, 30), at(-60))
	for _, step := range []struct {
		name        string
		snap        xidSnapshot
		from, floor time.Time
	}{
		// 20..29 may be running since before the start.
		{"still running", standby(1, 20, 32), at(-60), at(-60)},
		// Everything below 32 ended; 32 and 33 came after poll 1.
		{"the old ones end", standby(2, 32, 34), at(-60), at(1)},
		{"idle", standby(3, 34, 34), at(1), at(3)},
	} {
		from, floor := x.advance(step.snap)
		if !from.Equal(step.from) || !floor.Equal(step.floor) {
			t.Errorf("standby, %s: scan from %v, floor %v; want %v, %v", step.name, from, floor, step.from, step.floor)
		}
	}

	x.start(snap(0, 5, 9, 5, 8), at(-60))
	if n := x.giveUp(at(-30)); n != 2 {
		t.Errorf("gave up on %d transactions, want 2", n)
	}
	y := x.clone()
	if _, floor := y.advance(snap(1, 5, 9, 5)); !floor.Equal(at(-30)) {
		t.Errorf("floor after giving up = %v, want %v", floor, at(-30))
	}
}
