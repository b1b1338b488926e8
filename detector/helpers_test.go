package detector

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/internal/testlog"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// harness is one detector on one real store, with a key prefix unique to
// the test so "no probe keys left" can be checked.
type harness struct {
	t      *testing.T
	url    string
	st     store.Store
	d      *Detector
	reg    *prometheus.Registry
	logs   *syncBuffer
	prefix string
}

func newHarness(t *testing.T, rawURL string, cfg Config) *harness {
	t.Helper()
	prefix := ""
	if !strings.HasPrefix(rawURL, "none:") {
		prefix = storetest.Prefix(t)
	}
	st, err := store.Open(store.Config{URL: secret.URL(rawURL), KeyPrefix: prefix})
	if err != nil {
		t.Fatalf("Open(%s): %v", rawURL, err)
	}
	t.Cleanup(func() { _ = st.Close() })
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(st, cfg, reg, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	return &harness{t: t, url: rawURL, st: st, d: d, reg: reg, logs: logs, prefix: prefix}
}

func (h *harness) run() (Report, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := h.d.Run(ctx)
	h.t.Logf("%s: %s/%s in %.2fms", h.url, rep.Strategy, rep.Mechanism, rep.Store.DurationMS)
	return rep, err
}

func (h *harness) mustRun() Report {
	h.t.Helper()
	rep, err := h.run()
	if err != nil {
		h.t.Fatalf("Run: %v", err)
	}
	return rep
}

// keysLeft lists keys under the test's prefix that are still on the server.
func (h *harness) keysLeft() []string {
	h.t.Helper()
	switch st := h.st.(type) {
	case *store.Redis:
		return storetest.RedisKeys(h.t, storetest.AdminRedis(h.t, adminURL(h.url)), h.prefix)
	case *store.Memcached:
		var left []string
		for _, a := range st.Servers() {
			left = append(left, storetest.MemcachedKeys(h.t, a, h.prefix)...)
		}
		return left
	case *store.Memory:
		if n := st.Len(); n > 0 {
			return []string{"(memory store holds items)"}
		}
	}
	return nil
}

// adminURL drops the ACL user from a test URL: keys are inspected as the
// default user.
func adminURL(u string) string {
	if i := strings.LastIndex(u, "@"); i >= 0 {
		return "redis://" + u[i+1:]
	}
	return u
}

// checkShape asserts the report's JSON is exactly the documented shape.
func checkShape(t *testing.T, rep Report) {
	t.Helper()
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(mapKeys(top)); !slices.Equal(got, []string{"capabilities", "conflicts", "mechanism", "store", "strategy"}) {
		t.Errorf("top-level keys %v", got)
	}
	if string(top["conflicts"]) == "null" {
		t.Error(`"conflicts" is null, want a list`)
	}
	var st map[string]any
	_ = json.Unmarshal(top["store"], &st)
	for _, k := range []string{"kind", "address", "url", "cluster", "reachable", "detected_at", "duration_ms"} {
		if _, ok := st[k]; !ok {
			t.Errorf("store has no %q: %v", k, st)
		}
	}
	var caps map[string]map[string]any
	if err := json.Unmarshal(top["capabilities"], &caps); err != nil {
		t.Fatal(err)
	}
	for _, name := range Capabilities() {
		c, ok := caps[name]
		if !ok {
			t.Errorf("capability %s missing", name)
			continue
		}
		if got := slices.Sorted(mapKeys(c)); !slices.Equal(got, []string{"evidence", "source", "value"}) {
			t.Errorf("%s has keys %v", name, got)
		}
		if !slices.Contains(Sources(), c["source"].(string)) {
			t.Errorf("%s has source %v", name, c["source"])
		}
		if c["evidence"] == "" {
			t.Errorf("%s has no evidence", name)
		}
		switch c["value"].(type) {
		case bool:
		case string:
			if Declarable(name) {
				t.Errorf("%s is a string", name)
			}
		default:
			t.Errorf("%s has value %v", name, c["value"])
		}
	}
	if len(caps) != len(Capabilities()) {
		t.Errorf("%d capabilities, want %d", len(caps), len(Capabilities()))
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func wantCap(t *testing.T, rep Report, name string, value any, source string) {
	t.Helper()
	c := rep.Capabilities[name]
	if c.Value != value || (source != "" && c.Source != source) {
		t.Errorf("%s = %v from %s (%s), want %v from %s", name, c.Value, c.Source, c.Evidence, value, source)
	}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is written by the code under test while the test reads it.
type syncBuffer = testlog.Buffer

// blackhole accepts connections and never answers, like a firewalled port.
func blackhole(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	return l.Addr().String()
}

// metaBlockingProxy stands between the client and a real memcached and
// answers every meta command with ERROR, as a proxy that does not pass the
// meta protocol does (cache-algorithms §4.2). Classic commands go through.
func metaBlockingProxy(t testing.TB, backend string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go proxyConn(c, backend)
		}
	}()
	return l.Addr().String()
}

func proxyConn(c net.Conn, backend string) {
	defer c.Close()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer b.Close()
	var wmu sync.Mutex
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := b.Read(buf)
			if n > 0 {
				wmu.Lock()
				_, _ = c.Write(buf[:n])
				wmu.Unlock()
			}
			if err != nil {
				_ = c.Close()
				return
			}
		}
	}()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch verb {
		case "mn", "mg", "ms", "md", "ma", "me":
			wmu.Lock()
			_, _ = c.Write([]byte("ERROR\r\n"))
			wmu.Unlock()
			continue
		}
		if _, err := b.Write([]byte(line)); err != nil {
			return
		}
	}
}

// reportedCoord is the coordination layer over h's store with the methods
// of h's latest report, as the cache and the stream lease use it.
func reportedCoord(h *harness) *coord.Coordinator {
	return coord.New(h.st, func() coord.Methods { return h.d.Report().Methods })
}
