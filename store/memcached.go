package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Memcached is one or more memcached servers. Classic commands go through
// gomemcache; meta commands, version and stats through a small raw client.
// Keys are spread over the servers by CRC32, as gomemcache's ServerList does.
type Memcached struct {
	mc     *memcache.Client
	meta   *metaClient
	addrs  []string
	url    string
	prefix string
	watch  *dialWatch
}

// A memcached key must fit in 250 bytes with the prefix and the probe keys
// that follow it; a prefix with spaces or control characters can never work.
const maxMemcachedPrefix = 150

func openMemcached(p *parsedURL, opts Options) (*Memcached, error) {
	if opts.KeyPrefix != "" && (len(opts.KeyPrefix) > maxMemcachedPrefix || !legalMemcachedKey(opts.KeyPrefix)) {
		return nil, fmt.Errorf("invalid key prefix for memcached: at most %d bytes, no spaces or control characters", maxMemcachedPrefix)
	}
	user, pass := p.user, p.pass
	if opts.Username != "" {
		user = opts.Username
	}
	if opts.Password != "" {
		pass = opts.Password
	}
	if (user == "") != (pass == "") {
		return nil, p.invalid("memcached authentication needs both a username and a password")
	}
	m := &Memcached{addrs: p.hosts, url: p.redacted, prefix: opts.KeyPrefix, watch: &dialWatch{}}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: opts.DialTimeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil && user != "" {
			if err = asciiAuth(c, user, pass, opts.ReadTimeout+opts.WriteTimeout); err != nil {
				_ = c.Close()
				c = nil
			}
		}
		m.watch.observe(err)
		return c, err
	}
	m.meta = &metaClient{dial: dial, lost: m.watch.lost, readTimeout: opts.ReadTimeout, writeTimeout: opts.WriteTimeout}
	m.mc = memcache.NewFromSelector(&hashSelector{addrs: p.hosts})
	m.mc.Timeout = max(opts.ReadTimeout, opts.WriteTimeout)
	m.mc.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) }
	if opts.PoolSize > 0 {
		m.mc.MaxIdleConns = opts.PoolSize
	}
	return m, nil
}

// asciiAuth logs in on a memcached started with -Y (ASCII authentication,
// memcached ≥1.5.15): the credentials travel as the value of a set.
func asciiAuth(c net.Conn, user, pass string, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	cred := user + " " + pass
	if _, err := fmt.Fprintf(c, "set auth 0 0 %d\r\n%s\r\n", len(cred), cred); err != nil {
		return fmt.Errorf("memcached auth: %w", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("memcached auth: %w", err)
	}
	if strings.TrimSpace(line) != "STORED" {
		return fmt.Errorf("memcached auth refused: %w", errPermission)
	}
	return nil
}

// errPermission marks refusals that are not Redis errors (memcached auth).
var errPermission = errors.New("permission denied")

// hashSelector is gomemcache's ServerList without its DNS resolution at
// construction, so Open never touches the network.
type hashSelector struct{ addrs []string }

type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

func (s *hashSelector) pick(key string) string {
	if len(s.addrs) == 1 {
		return s.addrs[0]
	}
	return s.addrs[crc32.ChecksumIEEE([]byte(key))%uint32(len(s.addrs))]
}

func (s *hashSelector) PickServer(key string) (net.Addr, error) { return tcpAddr(s.pick(key)), nil }

func (s *hashSelector) Each(fn func(net.Addr) error) error {
	for _, a := range s.addrs {
		if err := fn(tcpAddr(a)); err != nil {
			return err
		}
	}
	return nil
}

func (m *Memcached) Kind() string    { return KindMemcached }
func (m *Memcached) Address() string { return strings.Join(m.addrs, ",") }
func (m *Memcached) URL() string     { return m.url }

// Servers lists the server addresses.
func (m *Memcached) Servers() []string { return append([]string(nil), m.addrs...) }

// Key returns the key as stored on the server, prefix included.
func (m *Memcached) Key(key string) string { return m.prefix + key }

// Client is the underlying gomemcache client. Keys passed to it need Key().
func (m *Memcached) Client() *memcache.Client { return m.mc }

func (m *Memcached) server(key string) string {
	return (&hashSelector{addrs: m.addrs}).pick(key)
}

// expiration converts a TTL to memcached's exptime: whole seconds, rounded
// up so a short TTL never becomes "no expiry", and an absolute Unix time
// beyond 30 days, where memcached stops reading it as relative.
func expiration(ttl time.Duration) int32 {
	if ttl <= 0 {
		return 0
	}
	secs := int64(math.Ceil(ttl.Seconds()))
	if secs > 30*24*3600 {
		secs += time.Now().Unix()
	}
	if secs > math.MaxInt32 {
		secs = math.MaxInt32
	}
	return int32(secs)
}

func (m *Memcached) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	it, err := m.mc.Get(m.Key(key))
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, m.fail("get", err)
	}
	return it.Value, true, nil
}

