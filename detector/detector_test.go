package detector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/store/storetest"
)

// TestDetectRealStores is the "done when" list: Redis, Memcached, memory://,
// none:// and unreachable addresses give the right strategy, every
// capability carries provenance, and probes leave no keys behind.
func TestDetectRealStores(t *testing.T) {
	tests := []struct {
		name        string
		url         func(t testing.TB) string
		reachable   bool
		product     string
		strategy    string
		mechanism   string
		wantCaps    map[string]any
		wantSources map[string]string
	}{
		{
			name: "redis", url: storetest.RedisURL, reachable: true, product: ProductRedis,
			strategy: StrategyDistributedAtomic, mechanism: MechanismRedisLua,
			wantCaps: map[string]any{
				Distributed: true, ReadWrite: true, AtomicIncrement: true, Locking: true, TTLInspection: true,
				Scripting: true, ConditionalSet: true, ConditionalDelete: true, ClientSideCaching: true,
				MetaCommands: false, Leases: false, ClusterMode: false, Replica: false, NamespaceSupport: true,
				KeyTransformation: true, CompressionSupport: false,
			},
			wantSources: map[string]string{Distributed: SourceConstants, ReadWrite: SourceRuntime, Scripting: SourceRuntime, MetaCommands: SourceConstants},
		},
		{
			name: "memcached", url: storetest.MemcachedURL, reachable: true, product: ProductMemcached,
			strategy: StrategyDistributedAtomic, mechanism: MechanismMemcachedMetaLeases,
			wantCaps: map[string]any{
				Distributed: true, ReadWrite: true, AtomicIncrement: true, Locking: true, TTLInspection: true,
				Scripting: false, ConditionalSet: true, ConditionalDelete: true, MetaCommands: true, Leases: true,
				ClientSideCaching: false, ClusterMode: false, Replica: false, Persistence: false, EvictionPolicy: "allkeys-lru",
			},
			wantSources: map[string]string{Scripting: SourceConstants, Leases: SourceRuntime, MetaCommands: SourceRuntime},
		},
		{
			name: "memory", url: func(testing.TB) string { return "memory://" }, reachable: true, product: ProductMemory,
			strategy: StrategyLocalOnly, mechanism: MechanismInProcess,
			wantCaps:    map[string]any{Distributed: false, ReadWrite: true, AtomicIncrement: true, Locking: true, ConditionalSet: true, NamespaceSupport: true},
			wantSources: map[string]string{Distributed: SourceConstants, NamespaceSupport: SourceRuntime},
		},
		{
			name: "none", url: func(testing.TB) string { return "none://" }, reachable: true, product: ProductNone,
			strategy: StrategyLocalOnly, mechanism: MechanismInProcess,
			wantCaps: map[string]any{Distributed: false, ReadWrite: false, Locking: false, EvictionPolicy: "none"},
		},
		{
			name: "redis unreachable", url: func(testing.TB) string { return "redis://127.0.0.1:1" },
			strategy: StrategyLocalOnly, mechanism: MechanismInProcess,
			wantCaps:    map[string]any{ReadWrite: false, Scripting: false, EvictionPolicy: "unknown", Distributed: true},
			wantSources: map[string]string{ReadWrite: SourceRuntime, Distributed: SourceConstants},
		},
		{
			name: "memcached unreachable", url: func(testing.TB) string { return "memcached://127.0.0.1:1" },
			strategy: StrategyLocalOnly, mechanism: MechanismInProcess,
			wantCaps: map[string]any{ReadWrite: false, Leases: false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.url(t), Config{})
			rep, err := h.run()
			if tt.reachable && err != nil {
				t.Fatalf("Run: %v", err)
			}
			if !tt.reachable {
				if !errors.Is(err, ErrUnreachable) {
					t.Fatalf("Run error %v, want ErrUnreachable", err)
				}
				if rep.Store.Reachable || rep.Store.Error == "" || len(rep.Store.Warnings) == 0 {
					t.Errorf("unreachable store reported as %+v", rep.Store)
				}
			}
			checkShape(t, rep)
			if rep.Strategy != tt.strategy || rep.Mechanism != tt.mechanism {
				t.Errorf("strategy %s/%s, want %s/%s", rep.Strategy, rep.Mechanism, tt.strategy, tt.mechanism)
			}
			if rep.Store.Product != tt.product {
				t.Errorf("product %q, want %q", rep.Store.Product, tt.product)
			}
			for name, v := range tt.wantCaps {
				wantCap(t, rep, name, v, tt.wantSources[name])
			}
			if len(rep.Conflicts) != 0 {
				t.Errorf("conflicts without declarations: %v", rep.Conflicts)
			}
			if tt.reachable {
				if left := h.keysLeft(); len(left) > 0 {
					t.Errorf("probe keys left behind: %v", left)
				}
			}
			var text strings.Builder
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			for _, name := range Capabilities() {
				if !strings.Contains(text.String(), name) {
					t.Errorf("text report lacks %s", name)
				}
			}
			if !strings.Contains(text.String(), rep.Strategy) {
				t.Error("text report lacks the strategy")
			}
		})
	}
}

func TestRedisIdentityAndSettings(t *testing.T) {
	h := newHarness(t, storetest.RedisURL(t), Config{})
	rep := h.mustRun()
	s := rep.Store
	if s.Version == "" || s.Role != "master" || s.Mode != "standalone" || s.Protocol != 3 || s.Cluster {
		t.Errorf("identity %+v", s.Identity)
	}
	if v, _ := rep.Capabilities[EvictionPolicy].Value.(string); v == "" || v == "unknown" {
		t.Errorf("eviction policy %v", rep.Capabilities[EvictionPolicy])
	}
	// The report tells the coordinator to release locks the way the probes
	// proved works.
	swap, del := rep.Methods.Swap, rep.Methods.Delete
	if swap != coord.CondScript || del != coord.CondScript {
		t.Errorf("conditional methods %s/%s, want script/script on Redis 7.0", swap, del)
	}
}

