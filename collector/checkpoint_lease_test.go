package collector

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/store"
)

// noSwapStore is a store whose compare-and-swap exists as a method but is
// refused at run time, as a Redis that allows neither SET IFEQ nor EVAL.
type noSwapStore struct{ *store.Memory }

func (noSwapStore) CompareAndSwap(context.Context, string, []byte, []byte, time.Duration) (bool, error) {
	return false, fmt.Errorf("no swap here: %w", store.ErrUnsupported)
}

// NewLease must refuse a store on which compare-and-swap does not work: a
// lease there could not be renewed and would change hands every TTL.
func TestNewLeaseNeedsWorkingCompareAndSwap(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	redisWith := func(swap, del store.Conditional) store.Store {
		st := openRedis(t, uniquePrefix(t))
		st.(*store.Redis).UseConditional(swap, del)
		return st
	}
	// SET IFEQ needs Redis 8.4 or Valkey 9: whether it works depends on
	// the server the tests run against.
	_, err := openRedis(t, uniquePrefix(t)).(*store.Redis).CompareAndSwapBy(ctx, store.CondNative, "probe", []byte("a"), []byte("b"), time.Second)
	nativeWorks := err == nil
	unreachable, err := store.Open("redis://"+closedPort(t), store.Options{DialTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unreachable.Close() })
	unreachableWithout, err := store.Open("redis://"+closedPort(t), store.Options{DialTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unreachableWithout.Close() })
	unreachableWithout.(*store.Redis).UseConditional(store.CondNone, store.CondNone)

	for _, tc := range []struct {
		name string
		st   store.Store
		ok   bool
	}{
		{"memory", store.NewMemory(""), true},
		{"redis with scripts", redisWith(store.CondScript, store.CondScript), true},
		{"redis where detection found no conditional method", redisWith(store.CondNone, store.CondNone), false},
		{"redis without compare-and-swap", redisWith(store.CondNone, store.CondScript), false},
		{"redis told to use SET IFEQ", redisWith(store.CondNative, store.CondNative), nativeWorks},
		{"compare-and-swap refused at run time", noSwapStore{store.NewMemory("")}, false},
		// Cannot tell: the lease behaves as on a store that is down.
		{"unreachable redis", unreachable, true},
		// Nor when detection could not ask it (with scripting off the
		// detector starts without a method): the lease acts as none
		// until a method works.
		{"unreachable redis without a method yet", unreachableWithout, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := LeaseConfig{Key: "stream:lease", TTL: time.Second}
			l, err := NewLease(tc.st, cfg)
			if !tc.ok {
				if !errors.Is(err, ErrNoLease) {
					t.Fatalf("NewLease = %v, want ErrNoLease", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewLease = %v", err)
			}
			switch tc.st {
			case unreachable:
				return
			case unreachableWithout:
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

// A lease NewLease accepted (the store could not be asked then) on a Redis
// where a later capability detection finds no compare-and-swap must not
// change hands every TTL: it behaves as no lease, every replica holding
// it, and becomes a real lease again once the store can hold one.
func TestLeaseRefusedLaterActsAsNoLease(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	prefix := uniquePrefix(t)
	a := openRedis(t, prefix).(*store.Redis)
	b := openRedis(t, prefix).(*store.Redis)
	cfg := LeaseConfig{Key: "stream:lease", TTL: 300 * time.Millisecond}
	la, err := NewLease(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := NewLease(b, cfg)
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
	a.UseConditional(store.CondNone, store.CondNone)
	b.UseConditional(store.CondNone, store.CondNone)
	if ok, err := hold(la); !ok || !errors.Is(err, ErrNoLease) {
		t.Fatalf("a: first Hold after the refusal = %v, %v; want true and ErrNoLease", ok, err)
	}
	// For several TTLs, both hold it and say nothing more: no flapping.
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
	a.UseConditional(store.CondScript, store.CondScript)
	b.UseConditional(store.CondScript, store.CondScript)
	time.Sleep(cfg.TTL) // a key taken before the refusal has expired
	okA, errA := hold(la)
	okB, errB := hold(lb)
	if errA != nil || errB != nil || okA == okB {
		t.Fatalf("Hold after recovery = a %v (%v), b %v (%v); want exactly one holder", okA, errA, okB, errB)
	}
	holder := la
	if okB {
		holder = lb
	}
	for i := range 4 {
		time.Sleep(cfg.TTL / 3)
		if ok, err := hold(holder); !ok || err != nil {
			t.Fatalf("holder: Hold %d = %v, %v; want it kept", i, ok, err)
		}
	}
}
