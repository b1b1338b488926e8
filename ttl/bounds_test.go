package ttl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// blob is a JSON string of exactly size bytes that names its key, so that a
// value served for the wrong key shows.
func blob(tag string, size int) []byte {
	v := fmt.Appendf(nil, `"%s:`, tag)
	return append(append(v, strings.Repeat("x", size-len(v)-1)...), '"')
}

func blobOf(tag string, size int) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) { return blob(tag, size), nil }
}

func getOK(t *testing.T, c *Cache, resource, params string, compute func(context.Context) ([]byte, error), opts ...Option) ([]byte, Info) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, info, err := c.Get(ctx, resource, params, compute, opts...)
	if err != nil {
		t.Fatalf("Get(%s, %q): %v", resource, params, err)
	}
	return v, info
}

// Many distinct keys with large values, as a flood of distinct batch
// requests makes: the in-process level keeps within its byte budget by
// evicting, and every answer stays right.
func TestL1ByteBudget(t *testing.T) {
	cfg := testConfig()
	cfg.L1MaxBytes = 1 << 20
	c := newReplica(t, memoryStore(t, ""), nil, cfg, nil)
	const keys, size = 400, 20 << 10 // 8 MB of values through a 1 MiB level
	for i := range keys {
		params := fmt.Sprintf("ids=%d", i)
		if v, _ := getOK(t, c.Cache, ResourceTaskGraph, params, blobOf(params, size)); string(v) != string(blob(params, size)) {
			t.Fatalf("Get(%s) = %.40s…, want its own value", params, v)
		}
	}
	c.l1.CleanUp()
	weight := c.l1.WeightedSize()
	if weight > uint64(cfg.L1MaxBytes) {
		t.Fatalf("in-process level weighs %d bytes, over its budget of %d", weight, cfg.L1MaxBytes)
	}
	held, sum := 0, uint64(0)
	for id, e := range c.l1.All() {
		held++
		sum += uint64(entryOverhead + len(id.resource) + len(id.params) + len(e.key) + len(e.env.Load().value))
	}
	if held == 0 || held*size > int(cfg.L1MaxBytes) {
		t.Fatalf("%d entries of %d bytes held in a %d-byte level", held, size, cfg.L1MaxBytes)
	}
	if sum != weight {
		t.Fatalf("entries weigh %d bytes in all, the level counts %d", sum, weight)
	}
	// Deletion events are delivered in the background.
	eventually(t, "the evictions counted", func() bool {
		return counterValue(t, c.reg, "tasker_sidecar_cache_l1_evictions_total", nil) >= float64(keys-held)
	})
	if got := counterValue(t, c.reg, "tasker_sidecar_cache_l1_bytes", nil); got != float64(weight) {
		t.Fatalf("l1_bytes = %v, want %d", got, weight)
	}
	// An evicted key is computed again, right.
	if v, _ := getOK(t, c.Cache, ResourceTaskGraph, "ids=0", blobOf("ids=0", size)); string(v) != string(blob("ids=0", size)) {
		t.Fatalf("Get(ids=0) after the flood = %.40s…", v)
	}
	lint(t, c.reg)
}

// An entry's weight follows the value it holds: a small value replaced by a
// large one weighs the large one.
func TestL1ReweighsOnNewValue(t *testing.T) {
	clk := newClock()
	c := newReplica(t, memoryStore(t, ""), nil, testConfig(), clk)
	const params = "period=24"
	id := entryID{resource: ResourceStatus, params: params}
	want := func(size int) {
		t.Helper()
		c.l1.CleanUp()
		e, ok := c.l1.GetEntryQuietly(id)
		if !ok {
			t.Fatal("entry not in the in-process level")
		}
		w := uint32(entryOverhead + len(ResourceStatus) + len(params) + len(e.Value.key) + size)
		if e.Weight != w || c.l1.WeightedSize() != uint64(w) {
			t.Fatalf("entry weighs %d (level %d), want %d for a %d-byte value", e.Weight, c.l1.WeightedSize(), w, size)
		}
	}
	getOK(t, c.Cache, ResourceStatus, params, blobOf("small", 100))
	want(100)
	clk.Advance(90 * time.Second) // past TTL and grace: recomputed synchronously
	if v, info := getOK(t, c.Cache, ResourceStatus, params, blobOf("large", 50000)); len(v) != 50000 || info.Cached {
		t.Fatalf("recomputation gave %d bytes %+v, want the new 50000-byte value", len(v), info)
	}
	want(50000)
}