// TestRedisTopologies goes through go-redis's cluster and sentinel clients
// against a real one-node cluster and a real sentinel.
func TestRedisTopologies(t *testing.T) {
	cluster := storetest.StartRedisCluster(t)
	primary := storetest.StartRedis(t)
	sentinel := storetest.StartSentinel(t, primary)
	tests := []struct {
		name    string
		url     string
		data    string // where the probe keys land
		mode    string
		cluster bool
	}{
		{"cluster", "redis+cluster://" + cluster.Addr, cluster.RedisURL(), store.TopologyCluster, true},
		{"sentinel", "redis+sentinel://" + sentinel.Addr + "?master_name=mymaster", primary.RedisURL(), store.TopologySentinel, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.url, Config{})
			rep := h.mustRun()
			checkShape(t, rep)
			if rep.Store.Mode != tt.mode || rep.Store.Cluster != tt.cluster || rep.Store.Role != "master" {
				t.Errorf("identity %+v cluster=%v", rep.Store.Identity, rep.Store.Cluster)
			}
			wantCap(t, rep, ClusterMode, tt.cluster, SourceRuntime)
			if rep.Strategy != StrategyDistributedAtomic || rep.Mechanism != MechanismRedisLua {
				t.Errorf("strategy %s/%s", rep.Strategy, rep.Mechanism)
			}
			wantCap(t, rep, ClientSideCaching, true, SourceRuntime)
			if left := storetest.RedisKeys(t, storetest.AdminRedis(t, tt.data), h.prefix); len(left) > 0 {
				t.Errorf("probe keys left behind: %v", left)
			}
		})
	}
}

