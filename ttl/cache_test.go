package ttl

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

func TestMissHitAndInfo(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			st := b.open(t, storetest.Prefix(t))
			c := newReplica(t, st, fixedReport(b.mechanism), testConfig(), clk)
			src := &source{}

			v, info := mustGet(t, c.Cache, ResourceStatus, "", src)
			if v != gen(1, ResourceStatus) || info.Cached || info.Stale || info.TTLSeconds != 60 {
				t.Fatalf("first Get = %s %+v, want generation 1, computed, ttl 60", v, info)
			}
			clk.Advance(5 * time.Second)
			v, info = mustGet(t, c.Cache, ResourceStatus, "", src)
			want := Info{Cached: true, AgeSeconds: 5, TTLSeconds: 60}
			if v != gen(1, ResourceStatus) || info != want {
				t.Fatalf("second Get = %s %+v, want generation 1 %+v", v, info, want)
			}
			// Other parameters are another entry.
			if v, _ := mustGet(t, c.Cache, ResourceStatus, "period=12", src); v != gen(2, ResourceStatus) {
				t.Fatalf("Get with other params = %s, want generation 2", v)
			}
			if n := src.count(ResourceStatus); n != 2 {
				t.Fatalf("computed %d times, want 2", n)
			}
			for name, want := range map[string]float64{
				"tasker_sidecar_cache_misses_total":         2,
				"tasker_sidecar_cache_hits_total":           1,
				"tasker_sidecar_cache_recomputations_total": 2,
			} {
				if got := counterValue(t, c.reg, name, map[string]string{"resource": ResourceStatus}); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
			if got := counterValue(t, c.reg, "tasker_sidecar_cache_coordination_mechanism", map[string]string{"mechanism": b.mechanism}); got != 1 {
				t.Errorf("coordination_mechanism{%s} = %v, want 1", b.mechanism, got)
			}
			lint(t, c.reg)
		})
	}
}