// A value larger than an eighth of the budget is served, not kept.
func TestL1OversizeValueServedNotKept(t *testing.T) {
	cfg := testConfig()
	cfg.L1MaxBytes = 1 << 20
	c := newReplica(t, memoryStore(t, ""), nil, cfg, nil)
	var calls atomic.Int64
	big := func(ctx context.Context) ([]byte, error) { calls.Add(1); return blob("big", 200<<10), nil }
	for i := 1; i <= 2; i++ {
		if v, info := getOK(t, c.Cache, ResourcePerformance, "big", big); len(v) != 200<<10 || info.Cached {
			t.Fatalf("Get %d: %d bytes %+v, want the 200 KiB value, computed", i, len(v), info)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("computed %d times, want 2 (not kept in-process)", n)
	}
	if _, ok := c.l1.GetIfPresent(entryID{resource: ResourcePerformance, params: "big"}); ok {
		t.Fatal("oversize value kept in the in-process level")
	}
	if got := counterValue(t, c.reg, "tasker_sidecar_cache_value_too_large_total", map[string]string{"level": "l1"}); got != 2 {
		t.Fatalf("value_too_large_total{level=l1} = %v, want 2", got)
	}
	// A value within the limit is kept.
	getOK(t, c.Cache, ResourcePerformance, "small", blobOf("small", 100<<10))
	if _, info := getOK(t, c.Cache, ResourcePerformance, "small", blobOf("small", 100<<10)); !info.Cached {
		t.Fatal("a 100 KiB value was not kept in a 1 MiB level")
	}
}

// An entry evicted while its refresh runs is garbage once the refresh ends:
// nothing breaks, and the level holds the entry requests created since.
func TestEvictedDuringRefresh(t *testing.T) {
	clk := newClock()
	c := newReplica(t, memoryStore(t, ""), nil, testConfig(), clk)
	src := &source{}
	mustGet(t, c.Cache, ResourceStatus, "", src)
	id := entryID{resource: ResourceStatus}
	old, _ := c.l1.GetIfPresent(id)
	src.block = make(chan struct{})
	clk.Advance(60*time.Second - 50*time.Millisecond) // due: a background refresh starts
	mustGet(t, c.Cache, ResourceStatus, "", src)
	eventually(t, "the refresh to start", func() bool { return src.count(ResourceStatus) == 2 })
	c.l1.Invalidate(id) // as an eviction would
	close(src.block)
	eventually(t, "the refresh to end", func() bool { return !old.refreshing.Load() })
	if old.env.Load().value == nil || string(old.env.Load().value) != gen(2, ResourceStatus) {
		t.Fatalf("evicted entry's refresh gave %q", old.env.Load().value)
	}
	if _, ok := c.l1.GetIfPresent(id); ok {
		t.Fatal("the refresh put its evicted entry back into the level")
	}
	if v, _ := mustGet(t, c.Cache, ResourceStatus, "", src); v != gen(3, ResourceStatus) {
		t.Fatalf("after the eviction: %s, want a new computation (generation 3)", v)
	}
	if e, ok := c.l1.GetIfPresent(id); !ok || e == old {
		t.Fatal("the new entry is not the one in the level")
	}
}

// A value larger than max_value_bytes is served and kept in-process, never
// written to the shared store; its lease is released, so another replica
// computes its own at once.
func TestMaxValueBytesKeepsLargeValuesOutOfTheStore(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := storetest.Prefix(t)
			cfg := testConfig()
			cfg.MaxValueBytes = 4096
			st := b.open(t, p)
			a := newReplica(t, st, fixedReport(b.mechanism), cfg, nil)
			other := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, nil)
			var calls atomic.Int64
			big := func(context.Context) ([]byte, error) { calls.Add(1); return blob("big", 8192), nil }
			if v, _ := getOK(t, a.Cache, ResourceBottlenecks, "big", big); len(v) != 8192 {
				t.Fatalf("got %d bytes, want 8192", len(v))
			}
			if _, info := getOK(t, a.Cache, ResourceBottlenecks, "big", big); !info.Cached {
				t.Fatal("the large value is not kept in-process")
			}
			key := a.entry(ResourceBottlenecks, "big", false).key
			if _, found, err := st.Get(context.Background(), key); err != nil || found {
				t.Fatalf("shared store has the large value: found %v, err %v", found, err)
			}
			if got := counterValue(t, a.reg, "tasker_sidecar_cache_value_too_large_total", map[string]string{"level": "l2"}); got != 1 {
				t.Fatalf("value_too_large_total{level=l2} = %v, want 1", got)
			}
			if v, info := getOK(t, other.Cache, ResourceBottlenecks, "big", big); len(v) != 8192 || info.Cached {
				t.Fatalf("other replica got %d bytes %+v, want its own computation", len(v), info)
			}
			if n := calls.Load(); n != 2 {
				t.Fatalf("computed %d times, want 2 (one per replica)", n)
			}
			// A value within the limit is shared.
			getOK(t, a.Cache, ResourceBottlenecks, "small", blobOf("small", 1000))
			if _, found, err := st.Get(context.Background(), a.entry(ResourceBottlenecks, "small", false).key); err != nil || !found {
				t.Fatalf("shared store lacks the small value: found %v, err %v", found, err)
			}
		})
	}
}

