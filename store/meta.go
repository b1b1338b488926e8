package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gomemcache speaks only the classic text protocol. The few things that need
// the meta protocol (leases with mg N/W/Z, TTL read-back, noop) or raw
// commands (version, stats settings) go through this minimal client: one
// request, one response, on a pooled connection with deadlines.

// Meta-protocol status codes. Servers before 1.6.10 answer OK where newer
// ones answer HD; replies normalise OK to HD.
const (
	MetaHD = "HD" // success, no value
	MetaVA = "VA" // success with value
	MetaEN = "EN" // miss
	MetaNS = "NS" // not stored
	MetaEX = "EX" // CAS mismatch
	MetaNF = "NF" // not found
	MetaMN = "MN" // noop
)

// ErrProtocol is wrapped by errors from a server that did not understand a
// command (ERROR, CLIENT_ERROR) or sent a reply this client cannot parse. For
// meta commands it usually means the server (or a proxy in front of it) does
// not speak the meta protocol.
var ErrProtocol = errors.New("memcached protocol error")

// ErrServer is wrapped by SERVER_ERROR replies (out of memory, too large...).
var ErrServer = errors.New("memcached server error")

// MetaReply is one meta-protocol response.
type MetaReply struct {
	Status string   // one of the Meta* codes
	Flags  []string // return flags such as "W", "Z", "t30", "c1234"
	Value  []byte   // only for VA
}

// Flag returns the token after the flag letter (e.g. "30" for t30) and
// whether the flag is present.
func (r MetaReply) Flag(letter byte) (string, bool) {
	for _, f := range r.Flags {
		if f != "" && f[0] == letter {
			return f[1:], true
		}
	}
	return "", false
}

type metaConn struct {
	net.Conn
	r *bufio.Reader
}

type metaClient struct {
	dial         func(ctx context.Context, addr string) (net.Conn, error)
	lost         func(error) // told about every failed round trip
	readTimeout  time.Duration
	writeTimeout time.Duration

	mu   sync.Mutex
	idle map[string][]*metaConn
}

const metaMaxIdle = 2

func (m *metaClient) get(ctx context.Context, addr string) (*metaConn, error) {
	m.mu.Lock()
	if l := m.idle[addr]; len(l) > 0 {
		c := l[len(l)-1]
		m.idle[addr] = l[:len(l)-1]
		m.mu.Unlock()
		return c, nil
	}
	m.mu.Unlock()
	nc, err := m.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &metaConn{Conn: nc, r: bufio.NewReader(nc)}, nil
}

func (m *metaClient) put(addr string, c *metaConn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.idle == nil {
		m.idle = map[string][]*metaConn{}
	}
	if len(m.idle[addr]) >= metaMaxIdle {
		_ = c.Close()
		return
	}
	m.idle[addr] = append(m.idle[addr], c)
}

func (m *metaClient) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.idle {
		for _, c := range l {
			_ = c.Close()
		}
	}
	m.idle = nil
}

// do writes req and lets read consume the reply. The connection goes back to
// the pool only when read returned nil, so a half-read reply never poisons
// the next request.
func (m *metaClient) do(ctx context.Context, addr string, req []byte, read func(*bufio.Reader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := m.get(ctx, addr)
	if err != nil {
		return err
	}
	deadline := func(d time.Duration) time.Time {
		t := time.Now().Add(d)
		if dl, ok := ctx.Deadline(); ok && dl.Before(t) {
			return dl
		}
		return t
	}
	// Cancelling ctx must interrupt a blocked read, not only the next call.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_ = c.SetWriteDeadline(deadline(m.writeTimeout))
	_ = c.SetReadDeadline(deadline(m.readTimeout))
	fail := func(err error) error {
		_ = c.Close()
		// The socket deadline is the context's, and may fire a moment
		// before the context's own timer: either way the caller's
		// deadline ended the call, not the server.
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w: %w", ctxErr, err)
		} else if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
			err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
		m.lost(err)
		return err
	}
	if _, err := c.Write(req); err != nil {
		return fail(err)
	}
	if err := read(c.r); err != nil {
		return fail(err)
	}
	if !stop() {
		// The reply arrived complete, but the cancellation has already
		// poisoned the connection's deadline.
		_ = c.Close()
		return nil
	}
	m.put(addr, c)
	return nil
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && line != "" {
			return "", fmt.Errorf("%w: truncated reply %q", ErrProtocol, line)
		}
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// errorLine turns ERROR/CLIENT_ERROR/SERVER_ERROR lines into errors.
func errorLine(line string) error {
	switch {
	case line == "ERROR":
		return fmt.Errorf("%w: server answered ERROR (unknown command)", ErrProtocol)
	case strings.HasPrefix(line, "CLIENT_ERROR"):
		return fmt.Errorf("%w: %s", ErrProtocol, line)
	case strings.HasPrefix(line, "SERVER_ERROR"):
		return fmt.Errorf("%w: %s", ErrServer, line)
	}
	return nil
}

func parseMetaReply(r *bufio.Reader) (MetaReply, error) {
	line, err := readLine(r)
	if err != nil {
		return MetaReply{}, err
	}
	if err := errorLine(line); err != nil {
		return MetaReply{}, err
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return MetaReply{}, fmt.Errorf("%w: empty reply", ErrProtocol)
	}
	rep := MetaReply{Status: fields[0]}
	switch rep.Status {
	case "OK":
		rep.Status = MetaHD
		rep.Flags = fields[1:]
	case MetaHD, MetaEN, MetaNS, MetaEX, MetaNF, MetaMN:
		rep.Flags = fields[1:]
	case MetaVA:
		if len(fields) < 2 {
			return MetaReply{}, fmt.Errorf("%w: VA without size", ErrProtocol)
		}
		n, err := strconv.Atoi(fields[1])
		if err != nil || n < 0 {
			return MetaReply{}, fmt.Errorf("%w: bad VA size %q", ErrProtocol, fields[1])
		}
		rep.Flags = fields[2:]
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return MetaReply{}, err
		}
		if !bytes.HasSuffix(buf, []byte("\r\n")) {
			return MetaReply{}, fmt.Errorf("%w: value not terminated by CRLF", ErrProtocol)
		}
		rep.Value = buf[:n]
	default:
		return MetaReply{}, fmt.Errorf("%w: unexpected reply %q", ErrProtocol, line)
	}
	return rep, nil
}

