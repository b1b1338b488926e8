package ttl

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// The old value of a synchronous recomputation is judged when it would be
// served, not when the flight started: a computation that fails after
// taking the value past max staleness returns its error, never a value older
// than max staleness. The lease is released, so the next request recomputes
// at once.
func TestColdFailureNeverServesPastMaxStaleness(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			c := newReplica(t, b.open(t, storetest.Prefix(t)), fixedReport(b.mechanism), testConfig(), clk)
			src := &source{}
			mustGet(t, c.Cache, ResourceStatus, "", src)
			if b.mechanism == detector.MechanismRedisSetNX {
				// Its cold-miss lock is released by expiry only (800 ms).
				lockExpired(t, c.Cache, ResourceStatus)
			}
			pol := c.entry(ResourceStatus, "", false).pol
			// Expired, 100 ms short of max staleness: not servable while
			// the database is healthy, so the request recomputes, and still
			// servable if that fails quickly.
			clk.Advance(pol.MaxStaleness - 100*time.Millisecond)
			v, info, err := c.Get(context.Background(), ResourceStatus, "", func(context.Context) ([]byte, error) {
				clk.Advance(pol.QueryTimeout) // fails at its deadline
				return nil, errDatabase
			})
			if !errors.Is(err, errDatabase) {
				t.Fatalf("Get = %q %+v, %v; want the database error, not a value %.1f s old (max staleness %s)",
					v, info, err, info.AgeSeconds, pol.MaxStaleness)
			}
			if got := counterValue(t, c.reg, "tasker_sidecar_cache_stale_serves_total", nil); got != 0 {
				t.Fatalf("stale_serves = %v, want 0", got)
			}
			// Nothing holds the key back: the next request computes.
			if v, info := mustGet(t, c.Cache, ResourceStatus, "", src); v != gen(2, ResourceStatus) || info.Cached || info.AgeSeconds != 0 {
				t.Fatalf("next Get = %s %+v, want generation 2, computed", v, info)
			}
		})
	}
}

// While another replica holds the refresh gate, a request is answered at
// once with the old value only if that value is within max staleness when it
// is handed out; one that has died since is not served: the request waits on
// the lease as one without an old value does and, the holder still not done
// after two lease periods, computes itself.
func TestLeaseWaitNeverServesPastMaxStaleness(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // each waits two lease periods
			clk := newClock()
			st := b.open(t, storetest.Prefix(t))
			c := newReplica(t, st, fixedReport(b.mechanism), testConfig(), clk)
			src := &source{}
			mustGet(t, c.Cache, ResourceStatus, "", src)
			if b.mechanism == detector.MechanismRedisSetNX {
				lockExpired(t, c.Cache, ResourceStatus)
			}
			e := c.entry(ResourceStatus, "", false)
			clk.Advance(e.pol.MaxStaleness - 100*time.Millisecond)

			// Another replica holds the refresh lease and never finishes.
			co := coord.New(st, nil).For(b.mechanism)
			l, err := co.Gate(context.Background(), e.key, 10*time.Second)
			if err != nil || !l.Won {
				t.Fatalf("taking the lease: won %v, %v", l.Won, err)
			}
			t.Cleanup(func() { _ = co.Release(context.Background(), e.key, l) })

			// Within max staleness: served at once, flagged stale, with
			// its age.
			v, info := mustGet(t, c.Cache, ResourceStatus, "", src)
			if age := (e.pol.MaxStaleness - 100*time.Millisecond).Seconds(); v != gen(1, ResourceStatus) || !info.Stale || info.AgeSeconds != age {
				t.Fatalf("Get = %s %+v, want stale generation 1 aged %v s", v, info, age)
			}

			// The old value dies: the next request does not get it, even
			// though this replica is still watching the holder's refresh.
			clk.Advance(200 * time.Millisecond)
			type got struct {
				v    string
				info Info
				err  error
			}
			done := make(chan got, 1)
			go func() {
				v, info, err := c.Get(context.Background(), ResourceStatus, "", src.compute(ResourceStatus))
				done <- got{string(v), info, err}
			}()
			var r got
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Get did not return")
			}
			if r.err != nil || r.v != gen(2, ResourceStatus) || r.info.Cached || r.info.AgeSeconds > e.pol.MaxStaleness.Seconds() {
				t.Fatalf("Get = %s %+v, %v; want generation 2 computed here, not a value past max staleness %s",
					r.v, r.info, r.err, e.pol.MaxStaleness)
			}
			if got := counterValue(t, c.reg, "tasker_sidecar_cache_lease_waits_total", nil); got != 1 {
				t.Fatalf("lease_waits = %v, want 1 (the request after the value died)", got)
			}
		})
	}
}

// A synchronous recomputation that fails and serves the old value from the
// shared store starts the backoff, as a failed background refresh does: the
// next request is served the old value from the in-process level at once
// (stale-if-error), without waiting on the lease this replica holds for the
// backoff.
func TestColdFailureKeepsBackoff(t *testing.T) {
	backends := allBackends(t)
	for _, b := range backends {
		if b.mechanism == detector.MechanismInProcess {
			continue // a second replica needs the shared store
		}
		t.Run(b.name, func(t *testing.T) {
			clk := newClock()
			p := storetest.Prefix(t)
			cfg := testConfig()
			a := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			src := &source{}
			mustGet(t, a.Cache, ResourceStatus, "", src)
			if b.mechanism == detector.MechanismRedisSetNX {
				lockExpired(t, a.Cache, ResourceStatus)
			}
			env := a.entry(ResourceStatus, "", false).env.Load()
			clk.Advance(env.ttl + env.ttl/5) // expired (past the 10 % grace), not dead

			// A replica that does not hold the value yet finds it in the
			// shared store, too old to serve while the database answers.
			bb := newReplica(t, b.open(t, p), fixedReport(b.mechanism), cfg, clk)
			src.fail.Store(true)
			v, info := mustGet(t, bb.Cache, ResourceStatus, "", src)
			if v != gen(1, ResourceStatus) || !info.Cached || !info.Stale {
				t.Fatalf("first Get = %s %+v, want stale generation 1", v, info)
			}
			e := bb.entry(ResourceStatus, "", false)
			if n, at, want := e.fails.Load(), e.retryAt.Load(), clk.Now().Add(cfg.RetryBackoffMin).UnixNano(); n != 1 || at != want {
				t.Fatalf("after the failure: fails %d, retry at %d; want 1 and %d (now + %s)", n, at, want, cfg.RetryBackoffMin)
			}
			v, info = mustGet(t, bb.Cache, ResourceStatus, "", src)
			if v != gen(1, ResourceStatus) || !info.Stale {
				t.Fatalf("second Get = %s %+v, want stale generation 1", v, info)
			}
			if got := counterValue(t, bb.reg, "tasker_sidecar_cache_hits_total", map[string]string{"level": "l1", "freshness": "stale"}); got != 1 {
				t.Fatalf("l1 stale hits = %v, want 1 (served from the in-process level)", got)
			}
			if got := counterValue(t, bb.reg, "tasker_sidecar_cache_lease_waits_total", nil); got != 0 {
				t.Fatalf("lease_waits = %v, want 0", got)
			}
			if n := src.count(ResourceStatus); n != 2 {
				t.Fatalf("computed %d times, want 2 (no retry during the backoff)", n)
			}
		})
	}
}
