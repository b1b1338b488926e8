package detector

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/store"
)

func (p *prober) probeRedis(r *store.Redis) {
	// One round trip for every key (per node in a cluster).
	defer p.cleanup(func(ctx context.Context, keys []string) error {
		_, err := r.Client().Pipelined(ctx, func(pl redis.Pipeliner) error {
			for _, k := range keys {
				pl.Del(ctx, r.Key(k))
			}
			return nil
		})
		return err
	})
	if !p.probePing() {
		return
	}
	info := p.redisIdentity(r)

	p.probeReadWrite()
	if p.has(ReadWrite) {
		p.observe(Distributed, true, nil, "probe keys written at %s are visible to every client of the server (ping %s)", r.Address(), ms(p.pingTook))
	} else {
		p.note(Distributed, true, "a network server at %s, but writes do not work here", r.Address())
	}
	p.probeIncrement()
	p.probeLocking("SET NX PX")
	p.probeTTLReadback("PTTL")

	// Scripting: EVAL "return 1" 0 is answered with 1, NOPERM (ACL) or
	// "unknown command" (renamed or disabled), which tells them apart. When
	// scripting is skipped or settled false above the probes, no Lua is
	// sent at all, by this probe or the conditional ones.
	noScripts := p.d.cfg.noScripts(p.customOpinions(), constantOpinions(p.res.id))
	switch {
	case p.skipped(ProbeScripting):
		p.skip(Scripting, ProbeScripting)
	case noScripts != "":
		p.note(Scripting, false, "not probed, EVAL never sent: %s", noScripts)
	default:
		took, err := p.run(ProbeScripting, func(ctx context.Context) error {
			n, err := coord.Scripting(ctx, r)
			if err == nil && n != 1 {
				err = mismatch("EVAL returned %d", n)
			}
			return err
		})
		if err != nil {
			p.observe(Scripting, false, err, "EVAL %s", refusal(err))
		} else {
			p.observe(Scripting, true, nil, "EVAL allowed, %s", ms(took))
		}
	}

	p.redisConditionals(r, noScripts)
	p.redisTracking(r)
	p.redisSettings(r, info)

	p.note(MetaCommands, false, "a Redis-protocol server, not memcached")
	p.note(Leases, false, "Redis grants no lease tokens; SET NX PX is the lock")
	p.probeCommon()
	switch {
	case p.res.id.Product == ProductKeyDB:
		p.res.warnings = append(p.res.warnings, "KeyDB in active-replica mode lets two primaries both grant SET NX: locks there are best-effort")
	case p.res.id.Mode == store.TopologyCluster:
		p.res.warnings = append(p.res.warnings, "Redis Cluster: keys one script touches must share a hash tag")
	}
}

