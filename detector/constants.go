package detector

import "fmt"

// The built-in constants say only what a product and version settle on their
// own. A version can prove a feature absent (Redis 5 has no CLIENT
// TRACKING), so below a feature's first version the table answers false. It
// cannot prove a feature usable: an ACL, a renamed command or a proxy can
// take away anything the version has, so from that version on the table
// stays silent and the runtime probe decides. Capabilities that are
// properties of the product itself (Memcached has no scripting, an in-process
// map is not shared) are answered for every version.
//
// The version facts are listed in docs/cache-detection.md#built-in-constants.

type fact struct {
	value any
	why   string
}

// gate: the capability is false before version since.
type gate struct {
	capability string
	since      Version
	why        string
}

// nativeCommand: a command that makes a coordination step one round trip
// without Lua. It is informational here (evidence and docs); the runtime
// probes try the command itself.
type nativeCommand struct {
	command string
	since   Version
}

type productFacts struct {
	fixed    map[string]fact
	gates    []gate
	commands []nativeCommand
}

var redisFamilyFixed = map[string]fact{
	Distributed:        {true, "a network server every sidecar replica reaches"},
	KeyTransformation:  {true, "the store layer prefixes every key"},
	CompressionSupport: {false, "the store layer stores values as given; compression is not configured"},
	MetaCommands:       {false, "the meta protocol is memcached's; Redis-protocol servers do not speak it"},
	Leases:             {false, "no server-issued lease tokens; single-winner recompute uses SET NX PX instead"},
}

var memcachedFixed = map[string]fact{
	Distributed:        {true, "a network server every sidecar replica reaches"},
	KeyTransformation:  {true, "the store layer prefixes every key"},
	CompressionSupport: {false, "the store layer stores values as given; compression is not configured"},
	Scripting:          {false, "no server-side scripting"},
	ClientSideCaching:  {false, "no server-assisted client-side caching"},
	ClusterMode:        {false, "servers do not cluster; the client spreads keys over them"},
	Replica:            {false, "no replication"},
}

// builtins is keyed by product, so finding a product's facts is one map
// lookup; the gates per product are a handful, fixed at compile time.
var builtins = map[string]productFacts{
	ProductRedis: {
		fixed: redisFamilyFixed,
		gates: []gate{
			{Scripting, V(2, 6, 0), "EVAL arrived in Redis 2.6"},
			{Locking, V(2, 6, 12), "SET NX PX arrived in Redis 2.6.12"},
			{TTLInspection, V(2, 6, 0), "PTTL arrived in Redis 2.6"},
			{ClientSideCaching, V(6, 0, 0), "RESP3 and CLIENT TRACKING arrived in Redis 6.0"},
		},
		commands: []nativeCommand{{"SET IFEQ", V(8, 4, 0)}, {"DELEX IFEQ", V(8, 4, 0)}},
	},
	ProductValkey: {
		// Valkey forked from Redis 7.2.4: everything Redis 7.2 has is there.
		fixed:    redisFamilyFixed,
		commands: []nativeCommand{{"SET IFEQ", V(8, 1, 0)}, {"DELIFEQ", V(9, 0, 0)}, {"DELEX IFEQ", V(9, 2, 0)}},
	},
	ProductKeyDB: {
		// KeyDB is a Redis 6 fork and reports a Redis-compatible version.
		// In active-replica mode two primaries can both grant SET NX, so
		// its locks are best-effort; nothing here can see that mode.
		fixed: redisFamilyFixed,
		gates: []gate{
			{ClientSideCaching, V(6, 0, 0), "RESP3 and CLIENT TRACKING arrived in Redis 6.0"},
		},
	},
	ProductDragonfly: {
		// Dragonfly scripts may touch only declared KEYS; the sidecar's
		// scripts declare theirs.
		fixed:    redisFamilyFixed,
		commands: []nativeCommand{{"DELEX IFEQ", V(1, 37, 0)}},
	},
	ProductMemcached: {
		fixed: memcachedFixed,
		gates: []gate{
			{MetaCommands, V(1, 6, 0), "the meta protocol as used here needs memcached 1.6 (experimental in 1.5.19)"},
			{Leases, V(1, 6, 0), "mg N/W/Z leases need the memcached 1.6 meta protocol"},
			{TTLInspection, V(1, 6, 0), "reading a TTL needs mg t, memcached 1.6 meta protocol"},
		},
	},
	ProductMemory: {
		fixed: map[string]fact{
			Distributed:        {false, "nothing is shared between sidecar replicas"},
			ReadWrite:          {true, "an in-process map"},
			AtomicIncrement:    {true, "operations run under one mutex"},
			Locking:            {true, "operations run under one mutex (this process only)"},
			TTLInspection:      {true, "items carry their expiry"},
			ConditionalSet:     {true, "operations run under one mutex"},
			ConditionalDelete:  {true, "operations run under one mutex"},
			Scripting:          {false, "no scripting"},
			MetaCommands:       {false, "not a memcached server"},
			Leases:             {false, "no server to grant leases"},
			ClientSideCaching:  {false, "the store is already in-process"},
			ClusterMode:        {false, "a single process"},
			Replica:            {false, "a single process"},
			Persistence:        {false, "lost when the process exits"},
			EvictionPolicy:     {"noeviction", "items leave only when they expire"},
			KeyTransformation:  {true, "the store layer prefixes every key"},
			CompressionSupport: {false, "the store layer stores values as given"},
		},
	},
	ProductNone: {
		fixed: func() map[string]fact {
			m := map[string]fact{EvictionPolicy: {"none", "stores nothing"}}
			for _, c := range capabilityTable {
				if c.boolean {
					m[c.name] = fact{false, "stores nothing"}
				}
			}
			return m
		}(),
	},
}

// constantOpinions returns the table's opinions for an identified server.
// An unidentified Redis-protocol server gets the Redis row without gates.
func constantOpinions(id Identity) map[string]Opinion {
	product := id.Product
	if product == "" {
		product = id.Kind
	}
	facts, ok := builtins[product]
	if !ok {
		return nil
	}
	out := make(map[string]Opinion, len(facts.fixed)+len(facts.gates))
	for name, f := range facts.fixed {
		out[name] = Opinion{Value: f.value, Evidence: fmt.Sprintf("%s: %s", product, f.why)}
	}
	v, known := ParseVersion(id.Version)
	if !known || id.Product == "" {
		return out
	}
	for _, g := range facts.gates {
		if v.Less(g.since) {
			out[g.capability] = Opinion{Value: false, Evidence: fmt.Sprintf("%s %s is older than %s: %s", product, id.Version, g.since, g.why)}
		}
	}
	return out
}

// nativeCommandsFor lists what the table knows about native conditional
// commands for a product, for evidence text.
func nativeCommandsFor(product string) []nativeCommand {
	return builtins[product].commands
}
