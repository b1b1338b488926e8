package collector

import (
	"cmp"
	"slices"
	"sort"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// Gap is a run of ids [Lo, Hi] below a watermark that had no visible row
// when the watermark passed it. PostgreSQL hands out ids when a row is
// inserted, not when it commits, so a transaction can still commit a row
// with one of these ids; a rolled-back insert leaves its id empty forever.
// Since is when the gap was first seen. XMax is the xmax of the snapshot
// that first saw it: only a transaction with a smaller transaction id can
// still fill it (see resolve), so once every such transaction has ended
// and the gap has been re-checked, it is dropped, without waiting for the
// horizon.
type Gap struct {
	Lo    int64     `json:"lo"`
	Hi    int64     `json:"hi"`
	Since time.Time `json:"since"`
	XMax  uint64    `json:"xmax,omitempty"`
}

// Cursor is a reading position in a table. On Rails, followed by id: every
// id up to Watermark has been read, except those in Gaps (sorted,
// disjoint). On tasker-core, whose UUIDv7 keys are ordered by creation but
// not by commit, followed by a floor: every row with a key below Floor has
// been read, and of the rows at or above it those in Seen (sorted); see
// stream_keys.go.
type Cursor struct {
	Watermark int64 `json:"watermark"`
	Gaps      []Gap `json:"gaps,omitempty"`

	Floor engine.ID   `json:"floor,omitzero"`
	Seen  []engine.ID `json:"seen,omitempty"`
	// Next is set on core when a poll stopped with rows left (or resumed
	// from a checkpoint): the next poll reads from here at the latest.
	Next engine.ID `json:"next,omitzero"`
}

// Contains reports whether the row with this key has been read (or given
// up on): on Rails at or below the watermark and in no gap; on core below
// the floor or seen.
func (c Cursor) Contains(id engine.ID) bool {
	if id.IsUUID() {
		return id.Compare(c.Floor) < 0 || c.seen(id)
	}
	n := id.Int()
	if n > c.Watermark {
		return false
	}
	i := sort.Search(len(c.Gaps), func(i int) bool { return c.Gaps[i].Hi >= n })
	return i == len(c.Gaps) || c.Gaps[i].Lo > n
}

// ReadBelow is a key below which every row that commits has been read:
// on Rails one past the highest id below the watermark and every gap,
// whose ids may still commit; on core the floor.
func (c Cursor) ReadBelow() engine.ID {
	if c.Floor.IsUUID() {
		return c.Floor
	}
	through := c.Watermark
	for _, g := range c.Gaps {
		through = min(through, g.Lo-1)
	}
	return engine.IntID(through + 1)
}

// clone copies the slices, so the copy can change without touching a
// cursor another goroutine reads (a published checkpoint).
func (c Cursor) clone() Cursor {
	c.Gaps = slices.Clone(c.Gaps)
	c.Seen = slices.Clone(c.Seen)
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
// one batch, remembering every id it skips as a gap seen at now by a
// snapshot whose xmax is xmax.
func (c *Cursor) advance(ids []int64, now time.Time, xmax uint64) {
	prev := c.Watermark
	for _, id := range ids {
		if id <= prev {
			continue // not above the watermark: a caller bug, never a gap
		}
		if id > prev+1 {
			c.Gaps = append(c.Gaps, Gap{Lo: prev + 1, Hi: id - 1, Since: now, XMax: xmax})
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
				out = append(out, Gap{Lo: lo, Hi: ids[k] - 1, Since: g.Since, XMax: g.XMax})
			}
			lo = ids[k] + 1
			k++
		}
		if lo <= g.Hi {
			out = append(out, Gap{Lo: lo, Hi: g.Hi, Since: g.Since, XMax: g.XMax})
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

// gapSettle is how long a gap is kept after it was first seen even when
// every transaction that could fill it has ended (resolve). A row's id
// comes from nextval while its INSERT runs, a moment before the
// transaction gets the transaction id that would have kept the gap open:
// a statement that drew an id just before the snapshot may still be
// finishing its insert.
const gapSettle = 2 * time.Second

// resolve drops the gaps no transaction can fill any more, and returns how
// many ids that settles. A gap seen by a snapshot with xmax X can only be
// filled by a transaction whose id is below X (one that held an id then),
// or by a statement that drew the id just before that snapshot
// (gapSettle). When the oldest transaction still running, xmin, is at or
// above X, every one of them has ended, and the caller has just re-checked
// the gap: its ids belong to rolled-back inserts, or to rows deleted
// before they were seen, and will never commit. This is what keeps a
// database with sparse ids (rollbacks, deletions) from costing a re-check
// of each missing id on every poll until the horizon. A gap without XMax
// (from an older checkpoint) waits for the horizon.
func (c *Cursor) resolve(xmin uint64, now time.Time) int64 {
	var settled int64
	kept := c.Gaps[:0]
	for _, g := range c.Gaps {
		if g.XMax > 0 && xmin >= g.XMax && now.Sub(g.Since) >= gapSettle {
			settled += g.Hi - g.Lo + 1
			continue
		}
		kept = append(kept, g)
	}
	clear(c.Gaps[len(kept):])
	c.Gaps = kept
	return settled
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
