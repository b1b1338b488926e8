package collector

import (
	"reflect"
	"testing"
	"time"
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
	c.advance([]int64{11, 14, 15, 20}, t0)
	want := Cursor{Watermark: 20, Gaps: gaps(12, 13, 16, 19)}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("advance = %+v, want %+v", c, want)
	}
	c.advance(nil, t0)
	if c.Watermark != 20 {
		t.Errorf("empty batch moved the watermark to %d", c.Watermark)
	}
	// Ids at or below the watermark are never new gaps.
	c.advance([]int64{5, 21}, t0)
	if c.Watermark != 21 || len(c.Gaps) != 2 {
		t.Errorf("after a stale id: %+v", c)
	}
}

func TestCursorContains(t *testing.T) {
	t.Parallel()
	c := Cursor{Watermark: 20, Gaps: gaps(12, 13, 16, 19)}
	for id, want := range map[int64]bool{1: true, 11: true, 12: false, 13: false, 14: true, 15: true, 16: false, 19: false, 20: true, 21: false} {
		if got := c.Contains(id); got != want {
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