// redisIdentity learns product, version, role and mode from HELLO and INFO
// and returns the INFO fields for later probes.
func (p *prober) redisIdentity(r *store.Redis) map[string]string {
	c := r.Client()
	var hello map[string]any
	var info map[string]string
	var helloErr, infoErr error
	_, _ = p.run(ProbeIdentity, func(ctx context.Context) error {
		// HELLO without arguments reports on the connection without
		// changing its protocol; it fails on Redis < 6 (RESP2 only).
		v, err := c.Do(ctx, "HELLO").Result()
		hello, helloErr = helloMap(v), err
		// Some managed services reject INFO ALL or INFO altogether; the
		// default sections carry everything needed.
		s, err := c.Info(ctx).Result()
		info, infoErr = parseInfo(s), err
		return errors.Join(helloErr, infoErr)
	})
	id := &p.res.id
	id.Product, id.Version = identifyRedis(hello, info)
	id.Mode = r.Topology()
	if m := info["redis_mode"]; m != "" && id.Mode != store.TopologySentinel {
		id.Mode = m
	} else if m, _ := hello["mode"].(string); m != "" && id.Mode != store.TopologySentinel {
		id.Mode = m
	}
	if info["cluster_enabled"] == "1" {
		id.Mode = store.TopologyCluster
	}
	role := info["role"]
	if role == "" {
		role, _ = hello["role"].(string)
	}
	switch role {
	case "slave", "replica":
		id.Role = "replica"
	case "master":
		id.Role = "master"
	}
	switch proto := hello["proto"].(type) {
	case int64:
		id.Protocol = int(proto)
	case nil:
		if helloErr != nil {
			id.Protocol = 2
		}
	}
	if infoErr != nil {
		p.res.warnings = append(p.res.warnings, "INFO "+refusal(infoErr)+": eviction policy, persistence and replication come from HELLO or stay unknown")
	}

	helloMode, _ := hello["mode"].(string)
	switch {
	case info["cluster_enabled"] != "":
		p.observe(ClusterMode, id.Mode == store.TopologyCluster, nil, "INFO cluster_enabled:%s", info["cluster_enabled"])
	case helloMode != "":
		p.observe(ClusterMode, id.Mode == store.TopologyCluster, nil, "HELLO mode %s", helloMode)
	default:
		// Nothing observed: the URL's topology is a guess, which must not
		// contradict a declaration.
		p.note(ClusterMode, id.Mode == store.TopologyCluster, "not observed (HELLO %s; INFO %s): mode %s taken from the URL",
			orAnswered(helloErr, "has no mode"), orAnswered(infoErr, "has no cluster_enabled"), id.Mode)
	}
	if id.Role != "" {
		p.observe(Replica, id.Role == "replica", nil, "server role %s", id.Role)
	} else {
		p.note(Replica, false, "role unknown: %s", refusal(errors.Join(helloErr, infoErr)))
	}
	return info
}

// redisConditionals finds which compare-and-set and compare-and-delete the
// server allows, preferring native commands (one command, no script cache,
// no EVAL permission needed) over Lua. Lua is not tried when noScripts says
// why it must not be sent.
func (p *prober) redisConditionals(r *store.Redis, noScripts string) {
	swap, del := coord.CondNone, coord.CondNone
	defer func() { p.res.condKnown, p.res.swap, p.res.del = true, swap, del }()
	hint := func(cmd string) string {
		var known []string
		for _, nc := range nativeCommandsFor(p.res.id.Product) {
			if nc.command == cmd {
				known = append(known, fmt.Sprintf("%s ≥ %s", p.res.id.Product, nc.since))
			}
		}
		if len(known) == 0 {
			return ""
		}
		return " (" + cmd + " needs " + strings.Join(known, ", ") + ")"
	}

	if p.skipped(ProbeConditionalSet) {
		p.skip(ConditionalSet, ProbeConditionalSet)
	} else {
		var tried []string
		var lastErr error
		methods := []coord.Conditional{coord.CondNative, coord.CondScript}
		if noScripts != "" {
			methods = methods[:1]
		}
		for _, m := range methods {
			k := p.key("cas-" + string(m))
			took, err := p.run(ProbeConditionalSet, func(ctx context.Context) error {
				return p.checkSwap(ctx, k, func(ctx context.Context, old, new []byte) (bool, error) {
					return coord.CompareAndSwap(ctx, r, m, k, old, new, probeTTL)
				})
			})
			name := map[coord.Conditional]string{coord.CondNative: "SET IFEQ", coord.CondScript: "Lua compare-and-set"}[m]
			if err == nil {
				swap = m
				tried = append(tried, fmt.Sprintf("%s works (%s)", name, ms(took)))
				break
			}
			lastErr = err
			if m == coord.CondNative {
				tried = append(tried, name+" "+refusal(err)+hint("SET IFEQ"))
			} else {
				tried = append(tried, name+" "+refusal(err))
			}
			if store.Classify(err) == store.ClassUnavailable {
				break
			}
		}
		if noScripts != "" && swap == coord.CondNone && store.Classify(lastErr) != store.ClassUnavailable {
			tried = append(tried, "Lua not tried: "+noScripts)
		}
		if swap != coord.CondNone {
			p.observe(ConditionalSet, true, nil, "%s", strings.Join(tried, "; "))
		} else {
			p.observe(ConditionalSet, false, lastErr, "%s", strings.Join(tried, "; "))
		}
	}

	if p.skipped(ProbeConditionalDelete) {
		p.skip(ConditionalDelete, ProbeConditionalDelete)
		return
	}
	var tried []string
	var lastErr error
	methods := []coord.Conditional{coord.CondNative, coord.CondDelIfEq, coord.CondScript}
	if noScripts != "" {
		methods = methods[:2]
	}
	for _, m := range methods {
		k := p.key("cad-" + string(m))
		took, err := p.run(ProbeConditionalDelete, func(ctx context.Context) error {
			return p.checkDelete(ctx, k, func(ctx context.Context, old []byte) (bool, error) {
				return coord.CompareAndDelete(ctx, r, m, k, old)
			})
		})
		name := map[coord.Conditional]string{coord.CondNative: "DELEX IFEQ", coord.CondDelIfEq: "DELIFEQ", coord.CondScript: "Lua compare-and-delete"}[m]
		if err == nil {
			del = m
			tried = append(tried, fmt.Sprintf("%s works (%s)", name, ms(took)))
			break
		}
		lastErr = err
		tried = append(tried, name+" "+refusal(err)+hint(name))
		if store.Classify(err) == store.ClassUnavailable {
			break
		}
	}
	if noScripts != "" && del == coord.CondNone && store.Classify(lastErr) != store.ClassUnavailable {
		tried = append(tried, "Lua not tried: "+noScripts)
	}
	if del != coord.CondNone {
		p.observe(ConditionalDelete, true, nil, "%s", strings.Join(tried, "; "))
	} else {
		p.observe(ConditionalDelete, false, lastErr, "%s", strings.Join(tried, "; "))
	}
}