// TestRedisRefusedProbes runs every refusal path for real: ACL users, a
// renamed command and a read-only replica.
func TestRedisRefusedProbes(t *testing.T) {
	renamed := storetest.StartRedis(t, "--rename-command", "EVAL", "", "--rename-command", "EVALSHA", "",
		"--rename-command", "CONFIG", "")
	noIdentity := storetest.StartRedis(t, "--rename-command", "HELLO", "", "--rename-command", "INFO", "")
	primary := storetest.StartRedis(t)
	replica := storetest.StartRedis(t, "--replicaof", "127.0.0.1", strings.Split(primary.Addr, ":")[1])
	shared := func(rules ...string) func(t testing.TB) string {
		return func(t testing.TB) string { return storetest.ACLUser(t, storetest.RedisURL(t), rules...) }
	}
	noScripts := []string{"~*", "&*", "+@all", "-eval", "-evalsha", "-eval_ro", "-evalsha_ro", "-fcall", "-fcall_ro", "-function", "-script"}

	tests := []struct {
		name      string
		url       func(t testing.TB) string
		cfg       Config
		strategy  string
		mechanism string
		want      map[string]any
		evidence  map[string]string // substring of the evidence
		check     func(t *testing.T, h *harness, rep Report)
	}{
		{
			name: "ACL user without PTTL", url: shared("~*", "&*", "+@all", "-pttl"),
			strategy: StrategyDistributedAtomic, mechanism: MechanismRedisLua,
			want:     map[string]any{TTLInspection: false, Locking: true, Scripting: true},
			evidence: map[string]string{TTLInspection: "PTTL refused (permission): NOPERM"},
			check: func(t *testing.T, _ *harness, rep Report) {
				if c := rep.Capabilities[TTLInspection]; c.Source != SourceRuntime {
					t.Errorf("ttl_inspection %+v, want the refused probe's answer", c)
				}
			},
		},
		{
			// Nothing tells the mode: the URL's guess is no observation,
			// so it cannot contradict a declaration.
			name: "renamed HELLO and INFO", url: func(testing.TB) string { return noIdentity.RedisURL() },
			strategy: StrategyDistributedAtomic, mechanism: MechanismRedisLua,
			want:     map[string]any{ClusterMode: false, Scripting: true},
			evidence: map[string]string{ClusterMode: "not observed (HELLO refused (unknown command or syntax)"},
			check: func(t *testing.T, _ *harness, rep Report) {
				if ev := rep.Capabilities[ClusterMode].Evidence; !strings.Contains(ev, "mode standalone taken from the URL") {
					t.Errorf("cluster_mode evidence %q does not name the URL", ev)
				}
				if rep.Store.Protocol != 2 {
					t.Errorf("protocol %d, want 2 without HELLO", rep.Store.Protocol)
				}
			},
		},
		{
			name: "renamed HELLO and INFO, cluster_mode declared", url: func(testing.TB) string { return noIdentity.RedisURL() },
			cfg:      Config{Capabilities: map[string]bool{ClusterMode: true}},
			strategy: StrategyDistributedAtomic, mechanism: MechanismRedisLua,
			want:     map[string]any{ClusterMode: true},
			evidence: map[string]string{ClusterMode: "cache.capabilities.cluster_mode"},
		},
		{
			name: "ACL user without EVAL", url: shared(noScripts...),
			strategy: StrategyDistributedAtomic, mechanism: MechanismRedisSetNX,
			want:     map[string]any{Scripting: false, ConditionalSet: false, ConditionalDelete: false, Locking: true, AtomicIncrement: true},
			evidence: map[string]string{Scripting: "NOPERM", ConditionalSet: "SET IFEQ needs redis ≥ 8.4.0", ConditionalDelete: "NOPERM"},
			check: func(t *testing.T, h *harness, rep Report) {
				if swap, del := rep.Methods.Swap, rep.Methods.Delete; swap != coord.CondNone || del != coord.CondNone {
					t.Errorf("conditional methods %s/%s, want none/none", swap, del)
				}
				if _, err := reportedCoord(h).CompareAndDelete(context.Background(), "k", []byte("x")); !errors.Is(err, store.ErrUnsupported) {
					t.Errorf("CompareAndDelete = %v, want ErrUnsupported", err)
				}
			},
		},
		{
			name: "read-only ACL user", url: shared("~*", "&*", "-@all", "+@read", "+@connection", "+info"),
			strategy: StrategyLocalOnly, mechanism: MechanismInProcess,
			want:     map[string]any{ReadWrite: false, Locking: false, AtomicIncrement: false, Scripting: false},
			evidence: map[string]string{ReadWrite: "NOPERM", Locking: "NOPERM"},
		},
		{
			name: "ACL user without CLIENT", url: shared("~*", "&*", "+@all", "-client"),
			strategy: StrategyDistributedAtomic, mechanism: MechanismRedisLua,
			want:     map[string]any{ClientSideCaching: false, Scripting: true},
			evidence: map[string]string{ClientSideCaching: "NOPERM"},
		},
		{
			name: "ACL user without INFO or CONFIG", url: shared("~*", "&*", "+@all", "-info", "-config"),
			strategy: StrategyDistributedAtomic, mechanism: MechanismRedisLua,
			want:     map[string]any{EvictionPolicy: "unknown", Scripting: true, Persistence: false},
			evidence: map[string]string{EvictionPolicy: "NOPERM"},
			check: func(t *testing.T, _ *harness, rep Report) {
				if rep.Store.Product != ProductRedis || rep.Store.Version == "" || rep.Store.Role != "master" {
					t.Errorf("identity from HELLO: %+v", rep.Store.Identity)
				}
				if !strings.Contains(strings.Join(rep.Store.Warnings, " "), "INFO refused (permission)") {
					t.Errorf("warnings %v", rep.Store.Warnings)
				}
				if rep.Capabilities[Persistence].Source != SourceRuntime {
					t.Errorf("persistence %+v", rep.Capabilities[Persistence])
				}
			},
		},
		{
			name: "renamed EVAL and CONFIG", url: func(testing.TB) string { return renamed.RedisURL() },
			strategy: StrategyDistributedAtomic, mechanism: MechanismRedisSetNX,
			want:     map[string]any{Scripting: false, ConditionalDelete: false, Persistence: false},
			evidence: map[string]string{Scripting: "unknown command", Persistence: "unknown command"},
		},
		{
			name: "read-only replica", url: func(testing.TB) string { return replica.RedisURL() },
			strategy: StrategyLocalOnly, mechanism: MechanismInProcess,
			want:     map[string]any{Replica: true, ReadWrite: false, Locking: false, Scripting: true},
			evidence: map[string]string{ReadWrite: "READONLY", Replica: "replica"},
			check: func(t *testing.T, _ *harness, rep Report) {
				if rep.Store.Role != "replica" {
					t.Errorf("role %q", rep.Store.Role)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.url(t), tt.cfg)
			rep := h.mustRun()
			checkShape(t, rep)
			if rep.Strategy != tt.strategy || rep.Mechanism != tt.mechanism {
				t.Errorf("strategy %s/%s, want %s/%s", rep.Strategy, rep.Mechanism, tt.strategy, tt.mechanism)
			}
			for name, v := range tt.want {
				wantCap(t, rep, name, v, "")
			}
			for name, sub := range tt.evidence {
				if ev := rep.Capabilities[name].Evidence; !strings.Contains(ev, sub) {
					t.Errorf("%s evidence %q does not mention %q", name, ev, sub)
				}
			}
			if len(rep.Conflicts) != 0 {
				t.Errorf("conflicts %+v, want none", rep.Conflicts)
			}
			if tt.check != nil {
				tt.check(t, h, rep)
			}
			if left := h.keysLeft(); len(left) > 0 {
				t.Errorf("probe keys left behind: %v", left)
			}
		})
	}
}

func TestMemcachedRefusedProbes(t *testing.T) {
	casOff := storetest.StartMemcached(t, "-C")
	plain := storetest.StartMemcached(t)
	tests := []struct {
		name      string
		url       func(t testing.TB) string
		mechanism string
		want      map[string]any
		evidence  map[string]string
		warning   string
	}{
		{
			name: "proxy without meta commands",
			url: func(t testing.TB) string {
				backend := strings.TrimPrefix(storetest.MemcachedURL(t), "memcached://")
				return "memcached://" + metaBlockingProxy(t, backend)
			},
			mechanism: MechanismMemcachedAddLeases,
			want:      map[string]any{MetaCommands: false, Leases: false, TTLInspection: false, Locking: true, AtomicIncrement: true, ConditionalSet: true},
			evidence:  map[string]string{MetaCommands: "ERROR", TTLInspection: "not supported", Leases: "meta protocol"},
		},
		{
			name:      "CAS disabled (-C)",
			url:       func(testing.TB) string { return casOff.MemcachedURL() },
			mechanism: MechanismMemcachedMetaLeases,
			want:      map[string]any{ConditionalSet: false, ConditionalDelete: false, MetaCommands: true, Locking: true},
			evidence:  map[string]string{ConditionalSet: "cas_enabled no"},
			warning:   "CAS disabled",
		},
		{
			// Credentials for a server without -Y are not sent (they
			// would be stored as an item), and the report says so.
			name:      "credentials for a server without authentication",
			url:       func(testing.TB) string { return "memcached://sidecar:s3cret@" + plain.Addr },
			mechanism: MechanismMemcachedMetaLeases,
			want:      map[string]any{ReadWrite: true, MetaCommands: true},
			warning:   "memcached " + plain.Addr + " does not require authentication (not started with -Y): the configured credentials were not sent",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.url(t), Config{})
			rep := h.mustRun()
			checkShape(t, rep)
			if rep.Strategy != StrategyDistributedAtomic || rep.Mechanism != tt.mechanism {
				t.Errorf("strategy %s/%s, want %s/%s", rep.Strategy, rep.Mechanism, StrategyDistributedAtomic, tt.mechanism)
			}
			for name, v := range tt.want {
				wantCap(t, rep, name, v, "")
			}
			for name, sub := range tt.evidence {
				if ev := rep.Capabilities[name].Evidence; !strings.Contains(ev, sub) {
					t.Errorf("%s evidence %q does not mention %q", name, ev, sub)
				}
			}
			if tt.warning != "" && !strings.Contains(strings.Join(rep.Store.Warnings, " "), tt.warning) {
				t.Errorf("warnings %v lack %q", rep.Store.Warnings, tt.warning)
			}
			if left := h.keysLeft(); len(left) > 0 {
				t.Errorf("probe keys left behind: %v", left)
			}
		})
	}
}

