package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// conformance runs the same behaviour checks against every real store, so
// the coordinator can rely on the interfaces meaning the same thing
// everywhere.
func TestConformance(t *testing.T) {
	type target struct {
		name string
		open func(t *testing.T, prefix string) store.Store
		// keysLeft lists keys still present under prefix.
		keysLeft func(t *testing.T, prefix string, written []string) []string
	}
	targets := []target{
		{
			name: "redis",
			open: func(t *testing.T, prefix string) store.Store {
				return mustOpen(t, storetest.RedisURL(t), store.Config{KeyPrefix: prefix})
			},
			keysLeft: func(t *testing.T, prefix string, _ []string) []string {
				return storetest.RedisKeys(t, storetest.AdminRedis(t, storetest.RedisURL(t)), prefix)
			},
		},
		{
			name: "memcached",
			open: func(t *testing.T, prefix string) store.Store {
				return mustOpen(t, storetest.MemcachedURL(t), store.Config{KeyPrefix: prefix})
			},
			keysLeft: func(t *testing.T, prefix string, written []string) []string {
				addr := strings.TrimPrefix(storetest.MemcachedURL(t), "memcached://")
				var left []string
				for _, k := range written {
					if storetest.MemcachedHas(t, addr, prefix+k) {
						left = append(left, prefix+k)
					}
				}
				return left
			},
		},
		{
			name: "memory",
			open: func(t *testing.T, prefix string) store.Store {
				return mustOpen(t, "memory://", store.Config{KeyPrefix: prefix})
			},
		},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			prefix := storetest.Prefix(t)
			st := tg.open(t, prefix)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var written []string
			key := func(name string) string { written = append(written, name); return name }

			t.Run("get set delete", func(t *testing.T) {
				k := key("basic")
				if _, ok, err := st.Get(ctx, k); err != nil || ok {
					t.Fatalf("Get before Set: ok=%v err=%v", ok, err)
				}
				if err := st.Set(ctx, k, []byte("v1"), time.Minute); err != nil {
					t.Fatal(err)
				}
				v, ok, err := st.Get(ctx, k)
				if err != nil || !ok || string(v) != "v1" {
					t.Fatalf("Get = %q %v %v", v, ok, err)
				}
				if err := st.Delete(ctx, k); err != nil {
					t.Fatal(err)
				}
				if err := st.Delete(ctx, k); err != nil {
					t.Fatalf("deleting a missing key: %v", err)
				}
				if _, ok, _ := st.Get(ctx, k); ok {
					t.Fatal("key survived Delete")
				}
			})

			t.Run("binary values", func(t *testing.T) {
				k := key("binary")
				val := []byte{0, 1, '\r', '\n', 255, ' '}
				if err := st.Set(ctx, k, val, time.Minute); err != nil {
					t.Fatal(err)
				}
				got, ok, err := st.Get(ctx, k)
				if err != nil || !ok || !bytes.Equal(got, val) {
					t.Fatalf("Get = %v %v %v", got, ok, err)
				}
				_ = st.Delete(ctx, k)
			})

			t.Run("expiry", func(t *testing.T) {
				k := key("expiring")
				if err := st.Set(ctx, k, []byte("x"), time.Second); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(3 * time.Second)
				for time.Now().Before(deadline) {
					if _, ok, _ := st.Get(ctx, k); !ok {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				t.Fatal("key with 1s TTL still there after 3s")
			})

			t.Run("setnx", func(t *testing.T) {
				a := st.(store.Adder)
				k := key("lock")
				won, err := a.SetNX(ctx, k, []byte("tok1"), 5*time.Second)
				if err != nil || !won {
					t.Fatalf("first SetNX = %v %v", won, err)
				}
				won, err = a.SetNX(ctx, k, []byte("tok2"), 5*time.Second)
				if err != nil || won {
					t.Fatalf("second SetNX = %v %v, want false", won, err)
				}
				v, _, _ := st.Get(ctx, k)
				if string(v) != "tok1" {
					t.Fatalf("value %q, want tok1", v)
				}
				_ = st.Delete(ctx, k)
			})

			t.Run("incr", func(t *testing.T) {
				in := st.(store.Incrementer)
				k := key("counter")
				n, err := in.Incr(ctx, k, 5, time.Minute)
				if err != nil || n != 5 {
					t.Fatalf("first Incr = %d %v", n, err)
				}
				n, err = in.Incr(ctx, k, 2, time.Minute)
				if err != nil || n != 7 {
					t.Fatalf("second Incr = %d %v", n, err)
				}
				if tr, ok := st.(store.TTLReader); ok {
					ttl, exists, err := tr.TTL(ctx, k)
					if err != nil || !exists || ttl <= 0 || ttl > time.Minute {
						t.Fatalf("counter TTL = %v %v %v, want (0,1m]", ttl, exists, err)
					}
				}
				_ = st.Delete(ctx, k)
			})

			t.Run("concurrent incr loses nothing", func(t *testing.T) {
				in := st.(store.Incrementer)
				k := key("concurrent")
				var wg sync.WaitGroup
				for range 20 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range 10 {
							if _, err := in.Incr(ctx, k, 1, time.Minute); err != nil {
								t.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				v, _, _ := st.Get(ctx, k)
				if string(v) != "200" {
					t.Fatalf("counter = %q, want 200", v)
				}
				_ = st.Delete(ctx, k)
			})

			t.Run("ttl", func(t *testing.T) {
				tr := st.(store.TTLReader)
				k := key("ttl")
				if _, ok, err := tr.TTL(ctx, k); err != nil || ok {
					t.Fatalf("TTL of a missing key = %v %v", ok, err)
				}
				_ = st.Set(ctx, k, []byte("x"), 30*time.Second)
				ttl, ok, err := tr.TTL(ctx, k)
				if err != nil || !ok || ttl <= 25*time.Second || ttl > 30*time.Second {
					t.Fatalf("TTL = %v %v %v, want about 30s", ttl, ok, err)
				}
				_ = st.Set(ctx, k, []byte("x"), 0)
				ttl, ok, err = tr.TTL(ctx, k)
				if err != nil || !ok || ttl != store.NoExpiry {
					t.Fatalf("TTL without expiry = %v %v %v, want NoExpiry", ttl, ok, err)
				}
				_ = st.Delete(ctx, k)
			})

			t.Run("ping", func(t *testing.T) {
				if err := st.Ping(ctx); err != nil {
					t.Fatal(err)
				}
			})

			t.Run("cancelled context", func(t *testing.T) {
				c, cancel := context.WithCancel(ctx)
				cancel()
				if err := st.Set(c, key("cancelled"), []byte("x"), time.Minute); err == nil {
					t.Fatal("Set with a cancelled context succeeded")
				}
			})

			if tg.keysLeft != nil {
				if left := tg.keysLeft(t, prefix, written); len(left) > 0 {
					t.Errorf("keys left behind: %v", left)
				}
			}
		})
	}
}

func TestNoneStore(t *testing.T) {
	st := mustOpen(t, "none://", store.Config{})
	ctx := context.Background()
	if err := st.Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if _, ok, err := st.Get(ctx, "k"); ok || err != nil {
		t.Fatalf("Get after Set = %v %v, want a miss", ok, err)
	}
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	for name, ok := range map[string]bool{
		"Adder":       is[store.Adder](st),
		"Incrementer": is[store.Incrementer](st),
		"Swapper":     is[store.Swapper](st),
		"TTLReader":   is[store.TTLReader](st),
	} {
		if ok {
			t.Errorf("none:// implements %s", name)
		}
	}
}

func is[T any](v any) bool { _, ok := v.(T); return ok }

func TestUnreachableStoresFailFast(t *testing.T) {
	for _, u := range []string{"redis://127.0.0.1:1", "memcached://127.0.0.1:1"} {
		t.Run(u, func(t *testing.T) {
			st := mustOpen(t, u, store.Config{})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			err := st.Ping(ctx)
			if err == nil {
				t.Fatal("Ping succeeded")
			}
			if c := store.Classify(err); c != store.ClassUnavailable {
				t.Errorf("Classify(%v) = %v, want unavailable", err, c)
			}
			if _, _, err := st.Get(ctx, "k"); store.Classify(err) != store.ClassUnavailable {
				t.Errorf("Get error %v classified %v", err, store.Classify(err))
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refused connection took %v", d)
			}
		})
	}
}

func TestReconnectNotification(t *testing.T) {
	tests := []struct {
		name  string
		start func(t *testing.T) (*storetest.Server, string)
	}{
		{"redis", func(t *testing.T) (*storetest.Server, string) {
			s := storetest.StartRedis(t)
			return s, s.RedisURL()
		}},
		{"memcached", func(t *testing.T) (*storetest.Server, string) {
			s := storetest.StartMemcached(t)
			return s, s.MemcachedURL()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, u := tt.start(t)
			st := mustOpen(t, u, store.Config{})
			fired := make(chan struct{}, 10)
			remove := st.(store.ReconnectNotifier).OnReconnect(func() { fired <- struct{}{} })
			defer remove()
			ctx := context.Background()
			if err := st.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			srv.Stop(t)
			if err := st.Ping(ctx); err == nil {
				t.Fatal("Ping succeeded with the server stopped")
			}
			srv.Start(t)
			// go-redis may hand out a dead pooled connection once, and
			// after a burst of dial failures it waits for its own
			// background redial; retry like a caller would.
			deadline := time.Now().Add(5 * time.Second)
			for st.Ping(ctx) != nil {
				if time.Now().After(deadline) {
					t.Fatal("store did not come back")
				}
				time.Sleep(50 * time.Millisecond)
			}
			select {
			case <-fired:
			case <-time.After(5 * time.Second):
				t.Fatal("no reconnect notification")
			}
		})
	}
}

func TestClassify(t *testing.T) {
	st := mustOpen(t, storetest.RedisURL(t), store.Config{})
	r := st.(*store.Redis)
	ctx := context.Background()
	unknown := r.Client().Do(ctx, "NOSUCHCOMMAND").Err()
	syntax := r.Client().Do(ctx, "SET", "k", "v", "BOGUS").Err()
	tests := []struct {
		name string
		err  error
		want store.ErrorClass
	}{
		{"nil", nil, store.ClassNone},
		{"unsupported", fmt.Errorf("x: %w", store.ErrUnsupported), store.ClassUnsupported},
		{"unknown command", unknown, store.ClassProtocol},
		{"syntax error", syntax, store.ClassProtocol},
		{"memcached ERROR", fmt.Errorf("mn: %w", store.ErrProtocol), store.ClassProtocol},
		{"deadline", context.DeadlineExceeded, store.ClassUnavailable},
		{"plain", errors.New("boom"), store.ClassOther},
	}
	for _, tt := range tests {
		if got := store.Classify(tt.err); got != tt.want {
			t.Errorf("%s: Classify(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

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
