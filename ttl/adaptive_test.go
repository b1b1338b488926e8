package ttl

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"
)

// The worked numbers of Tasker's cache_config_spec
// (docs/tasker-semantics.md#adaptive-ttl):
// min 60, max 1800 unless the case says otherwise.
func TestTaskerTTLWorkedNumbers(t *testing.T) {
	base := DefaultConfig().Tasker
	base.MinAdaptiveTTL, base.MaxAdaptiveTTL = 60, 1800
	cases := []struct {
		name             string
		ttl              int
		hit, gen, freq   float64
		minTTL, maxTTL   int
		want             int
		adaptiveDisabled bool
	}{
		{name: "high hit rate", ttl: 300, hit: 0.9, want: 450},
		{name: "low hit rate", ttl: 300, hit: 0.2, want: 210},
		{name: "slow generation", ttl: 300, gen: 2.0, want: 390},
		{name: "fast generation", ttl: 300, gen: 0.05, want: 240},
		{name: "frequent access", ttl: 300, freq: 150, want: 360},
		{name: "rare access", ttl: 300, freq: 3, want: 270},
		{name: "all up, truncated", ttl: 300, hit: 0.9, gen: 2.0, freq: 150, want: 702},
		{name: "clamped to min", ttl: 120, hit: 0.2, gen: 0.05, freq: 3, minTTL: 100, want: 100},
		{name: "clamped to max", ttl: 800, hit: 0.9, gen: 2.0, freq: 150, maxTTL: 1000, want: 1000},
		{name: "nothing measured", ttl: 300, want: 300},
		{name: "disabled returns base unclamped", ttl: 20, hit: 0.9, adaptiveDisabled: true, want: 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			if tc.minTTL != 0 {
				cfg.MinAdaptiveTTL = tc.minTTL
			}
			if tc.maxTTL != 0 {
				cfg.MaxAdaptiveTTL = tc.maxTTL
			}
			cfg.AdaptiveTTLEnabled = !tc.adaptiveDisabled
			if got := taskerTTL(cfg, tc.ttl, tc.hit, tc.gen, tc.freq); got != tc.want {
				t.Fatalf("taskerTTL = %d, want %d", got, tc.want)
			}
		})
	}
}

// Tasker's performance record updates (docs/tasker-semantics.md#adaptive-ttl) and their derived
// behaviour with the defaults.
func TestTaskerRecord(t *testing.T) {
	cfg := DefaultConfig().Tasker
	now := time.Now()
	var r taskerRecord
	r.record(cfg, false, 50*time.Millisecond, now)
	if r.hitRate.load() != 0 || math.Abs(r.avgGenTime.load()-0.005) > 1e-12 || r.accessFreq.load() != 1 {
		t.Fatalf("after one miss: hit %v gen %v freq %v, want 0, 0.005, 1", r.hitRate.load(), r.avgGenTime.load(), r.accessFreq.load())
	}
	// The typical second request for a key that built in under a second:
	// 60 × 0.8 × 0.9 = 43.
	if got := taskerTTL(cfg, 60, r.hitRate.load(), r.avgGenTime.load(), r.accessFreq.load()); got != 43 {
		t.Fatalf("TTL after one miss = %d, want 43", got)
	}
	want := []float64{0.1, 0.19, 0.271}
	for i, w := range want {
		r.record(cfg, true, time.Millisecond, now)
		if math.Abs(r.hitRate.load()-w) > 1e-9 {
			t.Fatalf("hit rate after %d hits = %v, want %v", i+1, r.hitRate.load(), w)
		}
	}
	if math.Abs(r.avgGenTime.load()-0.005*math.Pow(0.95, 3)) > 1e-12 {
		t.Fatalf("hits decay the generation time by 0.95 each: got %v", r.avgGenTime.load())
	}
	hits := 3
	for r.hitRate.load() <= 0.8 {
		r.record(cfg, true, time.Millisecond, now)
		hits++
	}
	if hits != 16 {
		t.Fatalf("%d consecutive hits to exceed 0.8, want 16", hits)
	}
	for range 500 {
		r.record(cfg, true, time.Millisecond, now)
	}
	if f := r.accessFreq.load(); math.Abs(f-20) > 1e-6 {
		t.Fatalf("access frequency converges to 1/(1−d) = 20, got %v", f)
	}
	if r.total.Load() != 517 || r.misses.Load() != 1 || r.hits.Load() != 516 {
		t.Fatalf("counts total %d hits %d misses %d", r.total.Load(), r.hits.Load(), r.misses.Load())
	}
}

