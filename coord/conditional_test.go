package coord_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

func mustOpen(t testing.TB, u string, o store.Config) store.Store {
	t.Helper()
	o.URL = secret.URL(u)
	st, err := store.Open(o)
	if err != nil {
		t.Fatalf("Open(%s): %v", u, err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestCompareAndSwapConformance runs the same checks against every real
// store, so the coordinator can rely on compare-and-swap and
// compare-and-delete meaning the same thing everywhere.
func TestCompareAndSwapConformance(t *testing.T) {
	targets := []struct {
		name string
		open func(t *testing.T, prefix string) store.Store
	}{
		{"redis", func(t *testing.T, prefix string) store.Store {
			return mustOpen(t, storetest.RedisURL(t), store.Config{KeyPrefix: prefix})
		}},
		{"memcached", func(t *testing.T, prefix string) store.Store {
			return mustOpen(t, storetest.MemcachedURL(t), store.Config{KeyPrefix: prefix})
		}},
		{"memory", func(t *testing.T, prefix string) store.Store {
			return mustOpen(t, "memory://", store.Config{KeyPrefix: prefix})
		}},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			st := tg.open(t, storetest.Prefix(t))
			sw := coord.New(st, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			k := "cas"
			if ok, err := sw.CompareAndSwap(ctx, k, []byte("a"), []byte("b"), time.Minute); err != nil || ok {
				t.Fatalf("CAS on a missing key = %v %v", ok, err)
			}
			_ = st.Set(ctx, k, []byte("a"), time.Minute)
			if ok, err := sw.CompareAndSwap(ctx, k, []byte("x"), []byte("b"), time.Minute); err != nil || ok {
				t.Fatalf("CAS with the wrong old value = %v %v", ok, err)
			}
			if ok, err := sw.CompareAndSwap(ctx, k, []byte("a"), []byte("b"), time.Minute); err != nil || !ok {
				t.Fatalf("CAS = %v %v", ok, err)
			}
			if v, _, _ := st.Get(ctx, k); string(v) != "b" {
				t.Fatalf("value %q after CAS, want b", v)
			}
			if ok, err := sw.CompareAndDelete(ctx, k, []byte("a")); err != nil || ok {
				t.Fatalf("CAD with the wrong value = %v %v", ok, err)
			}
			if ok, err := sw.CompareAndDelete(ctx, k, []byte("b")); err != nil || !ok {
				t.Fatalf("CAD = %v %v", ok, err)
			}
			if _, ok, _ := st.Get(ctx, k); ok {
				t.Fatal("key survived CompareAndDelete")
			}
		})
	}
	// none:// has no compare-and-swap at all.
	if coord.CanSwap(store.None{}) {
		t.Error("none:// can compare-and-swap")
	}
	if _, err := coord.New(store.None{}, nil).CompareAndSwap(context.Background(), "k", nil, nil, 0); !errors.Is(err, store.ErrUnsupported) {
		t.Errorf("CompareAndSwap on none:// = %v, want ErrUnsupported", err)
	}
}

func TestRedisConditionalMethods(t *testing.T) {
	prefix := storetest.Prefix(t)
	r := mustOpen(t, storetest.RedisURL(t), store.Config{KeyPrefix: prefix}).(*store.Redis)
	ctx := context.Background()
	defer func() {
		if left := storetest.RedisKeys(t, storetest.AdminRedis(t, storetest.RedisURL(t)), prefix); len(left) > 0 {
			t.Errorf("keys left: %v", left)
		}
	}()
	if err := r.Set(ctx, "k", []byte("a"), time.Minute); err != nil {
		t.Fatal(err)
	}
	defer r.Delete(ctx, "k")

	tests := []struct {
		name      string
		swap, del coord.Conditional
		wantSwap  store.ErrorClass
		wantDel   store.ErrorClass
	}{
		// Redis 7.0 has neither SET IFEQ (8.4) nor DELEX (8.4) nor DELIFEQ
		// (Valkey 9.0): the server refuses them as protocol errors.
		{"native on redis 7", coord.CondNative, coord.CondNative, store.ClassProtocol, store.ClassProtocol},
		{"delifeq on redis 7", coord.CondNone, coord.CondDelIfEq, store.ClassUnsupported, store.ClassProtocol},
		{"script", coord.CondScript, coord.CondScript, store.ClassNone, store.ClassNone},
		// Before any detection: scripts.
		{"not reported", "", "", store.ClassNone, store.ClassNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := coord.New(r, func() coord.Methods { return coord.Methods{Swap: tt.swap, Delete: tt.del} })
			_, err := c.CompareAndSwap(ctx, "k", []byte("zz"), []byte("b"), time.Minute)
			if got := store.Classify(err); got != tt.wantSwap {
				t.Errorf("CompareAndSwap error %v classified %v, want %v", err, got, tt.wantSwap)
			}
			_, err = c.CompareAndDelete(ctx, "k", []byte("zz"))
			if got := store.Classify(err); got != tt.wantDel {
				t.Errorf("CompareAndDelete error %v classified %v, want %v", err, got, tt.wantDel)
			}
		})
	}
}

// TestRedisConditionalRefusals: what a server that refuses scripts answers
// is classified as the refusal it is.
func TestRedisConditionalRefusals(t *testing.T) {
	renamed := storetest.StartRedis(t, "--rename-command", "EVAL", "", "--rename-command", "EVALSHA", "")
	tests := []struct {
		name string
		url  func(t *testing.T) string
		op   func(ctx context.Context, c *coord.Coordinator) error
		want store.ErrorClass
	}{
		{"acl without eval", func(t *testing.T) string {
			return storetest.ACLUser(t, storetest.RedisURL(t), "~*", "&*", "+@all", "-eval", "-evalsha", "-eval_ro", "-evalsha_ro", "-fcall", "-fcall_ro", "-function", "-script")
		}, func(ctx context.Context, c *coord.Coordinator) error {
			_, err := c.CompareAndSwap(ctx, "k", []byte("a"), []byte("b"), time.Minute)
			return err
		}, store.ClassPermission},
		{"renamed eval", func(*testing.T) string { return renamed.RedisURL() },
			func(ctx context.Context, c *coord.Coordinator) error {
				_, err := c.CompareAndDelete(ctx, "k", []byte("a"))
				return err
			}, store.ClassProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustOpen(t, tt.url(t), store.Config{KeyPrefix: storetest.Prefix(t)})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := tt.op(ctx, coord.New(r, nil))
			if err == nil {
				t.Fatal("operation succeeded")
			}
			if got := store.Classify(err); got != tt.want {
				t.Errorf("error %v classified %v, want %v", err, got, tt.want)
			}
		})
	}
}

