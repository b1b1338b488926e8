package collector

import (
	"cmp"
	"slices"
	"sort"
	"time"
)

// Gap is a run of ids [Lo, Hi] below a watermark that had no visible row
// when the watermark passed it. PostgreSQL hands out ids when a row is
// inserted, not when it commits, so a transaction can still commit a row
// with one of these ids; a rolled-back insert leaves its id empty forever.
// Since is when the gap was first seen; it is re-checked until the horizon
// has passed.
type Gap struct {
	Lo    int64     `json:"lo"`
	Hi    int64     `json:"hi"`
	Since time.Time `json:"since"`
}

// Cursor is a reading position in a table followed by id: every id up to
// Watermark has been read, except those in Gaps (sorted, disjoint).
type Cursor struct {
	Watermark int64 `json:"watermark"`
	Gaps      []Gap `json:"gaps,omitempty"`
}

// Contains reports whether the row with this id has been read (or given up
// on): at or below the watermark and in no gap.
func (c Cursor) Contains(id int64) bool {
	if id > c.Watermark {
		return false
	}
	i := sort.Search(len(c.Gaps), func(i int) bool { return c.Gaps[i].Hi >= id })
	return i == len(c.Gaps) || c.Gaps[i].Lo > id
}

// clone copies the gap slice, so the copy can change without touching a
// cursor another goroutine reads (a published checkpoint).
func (c Cursor) clone() Cursor {
	c.Gaps = slices.Clone(c.Gaps)
	return c
}

// gapBounds returns the gaps as two parallel arrays for unnest() in SQL.
// They are never nil: pgx would send NULL, and unnest(NULL) is fine but an
// explicit empty array keeps the plans identical.
func (c Cursor) gapBounds() (lo, hi []int64) {
	lo, hi = make([]int64, len(c.Gaps)), make([]int64, len(c.Gaps))
	for i, g := range c.Gaps {
		lo[i], hi[i] = g.Lo, g.Hi
	}
	return lo, hi
}

// gapIDs is the number of ids in open gaps.
func (c Cursor) gapIDs() int64 {
	var n int64
	for _, g := range c.Gaps {
		n += g.Hi - g.Lo + 1
	}
	return n
}

// advance moves the watermark over ids, the ascending ids above it read in
// one batch, remembering every id it skips as a gap seen at now.
func (c *Cursor) advance(ids []int64, now time.Time) {
	prev := c.Watermark
	for _, id := range ids {
		if id <= prev {
			continue // not above the watermark: a caller bug, never a gap
		}
		if id > prev+1 {
			c.Gaps = append(c.Gaps, Gap{Lo: prev + 1, Hi: id - 1, Since: now})
		}
		prev = id
	}
	c.Watermark = prev
}

// fill removes ids (found rows, any order) from the gaps, splitting a gap
// when the id is inside it.
func (c *Cursor) fill(ids []int64) {
	if len(ids) == 0 || len(c.Gaps) == 0 {
		return
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	out := make([]Gap, 0, len(c.Gaps)+len(ids))
	k := 0
	for _, g := range c.Gaps {
		for k < len(ids) && ids[k] < g.Lo {
			k++
		}
		lo := g.Lo
		for k < len(ids) && ids[k] <= g.Hi {
			if ids[k] > lo {
				out = append(out, Gap{Lo: lo, Hi: ids[k] - 1, Since: g.Since})
			}
			lo = ids[k] + 1
			k++
		}
		if lo <= g.Hi {
			out = append(out, Gap{Lo: lo, Hi: g.Hi, Since: g.Since})
		}
	}
	c.Gaps = out
}

// expire gives up on gaps first seen more than horizon before now and
// returns how many ids that abandons. Callers re-check gaps before expiring
// them, so a row that committed late is found at least once after the
// horizon has passed.
func (c *Cursor) expire(now time.Time, horizon time.Duration) int64 {
	var dropped int64
	kept := c.Gaps[:0]
	for _, g := range c.Gaps {
		if now.Sub(g.Since) > horizon {
			dropped += g.Hi - g.Lo + 1
			continue
		}
		kept = append(kept, g)
	}
	clear(c.Gaps[len(kept):])
	c.Gaps = kept
	return dropped
}

// since returns the ranges of ids that c has read and old has not:
// (old.Watermark, c.Watermark] and old's gaps below c's watermark, minus c's
// own gaps. A new lease holder uses it to find what the previous holder
// did not export.
func (c Cursor) since(old Cursor) []Gap {
	var ranges []Gap
	for _, g := range old.Gaps {
		if g.Lo <= c.Watermark {
			ranges = append(ranges, Gap{Lo: g.Lo, Hi: min(g.Hi, c.Watermark)})
		}
	}
	if c.Watermark > old.Watermark {
		ranges = append(ranges, Gap{Lo: old.Watermark + 1, Hi: c.Watermark})
	}
	var out []Gap
	for _, r := range ranges {
		out = append(out, subtractGaps(r, c.Gaps)...)
	}
	return out
}

func sortGaps(gs []Gap) {
	slices.SortFunc(gs, func(a, b Gap) int { return cmp.Compare(a.Lo, b.Lo) })
}

// subtractGaps removes the sorted, disjoint gaps from the range r.
func subtractGaps(r Gap, gaps []Gap) []Gap {
	var out []Gap
	lo := r.Lo
	for _, g := range gaps {
		if g.Hi < lo || g.Lo > r.Hi {
			continue
		}
		if g.Lo > lo {
			out = append(out, Gap{Lo: lo, Hi: g.Lo - 1})
		}
		lo = g.Hi + 1
	}
	if lo <= r.Hi {
		out = append(out, Gap{Lo: lo, Hi: r.Hi})
	}
	return out
}