// In tasker mode the cache writes Tasker's TTL: the first value of a key gets
// the base, the next one the base adjusted by the record (60 → 43).
func TestTaskerModeTTL(t *testing.T) {
	cfg := testConfig()
	cfg.Mode = ModeTasker
	clk := newClock()
	c := newReplica(t, memoryStore(t, ""), nil, cfg, clk)
	src := &source{}
	if _, info := mustGet(t, c.Cache, ResourceStatus, "", src); info.TTLSeconds != 60 {
		t.Fatalf("first TTL = %v, want 60", info.TTLSeconds)
	}
	clk.Advance(5*time.Minute + time.Second)
	if _, info := mustGet(t, c.Cache, ResourceStatus, "", src); info.TTLSeconds != 43 {
		t.Fatalf("second TTL = %v, want 43", info.TTLSeconds)
	}
	// A resource without a policy of its own uses Tasker's default_ttl.
	if _, info := mustGet(t, c.Cache, "custom", "", src); info.TTLSeconds != 300 {
		t.Fatalf("default resource TTL = %v, want 300", info.TTLSeconds)
	}
}

// A pinned policy (min_ttl = max_ttl) keeps its TTL in tasker mode too,
// where Tasker's own clamp would otherwise stretch it to min_adaptive_ttl.
func TestTaskerModeKeepsPinnedTTL(t *testing.T) {
	cfg := testConfig()
	cfg.Mode = ModeTasker
	pol := cfg.Policy(ResourceStatus)
	pol.BaseTTL, pol.MinTTL, pol.MaxTTL = 5*time.Second, 5*time.Second, 5*time.Second
	cfg.Policies[ResourceStatus] = pol
	c := newReplica(t, memoryStore(t, ""), nil, cfg, newClock())
	if _, info := mustGet(t, c.Cache, ResourceStatus, "", &source{}); info.TTLSeconds != 5 {
		t.Fatalf("pinned TTL = %v, want 5", info.TTLSeconds)
	}
}

func TestCostAwareTTL(t *testing.T) {
	p := Policy{BaseTTL: 90 * time.Second, MinTTL: 30 * time.Second, MaxTTL: 300 * time.Second,
		MaxStaleness: 10 * time.Minute, QueryTimeout: 30 * time.Second}
	cw := CostAwareConfig{StaleReadCost: 10 * time.Millisecond}
	cases := []struct {
		name               string
		cost, rate, lambda float64
		known              bool
		u, jitter          float64
		pol                *Policy
		want               time.Duration
	}{
		{name: "unknown change rate: base", cost: 2, rate: 1, known: false, want: 90 * time.Second},
		{name: "never changes: max", cost: 2, rate: 1, lambda: 0, known: true, want: 300 * time.Second},
		{name: "nobody reads: max", cost: 2, rate: 0, lambda: 0.1, known: true, want: 300 * time.Second},
		// √(2·2 / (0.01·1·(1/60))) = √24000 = 154.919 s
		{name: "square-root law", cost: 2, rate: 1, lambda: 1.0 / 60, known: true, want: 154919 * time.Millisecond},
		// four times the readers: half the TTL
		{name: "busier: shorter", cost: 2, rate: 4, lambda: 1.0 / 60, known: true, want: 77459 * time.Millisecond},
		{name: "volatile: min", cost: 0.05, rate: 20, lambda: 1, known: true, want: 30 * time.Second},
		{name: "jitter shortens", cost: 2, rate: 0, known: true, u: 0.5, jitter: 0.1, want: 285 * time.Second},
		// At min_ttl the band [30 s, 45 s] starts at the bound: 45 − 0.9·15.
		{name: "jitter at min stays above it", cost: 0.05, rate: 20, lambda: 1, known: true, u: 0.9, jitter: 0.5, want: 31500 * time.Millisecond},
		{name: "staleness budget caps max", cost: 2, rate: 0, known: true,
			pol:  &Policy{BaseTTL: 90 * time.Second, MinTTL: 30 * time.Second, MaxTTL: 300 * time.Second, MaxStaleness: 200 * time.Second, QueryTimeout: 30 * time.Second},
			want: 140 * time.Second},
		{name: "huge cost stays finite", cost: 1e300, rate: 1e-300, lambda: 1e-300, known: true, want: 300 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := p
			if tc.pol != nil {
				pol = *tc.pol
			}
			c := cw
			c.Jitter = tc.jitter
			if got := costAwareTTL(pol, c, tc.cost, tc.rate, tc.lambda, tc.known, tc.u); got != tc.want {
				t.Fatalf("costAwareTTL = %s, want %s", got, tc.want)
			}
		})
	}
}

