package detector

import (
	"testing"

	"github.com/tasker-systems/tasker-sidecar/store"
)

func TestConstantOpinions(t *testing.T) {
	tests := []struct {
		name       string
		id         Identity
		capability string
		want       any // nil: no opinion
	}{
		{"redis is distributed", Identity{Kind: "redis", Product: ProductRedis, Version: "7.0.15"}, Distributed, true},
		{"redis 5 has no tracking", Identity{Kind: "redis", Product: ProductRedis, Version: "5.0.14"}, ClientSideCaching, false},
		{"redis 7 tracking left to probes", Identity{Kind: "redis", Product: ProductRedis, Version: "7.0.15"}, ClientSideCaching, nil},
		{"redis 2.6.0 has no SET NX PX", Identity{Kind: "redis", Product: ProductRedis, Version: "2.6.0"}, Locking, false},
		{"redis scripting left to probes", Identity{Kind: "redis", Product: ProductRedis, Version: "7.0.15"}, Scripting, nil},
		{"valkey never speaks meta", Identity{Kind: "redis", Product: ProductValkey, Version: "8.1.0"}, MetaCommands, false},
		{"keydb 5 has no tracking", Identity{Kind: "redis", Product: ProductKeyDB, Version: "5.3.3"}, ClientSideCaching, false},
		{"dragonfly is distributed", Identity{Kind: "redis", Product: ProductDragonfly, Version: "1.37.0"}, Distributed, true},
		{"memcached 1.5 has no meta", Identity{Kind: "memcached", Product: ProductMemcached, Version: "1.5.22"}, MetaCommands, false},
		{"memcached 1.5 has no leases", Identity{Kind: "memcached", Product: ProductMemcached, Version: "1.5.22"}, Leases, false},
		{"memcached 1.6 meta left to probes", Identity{Kind: "memcached", Product: ProductMemcached, Version: "1.6.18"}, MetaCommands, nil},
		{"memcached never scripts", Identity{Kind: "memcached", Product: ProductMemcached, Version: "1.6.18"}, Scripting, false},
		{"memory is not distributed", Identity{Kind: "memory", Product: ProductMemory}, Distributed, false},
		{"memory locks", Identity{Kind: "memory", Product: ProductMemory}, Locking, true},
		{"none stores nothing", Identity{Kind: "none", Product: ProductNone}, ReadWrite, false},
		{"unidentified redis gets the kind row", Identity{Kind: "redis"}, Distributed, true},
		{"unidentified redis gets no gates", Identity{Kind: "redis", Version: "5.0.0"}, ClientSideCaching, nil},
		{"unknown product", Identity{Kind: "other", Product: "other"}, Distributed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, ok := constantOpinions(tt.id)[tt.capability]
			switch {
			case tt.want == nil && ok:
				t.Errorf("opinion %v (%s), want none", op.Value, op.Evidence)
			case tt.want != nil && (!ok || op.Value != tt.want):
				t.Errorf("opinion %v (ok=%v), want %v", op.Value, ok, tt.want)
			}
		})
	}
}

func TestChooseStrategy(t *testing.T) {
	caps := func(names ...string) map[string]Capability {
		m := map[string]Capability{}
		for _, n := range names {
			m[n] = Capability{Value: true}
		}
		return m
	}
	full := []string{Distributed, ReadWrite, AtomicIncrement, Locking}
	tests := []struct {
		name      string
		kind      string
		reachable bool
		caps      map[string]Capability
		strategy  string
		mechanism string
	}{
		{"redis with lua", store.KindRedis, true, caps(append(full, Scripting, ConditionalDelete)...), StrategyDistributedAtomic, MechanismRedisLua},
		{"redis without lua, checked release", store.KindRedis, true, caps(append(full, ConditionalDelete)...), StrategyDistributedAtomic, MechanismRedisCheckedRelease},
		{"redis plain", store.KindRedis, true, caps(full...), StrategyDistributedAtomic, MechanismRedisSetNX},
		{"memcached meta", store.KindMemcached, true, caps(append(full, MetaCommands, Leases)...), StrategyDistributedAtomic, MechanismMemcachedMetaLeases},
		{"memcached classic", store.KindMemcached, true, caps(full...), StrategyDistributedAtomic, MechanismMemcachedAddLeases},
		{"no locking", store.KindRedis, true, caps(Distributed, ReadWrite, AtomicIncrement), StrategyDistributedBasic, MechanismSharedLocalCoalescing},
		{"no increment", store.KindMemcached, true, caps(Distributed, ReadWrite, Locking), StrategyDistributedBasic, MechanismSharedLocalCoalescing},
		{"read-only replica", store.KindRedis, true, caps(Distributed, AtomicIncrement, Locking, Scripting), StrategyLocalOnly, MechanismInProcess},
		{"unreachable despite capabilities", store.KindRedis, false, caps(append(full, Scripting)...), StrategyLocalOnly, MechanismInProcess},
		{"memory", store.KindMemory, true, caps(ReadWrite, AtomicIncrement, Locking), StrategyLocalOnly, MechanismInProcess},
		{"memory declared distributed", store.KindMemory, true, caps(full...), StrategyDistributedBasic, MechanismSharedLocalCoalescing},
		{"none", store.KindNone, true, caps(), StrategyLocalOnly, MechanismInProcess},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, m := chooseStrategy(tt.kind, tt.reachable, tt.caps)
			if s != tt.strategy || m != tt.mechanism {
				t.Errorf("got %s/%s, want %s/%s", s, m, tt.strategy, tt.mechanism)
			}
		})
	}
}

