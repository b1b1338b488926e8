package ttl

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// clock is a settable clock shared by the replicas of a test, so TTLs expire
// when the test says, not when the machine gets round to it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// backend is a store and the mechanism the cache is told to use with it.
type backend struct {
	name      string
	mechanism string
	open      func(t *testing.T, prefix string) store.Store
}

func openURL(url string) func(t *testing.T, prefix string) store.Store {
	return func(t *testing.T, prefix string) store.Store {
		t.Helper()
		st, err := store.Open(store.Config{URL: secret.URL(url), KeyPrefix: prefix, PoolSize: 16})
		if err != nil {
			t.Fatalf("open %s: %v", url, err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
}

func memoryStore(t *testing.T, prefix string) store.Store { return store.NewMemory(prefix) }

// sharedBackends are every mechanism that coordinates through a real shared
// server. The servers must be up: these tests fail, never skip.
func sharedBackends(t *testing.T) []backend {
	redisURL := storetest.RedisURL(t)
	mcURL := storetest.MemcachedURL(t)
	return []backend{
		{"redis/lua", detector.MechanismRedisLua, openURL(redisURL)},
		{"redis/checked_release", detector.MechanismRedisCheckedRelease, openURL(redisURL)},
		{"redis/set_nx", detector.MechanismRedisSetNX, openURL(redisURL)},
		{"memcached/meta", detector.MechanismMemcachedMetaLeases, openURL(mcURL)},
		{"memcached/add", detector.MechanismMemcachedAddLeases, openURL(mcURL)},
	}
}

// allBackends adds the mechanisms without cluster-wide leases.
func allBackends(t *testing.T) []backend {
	return append(sharedBackends(t),
		backend{"redis/shared_values", detector.MechanismSharedLocalCoalescing, openURL(storetest.RedisURL(t))},
		backend{"memcached/shared_values", detector.MechanismSharedLocalCoalescing, openURL(storetest.MemcachedURL(t))},
		backend{"memory/in_process", detector.MechanismInProcess, memoryStore},
	)
}

func fixedReport(mechanism string) func() detector.Report {
	return func() detector.Report {
		return detector.Report{Mechanism: mechanism, Store: detector.StoreInfo{Reachable: true}}
	}
}

// testConfig is the default configuration with short query timeouts (so
// lease expiry tests take about a second) and no jitter.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.CostAware.Jitter = 0
	for name, p := range cfg.Policies {
		p.QueryTimeout = 300 * time.Millisecond
		cfg.Policies[name] = p
	}
	return cfg
}

type replica struct {
	*Cache
	reg *prometheus.Registry
}

func newReplica(t *testing.T, st store.Store, report func() detector.Report, cfg Config, clk *clock) replica {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(st, report, nil, cfg, reg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if clk == nil {
		// A test that does not move time still gets a clock that stands
		// still: ages and TTLs do not depend on how slow the machine is.
		clk = newClock()
	}
	c.now = clk.Now
	c.rnd = func() float64 { return 0 }
	t.Cleanup(func() { _ = c.Shutdown(context.Background()) })
	return replica{c, reg}
}

// source is a fake database: it counts computations per resource and returns
// a JSON value that names the generation.
type source struct {
	calls sync.Map // resource → *atomic.Int64
	fail  atomic.Bool
	delay time.Duration
	block chan struct{} // when set, computations wait for it to close
}

var errDatabase = fmt.Errorf("database unavailable")

func (s *source) counter(resource string) *atomic.Int64 {
	v, _ := s.calls.LoadOrStore(resource, new(atomic.Int64))
	return v.(*atomic.Int64)
}

func (s *source) count(resource string) int64 { return s.counter(resource).Load() }

func (s *source) compute(resource string) func(ctx context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		n := s.counter(resource).Add(1)
		if s.block != nil {
			select {
			case <-s.block:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if s.delay > 0 {
			time.Sleep(s.delay)
		}
		if s.fail.Load() {
			return nil, errDatabase
		}
		return fmt.Appendf(nil, `{"resource":%q,"generation":%d}`, resource, n), nil
	}
}

func gen(n int64, resource string) string {
	return fmt.Sprintf(`{"resource":%q,"generation":%d}`, resource, n)
}

func mustGet(t *testing.T, c *Cache, resource, params string, s *source) (string, Info) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, info, err := c.Get(ctx, resource, params, s.compute(resource))
	if err != nil {
		t.Fatalf("Get(%s, %q): %v", resource, params, err)
	}
	return string(v), info
}

// eventually polls cond until it holds or the deadline passes (hang
// protection only: the conditions are reached in milliseconds).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lockExpired waits until the lock of resource's value is gone from the
// cache's store. A set_nx lock has no release, and a gate held for a
// backoff is let go only by expiry (coord/mechanism.go): it goes on the
// server's clock (memcached's ticks once a second), so the test waits for
// that to be seen rather than for a guessed time.
func lockExpired(t *testing.T, c *Cache, resource string) {
	t.Helper()
	key := c.key(resource, "") + coord.LockSuffix
	eventually(t, "the lock to expire", func() bool {
		_, ok, err := c.st.Get(context.Background(), key)
		if err != nil {
			t.Fatalf("reading the lock: %v", err)
		}
		return !ok
	})
}

// series returns the series of the family name whose labels include labels.
func series(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			out = append(out, m)
		}
	}
	return out
}

// counterValue sums the counter or gauge series of name whose labels
// include labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	var sum float64
	for _, m := range series(t, reg, name, labels) {
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		}
	}
	return sum
}

func lint(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
}
