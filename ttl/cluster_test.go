package ttl

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// Several sidecar replicas, each with its own store client, share one
// store under concurrent load: a cold start and a refresh each cost one
// computation per resource for the whole cluster with a shared mechanism,
// and at most one per replica without one.
func TestReplicasShareOneComputation(t *testing.T) {
	const replicas, clients, rounds = 8, 32, 20
	resources := []string{ResourceStatus, ResourcePerformance, ResourceBottlenecks}
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			p := storetest.Prefix(t)
			src := &source{delay: 5 * time.Millisecond}
			cfg := testConfig()
			for _, res := range resources {
				pol := cfg.Policies[res]
				pol.BaseTTL, pol.MinTTL = 60*time.Second, 15*time.Second
				cfg.Policies[res] = pol
			}
			var rs []replica
			for range replicas {
				rs = append(rs, newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk))
			}
			limit := int64(1)
			if b.mechanism == detector.MechanismInProcess || b.mechanism == detector.MechanismSharedLocalCoalescing {
				limit = replicas
			}
			hammer := func() {
				var wg sync.WaitGroup
				for i := range clients {
					wg.Go(func() {
						for j := range rounds {
							r := rs[(i+j)%replicas]
							res := resources[(i*7+j)%len(resources)]
							if _, _, err := r.Get(context.Background(), res, "", src.compute(res)); err != nil {
								t.Errorf("Get: %v", err)
							}
						}
					})
				}
				wg.Wait()
			}

			hammer()
			for _, res := range resources {
				if n := src.count(res); n < 1 || n > limit {
					t.Errorf("cold start: %s computed %d times, want 1..%d", res, n, limit)
				}
			}
			before := map[string]int64{}
			for _, res := range resources {
				before[res] = src.count(res)
			}

			// Into the refresh-ahead window of every resource at once.
			clk.Advance(60*time.Second - 50*time.Millisecond)
			hammer()
			for _, res := range resources {
				eventually(t, "every replica to serve the refreshed "+res, func() bool {
					for _, r := range rs {
						v, info, err := r.Get(context.Background(), res, "", src.compute(res))
						if err != nil || info.AgeSeconds > 1 || string(v) == "" {
							return false
						}
					}
					return true
				})
				if n := src.count(res) - before[res]; n < 1 || n > limit {
					t.Errorf("refresh: %s computed %d times, want 1..%d", res, n, limit)
				}
			}
		})
	}
}

// A replica that dies holding a cold-miss lease costs one lease period of
// waiting and no extra computation: the next replica takes the expired
// lease and computes once.
func TestLeaseExpiryAfterCrashedHolder(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			p := storetest.Prefix(t)
			crashed := newReplica(t, b.open(t, p), fixedReport(b.mechanism), testConfig(), nil)
			live := newReplica(t, b.open(t, p), fixedReport(b.mechanism), testConfig(), nil)
			src := &source{}

			// The crashed replica took the lease and never wrote.
			e := crashed.entry(ResourcePerformance, "crash", false)
			co := coord.New(crashed.st, nil).For(b.mechanism)
			_, l, err := co.Get(context.Background(), e.key, e.pol.leaseTTL())
			if err != nil || !l.Won {
				t.Fatalf("taking the lease: won=%v err=%v", l.Won, err)
			}

			start := time.Now()
			v, info := mustGet(t, live.Cache, ResourcePerformance, "crash", src)
			waited := time.Since(start)
			if v != gen(1, ResourcePerformance) || info.Cached {
				t.Fatalf("got %s %+v, want generation 1 computed here", v, info)
			}
			if n := src.count(ResourcePerformance); n != 1 {
				t.Fatalf("computed %d times, want 1", n)
			}
			if waited < 400*time.Millisecond {
				t.Fatalf("waited %s: the lease (800ms) should have been respected", waited)
			}
			if got := counterValue(t, live.reg, "tasker_sidecar_cache_lease_waits_total", nil); got != 1 {
				t.Fatalf("lease_waits = %v, want 1", got)
			}
		})
	}
}

// A replica that dies holding the refresh lease leaves the others serving the
// current value; once the lease expires, one of them refreshes.
func TestRefreshLeaseExpiryAfterCrashedHolder(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			p := storetest.Prefix(t)
			crashed := newReplica(t, b.open(t, p), fixedReport(b.mechanism), testConfig(), clk)
			live := newReplica(t, b.open(t, p), fixedReport(b.mechanism), testConfig(), clk)
			src := &source{}
			mustGet(t, live.Cache, ResourceStatus, "", src)

			e := crashed.entry(ResourceStatus, "", false)
			// With redis_set_nx the first computation's lock is only released
			// by expiry.
			eventually(t, "the crashed replica to take the refresh lease", func() bool {
				l, err := coord.New(crashed.st, nil).For(b.mechanism).Gate(context.Background(), e.key, e.pol.leaseTTL())
				if err != nil {
					t.Fatal(err)
				}
				return l.Won
			})
			clk.Advance(61 * time.Second)
			v, info := mustGet(t, live.Cache, ResourceStatus, "", src)
			if v != gen(1, ResourceStatus) || !info.Stale {
				t.Fatalf("got %s %+v, want stale generation 1 while the lease is held", v, info)
			}
			eventually(t, "the refresh after the lease expired", func() bool {
				v, _ := mustGet(t, live.Cache, ResourceStatus, "", src)
				return v == gen(2, ResourceStatus)
			})
			if n := src.count(ResourceStatus); n != 2 {
				t.Fatalf("computed %d times, want 2", n)
			}
		})
	}
}

// The detector may change the mechanism at run time; the cache follows it on
// the next shared-store operation.
func TestMechanismFollowsReport(t *testing.T) {
	st := openURL(storetest.RedisURL(t))(t, storetest.Prefix(t))
	var mu sync.Mutex
	mech := detector.MechanismRedisLua
	report := func() detector.Report {
		mu.Lock()
		defer mu.Unlock()
		return detector.Report{Mechanism: mech, Store: detector.StoreInfo{Reachable: true}}
	}
	c := newReplica(t, st, report, testConfig(), nil)
	src := &source{}
	for i, m := range []string{detector.MechanismRedisLua, detector.MechanismRedisSetNX, detector.MechanismInProcess} {
		mu.Lock()
		mech = m
		mu.Unlock()
		mustGet(t, c.Cache, ResourceHandlers, fmt.Sprint(i), src)
		if got := counterValue(t, c.reg, "tasker_sidecar_cache_coordination_mechanism", map[string]string{"mechanism": m}); got != 1 {
			t.Fatalf("after switching to %s the gauge says %v", m, got)
		}
	}
}
