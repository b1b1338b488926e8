// Package store is the small client layer between the sidecar and the cache
// store a Tasker deployment uses: a Redis-protocol server (Redis, Valkey,
// KeyDB, Dragonfly), Memcached, an in-process map, or nothing at all.
//
// Every store offers the same basic operations (Store). Coordination
// primitives that only some stores have atomically are optional interfaces
// (Adder, Incrementer, Swapper, TTLReader), so a caller can type-assert for
// exactly what it needs and never fall back to read-modify-write by accident.
// The capability detector (package detector) finds out which of them the live
// server really allows; this package only provides plain client round trips.
// Every sequence built from them (Lua scripts, compare-and-swap and
// compare-and-delete, leases, Memcached meta-command sequences) is package
// coord's.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/redact"
)

// Kinds returned by Store.Kind.
const (
	KindRedis     = "redis"
	KindMemcached = "memcached"
	KindMemory    = "memory"
	KindNone      = "none"
)

// NoExpiry is what TTLReader.TTL returns for a key that exists and never
// expires.
const NoExpiry time.Duration = -1

// ErrUnsupported is returned (wrapped) by an optional operation the store
// cannot perform atomically in its current configuration, for example a
// compare-and-set on Redis when scripting is refused and there is no native
// SET IFEQ.
var ErrUnsupported = errors.New("operation not supported by this store")

// Store is what every cache store offers. Keys are given without the
// configured key prefix; the store adds it.
type Store interface {
	// Kind is one of KindRedis, KindMemcached, KindMemory, KindNone.
	Kind() string
	// Address is the server address(es) as host:port, comma-separated when
	// there are several. It never contains credentials.
	Address() string
	// URL is the URL the store was opened with, password redacted.
	URL() string
	// Get returns the value and true, or nil and false on a miss.
	Get(ctx context.Context, key string) ([]byte, bool, error)
	// Set stores the value; ttl <= 0 means no expiry.
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
	// Delete removes the key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Ping checks that the server answers.
	Ping(ctx context.Context) error
	Close() error
}

// Adder stores a value only if the key does not exist yet, atomically on the
// server. It is the lease/lock primitive: Redis SET NX PX, Memcached add.
type Adder interface {
	SetNX(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error)
}

// Incrementer adds delta to an integer counter atomically and returns the new
// value. A missing key is created with value delta and, when ttl > 0, that
// expiry; an existing key keeps its expiry. Memcached cannot go below zero:
// a negative delta there floors at 0.
type Incrementer interface {
	Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error)
}

// Swapper is compare-and-set and compare-and-delete, atomic in the store
// itself: the in-process store has them (a lock). On Redis and Memcached
// they are sequences of commands, package coord's. Both report false, not an error, when the key is missing or holds a
// different value. They return ErrUnsupported when the store has no atomic
// way to do it.
type Swapper interface {
	CompareAndSwap(ctx context.Context, key string, old, new []byte, ttl time.Duration) (bool, error)
	CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error)
}

// TTLReader reads a key's remaining time to live. ok is false for a missing
// key; the duration is NoExpiry for a key without expiry.
type TTLReader interface {
	TTL(ctx context.Context, key string) (ttl time.Duration, ok bool, err error)
}

// ReconnectNotifier calls fn (in its own goroutine) whenever a connection to
// the server succeeds after connecting had failed, which is how the detector
// learns that a store that went away is back. The returned function removes
// the callback.
type ReconnectNotifier interface {
	OnReconnect(fn func()) (remove func())
}

// Open returns the store cfg describes. It fails only when the URL or
// options are invalid, and the error never contains the password; connecting happens on
// first use, bounded by the timeouts.
//
// Supported URLs:
//
//	redis://[user:password@]host[:port][/db][?go-redis options]   (also valkey://)
//	rediss://...                                                  TLS (also valkeys://)
//	redis+cluster://[user:password@]host:port[?addr=host:port&addr=...]
//	redis+sentinel://[user:password@]sentinel:port[/db]?master_name=NAME[&addr=...][&password=...]
//	memcached://[user:password@]host[:port][,host[:port]...]     (also memcache://)
//	memory://
//	none://
//
// The TLS variants rediss+cluster:// and rediss+sentinel:// exist too. A
// redis:// URL with addr= parameters is a cluster, as in go-redis.
func Open(cfg Config) (Store, error) {
	opts, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("invalid cache options: %w", err)
	}
	rawURL := cfg.URL.Value()
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	switch u.kind {
	case KindRedis:
		return openRedis(u, opts)
	case KindMemcached:
		return openMemcached(u, opts)
	case KindMemory:
		return NewMemory(opts.KeyPrefix), nil
	case KindNone:
		return None{}, nil
	}
	return nil, fmt.Errorf("invalid cache URL %q: unsupported scheme", redact.URL(rawURL))
}
