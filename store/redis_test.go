package store_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

func aclUser(t *testing.T, rules ...string) string {
	t.Helper()
	return storetest.ACLUser(t, storetest.RedisURL(t), rules...)
}

func TestRedisConditionalMethods(t *testing.T) {
	prefix := storetest.Prefix(t)
	r := mustOpen(t, storetest.RedisURL(t), store.Options{KeyPrefix: prefix}).(*store.Redis)
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
		swap, del store.Conditional
		wantSwap  store.ErrorClass
		wantDel   store.ErrorClass
	}{
		// Redis 7.0 has neither SET IFEQ (8.4) nor DELEX (8.4) nor DELIFEQ
		// (Valkey 9.0): the server refuses them as protocol errors.
		{"native on redis 7", store.CondNative, store.CondNative, store.ClassProtocol, store.ClassProtocol},
		{"delifeq on redis 7", store.CondNone, store.CondDelIfEq, store.ClassUnsupported, store.ClassProtocol},
		{"script", store.CondScript, store.CondScript, store.ClassNone, store.ClassNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.UseConditional(tt.swap, tt.del)
			_, err := r.CompareAndSwap(ctx, "k", []byte("zz"), []byte("b"), time.Minute)
			if got := store.Classify(err); got != tt.wantSwap {
				t.Errorf("CompareAndSwap error %v classified %v, want %v", err, got, tt.wantSwap)
			}
			_, err = r.CompareAndDelete(ctx, "k", []byte("zz"))
			if got := store.Classify(err); got != tt.wantDel {
				t.Errorf("CompareAndDelete error %v classified %v, want %v", err, got, tt.wantDel)
			}
		})
	}
	if s, d := r.Conditionals(); s != store.CondScript || d != store.CondScript {
		t.Errorf("Conditionals = %s %s", s, d)
	}
}

func TestRedisRefusals(t *testing.T) {
	renamed := storetest.StartRedis(t, "--rename-command", "EVAL", "", "--rename-command", "EVALSHA", "")
	primary := storetest.StartRedis(t)
	replica := storetest.StartRedis(t, "--replicaof", "127.0.0.1", portOf(primary.Addr))

	tests := []struct {
		name string
		url  func(t *testing.T) string
		op   func(ctx context.Context, r *store.Redis) error
		want store.ErrorClass
	}{
		{"acl without eval", func(t *testing.T) string {
			return aclUser(t, "~*", "&*", "+@all", "-eval", "-evalsha", "-eval_ro", "-evalsha_ro", "-fcall", "-fcall_ro", "-function", "-script")
		}, func(ctx context.Context, r *store.Redis) error {
			_, err := r.CompareAndSwap(ctx, "k", []byte("a"), []byte("b"), time.Minute)
			return err
		}, store.ClassPermission},
		{"acl read-only", func(t *testing.T) string {
			return aclUser(t, "~*", "&*", "-@all", "+@read", "+@connection")
		}, func(ctx context.Context, r *store.Redis) error {
			return r.Set(ctx, "k", []byte("v"), time.Minute)
		}, store.ClassPermission},
		{"renamed eval", func(*testing.T) string { return renamed.RedisURL() },
			func(ctx context.Context, r *store.Redis) error {
				_, err := r.CompareAndDelete(ctx, "k", []byte("a"))
				return err
			}, store.ClassProtocol},
		{"read-only replica", func(*testing.T) string { return replica.RedisURL() },
			func(ctx context.Context, r *store.Redis) error {
				_, err := r.SetNX(ctx, "k", []byte("v"), time.Minute)
				return err
			}, store.ClassPermission},
		{"wrong password", func(t *testing.T) string {
			u, _ := url.Parse(aclUser(t, "~*", "+@all"))
			u.User = url.UserPassword(u.User.Username(), "wrong")
			return u.String()
		}, func(ctx context.Context, r *store.Redis) error { return r.Ping(ctx) }, store.ClassPermission},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustOpen(t, tt.url(t), store.Options{KeyPrefix: storetest.Prefix(t)}).(*store.Redis)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := tt.op(ctx, r)
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
	r := mustOpen(t, "redis://127.0.0.1:1", store.Options{}).(*store.Redis)
	r.UseConditional(store.CondNone, store.CondNone)
	_, err := r.CompareAndSwap(context.Background(), "k", nil, nil, 0)
	if !errors.Is(err, store.ErrUnsupported) {
		t.Errorf("CompareAndSwap = %v, want ErrUnsupported", err)
	}
	_, err = r.CompareAndDelete(context.Background(), "k", nil)
	if !errors.Is(err, store.ErrUnsupported) {
		t.Errorf("CompareAndDelete = %v, want ErrUnsupported", err)
	}
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i+1:]
		}
	}
	return addr
}