// LocalOnly values never reach the shared store, nor do their leases or
// failure counts; requests are still coalesced.
func TestLocalOnlyNeverTouchesTheStore(t *testing.T) {
	url := storetest.RedisURL(t)
	admin := storetest.AdminRedis(t, url)
	p := storetest.Prefix(t)
	clk := newClock()
	c := newReplica(t, openURL(url)(t, p), fixedReport(detector.MechanismRedisLua), testConfig(), clk)
	src := &source{block: make(chan struct{})}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			getOK(t, c.Cache, ResourcePerformance, "period=7", src.compute(ResourcePerformance), LocalOnly())
		})
	}
	eventually(t, "the computation to start", func() bool { return src.count(ResourcePerformance) == 1 })
	close(src.block)
	wg.Wait()
	if n := src.count(ResourcePerformance); n != 1 {
		t.Fatalf("10 concurrent requests computed %d times, want 1", n)
	}
	// Refresh ahead, expiry past the grace, and a failing refresh.
	clk.Advance(90*time.Second - 50*time.Millisecond)
	getOK(t, c.Cache, ResourcePerformance, "period=7", src.compute(ResourcePerformance), LocalOnly())
	eventually(t, "the refresh", func() bool { return src.count(ResourcePerformance) == 2 && !c.refreshingAny() })
	clk.Advance(2 * time.Minute)
	src.fail.Store(true)
	if _, info := getOK(t, c.Cache, ResourcePerformance, "period=7", src.compute(ResourcePerformance), LocalOnly()); !info.Stale {
		t.Fatalf("failed recomputation: %+v, want the old value, stale", info)
	}
	if keys := storetest.RedisKeys(t, admin, p); len(keys) != 0 {
		t.Fatalf("LocalOnly left keys in the shared store: %v", keys)
	}
	// The same parameters without LocalOnly are shared.
	src.fail.Store(false)
	getOK(t, c.Cache, ResourcePerformance, "period=7", src.compute(ResourcePerformance))
	if keys := storetest.RedisKeys(t, admin, p); len(keys) == 0 {
		t.Fatal("a shared Get wrote nothing to the store")
	}
}

