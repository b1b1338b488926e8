package detector

import "github.com/tasker-systems/tasker-sidecar/store"

// Strategies, with Tasker's names (docs/tasker-semantics.md#cache-strategy-and-capabilities).
const (
	StrategyDistributedAtomic = "distributed_atomic"
	StrategyDistributedBasic  = "distributed_basic"
	StrategyLocalOnly         = "local_only"
)

// Strategies lists the strategies.
func Strategies() []string {
	return []string{StrategyDistributedAtomic, StrategyDistributedBasic, StrategyLocalOnly}
}

// Mechanisms: how the coordinator coordinates under the chosen strategy
// (docs/cache-detection.md#strategy-and-mechanism).
const (
	// R-script: a miss is one Lua round trip (GET or SET-NX-placeholder);
	// locks are released by a token-checked script.
	MechanismRedisLua = "redis_lua_scripts"
	// R-plain+: SET NX PX locks released by a token-checked native
	// compare-and-delete (DELEX IFEQ, DELIFEQ); no Lua anywhere. Where
	// scripting is skipped or declared off, no Lua is even probed.
	MechanismRedisCheckedRelease = "redis_set_nx_checked_release"
	// R-plain: SET NX PX locks that are released by expiry only, because a
	// plain DEL could remove another holder's lock.
	MechanismRedisSetNX = "redis_set_nx"
	// M-meta: mg N<ttl> leases (W/Z), refresh-ahead with mg R, ma counters.
	MechanismMemcachedMetaLeases = "memcached_meta_leases"
	// M-classic: add-based leases that expire on their own, incr counters.
	MechanismMemcachedAddLeases = "memcached_add_leases"
	// Values are shared but the store offers no atomic create-if-absent or
	// counter: each process coalesces its own misses (singleflight) and
	// never does read-modify-write on shared keys.
	MechanismSharedLocalCoalescing = "shared_values_local_coalescing"
	// Nothing shared: singleflight and in-process state only.
	MechanismInProcess = "in_process"
)

// Mechanisms lists the mechanisms.
func Mechanisms() []string {
	return []string{MechanismRedisLua, MechanismRedisCheckedRelease, MechanismRedisSetNX,
		MechanismMemcachedMetaLeases, MechanismMemcachedAddLeases, MechanismSharedLocalCoalescing, MechanismInProcess}
}

// chooseStrategy follows Tasker's rule (distributed ∧ atomic ∧ locking →
// atomic; distributed → basic; else local) with two additions: a store that
// is unreachable or refuses writes is local, and the mechanism says which
// atomic primitive the coordinator uses. Memcached lands in
// distributed_atomic, not Tasker's distributed_basic, because add is an
// atomic lease primitive.
func chooseStrategy(kind string, reachable bool, caps map[string]Capability) (string, string) {
	has := func(name string) bool { b, _ := caps[name].Value.(bool); return b }
	if !reachable || !has(Distributed) || !has(ReadWrite) {
		return StrategyLocalOnly, MechanismInProcess
	}
	if !has(AtomicIncrement) || !has(Locking) {
		return StrategyDistributedBasic, MechanismSharedLocalCoalescing
	}
	switch kind {
	case store.KindRedis:
		switch {
		case has(Scripting):
			return StrategyDistributedAtomic, MechanismRedisLua
		case has(ConditionalDelete):
			return StrategyDistributedAtomic, MechanismRedisCheckedRelease
		default:
			return StrategyDistributedAtomic, MechanismRedisSetNX
		}
	case store.KindMemcached:
		if has(MetaCommands) && has(Leases) {
			return StrategyDistributedAtomic, MechanismMemcachedMetaLeases
		}
		return StrategyDistributedAtomic, MechanismMemcachedAddLeases
	}
	// A declaration made some other kind distributed; there is no shared
	// mechanism to use with it.
	return StrategyDistributedBasic, MechanismSharedLocalCoalescing
}
