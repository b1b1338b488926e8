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
			if tc.st == unreachable {
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