type fixedDetector struct {
	name string
	ops  map[string]Opinion
	hook func()
}

func (f fixedDetector) Name() string { return f.name }

func (f fixedDetector) Detect(_ context.Context, id Identity) map[string]Opinion {
	if f.hook != nil {
		f.hook()
	}
	return f.ops
}

// TestPrecedence checks every source against every lower one on a live
// Redis.
func TestPrecedence(t *testing.T) {
	cfg := Config{
		Capabilities: map[string]bool{Scripting: false},
		Detectors: []RuleConfig{
			{Name: "old-redis", Product: "redis", Version: "<7", Set: map[string]bool{Locking: false}},
			{Name: "redis7", Product: "redis", Version: ">=7.0 <8", Set: map[string]bool{ClientSideCaching: false, Scripting: true}},
			{Name: "loopback", Address: "127.0.0.1:*", Set: map[string]bool{Persistence: true, ClientSideCaching: true}},
			{Name: "regexp", Address: `/^127\.0\.0\.1:[0-9]+$/`, Set: map[string]bool{MetaCommands: true}},
		},
	}
	h := newHarness(t, storetest.RedisURL(t), cfg)
	h.d.Register(fixedDetector{name: "embedder", ops: map[string]Opinion{
		Leases:            {true, "embedder says so"},
		Persistence:       {false, "loses to the earlier rule"},
		"no_such":         {true, "ignored"},
		EvictionPolicy:    {true, "wrong type, ignored"},
		ConditionalDelete: {false, "beats the runtime probe"},
	}})
	h.d.Register(fixedDetector{name: "panics", hook: func() { panic("boom") }})
	rep := h.mustRun()

	tests := []struct {
		capability string
		value      any
		source     string
		evidence   string
	}{
		{Scripting, false, SourceDeclared, "cache.capabilities.scripting"},                // declared > custom ("redis7") > runtime
		{ClientSideCaching, false, SourceCustom, `rule "redis7": product redis, version`}, // first matching rule wins
		{Persistence, true, SourceCustom, `rule "loopback": address 127.0.0.1:`},          // rule beats a later embedder
		{MetaCommands, true, SourceCustom, `rule "regexp"`},                               // custom > constants
		{Leases, true, SourceCustom, `detector "embedder": embedder says so`},             // embedder > constants
		{ConditionalDelete, false, SourceCustom, `detector "embedder"`},                   // custom > runtime
		{Locking, true, SourceRuntime, "SET NX PX"},                                       // "<7" rule did not match
		{Distributed, true, SourceConstants, "redis: a network server"},                   // constants > runtime
		{ReadWrite, true, SourceRuntime, "round trip"},                                    // runtime fills the gap
		{EvictionPolicy, "noeviction", SourceRuntime, "maxmemory-policy"},                 // wrong-typed opinion ignored
	}
	for _, tt := range tests {
		c := rep.Capabilities[tt.capability]
		if c.Value != tt.value || c.Source != tt.source || !strings.Contains(c.Evidence, tt.evidence) {
			t.Errorf("%s = %v from %s (%q), want %v from %s (%q)", tt.capability, c.Value, c.Source, c.Evidence, tt.value, tt.source, tt.evidence)
		}
	}
	// Scripting declared off and checked release declared off: plain SET NX.
	if rep.Mechanism != MechanismRedisSetNX {
		t.Errorf("mechanism %s", rep.Mechanism)
	}
	// Scripting declared off is not probed (no EVAL is sent), so nothing
	// observed can contradict the declaration; TestConflicts covers
	// declarations that probes do contradict.
	if len(rep.Conflicts) != 0 {
		t.Errorf("conflicts %+v", rep.Conflicts)
	}
	logs := h.logs.String()
	for _, want := range []string{"custom detector panicked", "unknown capability", "wrong type"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

// TestConflicts: a declaration a probe contradicts wins, is reported, logged
// once, counted, and degrades readiness.
func TestConflicts(t *testing.T) {
	u := storetest.ACLUser(t, storetest.RedisURL(t), "~*", "&*", "+@all", "-eval", "-evalsha", "-eval_ro", "-evalsha_ro")
	cfg := Config{
		Capabilities: map[string]bool{Scripting: true, Locking: true, ClientSideCaching: true},
		SkipProbes:   []string{ProbeClientTracking},
	}
	h := newHarness(t, u, cfg)
	h.mustRun()
	h.mustRun()
	rep := h.mustRun()

	wantCap(t, rep, Scripting, true, SourceDeclared)
	if rep.Mechanism != MechanismRedisLua {
		t.Errorf("mechanism %s: the declaration should still decide", rep.Mechanism)
	}
	// Locking agrees with its probe; client_side_caching was not probed
	// (skipped), so nothing observed can contradict it.
	if len(rep.Conflicts) != 1 {
		t.Fatalf("conflicts %+v, want only scripting", rep.Conflicts)
	}
	c := rep.Conflicts[0]
	if c.Capability != Scripting || c.Declared != true || c.Observed != false || !strings.Contains(c.Evidence, "NOPERM") {
		t.Errorf("conflict %+v", c)
	}
	if n := strings.Count(h.logs.String(), "declared cache capability contradicts"); n != 1 {
		t.Errorf("conflict logged %d times over 3 runs, want once", n)
	}
	if v := testutil.ToFloat64(h.d.metrics.conflicts.WithLabelValues(Scripting)); v != 1 {
		t.Errorf("conflicts_total{scripting} = %v, want 1", v)
	}
	if v := testutil.ToFloat64(h.d.metrics.conflict.WithLabelValues(Scripting)); v != 1 {
		t.Errorf("capability_conflict{scripting} = %v, want 1", v)
	}
	r := h.d.ReadinessCheck(context.Background())
	status, details := r.Status, r.Fields()
	if status != StatusDegraded || details["status"] != StatusDegraded || details["conflicts"] == nil {
		t.Errorf("readiness %s %v", status, details)
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, storetest.RedisURL(t), Config{})
	h.mustRun()
	problems, err := testutil.CollectAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	checks := []struct {
		name  string
		value float64
		got   float64
	}{
		{"capability{scripting,runtime}", 1, testutil.ToFloat64(h.d.metrics.capability.WithLabelValues(Scripting, SourceRuntime))},
		{"capability{leases,constants}", 0, testutil.ToFloat64(h.d.metrics.capability.WithLabelValues(Leases, SourceConstants))},
		{"strategy{distributed_atomic}", 1, testutil.ToFloat64(h.d.metrics.strategy.WithLabelValues(StrategyDistributedAtomic))},
		{"strategy{local_only}", 0, testutil.ToFloat64(h.d.metrics.strategy.WithLabelValues(StrategyLocalOnly))},
		{"detection_runs_total{ok}", 1, testutil.ToFloat64(h.d.metrics.runs.WithLabelValues("ok"))},
	}
	for _, c := range checks {
		if c.got != c.value {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.value)
		}
	}
	// One series per boolean capability, none for eviction_policy.
	if n := testutil.CollectAndCount(h.d.metrics.capability); n != len(Capabilities())-1 {
		t.Errorf("%d capability series, want %d", n, len(Capabilities())-1)
	}
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	observed := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "tasker_sidecar_cache_probe_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "probe" {
					observed[l.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	for _, probe := range []string{ProbePing, ProbeIdentity, ProbeReadWrite, ProbeAtomicIncrement, ProbeLocking, ProbeTTL,
		ProbeScripting, ProbeConditionalSet, ProbeConditionalDelete, ProbeClientTracking, ProbeSettings, ProbeCleanup} {
		if observed[probe] == 0 {
			t.Errorf("no probe_duration_seconds sample for %s (have %v)", probe, observed)
		}
	}
	names := []string{
		"tasker_sidecar_cache_capability", "tasker_sidecar_cache_strategy", "tasker_sidecar_cache_probe_duration_seconds",
		"tasker_sidecar_cache_detection_runs_total", "tasker_sidecar_cache_store_info",
	}
	if n := testutil.CollectAndCount(h.reg, names...); n == 0 {
		t.Error("metrics not registered")
	}

	// A store that goes down changes the series rather than adding stale
	// ones.
	down := newHarness(t, "redis://127.0.0.1:1", Config{})
	_, _ = down.run()
	if v := testutil.ToFloat64(down.d.metrics.strategy.WithLabelValues(StrategyLocalOnly)); v != 1 {
		t.Errorf("unreachable: strategy{local_only} = %v", v)
	}
	if v := testutil.ToFloat64(down.d.metrics.runs.WithLabelValues("unreachable")); v != 1 {
		t.Errorf("unreachable: runs{unreachable} = %v", v)
	}
	if _, err := New(h.st, Config{}, h.reg, nil); err == nil {
		t.Error("registering the metrics twice on one registry succeeded")
	}
}

func TestReadinessCheck(t *testing.T) {
	readOnly := func(t testing.TB) string {
		return storetest.ACLUser(t, storetest.RedisURL(t), "~*", "&*", "-@all", "+@read", "+@connection", "+info")
	}
	tests := []struct {
		name    string
		url     func(t testing.TB) string
		status  string
		message string
		fields  map[string]any
	}{
		{"redis", storetest.RedisURL, StatusHealthy, "Cache is available",
			map[string]any{"cache_store": "redis", "coordination_strategy": StrategyDistributedAtomic, "distributed": true, "atomic_operations": true, "locking_support": true}},
		{"memcached", storetest.MemcachedURL, StatusHealthy, "Cache is available",
			map[string]any{"cache_store": "memcached", "coordination_strategy": StrategyDistributedAtomic, "locking_support": true}},
		{"memory", func(testing.TB) string { return "memory://" }, StatusHealthy, "Cache is available",
			map[string]any{"cache_store": "memory", "coordination_strategy": StrategyLocalOnly, "distributed": false}},
		{"none", func(testing.TB) string { return "none://" }, StatusDegraded, "No cache store configured",
			map[string]any{"cache_store": "none", "coordination_strategy": StrategyLocalOnly}},
		{"unreachable", func(testing.TB) string { return "redis://127.0.0.1:1" }, StatusUnhealthy, "Cache check failed",
			map[string]any{"coordination_strategy": StrategyLocalOnly}},
		{"read-only user", readOnly, StatusUnhealthy, "Cache check failed",
			map[string]any{"coordination_strategy": StrategyLocalOnly}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.url(t), Config{})
			_, _ = h.run()
			r := h.d.ReadinessCheck(context.Background())
			status, d := r.Status, r.Fields()
			if status != tt.status || d["status"] != tt.status || !strings.HasPrefix(d["message"].(string), tt.message) {
				t.Errorf("readiness %s %v, want %s %q", status, d, tt.status, tt.message)
			}
			if _, ok := d["response_time_ms"].(float64); !ok {
				t.Errorf("response_time_ms missing: %v", d)
			}
			for k, v := range tt.fields {
				if d[k] != v {
					t.Errorf("%s = %v, want %v", k, d[k], v)
				}
			}
			if tt.status == StatusUnhealthy {
				if e, _ := d["error"].(string); !strings.HasPrefix(e, "Cache") {
					t.Errorf("error %q", e)
				}
			}
			if h.d.Report().Store.Reachable {
				if left := h.keysLeft(); len(left) > 0 {
					t.Errorf("keys left behind: %v", left)
				}
			}
		})
	}
}

