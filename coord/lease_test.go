package coord

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// leaseConfig is the stream's lease configuration (collector.LeaseConfig).
type leaseConfig struct {
	Key string
	TTL time.Duration
}

// newLease is the lease the stream gets from c.
func newLease(c *Coordinator, cfg leaseConfig) (*Lease, error) {
	return c.Lease(context.Background(), cfg.Key, cfg.TTL)
}

// reported is the conditional methods a detection reported, which a test
// changes as a re-run detection would.
type reported struct{ v atomic.Value }

func report(swap, del Conditional) *reported {
	r := &reported{}
	r.set(swap, del)
	return r
}

func (r *reported) set(swap, del Conditional) { r.v.Store(Methods{Swap: swap, Delete: del}) }
func (r *reported) get() Methods              { return r.v.Load().(Methods) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openRedis(t *testing.T, prefix string) store.Store {
	t.Helper()
	st, err := store.Open(store.Config{URL: secret.URL(storetest.RedisURL(t)), KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// expired waits until key is gone from st: a lease that nobody renews
// expires on the store's clock (Redis's own for a real server), so the test
// waits for that to be seen rather than for a guessed time. The deadline is
// hang protection only.
func expired(t *testing.T, st store.Store, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, ok, err := st.Get(context.Background(), key)
		if err != nil {
			t.Fatalf("reading %s: %v", key, err)
		}
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s to expire", key)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// noSwapStore is a store whose compare-and-swap exists as a method but is
// refused at run time, as a Redis that allows neither SET IFEQ nor EVAL.
type noSwapStore struct{ *store.Memory }

func (noSwapStore) CompareAndSwap(context.Context, string, []byte, []byte, time.Duration) (bool, error) {
	return false, fmt.Errorf("no swap here: %w", store.ErrUnsupported)
}

// Lease must refuse a store on which compare-and-swap does not work: a
// lease there could not be renewed and would change hands every TTL.
func TestNewLeaseNeedsWorkingCompareAndSwap(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	redisWith := func(swap, del Conditional) *Coordinator {
		return New(openRedis(t, storetest.Prefix(t)), report(swap, del).get)
	}
	// SET IFEQ needs Redis 8.4 or Valkey 9: whether it works depends on
	// the server the tests run against.
	_, err := CompareAndSwap(ctx, openRedis(t, storetest.Prefix(t)), CondNative, "probe", []byte("a"), []byte("b"), time.Second)
	nativeWorks := err == nil
	unreachable, err := store.Open(store.Config{URL: secret.URL("redis://" + closedPort(t)), DialTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unreachable.Close() })
	unreachableScripts := New(unreachable, nil)
	unreachableWithout, err := store.Open(store.Config{URL: secret.URL("redis://" + closedPort(t)), DialTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unreachableWithout.Close() })
	unreachableNone := New(unreachableWithout, report(CondNone, CondNone).get)

	for _, tc := range []struct {
		name string
		c    *Coordinator
		ok   bool
	}{
		{"memory", New(store.NewMemory(""), nil), true},
		{"redis with scripts", redisWith(CondScript, CondScript), true},
		{"redis where detection found no conditional method", redisWith(CondNone, CondNone), false},
		{"redis without compare-and-swap", redisWith(CondNone, CondScript), false},
		{"redis told to use SET IFEQ", redisWith(CondNative, CondNative), nativeWorks},
		{"compare-and-swap refused at run time", New(noSwapStore{store.NewMemory("")}, nil), false},
		// Cannot tell: the lease behaves as on a store that is down.
		{"unreachable redis", unreachableScripts, true},
		// Nor when detection could not ask it (with scripting off the
		// detector starts without a method): the lease acts as none
		// until a method works.
		{"unreachable redis without a method yet", unreachableNone, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := leaseConfig{Key: "stream:lease", TTL: time.Second}
			l, err := newLease(tc.c, cfg)
			if !tc.ok {
				if !errors.Is(err, ErrNoLease) {
					t.Fatalf("Lease = %v, want ErrNoLease", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lease = %v", err)
			}
			switch tc.c {
			case unreachableScripts:
				return
			case unreachableNone:
				// Held, as every replica without a lease; no error.
				if ok, err := l.Hold(ctx); !ok || err != nil {
					t.Fatalf("Hold = %v, %v; want held, as without a lease", ok, err)
				}
				return
			}
			// A lease it returns can be taken and renewed.
			for i := range 3 {
				if ok, err := l.Hold(ctx); !ok || err != nil {
					t.Fatalf("Hold %d = %v, %v", i, ok, err)
				}
			}
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A lease Coordinator.Lease accepted (the store could not be asked then) on a Redis
// where a later capability detection finds no compare-and-swap must not
// change hands every TTL: it behaves as no lease, every replica holding
// it, and becomes a real lease again once the store can hold one.
func TestLeaseRefusedLaterActsAsNoLease(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	prefix := storetest.Prefix(t)
	a, b := report(CondScript, CondScript), report(CondScript, CondScript)
	cfg := leaseConfig{Key: "stream:lease", TTL: 300 * time.Millisecond}
	st := openRedis(t, prefix)
	la, err := newLease(New(st, a.get), cfg)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := newLease(New(openRedis(t, prefix), b.get), cfg)
	if err != nil {
		t.Fatal(err)
	}
	hold := func(l *Lease) (bool, error) { return l.Hold(ctx) }
	if ok, err := hold(la); !ok || err != nil {
		t.Fatalf("a: Hold = %v, %v; want the free lease", ok, err)
	}
	if ok, err := hold(lb); ok || err != nil {
		t.Fatalf("b: Hold = %v, %v; want it held by a", ok, err)
	}

	// Re-detection: neither SET IFEQ nor EVAL works any more.
	a.set(CondNone, CondNone)
	b.set(CondNone, CondNone)
	if ok, err := hold(la); !ok || !errors.Is(err, ErrNoLease) {
		t.Fatalf("a: first Hold after the refusal = %v, %v; want true and ErrNoLease", ok, err)
	}
	// For several TTLs, both hold it and say nothing more: no flapping.
	// Real time must pass here: what is checked is that nothing changes
	// while keys would have expired on the server.
	for i := range 8 {
		time.Sleep(cfg.TTL / 2)
		if ok, err := hold(la); !ok || err != nil {
			t.Fatalf("a: Hold %d = %v, %v; want held without error", i, ok, err)
		}
		if ok, err := la.Renew(ctx); !ok || err != nil {
			t.Fatalf("a: Renew %d = %v, %v", i, ok, err)
		}
		ok, err := hold(lb)
		if i == 0 && !ok && err == nil {
			continue // a's key has not expired yet
		}
		if !ok || (err != nil && !errors.Is(err, ErrNoLease)) {
			t.Fatalf("b: Hold %d = %v, %v; want held", i, ok, err)
		}
	}
	if !la.Held() || !lb.Held() {
		t.Fatalf("Held = %v, %v; want both", la.Held(), lb.Held())
	}

	// Scripts work again: exactly one of them holds a real lease.
	a.set(CondScript, CondScript)
	b.set(CondScript, CondScript)
	expired(t, st, cfg.Key) // a key taken before the refusal has expired
	okA, errA := hold(la)
	okB, errB := hold(lb)
	if errA != nil || errB != nil || okA == okB {
		t.Fatalf("Hold after recovery = a %v (%v), b %v (%v); want exactly one holder", okA, errA, okB, errB)
	}
	holder := la
	if okB {
		holder = lb
	}
	// Real time past the TTL: the holder keeps the lease by renewing it on
	// the server's clock.
	for i := range 4 {
		time.Sleep(cfg.TTL / 3)
		if ok, err := hold(holder); !ok || err != nil {
			t.Fatalf("holder: Hold %d = %v, %v; want it kept", i, ok, err)
		}
	}
}

func TestLease(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		st   store.Store
	}{
		{"memory", store.NewMemory("")},
		{"redis", openRedis(t, storetest.Prefix(t))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			cfg := leaseConfig{Key: "stream:lease", TTL: 300 * time.Millisecond}
			a, err := newLease(New(tc.st, nil), cfg)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := newLease(New(tc.st, nil), cfg)
			if ok, err := a.Hold(ctx); !ok || err != nil {
				t.Fatalf("a.Hold = %v, %v", ok, err)
			}
			if ok, _ := b.Hold(ctx); ok {
				t.Fatal("b took a held lease")
			}
			if ok, _ := b.Renew(ctx); ok {
				t.Fatal("b renewed a lease it does not hold")
			}
			if ok, _ := a.Hold(ctx); !ok {
				t.Fatal("a could not renew")
			}
			// Renewal keeps it past the first TTL (real time: the key's
			// expiry is the store's).
			for range 4 {
				time.Sleep(100 * time.Millisecond)
				if ok, _ := a.Hold(ctx); !ok {
					t.Fatal("a lost a lease it kept renewing")
				}
			}
			if err := a.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if ok, _ := b.Hold(ctx); !ok {
				t.Fatal("b could not take a released lease")
			}
			// b stops renewing: the lease expires and a takes it back.
			expired(t, tc.st, cfg.Key)
			if ok, _ := a.Renew(ctx); ok {
				t.Fatal("Renew took a free lease")
			}
			if ok, _ := a.Hold(ctx); !ok {
				t.Fatal("a could not take an expired lease")
			}
			if ok, _ := b.Hold(ctx); ok || b.Held() {
				t.Fatal("b still believes it holds the lease")
			}
			// Releasing a lease one does not hold leaves the holder alone.
			if err := b.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if ok, _ := a.Hold(ctx); !ok {
				t.Fatal("b's release removed a's lease")
			}
		})
	}
}

func TestLeaseNeedsAtomicStore(t *testing.T) {
	t.Parallel()
	// The stream's default lease (collector.DefaultStreamConfig).
	if _, err := newLease(New(store.None{}, nil), leaseConfig{Key: "stream:lease", TTL: 15 * time.Second}); !errors.Is(err, ErrNoLease) {
		t.Errorf("lease on a store without SetNX: %v, want ErrNoLease", err)
	}
}