func checkMetaArgs(key string, flags []string) error {
	if !legalMemcachedKey(key) {
		return fmt.Errorf("memcached: malformed key %q", key)
	}
	for _, f := range flags {
		if f == "" || strings.ContainsFunc(f, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return fmt.Errorf("memcached: malformed meta flag %q", f)
		}
	}
	return nil
}

func legalMemcachedKey(key string) bool {
	if len(key) == 0 || len(key) > 250 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] == 0x7f {
			return false
		}
	}
	return true
}

// metaCommand sends "<verb> <key> <flags...>" (plus a data block for ms) to
// the server that owns key.
func (m *metaClient) metaCommand(ctx context.Context, addr, verb, key string, value []byte, flags []string) (MetaReply, error) {
	if err := checkMetaArgs(key, flags); err != nil {
		return MetaReply{}, err
	}
	var b bytes.Buffer
	b.WriteString(verb)
	b.WriteByte(' ')
	b.WriteString(key)
	if verb == "ms" {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(len(value)))
	}
	for _, f := range flags {
		b.WriteByte(' ')
		b.WriteString(f)
	}
	b.WriteString("\r\n")
	if verb == "ms" {
		b.Write(value)
		b.WriteString("\r\n")
	}
	var rep MetaReply
	err := m.do(ctx, addr, b.Bytes(), func(r *bufio.Reader) error {
		var err error
		rep, err = parseMetaReply(r)
		return err
	})
	if err != nil {
		return MetaReply{}, fmt.Errorf("memcached %s: %w", verb, err)
	}
	return rep, nil
}

func (m *metaClient) noop(ctx context.Context, addr string) error {
	return m.do(ctx, addr, []byte("mn\r\n"), func(r *bufio.Reader) error {
		rep, err := parseMetaReply(r)
		if err != nil {
			return err
		}
		if rep.Status != MetaMN {
			return fmt.Errorf("%w: mn answered %s", ErrProtocol, rep.Status)
		}
		return nil
	})
}

func (m *metaClient) version(ctx context.Context, addr string) (string, error) {
	var v string
	err := m.do(ctx, addr, []byte("version\r\n"), func(r *bufio.Reader) error {
		line, err := readLine(r)
		if err != nil {
			return err
		}
		if err := errorLine(line); err != nil {
			return err
		}
		var ok bool
		v, ok = strings.CutPrefix(line, "VERSION ")
		if !ok {
			return fmt.Errorf("%w: unexpected version reply %q", ErrProtocol, line)
		}
		return nil
	})
	return v, err
}

func (m *metaClient) stats(ctx context.Context, addr, sub string) (map[string]string, error) {
	req := "stats\r\n"
	if sub != "" {
		req = "stats " + sub + "\r\n"
	}
	out := map[string]string{}
	err := m.do(ctx, addr, []byte(req), func(r *bufio.Reader) error {
		for {
			line, err := readLine(r)
			if err != nil {
				return err
			}
			if err := errorLine(line); err != nil {
				return err
			}
			if line == "END" {
				return nil
			}
			rest, ok := strings.CutPrefix(line, "STAT ")
			if !ok {
				return fmt.Errorf("%w: unexpected stats line %q", ErrProtocol, line)
			}
			k, v, _ := strings.Cut(rest, " ")
			out[k] = v
		}
	})
	return out, err
}