// Jitter spreads expiries wherever the TTL lands: in the middle of the
// bounds it shortens T by up to jitter·T; at min_ttl, where shortening is not
// allowed, it lengthens it by up to jitter·T instead (it used to be clamped
// back to min_ttl, so every key held there expired in step); at the staleness
// cap it shortens; a pinned policy (min = max) keeps its exact TTL.
func TestCostAwareJitterBands(t *testing.T) {
	p := Policy{BaseTTL: 90 * time.Second, MinTTL: 30 * time.Second, MaxTTL: 300 * time.Second,
		MaxStaleness: 10 * time.Minute, QueryTimeout: 30 * time.Second}
	pinned := Policy{BaseTTL: 30 * time.Second, MinTTL: 30 * time.Second, MaxTTL: 30 * time.Second,
		MaxStaleness: 10 * time.Minute, QueryTimeout: 30 * time.Second}
	cw := CostAwareConfig{StaleReadCost: 10 * time.Millisecond, Jitter: 0.1}
	us := []float64{0, 0.25, 0.5, 0.75, 0.999}
	cases := []struct {
		name               string
		pol                Policy
		cost, rate, lambda float64
		lo, hi             time.Duration // band the TTLs must fill
	}{
		// T* = √(2·0.05/(0.01·20·1)) = 0.71 s, clamped to 30 s.
		{"at min_ttl", p, 0.05, 20, 1, 30 * time.Second, 33 * time.Second},
		// T* = 154.9 s.
		{"between the bounds", p, 2, 1, 1.0 / 60, 139427 * time.Millisecond, 154919 * time.Millisecond},
		// No reads: max_ttl.
		{"at max_ttl", p, 2, 0, 0.1, 270 * time.Second, 300 * time.Second},
		// T* = √(2·0.5/(0.01·1·0.09765625)) = 32 s, just above min_ttl:
		// T(1 − j) = 28.8 s would be below it, so the band starts at
		// min_ttl and is jitter·T = 3.2 s wide.
		{"just above min_ttl", p, 0.5, 1, 0.09765625, 30 * time.Second, 33200 * time.Millisecond},
		{"pinned", pinned, 0.05, 20, 1, 30 * time.Second, 30 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for _, u := range us {
				got := costAwareTTL(tc.pol, cw, tc.cost, tc.rate, tc.lambda, true, u)
				if got < tc.lo || got > tc.hi {
					t.Errorf("U = %v: TTL %s outside [%s, %s]", u, got, tc.lo, tc.hi)
				}
				if got < tc.pol.MinTTL || got > min(tc.pol.MaxTTL, tc.pol.ttlCap()) {
					t.Errorf("U = %v: TTL %s outside the policy's bounds", u, got)
				}
				seen[got] = true
			}
			want := len(us)
			if tc.lo == tc.hi {
				want = 1
			}
			if len(seen) != want {
				t.Fatalf("%d distinct TTLs for %d values of U, want %d: %v", len(seen), len(us), want, seen)
			}
		})
	}
}

