package ttl

import (
	"context"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// With a shared gate the failure backoff is the cluster's: a replica that
// fails after another one did backs off from the cluster's count of failures
// (twice the minimum for the second failure), not from its own (the minimum
// again), and holds the gate that long, so N replicas do not make N retries
// at the minimum spacing. A successful write clears the count: the next
// failure starts at the minimum again.
func TestBackoffIsClusterWide(t *testing.T) {
	for _, b := range sharedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // each waits for two backoffs in real time
			clk := newClock()
			p := storetest.Prefix(t)
			cfg := testConfig()
			// Whole seconds, for memcached's clock.
			cfg.RetryBackoffMin, cfg.RetryBackoffMax = 2*time.Second, 30*time.Second
			stA, stB := b.open(t, p), b.open(t, p)
			a := newReplica(t, stA, fixedReport(b.mechanism), cfg, clk)
			bb := newReplica(t, stB, fixedReport(b.mechanism), cfg, clk)
			src := &source{}
			mustGet(t, a.Cache, ResourceStatus, "", src)
			if b.mechanism == detector.MechanismRedisSetNX {
				lockExpired(t, a.Cache, ResourceStatus) // its lock is released by expiry only
			}
			ea, eb := a.entry(ResourceStatus, "", false), bb.entry(ResourceStatus, "", false)
			errorsOf := func(r replica) float64 {
				return counterValue(t, r.reg, "tasker_sidecar_cache_refreshes_total", map[string]string{"result": "error"})
			}

			// The database goes down; the value goes stale (within its grace,
			// so both replicas serve it and refresh in the background).
			src.fail.Store(true)
			clk.Advance(61 * time.Second)
			eventually(t, "a's refresh to fail", func() bool {
				mustGet(t, a.Cache, ResourceStatus, "", src)
				return errorsOf(a) == 1
			})
			if n, at, want := ea.fails.Load(), ea.retryAt.Load(), clk.Now().Add(cfg.RetryBackoffMin).UnixNano(); n != 1 || at != want {
				t.Fatalf("a after the first failure: fails %d, retry at %d; want 1 and now + %s", n, at, cfg.RetryBackoffMin)
			}

			// b, which has not failed itself, gets the gate once a's backoff
			// is over, and fails too: its backoff is the cluster's second.
			eventually(t, "b's refresh to fail", func() bool {
				v, info := mustGet(t, bb.Cache, ResourceStatus, "", src)
				if v != gen(1, ResourceStatus) || !info.Stale {
					t.Fatalf("b got %s %+v, want stale generation 1", v, info)
				}
				return errorsOf(bb) == 1
			})
			if n, at, want := eb.fails.Load(), eb.retryAt.Load(), clk.Now().Add(2*cfg.RetryBackoffMin).UnixNano(); n != 2 || at != want {
				t.Fatalf("b after the cluster's second failure: fails %d, retry at %d (now + %s); want 2 and now + %s",
					n, at, time.Duration(at-clk.Now().UnixNano()), 2*cfg.RetryBackoffMin)
			}
			// ...and holds the gate for it, in the shared store.
			left, ok, err := stB.(store.TTLReader).TTL(context.Background(), eb.key+coord.LockSuffix)
			if err != nil || !ok || left <= cfg.RetryBackoffMin {
				t.Fatalf("gate held for %s more (found %v, %v), want more than %s", left, ok, err, cfg.RetryBackoffMin)
			}
			if n := src.count(ResourceStatus); n != 3 {
				t.Fatalf("computed %d times, want 3: the first value and one attempt per backoff", n)
			}

			// The database is back: once the backoff is over, one replica
			// recomputes, and the write clears the count.
			src.fail.Store(false)
			clk.Advance(2 * cfg.RetryBackoffMin)
			eventually(t, "both replicas to serve the new value", func() bool {
				va, _ := mustGet(t, a.Cache, ResourceStatus, "", src)
				vb, _ := mustGet(t, bb.Cache, ResourceStatus, "", src)
				return va == gen(4, ResourceStatus) && vb == gen(4, ResourceStatus)
			})
			if _, found, err := stA.Get(context.Background(), ea.key+coord.FailSuffix); err != nil || found {
				t.Fatalf("failure count still in the shared store after a write (found %v, %v)", found, err)
			}
			if n := ea.fails.Load(); n != 0 {
				t.Fatalf("a's failures = %d after the recovery, want 0", n)
			}

			// The next outage starts from the minimum backoff again.
			src.fail.Store(true)
			clk.Advance(61 * time.Second)
			eventually(t, "a failure after the recovery", func() bool {
				mustGet(t, a.Cache, ResourceStatus, "", src)
				return ea.fails.Load() > 0
			})
			if n := ea.fails.Load(); n != 1 {
				t.Fatalf("fails = %d for the first failure after a successful write, want 1", n)
			}
		})
	}
}
