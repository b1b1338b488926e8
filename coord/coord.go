// Package coord is the one coordination layer over the cache store: every
// Lua script, compare-and-swap and compare-and-delete sequence, lease and
// Memcached meta-command sequence lives here. It is built from the store
// (package store, plain client primitives) and what the capability
// detector reported (package detector reads and reports, and never
// reconfigures a client): the coordinated cache (package ttl) takes its
// mechanism from it (For), and the transition stream its export lease
// (Lease) and its shared checkpoint (Keys).
package coord

import (
	"context"
	"time"

	"github.com/tasker-systems/tasker-sidecar/store"
)

// Mechanisms: how the coordinator coordinates under the chosen strategy
// (docs/cache-detection.md#strategy-and-mechanism). The detector picks
// one (detector.Mechanism* are these).
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

// Coordinator coordinates through one store with the conditional methods
// the latest detection found (methods is asked at every operation, so a
// re-run that finds other methods applies at once).
type Coordinator struct {
	st      store.Store
	methods func() Methods
}

// New returns the coordinator of st. methods reports the conditional
// methods to use on a Redis-protocol store (detector.Report.Methods); nil
// assumes scripts, as before any detection.
func New(st store.Store, methods func() Methods) *Coordinator {
	if methods == nil {
		methods = func() Methods { return Methods{} }
	}
	return &Coordinator{st: st, methods: methods}
}

// Store is the store it coordinates through.
func (c *Coordinator) Store() store.Store { return c.st }

// CompareAndSwap is CompareAndSwap with the reported swap method.
func (c *Coordinator) CompareAndSwap(ctx context.Context, key string, old, new []byte, ttl time.Duration) (bool, error) {
	return CompareAndSwap(ctx, c.st, c.methods().Swap, key, old, new, ttl)
}

// CompareAndDelete is CompareAndDelete with the reported delete method.
func (c *Coordinator) CompareAndDelete(ctx context.Context, key string, old []byte) (bool, error) {
	return CompareAndDelete(ctx, c.st, c.methods().Delete, key, old)
}

// Shared reports whether st is shared between processes (Redis or
// Memcached), so that a checkpoint or lease in it means something to the
// other replicas.
func Shared(st store.Store) bool {
	switch st.Kind() {
	case store.KindRedis, store.KindMemcached:
		return true
	}
	return false
}

// Keys is a store seen as the plain keys the transition stream keeps its
// checkpoint under (collector.CheckpointStore), so that the packages that
// read the workflow database need not import the store.
type Keys struct{ st store.Store }

// KeysOf returns st's keys.
func KeysOf(st store.Store) Keys { return Keys{st: st} }

func (k Keys) Get(ctx context.Context, key string) ([]byte, bool, error) { return k.st.Get(ctx, key) }
func (k Keys) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	return k.st.Set(ctx, key, val, ttl)
}

// Shared is Shared(st).
func (k Keys) Shared() bool { return Shared(k.st) }

// String names the store's kind.
func (k Keys) String() string { return k.st.Kind() }
