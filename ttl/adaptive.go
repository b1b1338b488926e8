package ttl

import (
	"math"
	"sync/atomic"
	"time"
)

// atomicFloat is a float64 updated with compare-and-swap, so statistics are
// kept without locks and without lost updates.
type atomicFloat struct{ bits atomic.Uint64 }

func (f *atomicFloat) load() float64 { return math.Float64frombits(f.bits.Load()) }

func (f *atomicFloat) update(fn func(float64) float64) {
	for {
		old := f.bits.Load()
		if f.bits.CompareAndSwap(old, math.Float64bits(fn(math.Float64frombits(old)))) {
			return
		}
	}
}

// ---- tasker mode ------------------------------------------------------------

// taskerTTL is Tasker's CacheConfig#calculate_adaptive_ttl
// (docs/tasker-semantics.md#adaptive-ttl): the multipliers in Tasker's order, in float64, truncated toward
// zero, clamped to [min_adaptive_ttl, max_adaptive_ttl]. Seconds.
func taskerTTL(cfg TaskerConfig, base int, hitRate, genTime, freq float64) int {
	if !cfg.AdaptiveTTLEnabled {
		return base
	}
	t := float64(base)
	switch {
	case hitRate > 0.8:
		t *= 1.5
	case hitRate > 0 && hitRate < 0.3:
		t *= 0.7
	}
	switch {
	case genTime > 1.0:
		t *= 1.3
	case genTime > 0 && genTime < 0.1:
		t *= 0.8
	}
	switch {
	case freq > 100:
		t *= 1.2
	case freq > 0 && freq < 5:
		t *= 0.9
	}
	return min(max(int(t), cfg.MinAdaptiveTTL), cfg.MaxAdaptiveTTL)
}

// taskerRecord is Tasker's performance record (docs/tasker-semantics.md#adaptive-ttl), kept per
// replica with one atomic update per field instead of Tasker's shared
// read-modify-write of the whole record: each field's update depends only on
// that field, so the per-field updates are exactly Tasker's, without lost
// updates.
type taskerRecord struct {
	hitRate     atomicFloat
	avgGenTime  atomicFloat // seconds
	accessFreq  atomicFloat
	total       atomic.Int64
	hits        atomic.Int64
	misses      atomic.Int64
	lastUpdated atomic.Int64 // unix nanos
}

// record applies one access, as IntelligentCacheManager does after each
// fetch: hit means the value was not computed for this request, duration is
// the wall time of the whole Get (Tasker times the whole fetch).
func (r *taskerRecord) record(cfg TaskerConfig, hit bool, duration time.Duration, now time.Time) {
	s, d := cfg.HitRateSmoothingFactor, cfg.AccessFrequencyDecayRate
	x := 0.0
	if hit {
		x = 1
	}
	r.hitRate.update(func(h float64) float64 { return min(max(h*s+x*(1-s), 0), 1) })
	r.avgGenTime.update(func(a float64) float64 {
		if hit {
			return a * d
		}
		return a*s + duration.Seconds()*(1-s)
	})
	r.accessFreq.update(func(f float64) float64 { return f*d + 1 })
	r.total.Add(1)
	if hit {
		r.hits.Add(1)
	} else {
		r.misses.Add(1)
	}
	r.lastUpdated.Store(now.UnixNano())
}

// ---- cost-aware mode ----------------------------------------------------------

// rateWindow is how long requests are counted before the rate estimate is
// updated.
const rateWindow = 10 * time.Second

// changeDecay weights past observations of whether a value changed: the
// estimate follows roughly the last ten refreshes.
const changeDecay = 0.9

// keyStats are one key's measurements on this replica, all atomics.
type keyStats struct {
	cost atomicFloat // seconds, EWMA of regeneration time, own and other replicas'

	reqs     atomic.Int64 // requests in the current rate window
	winStart atomic.Int64 // unix nanos
	rate     atomicFloat  // requests per second over closed windows

	// Decayed counts of consecutive values compared, how many differed,
	// and the time between them, for the change-rate estimate.
	obs, changed, span atomicFloat
}