func TestSettlePrecedence(t *testing.T) {
	d := &Detector{cfg: Config{Capabilities: map[string]bool{Scripting: false}}}
	custom := map[string]Opinion{Scripting: {true, "rule"}, Locking: {false, "rule"}}
	constants := map[string]Opinion{Scripting: {true, "table"}, Locking: {true, "table"}, Persistence: {true, "table"}}
	obs := map[string]observation{
		Scripting: {Opinion{true, "probe"}, true}, Locking: {Opinion{true, "probe"}, true},
		Persistence: {Opinion{false, "probe"}, true}, ReadWrite: {Opinion{true, "probe"}, true},
	}
	tests := []struct {
		capability string
		value      any
		source     string
	}{
		{Scripting, false, SourceDeclared},   // declared beats everything
		{Locking, false, SourceCustom},       // custom beats constants and runtime
		{Persistence, true, SourceConstants}, // constants beat runtime
		{ReadWrite, true, SourceRuntime},     // runtime fills the gap
	}
	for _, tt := range tests {
		c := d.settle(tt.capability, custom, constants, obs)
		if c.Value != tt.value || c.Source != tt.source {
			t.Errorf("%s = %v from %s, want %v from %s", tt.capability, c.Value, c.Source, tt.value, tt.source)
		}
	}
}

func TestRuleMatch(t *testing.T) {
	id := Identity{Product: ProductRedis, Version: "7.0.15", Address: "10.0.0.5:6379,10.0.0.6:6379"}
	tests := []struct {
		rule RuleConfig
		want bool
	}{
		{RuleConfig{Product: "redis"}, true},
		{RuleConfig{Product: "Redis"}, true},
		{RuleConfig{Product: "valkey"}, false},
		{RuleConfig{Version: ">=7.0 <8"}, true},
		{RuleConfig{Version: "<7"}, false},
		{RuleConfig{Address: "10.0.0.6:*"}, true},
		{RuleConfig{Address: "*.example.com:*"}, false},
		{RuleConfig{Address: `/^10\.0\.0\.[0-9]+:6379$/`}, true},
		{RuleConfig{Product: "redis", Version: "7.0", Address: "10.*"}, true},
		{RuleConfig{Product: "redis", Version: "7.2", Address: "10.*"}, false},
		{RuleConfig{}, true},
	}
	for _, tt := range tests {
		tt.rule.Name = "r"
		tt.rule.Set = map[string]bool{Scripting: true}
		rules, err := compileRules([]RuleConfig{tt.rule})
		if err != nil {
			t.Fatal(err)
		}
		if got, why := rules[0].match(id); got != tt.want {
			t.Errorf("%+v matched=%v (%s), want %v", tt.rule, got, why, tt.want)
		}
	}
	if ok, _ := (rule{constraint: mustConstraint(t, ">=1")}).match(Identity{}); ok {
		t.Error("a version rule matched a server of unknown version")
	}
}

func mustConstraint(t *testing.T, s string) *Constraint {
	t.Helper()
	c, err := ParseConstraint(s)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestIdentifyRedis(t *testing.T) {
	// INFO samples written for this test from the field names the products
	// document (cache-algorithms §4.1); only Redis 7.0 is also checked live.
	tests := []struct {
		name    string
		hello   map[string]any
		info    string
		product string
		version string
	}{
		{"redis", map[string]any{"server": "redis", "version": "7.0.15"}, "# Server\nredis_version:7.0.15\nredis_mode:standalone\n", ProductRedis, "7.0.15"},
		{"valkey", map[string]any{"server": "valkey", "version": "8.1.1"}, "redis_version:7.2.4\nserver_name:valkey\nvalkey_version:8.1.1\n", ProductValkey, "8.1.1"},
		{"valkey without valkey_version", nil, "redis_version:7.2.4\nserver_name:valkey\n", ProductValkey, "7.2.4"},
		{"dragonfly", map[string]any{"server": "redis", "version": "7.4.0"}, "redis_version:7.4.0\ndragonfly_version:df-v1.37.0\n", ProductDragonfly, "1.37.0"},
		{"keydb", nil, "redis_version:6.3.4\nexecutable:/usr/local/bin/keydb-server\n", ProductKeyDB, "6.3.4"},
		{"INFO refused", map[string]any{"server": "redis", "version": "7.2.0"}, "", ProductRedis, "7.2.0"},
		{"nothing known", nil, "", "", ""},
	}
	for _, tt := range tests {
		p, v := identifyRedis(tt.hello, parseInfo(tt.info))
		if p != tt.product || v != tt.version {
			t.Errorf("%s: got %s %s, want %s %s", tt.name, p, v, tt.product, tt.version)
		}
	}
}

func TestHelloMap(t *testing.T) {
	resp3 := map[any]any{"server": "redis", "proto": int64(3)}
	resp2 := []any{"server", "redis", "proto", int64(2)}
	if m := helloMap(resp3); m["server"] != "redis" || m["proto"] != int64(3) {
		t.Errorf("RESP3: %v", m)
	}
	if m := helloMap(resp2); m["server"] != "redis" || m["proto"] != int64(2) {
		t.Errorf("RESP2: %v", m)
	}
	if m := helloMap(nil); len(m) != 0 {
		t.Errorf("nil: %v", m)
	}
}
