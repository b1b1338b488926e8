// Package detector finds out what the cache store behind a store.Store can
// really do, explains every answer, and picks the coordination strategy the
// sidecar uses with it.
//
// Four sources have opinions on each capability, highest priority first:
// declared (configuration) > custom (rules and embedder detectors matching
// the server's identity) > constants (a built-in table of products and
// versions) > runtime (real round trips against the server). The highest
// source with an opinion settles a capability; lower ones fill the gaps. The
// runtime probes always run and have an opinion on everything, so every
// capability gets a value, and a declaration they contradict is reported as
// a conflict.
package detector

import "slices"

// Capability names. The first seven are Tasker's
// (docs/tasker-semantics.md#cache-strategy-and-capabilities); the
// rest are what a coordinator needs beyond them.
const (
	Distributed        = "distributed"
	AtomicIncrement    = "atomic_increment"
	Locking            = "locking"
	TTLInspection      = "ttl_inspection"
	NamespaceSupport   = "namespace_support"
	CompressionSupport = "compression_support"
	KeyTransformation  = "key_transformation"

	ReadWrite         = "read_write"
	ConditionalSet    = "conditional_set"
	ConditionalDelete = "conditional_delete"
	Scripting         = "scripting"
	MetaCommands      = "meta_commands"
	Leases            = "leases"
	ClientSideCaching = "client_side_caching"
	ClusterMode       = "cluster_mode"
	Replica           = "replica"
	Persistence       = "persistence"
	EvictionPolicy    = "eviction_policy"
)

// Sources, highest priority first.
const (
	SourceDeclared  = "declared"
	SourceCustom    = "custom"
	SourceConstants = "constants"
	SourceRuntime   = "runtime"
)

// Sources lists the sources in priority order.
func Sources() []string {
	return []string{SourceDeclared, SourceCustom, SourceConstants, SourceRuntime}
}

type capabilityInfo struct {
	name    string
	boolean bool // string-valued capabilities cannot be declared
	tasker  bool
	doc     string
}

// capabilityTable is in display order.
var capabilityTable = []capabilityInfo{
	{Distributed, true, true, "the store is shared by every sidecar replica"},
	{AtomicIncrement, true, true, "counters can be incremented atomically on the server (INCRBY, incr/add)"},
	{Locking, true, true, "a key can be created only if absent, with an expiry (SET NX PX, add): the lock/lease primitive"},
	{TTLInspection, true, true, "a key's remaining time to live can be read (PTTL, mg t)"},
	{NamespaceSupport, true, true, "keys are isolated under a configured prefix"},
	{CompressionSupport, true, true, "values are compressed by the store layer"},
	{KeyTransformation, true, true, "keys are transformed (prefixed) by the store layer; informational, as in Tasker"},
	{ReadWrite, true, false, "values can be written, read back and deleted (false on a read-only replica or read-only ACL)"},
	{ConditionalSet, true, false, "atomic compare-and-set: SET IFEQ, a Lua script, or gets/cas"},
	{ConditionalDelete, true, false, "atomic compare-and-delete, the token-checked lock release: DELEX IFEQ, DELIFEQ, a Lua script, or cas with a past expiry"},
	{Scripting, true, false, "server-side Lua (EVAL) is allowed"},
	{MetaCommands, true, false, "the memcached meta protocol (mn/mg/ms/md/ma) reaches the server"},
	{Leases, true, false, "the server grants single-winner leases on a miss (memcached mg N: W/Z)"},
	{ClientSideCaching, true, false, "RESP3 server-assisted client-side caching (CLIENT TRACKING)"},
	{ClusterMode, true, false, "the server is part of a Redis Cluster (keys for one script must share a slot)"},
	{Replica, true, false, "connected to a replica rather than a primary"},
	{Persistence, true, false, "data survives a server restart (AOF, RDB save points, memcached warm restart)"},
	{EvictionPolicy, false, false, "what the server does when memory is full (maxmemory-policy; memcached: allkeys-lru or noeviction)"},
}

var capabilityIndex = func() map[string]capabilityInfo {
	m := make(map[string]capabilityInfo, len(capabilityTable))
	for _, c := range capabilityTable {
		m[c.name] = c
	}
	return m
}()

// Capabilities lists every capability name in display order.
func Capabilities() []string {
	out := make([]string, len(capabilityTable))
	for i, c := range capabilityTable {
		out[i] = c.name
	}
	return out
}

// TaskerCapabilities lists the capabilities Tasker itself knows.
func TaskerCapabilities() []string {
	var out []string
	for _, c := range capabilityTable {
		if c.tasker {
			out = append(out, c.name)
		}
	}
	return out
}

// Declarable reports whether a capability may appear in
// cache.capabilities: only boolean ones can.
func Declarable(name string) bool {
	c, ok := capabilityIndex[name]
	return ok && c.boolean
}

func knownCapability(name string) bool {
	_, ok := capabilityIndex[name]
	return ok
}

// Opinion is one source's answer for one capability.
type Opinion struct {
	Value    any    // bool for every capability except eviction_policy (string)
	Evidence string // why, in words a reader of the report understands
}

// observation is a runtime opinion plus whether a probe really saw it, as
// opposed to "not applicable" or "skipped". Only observations can contradict
// a declaration.
type observation struct {
	Opinion
	observed bool
}

// Products the detector can identify.
const (
	ProductRedis     = "redis"
	ProductValkey    = "valkey"
	ProductKeyDB     = "keydb"
	ProductDragonfly = "dragonfly"
	ProductMemcached = "memcached"
	ProductMemory    = "memory"
	ProductNone      = "none"
)

var products = []string{ProductRedis, ProductValkey, ProductKeyDB, ProductDragonfly, ProductMemcached, ProductMemory, ProductNone}

func knownProduct(p string) bool { return slices.Contains(products, p) }