// refreshingAny says whether an entry of the level is being refreshed.
func (c *Cache) refreshingAny() bool {
	for _, e := range c.l1.All() {
		if e.refreshing.Load() {
			return true
		}
	}
	return false
}

// Past max_waiters requests of a resource, a request is answered at once:
// with its last value within max staleness, flagged stale, or with an
// overloaded error. Saturated says so while it lasts and 10 s after.
func TestWaiterCap(t *testing.T) {
	clk := newClock()
	cfg := testConfig()
	pol := cfg.Policies[ResourceStatus]
	pol.MaxWaiters = 2
	cfg.Policies[ResourceStatus] = pol
	c := newReplica(t, memoryStore(t, ""), nil, cfg, clk)
	src := &source{}
	mustGet(t, c.Cache, ResourceStatus, "old", src)
	clk.Advance(90 * time.Second) // past TTL and grace, within max staleness
	if sat, msg := c.Saturated(); sat {
		t.Fatalf("saturated before any load: %s", msg)
	}

	src.block = make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { mustGet(t, c.Cache, ResourceStatus, "cold", src) })
	}
	eventually(t, "two waiters", func() bool {
		return counterValue(t, c.reg, "tasker_sidecar_cache_waiters", map[string]string{"resource": ResourceStatus}) == 2
	})
	_, _, err := c.Get(context.Background(), ResourceStatus, "cold", src.compute(ResourceStatus))
	var oe *OverloadedError
	if !errors.Is(err, ErrOverloaded) || !errors.As(err, &oe) || oe.Reason != RejectWaiters {
		t.Fatalf("third waiter: err = %v, want an overloaded error (waiters)", err)
	}
	if d, ok := RetryAfter(err); !ok || d != time.Second {
		t.Fatalf("RetryAfter = %s %v, want 1s", d, ok)
	}
	// Another key with an old value is not made to wait either.
	v, info := mustGet(t, c.Cache, ResourceStatus, "old", src)
	if want := (Info{Cached: true, AgeSeconds: 90, TTLSeconds: 60, Stale: true}); v != gen(1, ResourceStatus) || info != want {
		t.Fatalf("old key at the cap: %s %+v, want generation 1 %+v", v, info, want)
	}
	if got := counterValue(t, c.reg, "tasker_sidecar_cache_rejections_total", map[string]string{"resource": ResourceStatus, "reason": RejectWaiters}); got != 2 {
		t.Fatalf("rejections_total{reason=waiters} = %v, want 2", got)
	}
	if sat, msg := c.Saturated(); !sat || !strings.Contains(msg, "status: 2 requests waiting") {
		t.Fatalf("Saturated = %v %q, want true naming status", sat, msg)
	}

	close(src.block)
	wg.Wait()
	if n := src.count(ResourceStatus); n != 2 {
		t.Fatalf("computed %d times, want 2 (old, then cold once)", n)
	}
	if sat, msg := c.Saturated(); !sat || !strings.Contains(msg, "status: requests turned away") {
		t.Fatalf("Saturated just after rejections = %v %q, want true", sat, msg)
	}
	clk.Advance(11 * time.Second)
	if sat, msg := c.Saturated(); sat {
		t.Fatalf("Saturated 11 s after the last rejection: %s", msg)
	}
	lint(t, c.reg)
}