func TestChangeRateEstimator(t *testing.T) {
	var s keyStats
	if _, ok := s.changeRateWith(0, false); ok {
		t.Fatal("estimate before any observation")
	}
	// A value that changes at every 10 s refresh changes faster than it is
	// refreshed; one that never changes has rate 0.
	for range 30 {
		s.observeChange(10*time.Second, true)
	}
	fast, ok := s.changeRateWith(0, false)
	if !ok || fast < 0.1 {
		t.Fatalf("always changing: λ = %v, want ≥ 1/10 s", fast)
	}
	var still keyStats
	for range 30 {
		still.observeChange(10*time.Second, false)
	}
	if l, ok := still.changeRateWith(0, false); !ok || l != 0 {
		t.Fatalf("never changing: λ = %v, want 0", l)
	}
	// Half the refreshes see a change: λ ≈ ln 2 / 10 s.
	var half keyStats
	for i := range 200 {
		half.observeChange(10*time.Second, i%2 == 0)
	}
	if l, _ := half.changeRateWith(0, false); math.Abs(l-math.Ln2/10) > 0.02 {
		t.Fatalf("half changing: λ = %v, want ≈ %v", l, math.Ln2/10)
	}
}

func TestRequestRate(t *testing.T) {
	var s keyStats
	start := time.Now()
	for i := range 50 {
		s.request(start.Add(time.Duration(i) * 100 * time.Millisecond))
	}
	if r := s.requestRate(start.Add(5 * time.Second)); math.Abs(r-10) > 0.5 {
		t.Fatalf("open window rate = %v, want ≈ 10/s", r)
	}
	for i := range 150 {
		s.request(start.Add(5*time.Second + time.Duration(i)*100*time.Millisecond))
	}
	if r := s.requestRate(start.Add(20 * time.Second)); math.Abs(r-10) > 0.5 {
		t.Fatalf("closed window rate = %v, want ≈ 10/s", r)
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	in := &envelope{at: time.UnixMicro(1_700_000_000_123_456), ttl: 90 * time.Second, cost: 1234 * time.Microsecond,
		value: []byte("{\"a\":\n1}")}
	in.digest = digestOf(in.value)
	out, err := decodeEnvelope(in.encode())
	if err != nil {
		t.Fatal(err)
	}
	if !out.at.Equal(in.at) || out.ttl != in.ttl || out.cost != in.cost || out.digest != in.digest || string(out.value) != string(in.value) {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
	for _, bad := range []string{"", "hello", "tsc1 1 2 3\n{}", "tsc1 1 2 3 zz\n{}", "tsc1 -1 2 3 ab\n{}", "tsc1 1 2 3 ab"} {
		if _, err := decodeEnvelope([]byte(bad)); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
}

// In cost-aware mode the TTL follows what it measures: a value that never
// changes drifts to max_ttl, one that changes at every refresh and is read
// often drops to min_ttl.
func TestCostAwareModeAdapts(t *testing.T) {
	cases := []struct {
		name     string
		changing bool
		reads    int // per simulated second
		want     float64
	}{
		{"unchanged value: max", false, 1, 120},
		{"volatile and busy: min", true, 100, 15},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			c := newReplica(t, memoryStore(t, ""), nil, testConfig(), clk)
			n := 0
			compute := func(context.Context) ([]byte, error) {
				n++
				if tc.changing {
					return fmt.Appendf(nil, `{"n":%d}`, n), nil
				}
				return []byte(`{"n":0}`), nil
			}
			get := func() Info {
				_, info, err := c.Get(context.Background(), ResourceStatus, "", compute)
				if err != nil {
					t.Fatal(err)
				}
				return info
			}
			info := get()
			for range 6 {
				// Read at the given rate through the value's lifetime, then
				// let it go stale and wait for the refresh.
				for s := 0.0; s < info.TTLSeconds; s++ {
					for range tc.reads {
						get()
					}
					clk.Advance(time.Second)
				}
				eventually(t, "the refresh", func() bool {
					info = get()
					return info.AgeSeconds < 1
				})
			}
			if info.TTLSeconds != tc.want {
				t.Fatalf("TTL after 6 refreshes = %v, want %v", info.TTLSeconds, tc.want)
			}
		})
	}
}