// TestStoreGoesAwayAndComesBack: a store that disappears is noticed through
// NotifyError (local_only), and re-detection picks it up when it returns.
func TestStoreGoesAwayAndComesBack(t *testing.T) {
	tests := []struct {
		name      string
		start     func(t *testing.T) (*storetest.Server, string)
		mechanism string
	}{
		{"redis", func(t *testing.T) (*storetest.Server, string) { s := storetest.StartRedis(t); return s, s.RedisURL() }, MechanismRedisLua},
		{"memcached", func(t *testing.T) (*storetest.Server, string) {
			s := storetest.StartMemcached(t)
			return s, s.MemcachedURL()
		}, MechanismMemcachedMetaLeases},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, u := tt.start(t)
			h := newHarness(t, u, Config{RecheckInterval: 50 * time.Millisecond})
			h.d.gap = 50 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h.d.Start(ctx)
			eventually(t, 5*time.Second, "first detection", func() bool { return h.d.Report().Mechanism == tt.mechanism })

			srv.Stop(t)
			_, _, err := h.st.Get(ctx, "k")
			if err == nil {
				t.Fatal("Get succeeded with the server stopped")
			}
			if !h.d.NotifyError(err) {
				t.Fatalf("NotifyError(%v) did not schedule a re-run", err)
			}
			eventually(t, 5*time.Second, "local_only", func() bool {
				r := h.d.Report()
				return r.Strategy == StrategyLocalOnly && !r.Store.Reachable
			})
			if !strings.Contains(h.logs.String(), "cache store unreachable") {
				t.Error("no warning logged")
			}

			srv.Start(t)
			eventually(t, 5*time.Second, "re-detection", func() bool {
				r := h.d.Report()
				return r.Store.Reachable && r.Mechanism == tt.mechanism
			})
			if !strings.Contains(h.logs.String(), "reachable again") {
				t.Error("recovery not logged")
			}
		})
	}
}

