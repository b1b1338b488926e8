package coord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasker-systems/tasker-sidecar/store"
)

// Conditional is how compare-and-swap or compare-and-delete is done on a
// Redis-protocol server. The detector finds the one the live server allows
// and reports it (detector.Report.Methods); Memcached always uses gets and
// cas, the in-process store its own lock.
type Conditional string

// Conditional methods. CondNative means SET ... IFEQ for swap and
// DELEX ... IFEQ for delete; CondDelIfEq is Valkey 9.0's DELIFEQ (delete
// only).
const (
	CondNone    Conditional = "none"
	CondScript  Conditional = "script"
	CondNative  Conditional = "native"
	CondDelIfEq Conditional = "delifeq"
)

// Methods are the conditional methods in use on a Redis-protocol store. An
// empty method means scripts: until detection says otherwise they are
// assumed, the only way that works on every Redis-protocol server where
// EVAL is allowed.
type Methods struct {
	Swap   Conditional
	Delete Conditional
}

func orScript(c Conditional) Conditional {
	if c == "" {
		return CondScript
	}
	return c
}

// Lua for token-checked swap and delete: the GET and the write happen in one
// server-side step, so no other client can slip in between.
var (
	casScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('SET', KEYS[1], ARGV[2])
  end
  return 1
end
return 0`)
	cadScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)

// CompareAndSwap sets key to new if it holds old, atomically on the server:
// on Redis by method m, on Memcached with gets and cas, on a store.Swapper
// (in-process) by its own. It reports false, not an error, when the key is
// missing or holds a different value, and an error wrapping
// store.ErrUnsupported when there is no atomic way.
func CompareAndSwap(ctx context.Context, st store.Store, m Conditional, key string, old, new []byte, ttl time.Duration) (bool, error) {
	switch s := st.(type) {
	case *store.Redis:
		return redisSwap(ctx, s, orScript(m), key, old, new, ttl)
	case *store.Memcached:
		return memcachedCompareAnd(ctx, s, key, old, new, store.Expiration(ttl))
	case store.Swapper:
		return s.CompareAndSwap(ctx, key, old, new, ttl)
	}
	return false, fmt.Errorf("%s compare-and-swap: %w", st.Kind(), store.ErrUnsupported)
}

// CompareAndDelete deletes key if it holds old: the token-checked release
// of a lock or lease. Methods and answers as for CompareAndSwap.
func CompareAndDelete(ctx context.Context, st store.Store, m Conditional, key string, old []byte) (bool, error) {
	switch s := st.(type) {
	case *store.Redis:
		return redisDelete(ctx, s, orScript(m), key, old)
	case *store.Memcached:
		// A cas with a negative exptime is "expire now" to memcached: a
		// delete that only happens if the item is unchanged, with classic
		// commands only.
		return memcachedCompareAnd(ctx, s, key, old, old, -1)
	case store.Swapper:
		return s.CompareAndDelete(ctx, key, old)
	}
	return false, fmt.Errorf("%s compare-and-delete: %w", st.Kind(), store.ErrUnsupported)
}

func redisSwap(ctx context.Context, r *store.Redis, m Conditional, key string, old, new []byte, ttl time.Duration) (bool, error) {
	k := r.Key(key)
	switch m {
	case CondScript:
		n, err := casScript.Run(ctx, r.Client(), []string{k}, old, new, max(ttl, 0).Milliseconds()).Int64()
		if err != nil {
			return false, fmt.Errorf("redis compare-and-swap script: %w", err)
		}
		return n == 1, nil
	case CondNative:
		err := r.Client().SetIFEQ(ctx, k, new, old, max(ttl, 0)).Err()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("redis set ifeq: %w", err)
		}
		return true, nil
	}
	return false, fmt.Errorf("redis compare-and-swap: %w", store.ErrUnsupported)
}

func redisDelete(ctx context.Context, r *store.Redis, m Conditional, key string, old []byte) (bool, error) {
	k := r.Key(key)
	var n int64
	var err error
	switch m {
	case CondScript:
		n, err = cadScript.Run(ctx, r.Client(), []string{k}, old).Int64()
	case CondNative:
		n, err = r.Client().DelExArgs(ctx, k, redis.DelExArgs{Mode: "IFEQ", MatchValue: old}).Result()
	case CondDelIfEq:
		n, err = r.Client().Do(ctx, "DELIFEQ", k, old).Int64()
	default:
		return false, fmt.Errorf("redis compare-and-delete: %w", store.ErrUnsupported)
	}
	if err != nil {
		return false, fmt.Errorf("redis compare-and-delete (%s): %w", m, err)
	}
	return n == 1, nil
}

// memcachedCompareAnd is gets followed by cas: the server refuses the cas
// if the item changed since the gets.
func memcachedCompareAnd(ctx context.Context, m *store.Memcached, key string, old, new []byte, exp int32) (bool, error) {
	it, ok, err := m.Gets(ctx, key)
	if err != nil || !ok || !bytes.Equal(it.Value, old) {
		return false, err
	}
	it.Value = new
	it.Expiration = exp
	return m.CAS(ctx, it)
}

// Scripting runs EVAL "return 1" 0, the scripting probe: it is answered
// with 1, NOPERM (ACL) or "unknown command" (renamed or disabled), which
// tells them apart.
func Scripting(ctx context.Context, r *store.Redis) (int64, error) {
	return r.Client().Eval(ctx, "return 1", nil).Int64()
}