// redisTracking turns CLIENT TRACKING on and off again on a connection of
// its own, so no pooled connection is left tracking.
func (p *prober) redisTracking(r *store.Redis) {
	if p.skipped(ProbeClientTracking) {
		p.skip(ClientSideCaching, ProbeClientTracking)
		return
	}
	if p.res.id.Protocol < 3 {
		p.observe(ClientSideCaching, false, nil, "connection speaks RESP%d; tracking invalidations need RESP3 (Redis ≥ 6.0)", p.res.id.Protocol)
		return
	}
	took, err := p.run(ProbeClientTracking, func(ctx context.Context) error {
		var conn *redis.Conn
		switch c := r.Client().(type) {
		case *redis.Client:
			conn = c.Conn()
		case *redis.ClusterClient:
			node, err := c.MasterForKey(ctx, r.Key(p.d.cfg.ProbePrefix+p.runID))
			if err != nil {
				return err
			}
			conn = node.Conn()
		default:
			return fmt.Errorf("client type %T: %w", c, store.ErrUnsupported)
		}
		defer conn.Close()
		if err := conn.Do(ctx, "CLIENT", "TRACKING", "ON").Err(); err != nil {
			return err
		}
		return conn.Do(ctx, "CLIENT", "TRACKING", "OFF").Err()
	})
	if err != nil {
		p.observe(ClientSideCaching, false, err, "CLIENT TRACKING %s", refusal(err))
		return
	}
	p.observe(ClientSideCaching, true, nil, "RESP3 and CLIENT TRACKING ON/OFF allowed, %s", ms(took))
}