// A request whose deadline comes while it waits for a computation gets the
// old value, flagged stale, or an overloaded error that also wraps the
// deadline. The computation runs on and fills the cache.
func TestDeadlineWhileWaiting(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  bool
	}{{"cold", false}, {"old value", true}} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			cfg := testConfig()
			pol := cfg.Policies[ResourcePerformance]
			pol.QueryTimeout = 10 * time.Second // longer than the test waits
			cfg.Policies[ResourcePerformance] = pol
			c := newReplica(t, memoryStore(t, ""), nil, cfg, clk)
			src := &source{}
			next := int64(1)
			if tc.old {
				mustGet(t, c.Cache, ResourcePerformance, "", src)
				clk.Advance(2 * time.Minute) // TTL 90 s, grace 9 s
				next = 2
			}
			src.block = make(chan struct{})
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			v, info, err := c.Get(ctx, ResourcePerformance, "", src.compute(ResourcePerformance))
			if tc.old {
				if err != nil || string(v) != gen(1, ResourcePerformance) || !info.Stale || !info.Cached {
					t.Fatalf("at the deadline: %s %+v %v, want the old value, stale", v, info, err)
				}
			} else {
				var oe *OverloadedError
				if !errors.Is(err, ErrOverloaded) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &oe) || oe.Reason != RejectDeadline {
					t.Fatalf("at the deadline: err = %v, want overloaded (deadline) wrapping context.DeadlineExceeded", err)
				}
				if _, ok := RetryAfter(err); !ok {
					t.Fatal("no Retry-After")
				}
			}
			if got := counterValue(t, c.reg, "tasker_sidecar_cache_rejections_total", map[string]string{"reason": RejectDeadline}); got != 1 {
				t.Fatalf("rejections_total{reason=deadline} = %v, want 1", got)
			}
			close(src.block)
			eventually(t, "the flight's value in the cache", func() bool {
				v, info := mustGet(t, c.Cache, ResourcePerformance, "", src)
				return v == gen(next, ResourcePerformance) && info.Cached && !info.Stale
			})
			if n := src.count(ResourcePerformance); n != next {
				t.Fatalf("computed %d times, want %d: the flight was not left running", n, next)
			}
		})
	}
}

// A computation whose every waiter's client went away is cancelled, in the
// database too (compute sees its context end), and the next request starts
// afresh; one that a waiter left at its deadline runs on.
func TestAbandonedFlight(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, deadlineFirst := range []bool{false, true} {
				t.Run(fmt.Sprintf("deadline_first=%v", deadlineFirst), func(t *testing.T) {
					testAbandonedFlight(t, b, deadlineFirst)
				})
			}
		})
	}
}

