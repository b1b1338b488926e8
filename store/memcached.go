package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

	// Calls to gomemcache run in their own goroutine so that the caller
	// can leave at its context's deadline (see call).
	callMu    sync.Mutex
	closed    bool
	running   sync.WaitGroup
	abandoned atomic.Int64

	authMu     sync.Mutex
	authUnused map[string]bool // server address → credentials configured but not needed
}

// A memcached key must fit in 250 bytes with the prefix and the probe keys
// that follow it; a prefix with spaces or control characters can never work.
const maxMemcachedPrefix = 150

func openMemcached(p *parsedURL, opts Config) (*Memcached, error) {
	if opts.KeyPrefix != "" && (len(opts.KeyPrefix) > maxMemcachedPrefix || !legalMemcachedKey(opts.KeyPrefix)) {
		return nil, fmt.Errorf("invalid key prefix for memcached: at most %d bytes, no spaces or control characters", maxMemcachedPrefix)
	}
	user, pass := p.user, p.pass
	if opts.Username != "" {
		user = opts.Username
	}
	if opts.Password != "" {
		pass = opts.Password.Value()
	}
	if (user == "") != (pass == "") {
		return nil, p.invalid("memcached authentication needs both a username and a password")
	}
	m := &Memcached{addrs: p.hosts, url: p.redacted, prefix: opts.KeyPrefix, watch: &dialWatch{}}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: opts.DialTimeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil && user != "" {
			var sent bool
			if sent, err = asciiAuth(ctx, c, addr, user, pass, opts.ReadTimeout+opts.WriteTimeout); err != nil {
				_ = c.Close()
				c = nil
			} else {
				m.recordAuth(addr, sent)
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
// memcached ≥1.5.15), where the credentials travel as the value of
// "set auth". To a server without -Y that set is an ordinary write: the
// credentials would be stored as an item named "auth" that every client can
// read. So asciiAuth first sends "version", which a -Y server refuses with
// "CLIENT_ERROR unauthenticated" until the connection has logged in, and
// sends the credentials only after that refusal. It reports whether it sent
// them. The exchange ends at the earlier of timeout and ctx's deadline.
func asciiAuth(ctx context.Context, c net.Conn, addr, user, pass string, timeout time.Duration) (sent bool, err error) {
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() && err == nil {
			// Cancelled just after the exchange: the connection's
			// deadline is poisoned, so it cannot be used.
			err = fmt.Errorf("memcached auth %s: %w", addr, context.Cause(ctx))
		}
		_ = c.SetDeadline(time.Time{})
	}()
	r := bufio.NewReader(c)
	if _, err := io.WriteString(c, "version\r\n"); err != nil {
		return false, fmt.Errorf("memcached auth %s: %w", addr, err)
	}
	line, err := readLine(r)
	if err != nil {
		return false, fmt.Errorf("memcached auth %s: %w", addr, err)
	}
	switch {
	case strings.HasPrefix(line, "VERSION "):
		// Commands work without logging in: keep the credentials.
		return false, nil
	case line != "CLIENT_ERROR unauthenticated":
		return false, fmt.Errorf("memcached auth %s: %w: unexpected reply %q to version; credentials not sent", addr, ErrProtocol, line)
	}
	cred := user + " " + pass
	if _, err := fmt.Fprintf(c, "set auth 0 0 %d\r\n%s\r\n", len(cred), cred); err != nil {
		return true, fmt.Errorf("memcached auth %s: %w", addr, err)
	}
	if line, err = readLine(r); err != nil {
		return true, fmt.Errorf("memcached auth %s: %w", addr, err)
	}
	if line != "STORED" {
		// The server's words ("CLIENT_ERROR authentication failure")
		// never contain the credentials.
		return true, fmt.Errorf("memcached auth %s refused (%s): %w", addr, line, errPermission)
	}
	return true, nil
}

// recordAuth remembers whether a server needed the configured credentials.
func (m *Memcached) recordAuth(addr string, sent bool) {
	m.authMu.Lock()
	defer m.authMu.Unlock()
	if m.authUnused == nil {
		m.authUnused = map[string]bool{}
	}
	m.authUnused[addr] = !sent
}

// Warnings lists what an operator should know about the connections made
// so far: servers that were given credentials but do not require
// authentication (not started with -Y), to which the credentials were
// therefore never sent.
func (m *Memcached) Warnings() []string {
	m.authMu.Lock()
	defer m.authMu.Unlock()
	var out []string
	for _, a := range m.addrs {
		if m.authUnused[a] {
			out = append(out, "memcached "+a+" does not require authentication (not started with -Y): the configured credentials were not sent")
		}
	}
	return out
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

// Expiration converts a TTL to memcached's exptime: whole seconds, rounded
// up so a short TTL never becomes "no expiry", and an absolute Unix time
// beyond 30 days, where memcached stops reading it as relative.
func Expiration(ttl time.Duration) int32 {
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

// maxAbandoned bounds the gomemcache calls per store that are still running
// after their callers left at a deadline. Each ends by itself within the
// client's timeouts; beyond the bound, calls with a deadline fail at once
// instead of piling up goroutines and connections on a server that does
// not answer.
const maxAbandoned = 64

// errBacklog is returned instead of starting a call when maxAbandoned calls
// are still waiting for the server. It counts as unavailable.
var errBacklog = errors.New("memcached: too many earlier calls still waiting for the server")

// call runs fn, a gomemcache call, which takes no context, so that the
// caller gets fn's result or, at ctx's deadline or cancellation, ctx's
// error, whichever comes first. An abandoned call keeps running in its
// goroutine until gomemcache's own deadlines end it (dial_timeout, then the
// I/O timeout); its connection is then pooled or closed as usual, and Close
// waits for it.
func (m *Memcached) call(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ctx.Done() == nil {
		return fn()
	}
	if n := m.abandoned.Load(); n >= maxAbandoned {
		return fmt.Errorf("%w (%d abandoned at their deadline)", errBacklog, n)
	}
	m.callMu.Lock()
	if m.closed {
		// After Close nothing waits for a goroutine any more.
		m.callMu.Unlock()
		return fn()
	}
	m.running.Add(1)
	m.callMu.Unlock()
	const running, finished, abandoned = 0, 1, 2
	var state atomic.Int32
	done := make(chan error, 1)
	go func() {
		defer m.running.Done()
		err := fn()
		done <- err
		if !state.CompareAndSwap(running, finished) {
			m.abandoned.Add(-1)
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if !state.CompareAndSwap(running, abandoned) {
			return <-done // finished at the same moment: keep its result
		}
		m.abandoned.Add(1)
		return ctx.Err()
	}
}

func (m *Memcached) Get(ctx context.Context, key string) ([]byte, bool, error) {
	var it *memcache.Item
	err := m.call(ctx, func() (err error) { it, err = m.mc.Get(m.Key(key)); return err })
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, m.fail("get", err)
	}
	return it.Value, true, nil
}

func (m *Memcached) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	it := &memcache.Item{Key: m.Key(key), Value: val, Expiration: Expiration(ttl)}
	if err := m.call(ctx, func() error { return m.mc.Set(it) }); err != nil {
		return m.fail("set", err)
	}
	return nil
}

func (m *Memcached) Delete(ctx context.Context, key string) error {
	err := m.call(ctx, func() error { return m.mc.Delete(m.Key(key)) })
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

// Close closes the connections. It waits for calls abandoned at their
// deadline, which gomemcache's own timeouts end.
func (m *Memcached) Close() error {
	m.meta.close()
	m.callMu.Lock()
	m.closed = true
	m.callMu.Unlock()
	m.running.Wait()
	if err := m.mc.Close(); err != nil {
		return fmt.Errorf("memcached close: %w", err)
	}
	return nil
}

// SetNX is memcached add.
func (m *Memcached) SetNX(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error) {
	it := &memcache.Item{Key: m.Key(key), Value: val, Expiration: Expiration(ttl)}
	err := m.call(ctx, func() error { return m.mc.Add(it) })
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
		var n uint64
		err := m.call(ctx, func() (err error) {
			if delta >= 0 {
				n, err = m.mc.Increment(k, uint64(delta))
			} else {
				n, err = m.mc.Decrement(k, uint64(-delta))
			}
			return err
		})
		if err == nil {
			return int64(n), nil
		}
		if !errors.Is(err, memcache.ErrCacheMiss) {
			return 0, m.fail("incr", err)
		}
		initial := max(delta, 0)
		it := &memcache.Item{Key: k, Value: []byte(strconv.FormatInt(initial, 10)), Expiration: Expiration(ttl)}
		err = m.call(ctx, func() error { return m.mc.Add(it) })
		if err == nil {
			return initial, nil
		}
		if !errors.Is(err, memcache.ErrNotStored) {
			return 0, m.fail("add counter", err)
		}
	}
	return 0, errors.New("memcached incr: counter kept disappearing")
}

// Gets reads key with its CAS unique (gets), for a later CAS; ok is false
// on a miss.
func (m *Memcached) Gets(ctx context.Context, key string) (*memcache.Item, bool, error) {
	// Not named results: an abandoned call still writes it (see call).
	var it *memcache.Item
	err := m.call(ctx, func() (err error) { it, err = m.mc.Get(m.Key(key)); return err })
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, m.fail("gets", err)
	}
	return it, true, nil
}

// CAS writes an item read by Gets (cas) and reports false, not an error,
// when the server refuses it because the item changed or is gone since.
func (m *Memcached) CAS(ctx context.Context, it *memcache.Item) (bool, error) {
	err := m.call(ctx, func() error { return m.mc.CompareAndSwap(it) })
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
