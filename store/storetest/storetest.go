// Package storetest gives store and detector tests real cache servers: the
// shared Redis and Memcached the suite runs against, and throwaway
// redis-server/memcached processes on free loopback ports for cases the
// shared ones cannot show (a read-only replica, a renamed command, a server
// that goes away and comes back).
//
// Tests fail, never skip, when a server is missing: CI starts them, and a
// silent skip would hide a broken suite.
package storetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Binaries used for throwaway servers.
const (
	RedisServerBin = "/usr/bin/redis-server"
	MemcachedBin   = "/usr/bin/memcached"
)

// RedisURL is the shared Redis (SIDECAR_TEST_REDIS_URL, default
// redis://127.0.0.1:6379). The test fails if it does not answer PING.
func RedisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("SIDECAR_TEST_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379"
	}
	c := AdminRedis(t, u)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis is required for this test (set SIDECAR_TEST_REDIS_URL or start it on 127.0.0.1:6379): %v", err)
	}
	return u
}

// MemcachedURL is the shared Memcached (SIDECAR_TEST_MEMCACHED_URL, default
// memcached://127.0.0.1:11211). The test fails if it does not answer version.
func MemcachedURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("SIDECAR_TEST_MEMCACHED_URL")
	if u == "" {
		u = "memcached://127.0.0.1:11211"
	}
	addr := strings.TrimPrefix(strings.TrimPrefix(u, "memcached://"), "memcache://")
	if i := strings.LastIndex(addr, "@"); i >= 0 {
		addr = addr[i+1:]
	}
	addr = strings.Split(addr, ",")[0]
	if _, err := MemcachedCommand(addr, "version"); err != nil {
		t.Fatalf("Memcached is required for this test (set SIDECAR_TEST_MEMCACHED_URL or run `memcached -d -u memcache -l 127.0.0.1 -p 11211`): %v", err)
	}
	return u
}

// AdminRedis is a plain go-redis client for test setup and inspection,
// closed at cleanup.
func AdminRedis(t testing.TB, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	o.MaxRetries = -1
	o.DialTimeout = time.Second
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Prefix is a key prefix unique to this test run.
func Prefix(t testing.TB) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := strings.NewReplacer("/", "_", " ", "_", "#", "_").Replace(t.Name())
	return "sidecartest:" + name + ":" + hex.EncodeToString(b) + ":"
}

// RedisKeys returns the keys matching prefix*, by SCAN.
func RedisKeys(t testing.TB, c *redis.Client, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var keys []string
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan %s*: %v", prefix, err)
	}
	return keys
}

// MemcachedCommand sends one raw text command to addr and returns the reply
// up to and including the terminating line (END, or the first line for
// one-line replies).
func MemcachedCommand(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return b.String(), err
		}
		b.WriteString(line)
		l := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(l, "STAT "):
		case strings.HasPrefix(l, "VALUE "), strings.HasPrefix(l, "VA "):
			data, err := r.ReadString('\n')
			if err != nil {
				return b.String(), err
			}
			b.WriteString(data)
			if strings.HasPrefix(l, "VA ") {
				return b.String(), nil
			}
		default:
			return b.String(), nil
		}
	}
}

// MemcachedHas reports whether key exists on the server at addr.
func MemcachedHas(t testing.TB, addr, key string) bool {
	t.Helper()
	out, err := MemcachedCommand(addr, "get "+key)
	if err != nil {
		t.Fatalf("memcached get %s: %v", key, err)
	}
	return strings.HasPrefix(out, "VALUE ")
}