// redisSettings reads eviction policy and persistence from INFO, falling
// back to CONFIG GET, which managed services often rename or block.
func (p *prober) redisSettings(r *store.Redis, info map[string]string) {
	if p.skipped(ProbeSettings) {
		p.note(Persistence, false, "probe %q skipped by skip_probes", ProbeSettings)
		p.note(EvictionPolicy, "unknown", "probe %q skipped by skip_probes", ProbeSettings)
		return
	}
	c := r.Client()
	var save string
	var saveErr, policyErr error
	policy := info["maxmemory_policy"]
	_, _ = p.run(ProbeSettings, func(ctx context.Context) error {
		if info["aof_enabled"] != "1" {
			save, saveErr = configGet(ctx, c, "save")
		}
		if policy == "" {
			policy, policyErr = configGet(ctx, c, "maxmemory-policy")
		}
		return nil
	})
	switch {
	case policy != "":
		limit := ""
		if info["maxmemory"] == "0" {
			limit = " (maxmemory 0: no memory limit, so nothing is evicted)"
		}
		p.observe(EvictionPolicy, policy, nil, "maxmemory-policy %s%s", policy, limit)
	default:
		p.note(EvictionPolicy, "unknown", "INFO has no maxmemory_policy and CONFIG GET %s", refusal(errors.Join(policyErr, errors.New("no answer"))))
	}
	rdbSaves, _ := strconv.Atoi(info["rdb_saves"])
	switch {
	case info["aof_enabled"] == "1":
		p.observe(Persistence, true, nil, "AOF enabled")
	case strings.TrimSpace(save) != "":
		p.observe(Persistence, true, nil, "RDB save points %q", save)
	case saveErr == nil && info["aof_enabled"] == "0":
		p.observe(Persistence, false, nil, "AOF off and no RDB save points")
	case rdbSaves > 0:
		p.observe(Persistence, true, nil, "%d RDB saves since start", rdbSaves)
	default:
		p.note(Persistence, false, "AOF off; RDB save points unknown (CONFIG GET save %s)", refusal(errors.Join(saveErr, errors.New("no answer"))))
	}
}

// orAnswered is refusal(err), or what the answer lacked when there was no
// error.
func orAnswered(err error, lacked string) string {
	if err != nil {
		return refusal(err)
	}
	return lacked
}

func configGet(ctx context.Context, c redis.UniversalClient, name string) (string, error) {
	m, err := c.ConfigGet(ctx, name).Result()
	if err != nil {
		return "", err
	}
	v, ok := m[name]
	if !ok {
		return "", fmt.Errorf("CONFIG GET %s: no such setting", name)
	}
	return v, nil
}

// parseInfo reads INFO's "key:value" lines.
func parseInfo(s string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

// helloMap normalises HELLO's reply: a map under RESP3, a flat key/value
// array under RESP2.
func helloMap(v any) map[string]any {
	out := map[string]any{}
	switch m := v.(type) {
	case map[any]any:
		for k, val := range m {
			if ks, ok := k.(string); ok {
				out[ks] = val
			}
		}
	case map[string]any:
		return m
	case []any:
		for i := 0; i+1 < len(m); i += 2 {
			if ks, ok := m[i].(string); ok {
				out[ks] = m[i+1]
			}
		}
	}
	return out
}

// identifyRedis tells the Redis-protocol products apart. Valkey reports
// valkey_version (and server_name:valkey); Dragonfly reports
// dragonfly_version next to a Redis-compatible redis_version; KeyDB is
// recognised by its name in HELLO or in INFO's executable path, a best
// effort because it otherwise looks like Redis 6.
func identifyRedis(hello map[string]any, info map[string]string) (product, version string) {
	server, _ := hello["server"].(string)
	server = strings.ToLower(server)
	helloVersion, _ := hello["version"].(string)
	switch {
	case info["valkey_version"] != "":
		return ProductValkey, info["valkey_version"]
	case info["server_name"] == "valkey" || server == "valkey":
		return ProductValkey, firstNonEmpty(info["redis_version"], helloVersion)
	case info["dragonfly_version"] != "":
		return ProductDragonfly, strings.TrimPrefix(strings.TrimPrefix(info["dragonfly_version"], "df-"), "v")
	case strings.Contains(server, "dragonfly"):
		return ProductDragonfly, helloVersion
	case strings.Contains(server, "keydb") || strings.Contains(strings.ToLower(info["executable"]), "keydb"):
		return ProductKeyDB, firstNonEmpty(info["redis_version"], helloVersion)
	}
	v := firstNonEmpty(info["redis_version"], helloVersion)
	if v == "" && server == "" {
		return "", ""
	}
	return ProductRedis, v
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
