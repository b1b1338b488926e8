package detector

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tasker-systems/tasker-sidecar/store"
)

func (p *prober) probeMemcached(m *store.Memcached) {
	defer p.cleanup(eachKey(m.Delete))
	if !p.probePing() {
		return
	}
	p.memcachedIdentity(m)
	settings := p.memcachedSettings(m)

	p.probeReadWrite()
	if p.has(ReadWrite) {
		p.observe(Distributed, true, nil, "probe keys written at %s are visible to every client of the servers (version round trip %s)", m.Address(), ms(p.pingTook))
	} else {
		p.note(Distributed, true, "network servers at %s, but writes do not work here", m.Address())
	}
	p.probeIncrement()
	p.probeLocking("add")

	casNote := ""
	if settings["cas_enabled"] == "no" {
		casNote = " (stats settings: cas_enabled no, memcached -C)"
		p.res.warnings = append(p.res.warnings, "memcached runs with CAS disabled (-C): gets/cas and meta C flags cannot be trusted")
	}
	p.probeSwapper("gets/cas" + casNote)

	// Meta protocol: mn must reach every server; a proxy in between may
	// not pass it even when the servers speak it.
	if p.skipped(ProbeMeta) {
		p.skip(MetaCommands, ProbeMeta)
	} else {
		took, err := p.run(ProbeMeta, func(ctx context.Context) error {
			for _, a := range m.Servers() {
				if err := m.MetaNoop(ctx, a); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			p.observe(MetaCommands, false, err, "mn %s", refusal(err))
		} else {
			p.observe(MetaCommands, true, nil, "mn answered MN on %d server(s) in %s", len(m.Servers()), ms(took))
		}
	}

	switch {
	case p.skipped(ProbeLease):
		p.skip(Leases, ProbeLease)
	case !p.has(MetaCommands):
		p.observe(Leases, false, nil, "needs the meta protocol, which %s", p.res.obs[MetaCommands].Evidence)
	default:
		k := p.key("lease")
		took, err := p.run(ProbeLease, func(ctx context.Context) error {
			first, err := m.MetaGet(ctx, k, "v", "c", "t", "N5")
			if err != nil {
				return err
			}
			if _, won := first.Flag('W'); !won {
				return mismatch("first mg N on a miss answered %s %v without W", first.Status, first.Flags)
			}
			second, err := m.MetaGet(ctx, k, "v", "c", "t", "N5")
			if err != nil {
				return err
			}
			_, won := second.Flag('W')
			_, lost := second.Flag('Z')
			if won || !lost {
				return mismatch("second mg N answered %s %v, want Z without W", second.Status, second.Flags)
			}
			_, err = m.MetaDelete(ctx, k)
			return err
		})
		if err != nil {
			p.observe(Leases, false, err, "mg N %s", refusal(err))
		} else {
			p.observe(Leases, true, nil, "mg N5 gave W to the first caller and Z to the second in %s", ms(took))
		}
	}
	p.probeTTLReadback("mg t")

	p.note(Scripting, false, "memcached has no server-side scripting")
	p.note(ClientSideCaching, false, "memcached has no server-assisted client-side caching")
	p.note(ClusterMode, false, "memcached servers do not cluster; keys are spread over %d server(s) by the client", len(m.Servers()))
	p.note(Replica, false, "memcached has no replication")
	p.probeCommon()
	for _, w := range m.Warnings() {
		p.res.warnings = append(p.res.warnings, w)
		p.d.warnOnce("store-warning:"+w, w, "store", m.Address())
	}
}

func (p *prober) memcachedIdentity(m *store.Memcached) {
	var versions []string
	var lowest Version
	_, err := p.run(ProbeIdentity, func(ctx context.Context) error {
		for _, a := range m.Servers() {
			v, err := m.Version(ctx, a)
			if err != nil {
				return err
			}
			versions = append(versions, a+"="+v)
			pv, ok := ParseVersion(v)
			if ok && (lowest == (Version{}) || pv.Less(lowest)) {
				lowest = pv
				p.res.id.Version = v
			}
		}
		return nil
	})
	p.res.id.Product = ProductMemcached
	if err != nil {
		p.res.warnings = append(p.res.warnings, "memcached version "+refusal(err))
	}
	if len(versions) > 1 {
		p.res.warnings = append(p.res.warnings, "memcached servers "+strings.Join(versions, ", ")+": capabilities are those of the oldest")
	}
}

// memcachedSettings reads stats settings from the first server for
// eviction, persistence (warm restart) and CAS.
func (p *prober) memcachedSettings(m *store.Memcached) map[string]string {
	if p.skipped(ProbeSettings) {
		p.note(Persistence, false, "probe %q skipped by skip_probes", ProbeSettings)
		p.note(EvictionPolicy, "unknown", "probe %q skipped by skip_probes", ProbeSettings)
		return nil
	}
	var settings map[string]string
	_, err := p.run(ProbeSettings, func(ctx context.Context) error {
		var err error
		settings, err = m.Stats(ctx, m.Servers()[0], "settings")
		return err
	})
	if err != nil {
		p.note(Persistence, false, "stats settings %s", refusal(err))
		p.note(EvictionPolicy, "unknown", "stats settings %s", refusal(err))
		return nil
	}
	switch settings["evictions"] {
	case "on":
		p.observe(EvictionPolicy, "allkeys-lru", nil, "stats settings evictions on (LRU over all items, maxbytes %s)", settings["maxbytes"])
	case "off":
		p.observe(EvictionPolicy, "noeviction", nil, "stats settings evictions off (memcached -M: stores fail when full)")
	default:
		p.note(EvictionPolicy, "unknown", "stats settings has no evictions field")
	}
	if f := settings["memory_file"]; f != "" && f != "(null)" && f != "NULL" {
		p.observe(Persistence, true, nil, "warm restart from memory_file %s", f)
	} else {
		p.observe(Persistence, false, nil, "memory only (no memory_file for warm restart)")
	}
	return settings
}

// probeLocal covers memory:// and none://, through the store interfaces.
func (p *prober) probeLocal() {
	defer p.cleanup(eachKey(p.d.st.Delete))
	if !p.probePing() {
		return
	}
	p.res.id.Product = p.d.st.Kind()
	p.probeReadWrite()
	p.note(Distributed, false, "%s store: nothing is shared between sidecar replicas", p.d.st.Kind())
	p.probeIncrement()
	p.probeLocking("create-if-absent")
	p.probeTTLReadback("TTL")
	p.probeSwapper("compare-and-swap under the store mutex")
	for _, c := range []string{Scripting, MetaCommands, Leases, ClientSideCaching, ClusterMode, Replica, Persistence} {
		p.note(c, false, "not applicable to the %s store", p.d.st.Kind())
	}
	p.note(EvictionPolicy, "noeviction", "items leave the %s store only when they expire", p.d.st.Kind())
	p.probeCommon()
}

// probe runs the runtime source for the store's kind.
func (d *Detector) probe(ctx context.Context) *runtimeResult {
	p := newProber(ctx, d)
	switch st := d.st.(type) {
	case *store.Redis:
		p.probeRedis(st)
	case *store.Memcached:
		p.probeMemcached(st)
	default:
		p.probeLocal()
	}
	// Anything a probe did not reach (a deadline cut the run short) still
	// needs a value.
	for _, c := range capabilityTable {
		if _, ok := p.res.obs[c.name]; ok {
			continue
		}
		var v any = false
		if !c.boolean {
			v = "unknown"
		}
		why := "not probed"
		if err := ctx.Err(); err != nil {
			why = fmt.Sprintf("not probed: %v (detect_timeout %s)", err, d.cfg.DetectTimeout)
		}
		p.note(c.name, v, "%s", why)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		p.res.warnings = append(p.res.warnings, fmt.Sprintf("detection hit detect_timeout (%s); unprobed capabilities count as unsupported", d.cfg.DetectTimeout))
	}
	return p.res
}