func (s *keyStats) request(now time.Time) {
	s.reqs.Add(1)
	n := now.UnixNano()
	start := s.winStart.Load()
	if start == 0 {
		s.winStart.CompareAndSwap(0, n)
		return
	}
	elapsed := time.Duration(n - start)
	if elapsed < rateWindow || !s.winStart.CompareAndSwap(start, n) {
		return
	}
	r := float64(s.reqs.Swap(0)) / elapsed.Seconds()
	s.rate.update(func(old float64) float64 {
		if old == 0 {
			return r
		}
		return old/2 + r/2
	})
}

// requestRate is the closed windows' rate, or the open window's before
// the first one closes.
func (s *keyStats) requestRate(now time.Time) float64 {
	if r := s.rate.load(); r > 0 {
		return r
	}
	start := s.winStart.Load()
	if start == 0 {
		return 0
	}
	elapsed := time.Duration(now.UnixNano() - start).Seconds()
	if elapsed < 1 {
		return 0
	}
	return float64(s.reqs.Load()) / elapsed
}

func (s *keyStats) observeCost(d time.Duration) {
	v := d.Seconds()
	s.cost.update(func(old float64) float64 {
		if old == 0 {
			return v
		}
		return 0.7*old + 0.3*v
	})
}

// observeChange records two consecutive values of the key seen by this
// replica, interval apart.
func (s *keyStats) observeChange(interval time.Duration, differs bool) {
	if interval <= 0 {
		return
	}
	b := 0.0
	if differs {
		b = 1
	}
	s.obs.update(func(o float64) float64 { return o*changeDecay + 1 })
	s.changed.update(func(c float64) float64 { return c*changeDecay + b })
	s.span.update(func(t float64) float64 { return t*changeDecay + interval.Seconds() })
}

// changeRateWith estimates λ, changes per second, with Cho and
// Garcia-Molina's bias-reduced estimator for "changed or not" observations,
// λ = −ln((n − X + 0.5)/(n + 0.5)) / Ī, counting one more observation
// (interval apart, differs) when interval > 0 without recording it. ok is
// false until two comparisons have been seen.
func (s *keyStats) changeRateWith(interval time.Duration, differs bool) (float64, bool) {
	n, x, span := s.obs.load(), s.changed.load(), s.span.load()
	if interval > 0 {
		n, span = n*changeDecay+1, span*changeDecay+interval.Seconds()
		x *= changeDecay
		if differs {
			x++
		}
	}
	if n < 1.5 || span <= 0 {
		return 0, false
	}
	x = min(max(x, 0), n)
	return -math.Log((n-x+0.5)/(n+0.5)) / (span / n), true
}

// costAwareTTL is T* = √(2C / (w·R·λ)): the TTL minimising database time
// per second (C/T) plus the cost of stale reads (w·R·λT/2), clamped to the
// policy's bounds and its staleness budget, then spread by a random jitter.
// Before the change rate is known it is the base TTL; with no reads or no
// changes it is the longest allowed.
//
// The jitter draws the TTL uniformly from a band of width jitter·T: [T(1 −
// jitter), T], below T so the staleness budget holds, except where that
// would reach below min_ttl: there the band starts at min_ttl and extends
// above T, [min_ttl, min_ttl + jitter·T], capped by the upper bound. So keys
// held at min_ttl (volatile, busy results) expire spread out too; only a
// pinned policy (min_ttl = max_ttl) has no room for jitter.
func costAwareTTL(p Policy, cw CostAwareConfig, cost, rate, lambda float64, known bool, u float64) time.Duration {
	upper := min(p.MaxTTL, p.ttlCap())
	lower := min(p.MinTTL, upper)
	var secs float64
	switch {
	case !known:
		secs = p.BaseTTL.Seconds()
	case rate <= 0 || lambda <= 0:
		secs = upper.Seconds()
	default:
		secs = math.Sqrt(2 * cost / (cw.StaleReadCost.Seconds() * rate * lambda))
	}
	// Clamped in float first: the square root of a tiny denominator does
	// not fit a Duration.
	secs = min(max(secs, lower.Seconds()), upper.Seconds())
	width := cw.Jitter * secs
	lo := max(secs-width, lower.Seconds())
	hi := min(lo+width, upper.Seconds())
	t := time.Duration((hi - (hi-lo)*u) * float64(time.Second))
	return min(max(t, lower), upper).Truncate(time.Millisecond)
}