func TestUnreachableAtStartThenUp(t *testing.T) {
	srv := storetest.NewRedis(t)
	h := newHarness(t, srv.RedisURL(), Config{RecheckInterval: 50 * time.Millisecond})
	rep, err := h.run()
	if !errors.Is(err, ErrUnreachable) || rep.Strategy != StrategyLocalOnly {
		t.Fatalf("Run = %s, %v", rep.Strategy, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.d.Start(ctx)
	srv.Start(t)
	eventually(t, 5*time.Second, "detection after the store came up", func() bool {
		return h.d.Report().Strategy == StrategyDistributedAtomic
	})
}

func TestRefreshInterval(t *testing.T) {
	h := newHarness(t, "memory://", Config{RefreshInterval: 30 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.d.Start(ctx)
	eventually(t, 5*time.Second, "periodic re-runs", func() bool {
		return testutil.ToFloat64(h.d.metrics.runs.WithLabelValues("ok")) >= 3
	})
}

func TestNotifyError(t *testing.T) {
	h := newHarness(t, storetest.RedisURL(t), Config{})
	h.mustRun()
	r := h.st.(*store.Redis)
	ctx := context.Background()
	unknown := r.Client().Do(ctx, "NOSUCHCOMMAND").Err()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"unknown command", unknown, true},
		{"unavailable while reachable", fmt.Errorf("get: %w", context.DeadlineExceeded), true},
		{"unsupported", store.ErrUnsupported, false},
		{"other", errors.New("boom"), false},
	}
	for _, tt := range tests {
		if got := h.d.NotifyError(tt.err); got != tt.want {
			t.Errorf("%s: NotifyError = %v, want %v", tt.name, got, tt.want)
		}
	}
	down := newHarness(t, "redis://127.0.0.1:1", Config{})
	_, _ = down.run()
	if down.d.NotifyError(context.DeadlineExceeded) {
		t.Error("unavailable error re-ran detection for a store already known to be down")
	}
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t, "memory://", Config{})
	if r := h.d.Report(); r.Strategy != StrategyLocalOnly || r.Store.Error == "" {
		t.Errorf("report before any run: %+v", r)
	}
	_ = h.d.Shutdown(context.Background()) // before Start
	_ = h.d.Shutdown(context.Background()) // twice
	h.d.Start(context.Background())
	// Start decides before it returns whether a loop runs: with none
	// started, no detection can come later.
	if h.d.loop.Done() != nil {
		t.Error("Start after Stop started the detection loop")
	}
	if testutil.ToFloat64(h.d.metrics.runs.WithLabelValues("ok")) != 0 {
		t.Error("Start after Stop ran detection")
	}

	h2 := newHarness(t, "memory://", Config{})
	ctx, cancel := context.WithCancel(context.Background())
	h2.d.Start(ctx)
	h2.d.Start(ctx) // second Start is a no-op
	eventually(t, 5*time.Second, "initial run from Start", func() bool { return h2.d.Report().Store.Reachable })
	cancel()
	_ = h2.d.Shutdown(context.Background())
}

// TestDetectionDeadline: a server that accepts connections and never answers
// cannot hold detection past its deadline.
func TestDetectionDeadline(t *testing.T) {
	for _, scheme := range []string{"redis", "memcached"} {
		t.Run(scheme, func(t *testing.T) {
			h := newHarness(t, scheme+"://"+blackhole(t), Config{ProbeTimeout: 100 * time.Millisecond, DetectTimeout: 300 * time.Millisecond})
			start := time.Now()
			rep, err := h.run()
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("detection took %v", took)
			}
			if !errors.Is(err, ErrUnreachable) || rep.Strategy != StrategyLocalOnly {
				t.Errorf("Run = %s, %v", rep.Strategy, err)
			}
		})
	}
}

