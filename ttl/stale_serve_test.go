package ttl

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// staleConfig has a lease period (4.5 s; 6 s on memcached) far above the
// bound within which a replica that does not win the refresh gate must
// answer (promptBound), so a request that waits on the lease cannot pass
// for one answered at once, however loaded the machine.
func staleConfig() Config {
	cfg := testConfig()
	p := cfg.Policies[ResourceStatus]
	p.QueryTimeout = 4 * time.Second
	cfg.Policies[ResourceStatus] = p
	return cfg
}

const promptBound = 1500 * time.Millisecond

// timedGet is a Get that must succeed, with its duration.
func timedGet(t *testing.T, c *Cache, s *source) (string, Info, time.Duration) {
	t.Helper()
	start := time.Now()
	v, info := mustGet(t, c, ResourceStatus, "", s)
	return v, info, time.Since(start)
}

// wantOldAtOnce checks that a Get was answered with the old value
// (generation 1), flagged stale with its real age, without waiting on the
// lease.
func wantOldAtOnce(t *testing.T, who, v string, info Info, took time.Duration, age float64) {
	t.Helper()
	if v != gen(1, ResourceStatus) || !info.Cached || !info.Stale || info.AgeSeconds != age {
		t.Fatalf("%s got %s %+v, want the old value (generation 1), cached, stale, age %v", who, v, info, age)
	}
	if took > promptBound {
		t.Fatalf("%s waited %s for the old value: it should be answered at once (lease period %s)",
			who, took, staleConfig().Policy(ResourceStatus).leaseTTL())
	}
}

// setUpExpired computes generation 1 on a, then moves the shared clock past
// the TTL and its grace (expired, far from max staleness): a value the
// replicas must not serve as fresh, and still may serve as stale.
func setUpExpired(t *testing.T, b backend, a replica, clk *clock, src *source) {
	t.Helper()
	mustGet(t, a.Cache, ResourceStatus, "", src)
	if b.mechanism == detector.MechanismRedisSetNX {
		// Its cold-miss lock is released by expiry only (a lease period).
		lockExpired(t, a.Cache, ResourceStatus)
	}
	clk.Advance(90 * time.Second) // TTL 60 s, grace 6 s, max staleness 5 min
}

// Once a value is past its TTL and grace, a replica that does not win the
// refresh gate answers at once with the value it has (in-process or in the
// shared store), flagged stale with its age, instead of waiting on the lease:
// only a true cold miss waits. A holder that died costs one lease period of
// serving the old value and exactly one extra recomputation, by whichever
// replica takes the expired lease.
func TestLosersServeOldValueWhenHolderCrashed(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // each waits for a lease to expire
			clk := newClock()
			p := storetest.Prefix(t)
			cfg := staleConfig()
			a := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			bb := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			crashed := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			src := &source{}
			setUpExpired(t, b, a, clk, src)

			// The crashed replica won the refresh gate and never wrote.
			e := crashed.entry(ResourceStatus, "", false)
			l, err := coord.New(crashed.st, nil).For(b.mechanism).Gate(context.Background(), e.key, e.pol.leaseTTL())
			if err != nil || !l.Won {
				t.Fatalf("taking the refresh lease: won %v, %v", l.Won, err)
			}

			// a holds the value in-process, bb only finds it in the shared
			// store; both answer at once, several requests each.
			var wg sync.WaitGroup
			for i := range 8 {
				r, who := a, "replica a (value in-process)"
				if i%2 == 1 {
					r, who = bb, "replica b (value in the shared store)"
				}
				wg.Go(func() {
					v, info, took := timedGet(t, r.Cache, src)
					wantOldAtOnce(t, who, v, info, took, 90)
				})
			}
			wg.Wait()
			if n := src.count(ResourceStatus); n != 1 {
				t.Fatalf("computed %d times while the dead holder's lease runs, want 1", n)
			}
			for _, r := range []replica{a, bb} {
				if got := counterValue(t, r.reg, "tasker_sidecar_cache_lease_waits_total", nil); got != 0 {
					t.Fatalf("lease_waits = %v, want 0: nobody waits on a lease while an old value exists", got)
				}
				if got := counterValue(t, r.reg, "tasker_sidecar_cache_stale_serves_total", map[string]string{"reason": "refreshing"}); got < 1 {
					t.Fatalf("stale_serves{refreshing} = %v, want ≥ 1", got)
				}
			}

			// The lease expires: exactly one replica takes it over and
			// recomputes; both end up serving its value.
			eventually(t, "both replicas to serve the recomputed value", func() bool {
				var mu sync.Mutex
				ok := true
				var wg sync.WaitGroup
				for _, r := range []replica{a, bb, a, bb} {
					wg.Go(func() {
						v, _ := mustGet(t, r.Cache, ResourceStatus, "", src)
						mu.Lock()
						ok = ok && v == gen(2, ResourceStatus)
						mu.Unlock()
					})
				}
				wg.Wait()
				return ok
			})
			if n := src.count(ResourceStatus); n != 2 {
				t.Fatalf("computed %d times, want 2: one extra computation for the dead holder", n)
			}
		})
	}
}