// MemcachedKeys lists the live keys starting with prefix on the server at
// addr, by "lru_crawler metadump all": memcached's nearest thing to SCAN.
func MemcachedKeys(t testing.TB, addr, prefix string) []string {
	t.Helper()
	// Only one crawler runs at a time; a parallel test's dump answers BUSY.
	for range 50 {
		keys, busy, err := metadump(addr, prefix)
		if err != nil {
			t.Fatalf("memcached metadump: %v", err)
		}
		if !busy {
			return keys
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("memcached metadump: crawler stayed busy")
	return nil
}

func metadump(addr, prefix string) (keys []string, busy bool, err error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprint(c, "lru_crawler metadump all\r\n"); err != nil {
		return nil, false, err
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, false, err
		}
		line = strings.TrimSpace(line)
		switch {
		case line == "END":
			return keys, false, nil
		case strings.HasPrefix(line, "BUSY"):
			return nil, true, nil
		case strings.HasPrefix(line, "ERROR"), strings.HasPrefix(line, "CLIENT_ERROR"), strings.HasPrefix(line, "SERVER_ERROR"):
			return nil, false, fmt.Errorf("%s", line)
		}
		field, _, _ := strings.Cut(line, " ")
		k, ok := strings.CutPrefix(field, "key=")
		if !ok {
			continue
		}
		if dec, err := url.QueryUnescape(k); err == nil {
			k = dec
		}
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
}

// LatencyProxy listens on a loopback port and forwards every connection to
// backend, delivering each reply delay after the backend sent it, as a
// server across a slow network would. Requests go through at once; the
// order of bytes is kept. It stops, closing every connection, at cleanup.
func LatencyProxy(t testing.TB, backend string, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("latency proxy: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.DialTimeout("tcp", backend, time.Second)
			if err != nil {
				_ = c.Close()
				continue
			}
			track(c)
			track(b)
			wg.Add(3)
			go func() { // client → backend, at once
				defer wg.Done()
				_, _ = io.Copy(b, c)
				_ = b.Close()
			}()
			type chunk struct {
				at   time.Time
				data []byte
			}
			replies := make(chan chunk, 1024)
			go func() { // backend → queue, stamped
				defer wg.Done()
				defer close(replies)
				for {
					buf := make([]byte, 32<<10)
					n, err := b.Read(buf)
					if n > 0 {
						replies <- chunk{time.Now().Add(delay), buf[:n]}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() { // queue → client, delayed
				defer wg.Done()
				defer c.Close()
				for r := range replies {
					time.Sleep(time.Until(r.at))
					if _, err := c.Write(r.data); err != nil {
						_ = b.Close()
						for range replies {
						}
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Server is a throwaway redis-server or memcached process.
type Server struct {
	Addr string // 127.0.0.1:port
	bin  string
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *lockedWriter
}

// StartRedis starts redis-server on a free port with persistence off and the
// extra config args (e.g. "--rename-command", "EVAL", ""), and stops it at
// cleanup.
func StartRedis(t testing.TB, args ...string) *Server {
	t.Helper()
	s := NewRedis(t, args...)
	s.Start(t)
	return s
}

// NewRedis is StartRedis without the start: the port is chosen but nothing
// listens on it until Start.
func NewRedis(t testing.TB, args ...string) *Server {
	t.Helper()
	port := FreePort(t)
	base := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning"}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), bin: RedisServerBin, args: append(base, args...)}
	t.Cleanup(s.stop)
	return s
}

// StartRedisCluster starts a one-node Redis Cluster that owns every slot and
// waits until the cluster state is ok.
func StartRedisCluster(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	s := StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", dir+"/nodes.conf")
	admin := AdminRedis(t, s.RedisURL())
	ctx := context.Background()
	if err := admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		info, err := admin.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("one-node cluster did not reach cluster_state:ok")
	return nil
}

// StartSentinel starts a Redis Sentinel monitoring primary as master name
// "mymaster" with quorum 1.
func StartSentinel(t testing.TB, primary *Server) *Server {
	t.Helper()
	port := FreePort(t)
	conf := t.TempDir() + "/sentinel.conf"
	host, pport, _ := net.SplitHostPort(primary.Addr)
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\nsentinel monitor mymaster %s %s 1\n", port, host, pport)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), bin: RedisServerBin, args: []string{conf, "--sentinel", "--loglevel", "warning"}}
	t.Cleanup(s.stop)
	s.Start(t)
	return s
}

// StartMemcached starts memcached on a free port with the extra args and
// stops it at cleanup.
func StartMemcached(t testing.TB, args ...string) *Server {
	t.Helper()
	s := NewMemcached(t, args...)
	s.Start(t)
	return s
}

// NewMemcached is StartMemcached without the start.
func NewMemcached(t testing.TB, args ...string) *Server {
	t.Helper()
	port := FreePort(t)
	base := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "16"}
	if os.Geteuid() == 0 {
		base = append(base, "-u", "memcache")
	}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), bin: MemcachedBin, args: append(base, args...)}
	t.Cleanup(s.stop)
	return s
}

// ACLUser creates a Redis ACL user with the given rules (e.g. "~*", "&*",
// "+@all", "-eval") on the server at adminURL, deletes it at cleanup, and
// returns a URL that logs in as that user.
func ACLUser(t testing.TB, adminURL string, rules ...string) string {
	t.Helper()
	admin := AdminRedis(t, adminURL)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "sidecar_test_" + hex.EncodeToString(b)
	pass := "pw" + hex.EncodeToString(b)
	args := []any{"ACL", "SETUSER", name, "reset", "on", ">" + pass}
	for _, r := range rules {
		args = append(args, r)
	}
	if err := admin.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	t.Cleanup(func() { _ = admin.Do(context.Background(), "ACL", "DELUSER", name).Err() })
	o := admin.Options()
	u := url.URL{Scheme: "redis", User: url.UserPassword(name, pass), Host: o.Addr, Path: "/" + strconv.Itoa(o.DB)}
	return u.String()
}

// RedisURL is redis://addr.
func (s *Server) RedisURL() string { return "redis://" + s.Addr }

// MemcachedURL is memcached://addr.
func (s *Server) MemcachedURL() string { return "memcached://" + s.Addr }

// Start (re)starts the process on the same port and waits until it accepts
// connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		t.Fatalf("%s already running", s.Addr)
	}
	out := &lockedWriter{}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.bin, err)
	}
	s.cmd, s.out = cmd, out
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s %v did not start listening on %s: %s", s.bin, s.args, s.Addr, out.String())
}

// Stop kills the process and waits for it to exit.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop()
	// Make sure the port no longer answers, so the test really sees an
	// outage.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond)
		if err != nil {
			return
		}
		_ = c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s still accepts connections after stop", s.Addr)
}

func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