func TestInfoJSON(t *testing.T) {
	b, err := json.Marshal(Info{Cached: true, AgeSeconds: 1.5, TTLSeconds: 60, Stale: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"cached":true,"age_seconds":1.5,"ttl_seconds":60,"stale":true}`; string(b) != want {
		t.Fatalf("cache_info = %s, want %s", b, want)
	}
}

func TestSharedLevelAcrossReplicasAndKeyVersion(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := storetest.Prefix(t)
			src := &source{}
			cfg := testConfig()
			cfg.KeyVersion = "v1"
			a := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, nil)
			bb := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, nil)
			mustGet(t, a.Cache, ResourcePerformance, "x", src)
			v, info := mustGet(t, bb.Cache, ResourcePerformance, "x", src)
			if v != gen(1, ResourcePerformance) || !info.Cached {
				t.Fatalf("second replica got %s %+v, want generation 1 from the shared store", v, info)
			}
			if got := counterValue(t, bb.reg, "tasker_sidecar_cache_hits_total", map[string]string{"level": "l2"}); got != 1 {
				t.Fatalf("l2 hits = %v, want 1", got)
			}
			cfg.KeyVersion = "v2"
			other := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, nil)
			if v, info := mustGet(t, other.Cache, ResourcePerformance, "x", src); v != gen(2, ResourcePerformance) || info.Cached {
				t.Fatalf("replica with another key version got %s %+v, want its own computation", v, info)
			}
		})
	}
}

func TestCoalescing(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig()
			pol := cfg.Policies[ResourceBottlenecks]
			pol.MaxWaiters = 50 // all of them wait (32 by default)
			cfg.Policies[ResourceBottlenecks] = pol
			c := newReplica(t, b.open(t, storetest.Prefix(t)), fixedReport(b.mechanism), cfg, nil)
			src := &source{block: make(chan struct{})}
			var wg sync.WaitGroup
			values := make([]string, 50)
			for i := range values {
				wg.Go(func() { values[i], _ = mustGet(t, c.Cache, ResourceBottlenecks, "", src) })
			}
			eventually(t, "the computation to start", func() bool { return src.count(ResourceBottlenecks) > 0 })
			close(src.block)
			wg.Wait()
			for _, v := range values {
				if v != gen(1, ResourceBottlenecks) {
					t.Fatalf("got %s, want generation 1", v)
				}
			}
			if n := src.count(ResourceBottlenecks); n != 1 {
				t.Fatalf("computed %d times, want 1", n)
			}
		})
	}
}

// A value in its refresh-ahead window is served as fresh while exactly one
// background refresh replaces it.
func TestRefreshAhead(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			c := newReplica(t, b.open(t, storetest.Prefix(t)), fixedReport(b.mechanism), testConfig(), clk)
			src := &source{}
			mustGet(t, c.Cache, ResourceStatus, "", src)
			clk.Advance(60*time.Second - 50*time.Millisecond) // window = min(max(3×cost, 100ms), 6s) = 100ms
			v, info := mustGet(t, c.Cache, ResourceStatus, "", src)
			if v != gen(1, ResourceStatus) || info.Stale || !info.Cached {
				t.Fatalf("due value served as %s %+v, want generation 1, cached, not stale", v, info)
			}
			eventually(t, "the refreshed value", func() bool {
				v, _ := mustGet(t, c.Cache, ResourceStatus, "", src)
				return v == gen(2, ResourceStatus)
			})
			_, info = mustGet(t, c.Cache, ResourceStatus, "", src)
			if info.AgeSeconds > 0.01 || info.Stale {
				t.Fatalf("refreshed value info %+v, want fresh", info)
			}
			if n := src.count(ResourceStatus); n != 2 {
				t.Fatalf("computed %d times, want 2", n)
			}
			if got := counterValue(t, c.reg, "tasker_sidecar_cache_refreshes_total", map[string]string{"result": "ok"}); got != 1 {
				t.Fatalf("refreshes{ok} = %v, want 1", got)
			}
		})
	}
}

// Refresh-ahead does not shorten the refresh period: a value recomputed W
// before its predecessor's expiry expires one TTL after the predecessor did,
// so the database sees one recomputation per TTL, not per TTL − W (local_only
// measured 4.10 per window with 4 replicas: 4 × 2 s / 1.95 s). The value's
// ttl_seconds is the TTL plus the lead, and it is never served stale.
func TestRefreshPeriodIsTheTTL(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			cfg := testConfig()
			pol := cfg.Policies[ResourceStatus]
			pol.BaseTTL, pol.MinTTL, pol.MaxTTL = 60*time.Second, 60*time.Second, 60*time.Second // pinned
			cfg.Policies[ResourceStatus] = pol
			c := newReplica(t, b.open(t, storetest.Prefix(t)), fixedReport(b.mechanism), cfg, clk)
			src := &source{}
			mustGet(t, c.Cache, ResourceStatus, "", src)
			expiry := clk.Now().Add(60 * time.Second)
			const lead = 50 * time.Millisecond // inside the 100 ms window
			for i := int64(2); i <= 6; i++ {
				if b.mechanism == detector.MechanismRedisSetNX {
					lockExpired(t, c.Cache, ResourceStatus) // the last computation's lock only expires
				}
				clk.Advance(expiry.Add(-lead).Sub(clk.Now()))
				if v, info := mustGet(t, c.Cache, ResourceStatus, "", src); v != gen(i-1, ResourceStatus) || info.Stale {
					t.Fatalf("refresh %d: due value served as %s %+v", i-1, v, info)
				}
				var info Info
				eventually(t, "the refreshed value", func() bool {
					var v string
					v, info = mustGet(t, c.Cache, ResourceStatus, "", src)
					return v == gen(i, ResourceStatus)
				})
				next := clk.Now().Add(time.Duration((info.TTLSeconds - info.AgeSeconds) * float64(time.Second)))
				if want := expiry.Add(60 * time.Second); next.Sub(want).Abs() > time.Millisecond {
					t.Fatalf("refresh %d: value %+v expires %s after its predecessor, want 60s (one TTL)", i-1, info, next.Sub(expiry))
				}
				if info.TTLSeconds != 60.05 {
					t.Fatalf("refresh %d: ttl_seconds %v, want 60.05 (the TTL and the 50 ms lead)", i-1, info.TTLSeconds)
				}
				expiry = next
			}
			if n := src.count(ResourceStatus); n != 6 {
				t.Fatalf("computed %d times over 5 TTLs after the first, want 6", n)
			}
		})
	}
}

// A refresh that fails leaves the old value in service, flagged stale with
// its real age; retries back off, cluster-wide, until max staleness, after
// which the error reaches the client.
func TestStaleWhileError(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			c := newReplica(t, b.open(t, storetest.Prefix(t)), fixedReport(b.mechanism), testConfig(), clk)
			src := &source{}
			mustGet(t, c.Cache, ResourceStatus, "", src)
			src.fail.Store(true)
			clk.Advance(61 * time.Second)
			v, info := mustGet(t, c.Cache, ResourceStatus, "", src)
			if want := (Info{Cached: true, AgeSeconds: 61, TTLSeconds: 60, Stale: true}); v != gen(1, ResourceStatus) || info != want {
				t.Fatalf("stale Get = %s %+v, want generation 1 %+v", v, info, want)
			}
			eventually(t, "the failed refresh", func() bool {
				mustGet(t, c.Cache, ResourceStatus, "", src)
				return counterValue(t, c.reg, "tasker_sidecar_cache_refreshes_total", map[string]string{"result": "error"}) == 1
			})
			// Backing off: no new attempt until retry_backoff_min has passed.
			for range 20 {
				if v, info := mustGet(t, c.Cache, ResourceStatus, "", src); v != gen(1, ResourceStatus) || !info.Stale {
					t.Fatalf("got %s %+v, want stale generation 1", v, info)
				}
			}
			if n := src.count(ResourceStatus); n != 2 {
				t.Fatalf("computed %d times while backing off, want 2", n)
			}
			fails := counterValue(t, c.reg, "tasker_sidecar_cache_stale_serves_total", map[string]string{"reason": "error"})
			if fails < 20 {
				t.Fatalf("stale_serves{error} = %v, want ≥ 20", fails)
			}
			// After the backoff the next request retries through the gate,
			// which the failed refresher holds for the same backoff in real
			// time: requests keep coming until it opens.
			clk.Advance(time.Second)
			eventually(t, "the second failed refresh", func() bool {
				mustGet(t, c.Cache, ResourceStatus, "", src)
				return counterValue(t, c.reg, "tasker_sidecar_cache_refreshes_total", map[string]string{"result": "error"}) == 2
			})
			// The database comes back: the next attempt after the (doubled)
			// backoff succeeds.
			src.fail.Store(false)
			clk.Advance(2 * time.Second)
			eventually(t, "recovery", func() bool {
				v, info := mustGet(t, c.Cache, ResourceStatus, "", src)
				return v != gen(1, ResourceStatus) && !info.Stale
			})
			// Past max staleness nothing old is served.
			src.fail.Store(true)
			clk.Advance(5*time.Minute + time.Second)
			_, _, err := c.Get(context.Background(), ResourceStatus, "", src.compute(ResourceStatus))
			if !errors.Is(err, errDatabase) {
				t.Fatalf("Get past max staleness: err = %v, want the database error", err)
			}
		})
	}
}

func TestDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.Enabled = false
	c := newReplica(t, memoryStore(t, ""), nil, cfg, nil)
	src := &source{}
	for i := range 3 {
		v, info := mustGet(t, c.Cache, ResourceHandlers, "", src)
		if v != gen(int64(i+1), ResourceHandlers) || info != (Info{}) {
			t.Fatalf("Get %d = %s %+v, want a fresh computation and empty info", i, v, info)
		}
	}
	if d, _ := c.Degraded(); d {
		t.Fatal("a disabled cache reports degraded")
	}
}

func TestComputeErrorOnColdMiss(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := storetest.Prefix(t)
			a := newReplica(t, b.open(t, p), fixedReport(b.mechanism), testConfig(), nil)
			bb := newReplica(t, b.open(t, p), fixedReport(b.mechanism), testConfig(), nil)
			src := &source{}
			src.fail.Store(true)
			if _, _, err := a.Get(context.Background(), ResourceTaskGraph, "1", src.compute(ResourceTaskGraph)); !errors.Is(err, errDatabase) {
				t.Fatalf("err = %v, want the database error", err)
			}
			// The failed winner released its lease: the other replica tries
			// at once instead of waiting for the lease to expire.
			src.fail.Store(false)
			start := time.Now()
			if v, _ := mustGet(t, bb.Cache, ResourceTaskGraph, "1", src); v != gen(2, ResourceTaskGraph) {
				t.Fatalf("got %s, want generation 2", v)
			}
			if d := time.Since(start); d > 250*time.Millisecond && b.mechanism != detector.MechanismRedisSetNX {
				t.Fatalf("second replica waited %s for a released lease", d)
			}
		})
	}
}

// Stop ends a background refresh stuck in the database.
func TestStopCancelsRefresh(t *testing.T) {
	clk := newClock()
	c := newReplica(t, memoryStore(t, ""), nil, testConfig(), clk)
	src := &source{}
	mustGet(t, c.Cache, ResourceStatus, "", src)
	src.block = make(chan struct{})
	clk.Advance(59990 * time.Millisecond)
	mustGet(t, c.Cache, ResourceStatus, "", src)
	eventually(t, "the refresh to start", func() bool { return src.count(ResourceStatus) == 2 })
	done := make(chan struct{})
	go func() { _ = c.Shutdown(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not end a refresh blocked in compute")
	}
}

// A request that gives up waiting gets its context's error; the computation
// carries on for the others: coalesced requests do not fail because the
// first one left.
func TestCallerCancellation(t *testing.T) {
	c := newReplica(t, memoryStore(t, ""), nil, testConfig(), nil)
	src := &source{block: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Get(ctx, ResourcePerformance, "", src.compute(ResourcePerformance))
		errc <- err
	}()
	eventually(t, "the computation to start", func() bool { return src.count(ResourcePerformance) == 1 })
	type answer struct {
		v   string
		err error
	}
	other := make(chan answer, 1)
	go func() {
		v, _, err := c.Get(context.Background(), ResourcePerformance, "", src.compute(ResourcePerformance))
		other <- answer{string(v), err}
	}()
	eventually(t, "the second request to wait", func() bool {
		return counterValue(t, c.reg, "tasker_sidecar_cache_waiters", map[string]string{"resource": ResourcePerformance}) == 2
	})
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) || errors.Is(err, ErrOverloaded) {
		t.Fatalf("err = %v, want context.Canceled, not overloaded", err)
	}
	close(src.block)
	if a := <-other; a.err != nil || a.v != gen(1, ResourcePerformance) {
		t.Fatalf("coalesced request got %q, %v; want generation 1", a.v, a.err)
	}
	if v, info := mustGet(t, c.Cache, ResourcePerformance, "", src); v != gen(1, ResourcePerformance) || !info.Cached {
		t.Fatalf("after the flight: %s %+v, want generation 1 cached", v, info)
	}
}

func TestComputePanicIsAnError(t *testing.T) {
	c := newReplica(t, memoryStore(t, ""), nil, testConfig(), nil)
	_, _, err := c.Get(context.Background(), ResourceHandlers, "", func(context.Context) ([]byte, error) { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v, want the panic as an error", err)
	}
}

func TestGetAfterStop(t *testing.T) {
	c := newReplica(t, memoryStore(t, ""), nil, testConfig(), nil)
	_ = c.Shutdown(context.Background())
	if v, _ := mustGet(t, c.Cache, ResourceHandlers, "", &source{}); v != gen(1, ResourceHandlers) {
		t.Fatalf("Get after Stop = %s", v)
	}
}

// Past the stale-while-revalidate grace a healthy database is asked again,
// synchronously: a rarely read key is not served minutes old. A failing one
// still gets the old value served, flagged stale, until max staleness.
func TestExpiredBeyondGrace(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			c := newReplica(t, b.open(t, storetest.Prefix(t)), fixedReport(b.mechanism), testConfig(), clk)
			src := &source{}
			mustGet(t, c.Cache, ResourceStatus, "", src)
			if b.mechanism == detector.MechanismRedisSetNX {
				// Its lock is released by expiry only (800 ms, exact in
				// Redis): until then a refresh waits and serves the old value.
				lockExpired(t, c.Cache, ResourceStatus)
			}
			clk.Advance(90 * time.Second) // grace is 10% of 60 s
			if v, info := mustGet(t, c.Cache, ResourceStatus, "", src); v != gen(2, ResourceStatus) || info.Cached || info.Stale {
				t.Fatalf("expired value: got %s %+v, want a synchronous recomputation", v, info)
			}
			src.fail.Store(true)
			if b.mechanism == detector.MechanismRedisSetNX {
				// The recomputation's lock too: while it is held, the
				// request would be served the old value at once, without
				// trying the database.
				lockExpired(t, c.Cache, ResourceStatus)
			}
			clk.Advance(90 * time.Second)
			v, info := mustGet(t, c.Cache, ResourceStatus, "", src)
			if want := (Info{Cached: true, AgeSeconds: 90, TTLSeconds: 60, Stale: true}); v != gen(2, ResourceStatus) || info != want {
				t.Fatalf("expired value, failing database: got %s %+v, want %+v", v, info, want)
			}
			// Backing off: served at once, no new attempt.
			if v, info := mustGet(t, c.Cache, ResourceStatus, "", src); v != gen(2, ResourceStatus) || !info.Stale {
				t.Fatalf("during backoff: got %s %+v", v, info)
			}
			if n := src.count(ResourceStatus); n != 3 {
				t.Fatalf("computed %d times, want 3", n)
			}
		})
	}
}