func testAbandonedFlight(t *testing.T, b backend, deadlineFirst bool) {
	cfg := testConfig()
	pol := cfg.Policies[ResourceBottlenecks]
	// Longer than the test waits, and short enough that a lock that
	// redis_set_nx only lets expire does not outlast getOK.
	pol.QueryTimeout = 5 * time.Second
	cfg.Policies[ResourceBottlenecks] = pol
	c := newReplica(t, b.open(t, storetest.Prefix(t)), fixedReport(b.mechanism), cfg, nil)
	var calls atomic.Int64
	observed, release := make(chan error, 1), make(chan struct{})
	compute := func(ctx context.Context) ([]byte, error) {
		n := calls.Add(1)
		if n == 1 {
			select {
			case <-ctx.Done():
				observed <- ctx.Err()
				return nil, ctx.Err()
			case <-release:
			}
		}
		return fmt.Appendf(nil, `{"call":%d}`, n), nil
	}
	waiters := func() float64 {
		return counterValue(t, c.reg, "tasker_sidecar_cache_waiters", map[string]string{"resource": ResourceBottlenecks})
	}
	errs := make(chan error, 2)
	if deadlineFirst {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		go func() { _, _, err := c.Get(ctx, ResourceBottlenecks, "", compute); errs <- err }()
		if err := <-errs; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("first waiter: %v, want its deadline", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	for range 2 {
		go func() { _, _, err := c.Get(ctx, ResourceBottlenecks, "", compute); errs <- err }()
	}
	eventually(t, "two waiters", func() bool { return waiters() == 2 })
	eventually(t, "the computation to start", func() bool { return calls.Load() == 1 })
	cancel()
	for range 2 {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("waiter: %v, want context.Canceled", err)
		}
	}
	if deadlineFirst {
		close(release)
		v, info := getOK(t, c.Cache, ResourceBottlenecks, "", compute)
		if string(v) != `{"call":1}` || calls.Load() != 1 {
			t.Fatalf("after a waiter left at its deadline: %s %+v after %d calls, want the first computation's value", v, info, calls.Load())
		}
		return
	}
	select {
	case err := <-observed:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("computation ended by %v, want its cancellation (not the query timeout)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the abandoned computation was not cancelled")
	}
	eventually(t, "the cancelled recomputation", func() bool {
		return counterValue(t, c.reg, "tasker_sidecar_cache_recomputations_total", map[string]string{"result": "cancelled"}) == 1
	})
	if v, info := getOK(t, c.Cache, ResourceBottlenecks, "", compute); string(v) != `{"call":2}` || info.Cached {
		t.Fatalf("next request: %s %+v, want a new computation", v, info)
	}
	if got := counterValue(t, c.reg, "tasker_sidecar_cache_coordination_errors_total", nil); got != 0 {
		t.Fatalf("coordination_errors_total = %v: an abandoned computation is no store failure", got)
	}
	if got := counterValue(t, c.reg, "tasker_sidecar_cache_refreshes_total", map[string]string{"result": "error"}); got != 0 {
		t.Fatalf("refreshes_total{result=error} = %v: an abandoned computation is no failure", got)
	}
}

// A computation refused because the work behind it is overloaded (an error
// wrapping ErrOverloaded) is not a failure: no backoff, no cluster failure
// count. The old value is served; with none, the error reaches the caller.
func TestOverloadedComputeIsNotAFailure(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			st := b.open(t, storetest.Prefix(t))
			c := newReplica(t, st, fixedReport(b.mechanism), testConfig(), clk)
			var calls atomic.Int64
			var full atomic.Bool
			compute := func(context.Context) ([]byte, error) {
				n := calls.Add(1)
				if full.Load() {
					return nil, fmt.Errorf("analytics connection queue full: %w", ErrOverloaded)
				}
				return fmt.Appendf(nil, `{"call":%d}`, n), nil
			}
			getOK(t, c.Cache, ResourceStatus, "", compute)
			if b.mechanism == detector.MechanismRedisSetNX {
				lockExpired(t, c.Cache, ResourceStatus) // its lock only expires (800 ms)
			}
			full.Store(true)
			clk.Advance(90 * time.Second) // past TTL and grace: recomputed synchronously
			v, info := getOK(t, c.Cache, ResourceStatus, "", compute)
			if string(v) != `{"call":1}` || !info.Stale {
				t.Fatalf("overloaded recomputation: %s %+v, want the old value, stale", v, info)
			}
			e := c.entry(ResourceStatus, "", false)
			if n := e.fails.Load(); n != 0 {
				t.Fatalf("failures = %d, want 0", n)
			}
			if n, _, err := coord.New(st, nil).For(b.mechanism).Failures(context.Background(), e.key); err != nil || n != 0 {
				t.Fatalf("cluster failure count = %d (%v), want 0", n, err)
			}
			for result, want := range map[string]float64{"error": 0, "overloaded": 1} {
				if got := counterValue(t, c.reg, "tasker_sidecar_cache_refreshes_total", map[string]string{"result": result}); got != want {
					t.Fatalf("refreshes_total{result=%s} = %v, want %v", result, got, want)
				}
			}
			// This replica pauses for retry_backoff_min, serving the old value.
			if v, info := getOK(t, c.Cache, ResourceStatus, "", compute); string(v) != `{"call":1}` || !info.Stale || calls.Load() != 2 {
				t.Fatalf("during the pause: %s %+v after %d calls, want the old value without an attempt", v, info, calls.Load())
			}
			// Nothing old: the error reaches the caller.
			_, _, err := c.Get(context.Background(), ResourceStatus, "cold", compute)
			if !errors.Is(err, ErrOverloaded) {
				t.Fatalf("cold overloaded computation: err = %v, want ErrOverloaded", err)
			}
		})
	}
}
