package ttl

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// The shared store dies mid-flight: clients keep getting values (from the
// in-process level, or computed here), the cache says it is degraded in
// readiness and metrics, and it returns to the store once the store and the
// detector agree it is back.
func TestStoreFailureAndRecovery(t *testing.T) {
	cases := []struct {
		name      string
		server    func(t testing.TB) *storetest.Server
		url       func(s *storetest.Server) string
		mechanism string
	}{
		{"redis", func(t testing.TB) *storetest.Server { return storetest.StartRedis(t) },
			(*storetest.Server).RedisURL, detector.MechanismRedisLua},
		{"memcached", func(t testing.TB) *storetest.Server { return storetest.StartMemcached(t) },
			(*storetest.Server).MemcachedURL, detector.MechanismMemcachedMetaLeases},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.server(t)
			st, err := store.Open(store.Config{URL: secret.URL(tc.url(srv)), DialTimeout: 200 * time.Millisecond,
				ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			dcfg := detector.Config{RecheckInterval: 100 * time.Millisecond}
			det, err := detector.New(st, dcfg, prometheus.NewRegistry(), nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			if _, err := det.Run(ctx); err != nil {
				t.Fatal(err)
			}
			det.Start(ctx)
			t.Cleanup(func() { _ = det.Shutdown(context.Background()) })
			if got := det.Report().Mechanism; got != tc.mechanism {
				t.Fatalf("detector chose %s, want %s", got, tc.mechanism)
			}

			cfg := testConfig()
			cfg.RecheckInterval = 50 * time.Millisecond
			reg := prometheus.NewRegistry()
			c, err := New(st, det.Report, func(err error) { det.NotifyError(err) }, cfg, reg, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Shutdown(context.Background()) })
			rep := replica{c, reg}
			src := &source{}

			mustGet(t, c, ResourceStatus, "", src)
			inStore := func(resource string) bool {
				raw, ok, err := st.Get(context.Background(), c.entry(resource, "", false).key)
				return err == nil && ok && strings.HasPrefix(string(raw), envelopeMagic)
			}
			if !inStore(ResourceStatus) {
				t.Fatal("value not written to the shared store")
			}
			if d, why := c.Degraded(); d {
				t.Fatalf("degraded before the failure: %s", why)
			}

			srv.Stop(t)
			// A cached value is still served, and a cold key is computed
			// here: no client error.
			if v, info := mustGet(t, c, ResourceStatus, "", src); v != gen(1, ResourceStatus) || !info.Cached {
				t.Fatalf("after the store died: %s %+v", v, info)
			}
			if v, _ := mustGet(t, c, ResourcePerformance, "", src); v != gen(1, ResourcePerformance) {
				t.Fatalf("cold key after the store died: %s", v)
			}
			if d, why := c.Degraded(); !d || !strings.Contains(why, "in-process") {
				t.Fatalf("Degraded() = %v %q, want true", d, why)
			}
			if got := counterValue(t, rep.reg, "tasker_sidecar_cache_degraded", nil); got != 1 {
				t.Fatalf("degraded gauge = %v, want 1", got)
			}
			if got := counterValue(t, rep.reg, "tasker_sidecar_cache_coordination_errors_total", nil); got < 1 {
				t.Fatal("no coordination error counted")
			}
			// Degraded: further cold keys do not touch the store at all.
			mustGet(t, c, ResourceBottlenecks, "", src)
			if got := counterValue(t, rep.reg, "tasker_sidecar_cache_coordination_mechanism", map[string]string{"mechanism": detector.MechanismInProcess}); got != 1 {
				t.Fatalf("coordination_mechanism{in_process} = %v while degraded", got)
			}

			srv.Start(t)
			eventually(t, "the cache to return to the shared store", func() bool {
				d, _ := c.Degraded()
				return !d
			})
			if got := counterValue(t, rep.reg, "tasker_sidecar_cache_degraded", nil); got != 0 {
				t.Fatalf("degraded gauge = %v after recovery", got)
			}
			mustGet(t, c, ResourceHandlers, "", src)
			// The test's own read may first meet a connection from before
			// the restart.
			eventually(t, "the new value in the shared store", func() bool { return inStore(ResourceHandlers) })
			if d, why := c.Degraded(); d {
				t.Fatalf("degraded again after recovery: %s", why)
			}
		})
	}
}