func TestRedisUnsupportedWithoutMethod(t *testing.T) {
	r := mustOpen(t, "redis://127.0.0.1:1", store.Config{})
	c := coord.New(r, func() coord.Methods { return coord.Methods{Swap: coord.CondNone, Delete: coord.CondNone} })
	_, err := c.CompareAndSwap(context.Background(), "k", nil, nil, 0)
	if !errors.Is(err, store.ErrUnsupported) {
		t.Errorf("CompareAndSwap = %v, want ErrUnsupported", err)
	}
	_, err = c.CompareAndDelete(context.Background(), "k", nil)
	if !errors.Is(err, store.ErrUnsupported) {
		t.Errorf("CompareAndDelete = %v, want ErrUnsupported", err)
	}
}

// TestMemcachedCompareAndSwapRespectsDeadlines: gets and cas return at
// their caller's deadline, even when the server answers much later.
func TestMemcachedCompareAndSwapRespectsDeadlines(t *testing.T) {
	srv := storetest.StartMemcached(t)
	slow := storetest.LatencyProxy(t, srv.Addr, 500*time.Millisecond)
	m := mustOpen(t, "memcached://"+slow, store.Config{ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second})
	c := coord.New(m, nil)
	ops := map[string]func(ctx context.Context) error{
		"CompareAndSwap": func(ctx context.Context) error {
			_, err := c.CompareAndSwap(ctx, "k", []byte("v"), []byte("w"), 0)
			return err
		},
		"CompareAndDelete": func(ctx context.Context) error { _, err := c.CompareAndDelete(ctx, "k", []byte("v")); return err },
	}
	const deadline = 100 * time.Millisecond
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			err := op(ctx)
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) || store.Classify(err) != store.ClassUnavailable {
				t.Errorf("error %v (%v), want the deadline", err, store.Classify(err))
			}
			if took > deadline+150*time.Millisecond {
				t.Errorf("returned after %v with a %v deadline", took, deadline)
			}
		})
	}
}
