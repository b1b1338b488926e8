package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasker-systems/tasker-sidecar/internal/redact"
)

// Redis is a Redis-protocol store (Redis, Valkey, KeyDB, Dragonfly) behind
// go-redis's universal client: standalone, cluster or sentinel.
type Redis struct {
	client   redis.UniversalClient
	topology string
	addrs    []string
	url      string
	prefix   string
	watch    *dialWatch
}

func openRedis(p *parsedURL, opts Config) (*Redis, error) {
	secret, _ := p.raw.User.Password()
	fail := func(err error) (*Redis, error) {
		return nil, p.invalid(redact.Scrub(strings.TrimPrefix(err.Error(), "redis: "), secret))
	}
	r := &Redis{topology: p.topology, url: p.redacted, prefix: opts.KeyPrefix, watch: &dialWatch{}}

	switch p.topology {
	case TopologyCluster:
		o, err := redis.ParseClusterURL(p.goRedis)
		if err != nil {
			return fail(err)
		}
		clientOptions{&o.Username, &o.Password, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout,
			&o.ContextTimeoutEnabled, &o.MaxRetries, &o.DialerRetries, &o.PoolSize}.apply(opts)
		r.addrs = o.Addrs
		r.client = redis.NewClusterClient(o)
	case TopologySentinel:
		o, err := redis.ParseFailoverURL(p.goRedis)
		if err != nil {
			return fail(err)
		}
		if o.MasterName == "" {
			return nil, p.invalid("redis+sentinel:// needs master_name=")
		}
		clientOptions{&o.Username, &o.Password, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout,
			&o.ContextTimeoutEnabled, &o.MaxRetries, &o.DialerRetries, &o.PoolSize}.apply(opts)
		r.addrs = o.SentinelAddrs
		r.client = redis.NewFailoverClient(o)
	default:
		o, err := redis.ParseURL(p.goRedis)
		if err != nil {
			return fail(err)
		}
		clientOptions{&o.Username, &o.Password, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout,
			&o.ContextTimeoutEnabled, &o.MaxRetries, &o.DialerRetries, &o.PoolSize}.apply(opts)
		r.addrs = []string{o.Addr}
		r.client = redis.NewClient(o)
	}
	r.client.AddHook(r.watch)
	return r, nil
}

// clientOptions points at the fields that go-redis's three option types
// (standalone, cluster, sentinel) share, so one function tunes them all.
type clientOptions struct {
	username, password  *string
	dial, read, write   *time.Duration
	contextTimeout      *bool
	maxRetries, dialers *int
	poolSize            *int
}

// apply lets the Config fill what the URL left unset, and overrides the
// credentials, which may come from a file or the environment instead.
func (c clientOptions) apply(opts Config) {
	if opts.Username != "" {
		*c.username = opts.Username
	}
	if opts.Password != "" {
		*c.password = opts.Password.Value()
	}
	*c.dial = orDefault(*c.dial, opts.DialTimeout)
	*c.read = orDefault(*c.read, opts.ReadTimeout)
	*c.write = orDefault(*c.write, opts.WriteTimeout)
	*c.contextTimeout = true
	// A cache that retries hides an outage behind latency; the caller
	// falls back to the database instead, so fail fast.
	if *c.maxRetries == 0 {
		*c.maxRetries = -1
	}
	if *c.dialers == 0 {
		*c.dialers = 1
	}
	if *c.poolSize == 0 {
		*c.poolSize = opts.PoolSize
	}
}

func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Client is the underlying go-redis client, for probes and for commands this
// package does not wrap. Keys passed to it directly need Key().
func (r *Redis) Client() redis.UniversalClient { return r.client }

// Topology is TopologyStandalone, TopologyCluster or TopologySentinel, as
// given by the URL.
func (r *Redis) Topology() string { return r.topology }

// Key returns the key as stored on the server, prefix included.
func (r *Redis) Key(key string) string { return r.prefix + key }

func (r *Redis) Kind() string    { return KindRedis }
func (r *Redis) Address() string { return strings.Join(r.addrs, ",") }
func (r *Redis) URL() string     { return r.url }

func (r *Redis) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := r.client.Get(ctx, r.Key(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("redis get: %w", err)
	}
	return v, true, nil
}

func (r *Redis) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if err := r.client.Set(ctx, r.Key(key), val, positive(ttl)).Err(); err != nil {
		return fmt.Errorf("redis set: %w", err)
	}
	return nil
}

func (r *Redis) Delete(ctx context.Context, key string) error {
	if err := r.client.Del(ctx, r.Key(key)).Err(); err != nil {
		return fmt.Errorf("redis del: %w", err)
	}
	return nil
}

func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

func (r *Redis) Close() error {
	if err := r.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("redis close: %w", err)
	}
	return nil
}

// SetNX is SET key val NX PX ttl.
func (r *Redis) SetNX(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error) {
	err := r.client.SetArgs(ctx, r.Key(key), val, redis.SetArgs{Mode: "NX", TTL: positive(ttl)}).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("redis set nx: %w", err)
	}
	return true, nil
}

// Incr runs SET key 0 NX PX ttl and INCRBY in one MULTI, so the counter
// gets its expiry exactly when it is created, on every Redis version and
// without scripting.
func (r *Redis) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	k := r.Key(key)
	var incr *redis.IntCmd
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if ttl > 0 {
			p.SetArgs(ctx, k, 0, redis.SetArgs{Mode: "NX", TTL: ttl})
		}
		incr = p.IncrBy(ctx, k, delta)
		return nil
	})
	// SET NX answers nil when the key exists, which the pipeline reports
	// as an error; only the INCRBY result matters.
	if incr != nil && incr.Err() == nil {
		return incr.Val(), nil
	}
	if err == nil || errors.Is(err, redis.Nil) {
		err = incr.Err()
	}
	return 0, fmt.Errorf("redis incrby: %w", err)
}

// TTL is PTTL.
func (r *Redis) TTL(ctx context.Context, key string) (time.Duration, bool, error) {
	// PTTL is sent raw: go-redis turns its -1/-2 answers into durations
	// that are easy to misread.
	v, err := r.client.Do(ctx, "PTTL", r.Key(key)).Int64()
	if err != nil {
		return 0, false, fmt.Errorf("redis pttl: %w", err)
	}
	switch {
	case v == -2:
		return 0, false, nil
	case v < 0:
		return NoExpiry, true, nil
	}
	return time.Duration(v) * time.Millisecond, true, nil
}

// OnReconnect implements ReconnectNotifier.
func (r *Redis) OnReconnect(fn func()) func() { return r.watch.add(fn) }

func positive(ttl time.Duration) time.Duration {
	if ttl < 0 {
		return 0
	}
	return ttl
}

// dialHook adapts dialWatch to go-redis's hook interface.
func (w *dialWatch) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		w.observe(err)
		return c, err
	}
}

func (w *dialWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		w.lost(err)
		return err
	}
}

func (w *dialWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		w.lost(err)
		return err
	}
}
