package detector

import (
	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/store"
)

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
// (docs/cache-detection.md#strategy-and-mechanism). Package coord
// implements them; the detector only names the one to use.
const (
	MechanismRedisLua              = coord.MechanismRedisLua
	MechanismRedisCheckedRelease   = coord.MechanismRedisCheckedRelease
	MechanismRedisSetNX            = coord.MechanismRedisSetNX
	MechanismMemcachedMetaLeases   = coord.MechanismMemcachedMetaLeases
	MechanismMemcachedAddLeases    = coord.MechanismMemcachedAddLeases
	MechanismSharedLocalCoalescing = coord.MechanismSharedLocalCoalescing
	MechanismInProcess             = coord.MechanismInProcess
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