func (m *Memcached) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.mc.Set(&memcache.Item{Key: m.Key(key), Value: val, Expiration: expiration(ttl)}); err != nil {
		return m.fail("set", err)
	}
	return nil
}

func (m *Memcached) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := m.mc.Delete(m.Key(key))
	if err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
		return m.fail("delete", err)
	}
	return nil
}

// Ping sends version to every server.
func (m *Memcached) Ping(ctx context.Context) error {
	for _, a := range m.addrs {
		if _, err := m.meta.version(ctx, a); err != nil {
			return fmt.Errorf("memcached ping %s: %w", a, err)
		}
	}
	return nil
}

func (m *Memcached) Close() error {
	m.meta.close()
	if err := m.mc.Close(); err != nil {
		return fmt.Errorf("memcached close: %w", err)
	}
	return nil
}

// SetNX is memcached add.
func (m *Memcached) SetNX(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	err := m.mc.Add(&memcache.Item{Key: m.Key(key), Value: val, Expiration: expiration(ttl)})
	if errors.Is(err, memcache.ErrNotStored) {
		return false, nil
	}
	if err != nil {
		return false, m.fail("add", err)
	}
	return true, nil
}

// Incr is incr/decr, creating a missing counter with add. add and incr are
// each atomic, so concurrent callers never lose an update: whoever loses the
// add race simply increments the counter the winner created.
func (m *Memcached) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	k := m.Key(key)
	for range 3 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		var n uint64
		var err error
		if delta >= 0 {
			n, err = m.mc.Increment(k, uint64(delta))
		} else {
			n, err = m.mc.Decrement(k, uint64(-delta))
		}
		if err == nil {
			return int64(n), nil
		}
		if !errors.Is(err, memcache.ErrCacheMiss) {
			return 0, m.fail("incr", err)
		}
		initial := max(delta, 0)
		err = m.mc.Add(&memcache.Item{Key: k, Value: []byte(strconv.FormatInt(initial, 10)), Expiration: expiration(ttl)})
		if err == nil {
			return initial, nil
		}
		if !errors.Is(err, memcache.ErrNotStored) {
			return 0, m.fail("add counter", err)
		}
	}
	return 0, errors.New("memcached incr: counter kept disappearing")
}

// CompareAndSwap is gets followed by cas: the server refuses the cas if the
// item changed since the gets.
func (m *Memcached) CompareAndSwap(ctx context.Context, key string, old, new []byte, ttl time.Duration) (bool, error) {
	return m.compareAnd(ctx, key, old, new, expiration(ttl))
}

// CompareAndDelete is gets followed by a cas with a negative exptime, which
// memcached treats as "expire now": a delete that only happens if the item is
// unchanged, with classic commands only.
func (m *Memcached) CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error) {
	return m.compareAnd(ctx, key, old, old, -1)
}

func (m *Memcached) compareAnd(ctx context.Context, key string, old, new []byte, exp int32) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	it, err := m.mc.Get(m.Key(key))
	if errors.Is(err, memcache.ErrCacheMiss) {
		return false, nil
	}
	if err != nil {
		return false, m.fail("gets", err)
	}
	if !bytes.Equal(it.Value, old) {
		return false, nil
	}
	it.Value = new
	it.Expiration = exp
	err = m.mc.CompareAndSwap(it)
	if errors.Is(err, memcache.ErrCASConflict) || errors.Is(err, memcache.ErrNotStored) || errors.Is(err, memcache.ErrCacheMiss) {
		return false, nil
	}
	if err != nil {
		return false, m.fail("cas", err)
	}
	return true, nil
}