// A slow recomputation by the replica that won the gate keeps nobody else
// waiting: requests on other replicas, and further requests on the winner's
// own replica, get the old value at once; only the request that runs the
// recomputation waits for it.
func TestSlowWinnerKeepsOthersServing(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			p := storetest.Prefix(t)
			cfg := staleConfig()
			a := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			bb := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			src := &source{}
			setUpExpired(t, b, a, clk, src)

			src.block = make(chan struct{})
			type got struct {
				v    string
				info Info
			}
			first := make(chan got, 1)
			go func() {
				v, info := mustGet(t, a.Cache, ResourceStatus, "", src)
				first <- got{v, info}
			}()
			eventually(t, "a's recomputation to start", func() bool { return src.count(ResourceStatus) == 2 })

			v, info, took := timedGet(t, a.Cache, src)
			wantOldAtOnce(t, "another request on the winner's replica", v, info, took, 90)
			v, info, took = timedGet(t, bb.Cache, src)
			wantOldAtOnce(t, "replica b", v, info, took, 90)

			close(src.block)
			r := <-first
			if r.v != gen(2, ResourceStatus) || r.info.Cached {
				t.Fatalf("the winner's request got %s %+v, want generation 2 computed", r.v, r.info)
			}
			eventually(t, "replica b to pick up the new value", func() bool {
				v, _ := mustGet(t, bb.Cache, ResourceStatus, "", src)
				return v == gen(2, ResourceStatus)
			})
			if n := src.count(ResourceStatus); n != 2 {
				t.Fatalf("computed %d times, want 2", n)
			}
		})
	}
}

// The database is down: the replica whose recomputation failed serves the old
// value (stale-if-error) and holds the gate for its backoff; another replica,
// which has not failed itself, is answered with the same value at once rather
// than after a lease period, and does not hit the database.
func TestDatabaseDownOtherReplicaServesAtOnce(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			p := storetest.Prefix(t)
			cfg := staleConfig()
			// A backoff longer than the lease period: a replica that waits
			// on the lease cannot get in before the old code served.
			cfg.RetryBackoffMin, cfg.RetryBackoffMax = 10*time.Second, 20*time.Second
			a := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			bb := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			src := &source{}
			setUpExpired(t, b, a, clk, src)

			src.fail.Store(true)
			v, info, _ := timedGet(t, a.Cache, src)
			if v != gen(1, ResourceStatus) || !info.Stale {
				t.Fatalf("replica a got %s %+v, want stale generation 1", v, info)
			}
			for range 3 {
				v, info, took := timedGet(t, bb.Cache, src)
				wantOldAtOnce(t, "replica b", v, info, took, 90)
			}
			if n := src.count(ResourceStatus); n != 2 {
				t.Fatalf("computed %d times, want 2 (a's failed attempt only: b waits for a's backoff)", n)
			}
		})
	}
}

// While the cluster's recomputations of a value are failing, the replica that
// wins the gate after another replica's backoff retries in the background:
// its request is answered at once with the old value, not after a
// recomputation that may hang until the query timeout on a sick database.
// It learns of the failures from the shared count, having never failed
// itself.
func TestRetryAfterClusterFailureDoesNotBlock(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			p := storetest.Prefix(t)
			cfg := staleConfig()
			cfg.RetryBackoffMin = time.Second
			a := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			bb := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			src := &source{}
			setUpExpired(t, b, a, clk, src)

			src.fail.Store(true)
			if v, info, _ := timedGet(t, a.Cache, src); v != gen(1, ResourceStatus) || !info.Stale {
				t.Fatalf("replica a got %s %+v, want stale generation 1", v, info)
			}
			// a holds the gate for its 1 s backoff (up to 2 s on
			// memcached's clock): wait until the server lets it go.
			lockExpired(t, a.Cache, ResourceStatus)

			// The database now hangs: b wins the gate and retries in the
			// background.
			src.block = make(chan struct{})
			v, info, took := timedGet(t, bb.Cache, src)
			wantOldAtOnce(t, "replica b, winner of the gate", v, info, took, 90)
			eventually(t, "b's retry to start", func() bool { return src.count(ResourceStatus) == 3 })
			v, info, took = timedGet(t, bb.Cache, src)
			wantOldAtOnce(t, "replica b while its retry hangs", v, info, took, 90)
			close(src.block)
			eventually(t, "b's retry to fail", func() bool {
				return counterValue(t, bb.reg, "tasker_sidecar_cache_refreshes_total", map[string]string{"result": "error"}) == 1
			})
			if got := counterValue(t, bb.reg, "tasker_sidecar_cache_recomputations_total", map[string]string{"reason": "retry"}); got != 1 {
				t.Fatalf("b's recomputations{reason=retry} = %v, want 1", got)
			}
			if n := bb.entry(ResourceStatus, "", false).fails.Load(); n != 2 {
				t.Fatalf("b's failures = %d, want 2 (the cluster's)", n)
			}
		})
	}
}
