package store_test

import (
	"context"
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

func TestRedisRefusals(t *testing.T) {
	primary := storetest.StartRedis(t)
	replica := storetest.StartRedis(t, "--replicaof", "127.0.0.1", portOf(primary.Addr))

	tests := []struct {
		name string
		url  func(t *testing.T) string
		op   func(ctx context.Context, r *store.Redis) error
		want store.ErrorClass
	}{
		{"acl read-only", func(t *testing.T) string {
			return aclUser(t, "~*", "&*", "-@all", "+@read", "+@connection")
		}, func(ctx context.Context, r *store.Redis) error {
			return r.Set(ctx, "k", []byte("v"), time.Minute)
		}, store.ClassPermission},
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
			r := mustOpen(t, tt.url(t), store.Config{KeyPrefix: storetest.Prefix(t)}).(*store.Redis)
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

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i+1:]
		}
	}
	return addr
}