// TTL is mg key t. It needs the meta protocol; without it the error wraps
// ErrUnsupported.
func (m *Memcached) TTL(ctx context.Context, key string) (time.Duration, bool, error) {
	rep, err := m.MetaGet(ctx, key, "t")
	if errors.Is(err, ErrProtocol) {
		return 0, false, fmt.Errorf("memcached ttl: %w (%w)", ErrUnsupported, err)
	}
	if err != nil {
		return 0, false, err
	}
	if rep.Status == MetaEN {
		return 0, false, nil
	}
	t, ok := rep.Flag('t')
	if !ok {
		return 0, false, fmt.Errorf("memcached ttl: %w: no t flag in reply", ErrProtocol)
	}
	secs, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("memcached ttl: %w: bad t flag %q", ErrProtocol, t)
	}
	if secs < 0 {
		return NoExpiry, true, nil
	}
	return time.Duration(secs) * time.Second, true, nil
}

// MetaGet sends mg <key> <flags...>, e.g. MetaGet(ctx, k, "v", "c", "t",
// "N30") for a lease: W in the reply means this caller won the recache, Z
// that someone else already did.
func (m *Memcached) MetaGet(ctx context.Context, key string, flags ...string) (MetaReply, error) {
	k := m.Key(key)
	return m.meta.metaCommand(ctx, m.server(k), "mg", k, nil, flags)
}

// MetaSet sends ms <key> <len> <flags...> with value, e.g. "C<cas>" for a
// conditional store or "T<secs>" for a TTL.
func (m *Memcached) MetaSet(ctx context.Context, key string, value []byte, flags ...string) (MetaReply, error) {
	k := m.Key(key)
	return m.meta.metaCommand(ctx, m.server(k), "ms", k, value, flags)
}

// MetaDelete sends md <key> <flags...>, e.g. "C<cas>" or "I", "T30" to mark
// stale.
func (m *Memcached) MetaDelete(ctx context.Context, key string, flags ...string) (MetaReply, error) {
	k := m.Key(key)
	return m.meta.metaCommand(ctx, m.server(k), "md", k, nil, flags)
}

// MetaArithmetic sends ma <key> <flags...>, e.g. "N60", "J0", "D1", "v".
func (m *Memcached) MetaArithmetic(ctx context.Context, key string, flags ...string) (MetaReply, error) {
	k := m.Key(key)
	return m.meta.metaCommand(ctx, m.server(k), "ma", k, nil, flags)
}

// MetaNoop sends mn to one server; an error wrapping ErrProtocol means the
// server or a proxy in front of it does not pass meta commands.
func (m *Memcached) MetaNoop(ctx context.Context, addr string) error {
	if err := m.meta.noop(ctx, addr); err != nil {
		return fmt.Errorf("memcached mn %s: %w", addr, err)
	}
	return nil
}

// Version returns one server's version string, e.g. "1.6.18".
func (m *Memcached) Version(ctx context.Context, addr string) (string, error) {
	v, err := m.meta.version(ctx, addr)
	if err != nil {
		return "", fmt.Errorf("memcached version %s: %w", addr, err)
	}
	return v, nil
}

// Stats runs "stats" (sub == "") or "stats <sub>" (e.g. "settings") on one
// server.
func (m *Memcached) Stats(ctx context.Context, addr, sub string) (map[string]string, error) {
	s, err := m.meta.stats(ctx, addr, sub)
	if err != nil {
		return nil, fmt.Errorf("memcached stats %s %s: %w", sub, addr, err)
	}
	return s, nil
}

func (m *Memcached) fail(op string, err error) error {
	m.watch.lost(err)
	return fmt.Errorf("memcached %s: %w", op, err)
}

// OnReconnect implements ReconnectNotifier.
func (m *Memcached) OnReconnect(fn func()) func() { return m.watch.add(fn) }