// TestSkipProbes: a skipped probe answers false and never reaches the
// server, as INFO commandstats proves.
func TestSkipProbes(t *testing.T) {
	srv := storetest.StartRedis(t)
	h := newHarness(t, srv.RedisURL(), Config{SkipProbes: []string{ProbeScripting, ProbeConditionalSet, ProbeConditionalDelete}})
	rep := h.mustRun()
	for _, c := range []string{Scripting, ConditionalSet, ConditionalDelete} {
		if cap := rep.Capabilities[c]; cap.Value != false || !strings.Contains(cap.Evidence, "skipped") {
			t.Errorf("%s = %+v", c, cap)
		}
	}
	stats, err := storetest.AdminRedis(t, srv.RedisURL()).Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"cmdstat_eval:", "cmdstat_evalsha:"} {
		if strings.Contains(stats, cmd) {
			t.Errorf("%s ran although scripting was skipped", cmd)
		}
	}
	if !strings.Contains(stats, "cmdstat_set:") {
		t.Error("commandstats shows no SET: the check is broken")
	}
}

// TestSecretsNeverLeak: passwords appear in no report, error or log line,
// for a live store, a refused operation and an unreachable one.
func TestSecretsNeverLeak(t *testing.T) {
	live := storetest.ACLUser(t, storetest.RedisURL(t), "~*", "&*", "-@all", "+@read", "+@connection", "+info")
	secret := live[strings.Index(live, ":pw")+1 : strings.LastIndex(live, "@")]
	for _, u := range []string{live, "redis://app:" + secret + "@127.0.0.1:1/0", "memcached://app:" + secret + "@127.0.0.1:1"} {
		h := newHarness(t, u, Config{})
		rep, err := h.run()
		details := h.d.ReadinessCheck(context.Background()).Fields()
		var text strings.Builder
		_ = rep.WriteText(&text)
		js, _ := json.Marshal(rep)
		dj, _ := json.Marshal(details)
		for what, s := range map[string]string{
			"json": string(js), "text": text.String(), "readiness": string(dj), "logs": h.logs.String(), "error": fmt.Sprint(err),
		} {
			if strings.Contains(s, secret) {
				t.Errorf("%s: %s leaks the password:\n%s", u[:strings.Index(u, ":")], what, s)
			}
		}
		if !strings.Contains(rep.Store.URL, "xxxxx") {
			t.Errorf("URL %q is not redacted", rep.Store.URL)
		}
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	st := store.NewMemory("")
	_, err := New(st, Config{Capabilities: map[string]bool{"fooo": true}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "capabilities.fooo: unknown capability") {
		t.Errorf("New = %v", err)
	}
	if _, err := New(nil, Config{}, nil, nil); err == nil {
		t.Error("New accepted a nil store")
	}
}

func BenchmarkDetect(b *testing.B) {
	for _, tt := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"redis", func(t testing.TB) string { return storetest.RedisURL(t) }},
		{"memcached", func(t testing.TB) string { return storetest.MemcachedURL(t) }},
		{"memory", func(testing.TB) string { return "memory://" }},
	} {
		b.Run(tt.name, func(b *testing.B) {
			st, err := store.Open(store.Config{URL: secret.URL(tt.url(b)), KeyPrefix: storetest.Prefix(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			d, err := New(st, Config{}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for b.Loop() {
				if _, err := d.Run(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestScriptingOffSendsNoLua: where scripting is skipped or settled false
// above the probes (declared, a custom rule, an embedder's detector), no
// EVAL or EVALSHA reaches the server, from the probes or from the store
// afterwards, and the conditionals come from native commands or nowhere.
// INFO commandstats on a private server is the audit log.
func TestScriptingOffSendsNoLua(t *testing.T) {
	srv := storetest.StartRedis(t)
	admin := storetest.AdminRedis(t, srv.RedisURL())
	tests := []struct {
		name     string
		cfg      Config
		embedder CustomDetector
		why      string // in the evidence
		before   bool   // the store avoids Lua even before the first run
	}{
		{name: "skip_probes", cfg: Config{SkipProbes: []string{ProbeScripting}}, why: `probe "scripting" skipped by skip_probes`, before: true},
		{name: "declared false", cfg: Config{Capabilities: map[string]bool{Scripting: false}}, why: "cache.capabilities.scripting is false", before: true},
		{name: "custom rule", cfg: Config{Detectors: []RuleConfig{{Name: "audited", Product: "redis", Set: map[string]bool{Scripting: false}}}},
			why: `rule "audited"`},
		{name: "embedder detector", embedder: fixedDetector{name: "audit", ops: map[string]Opinion{Scripting: {false, "EVAL is audited"}}},
			why: `detector "audit": EVAL is audited`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if err := admin.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, srv.RedisURL(), tt.cfg)
			if tt.embedder != nil {
				h.d.Register(tt.embedder)
			}
			r := reportedCoord(h)
			if tt.before {
				if _, err := r.CompareAndDelete(ctx, "k", []byte("x")); !errors.Is(err, store.ErrUnsupported) {
					t.Errorf("CompareAndDelete before detection = %v, want ErrUnsupported", err)
				}
			}
			rep := h.mustRun()
			wantCap(t, rep, Scripting, false, "")
			for _, c := range []string{ConditionalSet, ConditionalDelete} {
				// Redis 7.0 has no native conditional commands.
				wantCap(t, rep, c, false, SourceRuntime)
				if ev := rep.Capabilities[c].Evidence; !strings.Contains(ev, "Lua not tried: ") || !strings.Contains(ev, tt.why) {
					t.Errorf("%s evidence %q does not say why Lua was not tried (%q)", c, ev, tt.why)
				}
			}
			if rep.Mechanism != MechanismRedisSetNX || len(rep.Conflicts) != 0 {
				t.Errorf("mechanism %s, conflicts %+v; want %s and none", rep.Mechanism, rep.Conflicts, MechanismRedisSetNX)
			}
			if swap, del := rep.Methods.Swap, rep.Methods.Delete; swap != coord.CondNone || del != coord.CondNone {
				t.Errorf("reported conditionals %s/%s, want none/none", swap, del)
			}
			// The live store, as the coordinator uses it.
			if _, err := r.CompareAndSwap(ctx, "k", []byte("x"), []byte("y"), time.Minute); !errors.Is(err, store.ErrUnsupported) {
				t.Errorf("CompareAndSwap = %v, want ErrUnsupported", err)
			}
			if _, err := r.CompareAndDelete(ctx, "k", []byte("x")); !errors.Is(err, store.ErrUnsupported) {
				t.Errorf("CompareAndDelete = %v, want ErrUnsupported", err)
			}
			stats, err := admin.Info(ctx, "commandstats").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(stats, "\n") {
				for _, cmd := range []string{"cmdstat_eval", "cmdstat_script", "cmdstat_fcall"} {
					if strings.HasPrefix(line, cmd) {
						t.Errorf("Lua reached the server: %s", strings.TrimSpace(line))
					}
				}
			}
			if !strings.Contains(stats, "cmdstat_set:") {
				t.Error("commandstats shows no SET: the check is broken")
			}
			if left := h.keysLeft(); len(left) > 0 {
				t.Errorf("probe keys left behind: %v", left)
			}
		})
	}
}

// TestDetectionBoundedOnSlowStores: behind a proxy that delays every reply,
// each probe ends at probe_timeout and the run at detect_timeout, plus the
// cleanup's own bound of probe_timeout. memcached's client takes no
// context, so this holds only because its calls return at the deadline.
func TestDetectionBoundedOnSlowStores(t *testing.T) {
	tests := []struct {
		name    string
		backend func(t testing.TB) string
		scheme  string
		latency time.Duration
	}{
		{"redis", func(t testing.TB) string { return strings.TrimPrefix(storetest.RedisURL(t), "redis://") }, "redis", 100 * time.Millisecond},
		{"memcached", func(t testing.TB) string { return strings.TrimPrefix(storetest.MemcachedURL(t), "memcached://") }, "memcached", 200 * time.Millisecond},
	}
	cfg := Config{ProbeTimeout: 250 * time.Millisecond, DetectTimeout: time.Second}
	const slack = 60 * time.Millisecond
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slow := storetest.LatencyProxy(t, tt.backend(t), tt.latency)
			h := newHarness(t, tt.scheme+"://"+slow, cfg)
			// A pooled connection, so that the ping is one round trip
			// (go-redis's connection setup alone takes three).
			warm, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := h.st.Ping(warm); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			rep, err := h.run()
			took := time.Since(start)
			if err != nil || !rep.Store.Reachable {
				t.Fatalf("Run: %v (the ping must fit in probe_timeout)", err)
			}
			if limit := cfg.DetectTimeout + cfg.ProbeTimeout + 2*slack; took > limit {
				t.Errorf("detection took %v, want at most detect_timeout + probe_timeout (%v, with slack)", took, limit)
			}
			if !strings.Contains(strings.Join(rep.Store.Warnings, " "), "detection hit detect_timeout") {
				t.Errorf("warnings %v: the latency should have cut the run short", rep.Store.Warnings)
			}
			// Each probe (and the cleanup) within probe_timeout: a probe
			// that runs once has its duration as the histogram's sum.
			families, err := h.reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range families {
				if f.GetName() != "tasker_sidecar_cache_probe_duration_seconds" {
					continue
				}
				for _, m := range f.GetMetric() {
					hist := m.GetHistogram()
					limit := time.Duration(hist.GetSampleCount()) * (cfg.ProbeTimeout + slack)
					if took := time.Duration(hist.GetSampleSum() * float64(time.Second)); took > limit {
						t.Errorf("probe %s: %d run(s) took %v, want at most %v each", m.GetLabel()[0].GetValue(), hist.GetSampleCount(),
							took.Round(time.Millisecond), cfg.ProbeTimeout)
					}
				}
			}
		})
	}
}
