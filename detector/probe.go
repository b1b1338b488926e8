package detector

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/store"
)

// probeTTL is the expiry of every probe key: the safety net that removes a
// key even when the cleanup round trip fails.
const probeTTL = 10 * time.Second

// runtimeResult is what the runtime source learned.
type runtimeResult struct {
	id        Identity
	reachable bool
	err       error
	obs       map[string]observation
	warnings  []string
	// Redis only: which conditional methods work.
	condKnown bool
	swap, del coord.Conditional
	// The custom source's opinions, when a probe needed them (they depend
	// on the identity the probes found); Run reuses them.
	custom     map[string]Opinion
	customDone bool
}

// prober runs the probes of one detection run.
type prober struct {
	d     *Detector
	ctx   context.Context // the whole run's deadline
	runID string
	keys  []string // probe keys written, without the store's prefix
	res   *runtimeResult

	pingTook time.Duration
}

func newProber(ctx context.Context, d *Detector) *prober {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return &prober{
		d:     d,
		ctx:   ctx,
		runID: hex.EncodeToString(b),
		res: &runtimeResult{
			id:  Identity{Kind: d.st.Kind(), Address: d.st.Address()},
			obs: map[string]observation{},
		},
	}
}

// key names a probe key and remembers it for cleanup.
func (p *prober) key(name string) string {
	k := p.d.cfg.ProbePrefix + p.runID + ":" + name
	p.keys = append(p.keys, k)
	return k
}

func (p *prober) token(name string) []byte { return []byte(name + "-" + p.runID) }

func (p *prober) skipped(probe string) bool { return contains(p.d.cfg.SkipProbes, probe) }

// run runs one probe under its own deadline and records its duration.
func (p *prober) run(probe string, fn func(ctx context.Context) error) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.d.cfg.ProbeTimeout)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	took := time.Since(start)
	p.d.metrics.probeDuration.WithLabelValues(probe).Observe(took.Seconds())
	return took, err
}

// observe records what a probe saw. A refusal (permission, protocol,
// unsupported) or a wrong answer is an observation of "not supported"; a
// timeout or lost connection is not, so it cannot contradict a declaration.
func (p *prober) observe(capability string, value any, err error, evidence string, args ...any) {
	observed := true
	if err != nil && !errors.Is(err, errMismatch) {
		switch store.Classify(err) {
		case store.ClassPermission, store.ClassProtocol, store.ClassUnsupported:
		default:
			observed = false
		}
	}
	p.res.obs[capability] = observation{Opinion{value, fmt.Sprintf(evidence, args...)}, observed}
}

// note records a runtime opinion that is not a probe observation (a fact
// about the kind of store, or the configuration).
func (p *prober) note(capability string, value any, evidence string, args ...any) {
	p.res.obs[capability] = observation{Opinion{value, fmt.Sprintf(evidence, args...)}, false}
}

func (p *prober) skip(capability, probe string) {
	p.note(capability, false, "probe %q skipped by skip_probes", probe)
}

// has reports whether an earlier probe found capability supported.
func (p *prober) has(capability string) bool {
	b, _ := p.res.obs[capability].Value.(bool)
	return b
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

// refusal describes a failed probe: its class and the server's words.
func refusal(err error) string {
	c := store.Classify(err)
	msg := err.Error()
	// The server's own words are the evidence; go-redis's wrapping and the
	// echoed arguments (probe key names) are noise.
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg = rerr.Error()
		if i := strings.Index(msg, ", with args beginning with"); i >= 0 {
			msg = msg[:i]
		}
	}
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	switch c {
	case store.ClassPermission:
		return "refused (permission): " + msg
	case store.ClassProtocol:
		return "refused (unknown command or syntax): " + msg
	case store.ClassUnsupported:
		return "unsupported: " + msg
	case store.ClassUnavailable:
		return "no answer: " + msg
	}
	return "failed: " + msg
}

var errMismatch = errors.New("unexpected result")

func mismatch(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMismatch, fmt.Sprintf(format, args...))
}

// The generic probes use the store's own interfaces, the code paths the
// coordinator will use.

// probeReadWrite always runs: configuration validation refuses to skip it.
func (p *prober) probeReadWrite() {
	st := p.d.st
	k, val := p.key("rw"), p.token("rw")
	took, err := p.run(ProbeReadWrite, func(ctx context.Context) error {
		if err := st.Set(ctx, k, val, probeTTL); err != nil {
			return err
		}
		got, ok, err := st.Get(ctx, k)
		if err != nil {
			return err
		}
		if !ok || !bytes.Equal(got, val) {
			return mismatch("the write was accepted but reading it back missed")
		}
		if err := st.Delete(ctx, k); err != nil {
			return err
		}
		if _, ok, err := st.Get(ctx, k); err != nil || ok {
			return errors.Join(err, mismatch("the key survived delete"))
		}
		return nil
	})
	if err != nil {
		p.observe(ReadWrite, false, err, "set/get/delete %s", refusal(err))
		return
	}
	p.observe(ReadWrite, true, nil, "set/get/delete round trip in %s", ms(took))
}

func (p *prober) probeIncrement() {
	if p.skipped(ProbeAtomicIncrement) {
		p.skip(AtomicIncrement, ProbeAtomicIncrement)
		return
	}
	in, ok := p.d.st.(store.Incrementer)
	if !ok {
		p.note(AtomicIncrement, false, "%s store has no atomic increment", p.d.st.Kind())
		return
	}
	k := p.key("incr")
	took, err := p.run(ProbeAtomicIncrement, func(ctx context.Context) error {
		n, err := in.Incr(ctx, k, 1, probeTTL)
		if err != nil {
			return err
		}
		if n != 1 {
			return mismatch("new counter is %d, want 1", n)
		}
		if n, err = in.Incr(ctx, k, 2, probeTTL); err != nil {
			return err
		}
		if n != 3 {
			return mismatch("counter is %d after +1+2, want 3", n)
		}
		return nil
	})
	if err != nil {
		p.observe(AtomicIncrement, false, err, "increment %s", refusal(err))
		return
	}
	p.observe(AtomicIncrement, true, nil, "create-with-expiry and increment in %s", ms(took))
}

func (p *prober) probeLocking(how string) {
	if p.skipped(ProbeLocking) {
		p.skip(Locking, ProbeLocking)
		return
	}
	a, ok := p.d.st.(store.Adder)
	if !ok {
		p.note(Locking, false, "%s store has no create-if-absent", p.d.st.Kind())
		return
	}
	k := p.key("lock")
	took, err := p.run(ProbeLocking, func(ctx context.Context) error {
		won, err := a.SetNX(ctx, k, p.token("lock1"), probeTTL)
		if err != nil {
			return err
		}
		if !won {
			return mismatch("create-if-absent of a fresh key failed")
		}
		if won, err = a.SetNX(ctx, k, p.token("lock2"), probeTTL); err != nil {
			return err
		}
		if won {
			return mismatch("create-if-absent overwrote an existing key")
		}
		return nil
	})
	if err != nil {
		p.observe(Locking, false, err, "%s %s", how, refusal(err))
		return
	}
	p.observe(Locking, true, nil, "%s granted once, refused the second time, in %s", how, ms(took))
}

func (p *prober) probeTTLReadback(how string) {
	if p.skipped(ProbeTTL) {
		p.skip(TTLInspection, ProbeTTL)
		return
	}
	tr, ok := p.d.st.(store.TTLReader)
	if !ok {
		p.note(TTLInspection, false, "%s store cannot read a TTL", p.d.st.Kind())
		return
	}
	k := p.key("ttl")
	var got time.Duration
	took, err := p.run(ProbeTTL, func(ctx context.Context) error {
		if err := p.d.st.Set(ctx, k, p.token("ttl"), probeTTL); err != nil {
			return err
		}
		ttl, ok, err := tr.TTL(ctx, k)
		if err != nil {
			return err
		}
		if !ok || ttl <= 0 || ttl > probeTTL {
			return mismatch("TTL read back as %v (exists=%v), want (0, %v]", ttl, ok, probeTTL)
		}
		got = ttl
		return nil
	})
	if err != nil {
		p.observe(TTLInspection, false, err, "%s %s", how, refusal(err))
		return
	}
	p.observe(TTLInspection, true, nil, "%s read back %v of %v in %s", how, got.Round(time.Second), probeTTL, ms(took))
}

// checkSwap proves a compare-and-set: refused with the wrong old value,
// applied with the right one.
func (p *prober) checkSwap(ctx context.Context, k string, cas func(ctx context.Context, old, new []byte) (bool, error)) error {
	old, new := p.token("old"), p.token("new")
	if err := p.d.st.Set(ctx, k, old, probeTTL); err != nil {
		return err
	}
	ok, err := cas(ctx, []byte("wrong"), new)
	if err != nil {
		return err
	}
	if ok {
		return mismatch("swapped although the old value did not match")
	}
	if ok, err = cas(ctx, old, new); err != nil {
		return err
	}
	if !ok {
		return mismatch("did not swap although the old value matched")
	}
	got, _, err := p.d.st.Get(ctx, k)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, new) {
		return mismatch("value after swap is %q", got)
	}
	return nil
}

// checkDelete proves a compare-and-delete the same way.
func (p *prober) checkDelete(ctx context.Context, k string, cad func(ctx context.Context, old []byte) (bool, error)) error {
	tok := p.token("tok")
	if err := p.d.st.Set(ctx, k, tok, probeTTL); err != nil {
		return err
	}
	ok, err := cad(ctx, []byte("wrong"))
	if err != nil {
		return err
	}
	if ok {
		return mismatch("deleted although the value did not match")
	}
	if ok, err = cad(ctx, tok); err != nil {
		return err
	}
	if !ok {
		return mismatch("did not delete although the value matched")
	}
	if _, exists, err := p.d.st.Get(ctx, k); err != nil || exists {
		return errors.Join(err, mismatch("the key survived"))
	}
	return nil
}

func (p *prober) probeSwapper(how string) {
	st, ok := p.d.st, coord.CanSwap(p.d.st)
	switch {
	case p.skipped(ProbeConditionalSet):
		p.skip(ConditionalSet, ProbeConditionalSet)
	case !ok:
		p.note(ConditionalSet, false, "%s store has no atomic compare-and-set", p.d.st.Kind())
	default:
		k := p.key("cas")
		took, err := p.run(ProbeConditionalSet, func(ctx context.Context) error {
			return p.checkSwap(ctx, k, func(ctx context.Context, old, new []byte) (bool, error) {
				return coord.CompareAndSwap(ctx, st, "", k, old, new, probeTTL)
			})
		})
		if err != nil {
			p.observe(ConditionalSet, false, err, "%s %s", how, refusal(err))
		} else {
			p.observe(ConditionalSet, true, nil, "%s refused a stale value and applied a current one in %s", how, ms(took))
		}
	}
	switch {
	case p.skipped(ProbeConditionalDelete):
		p.skip(ConditionalDelete, ProbeConditionalDelete)
	case !ok:
		p.note(ConditionalDelete, false, "%s store has no atomic compare-and-delete", p.d.st.Kind())
	default:
		k := p.key("cad")
		took, err := p.run(ProbeConditionalDelete, func(ctx context.Context) error {
			return p.checkDelete(ctx, k, func(ctx context.Context, old []byte) (bool, error) {
				return coord.CompareAndDelete(ctx, st, "", k, old)
			})
		})
		if err != nil {
			p.observe(ConditionalDelete, false, err, "%s %s", how, refusal(err))
		} else {
			p.observe(ConditionalDelete, true, nil, "%s kept a foreign token and deleted its own in %s", how, ms(took))
		}
	}
}

// probeCommon records the opinions that follow from configuration rather
// than a round trip.
func (p *prober) probeCommon() {
	prefix := ""
	if k, ok := p.d.st.(interface{ Key(string) string }); ok {
		prefix = k.Key("")
	}
	if prefix != "" {
		p.note(NamespaceSupport, true, "keys are isolated under the prefix %q", prefix)
	} else {
		p.note(NamespaceSupport, false, "no key prefix configured")
	}
	p.note(KeyTransformation, true, "the store layer applies the key prefix")
	p.note(CompressionSupport, false, "the store layer stores values as given")
}

// cleanup deletes the probe keys under a deadline of its own, probe_timeout
// from now, so keys are removed even when the run's deadline has passed,
// and a run lasts at most detect_timeout + probe_timeout. A key it does not
// reach expires with its probeTTL.
func (p *prober) cleanup(del func(ctx context.Context, keys []string) error) {
	if len(p.keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), p.d.cfg.ProbeTimeout)
	defer cancel()
	start := time.Now()
	if err := del(ctx, p.keys); err != nil && p.res.reachable {
		p.d.logger.Debug("probe key cleanup failed; the keys expire on their own", "keys", len(p.keys), "expires_in", probeTTL, "err", err)
	}
	p.d.metrics.probeDuration.WithLabelValues(ProbeCleanup).Observe(time.Since(start).Seconds())
}

// eachKey deletes keys one by one with del, stopping at the first error.
func eachKey(del func(ctx context.Context, key string) error) func(ctx context.Context, keys []string) error {
	return func(ctx context.Context, keys []string) error {
		for _, k := range keys {
			if err := del(ctx, k); err != nil {
				return err
			}
		}
		return nil
	}
}

// customOpinions is the custom source for the identity found so far,
// computed once per run.
func (p *prober) customOpinions() map[string]Opinion {
	if !p.res.customDone {
		p.res.custom, p.res.customDone = p.d.customOpinions(p.ctx, p.res.id), true
	}
	return p.res.custom
}

// noScripts says why no Lua may be sent to the server, or "" when it may:
// the scripting probe is skipped, or a source above the runtime probes
// settles scripting as false (an audit log that must never see EVAL).
func (c Config) noScripts(custom, constants map[string]Opinion) string {
	if contains(c.SkipProbes, ProbeScripting) {
		return fmt.Sprintf("probe %q skipped by skip_probes", ProbeScripting)
	}
	if v, ok := c.Capabilities[Scripting]; ok {
		if v {
			return ""
		}
		return "cache.capabilities.scripting is false"
	}
	for _, src := range []map[string]Opinion{custom, constants} {
		if op, ok := src[Scripting]; ok {
			if b, _ := op.Value.(bool); b {
				return ""
			}
			return "scripting is false (" + op.Evidence + ")"
		}
	}
	return ""
}

// unreachable fills every capability with "unknown: the store did not
// answer".
func (p *prober) unreachable(err error) {
	p.res.reachable = false
	p.res.err = err
	for _, c := range capabilityTable {
		var v any = false
		if !c.boolean {
			v = "unknown"
		}
		p.note(c.name, v, "not probed: the store did not answer")
	}
	p.probeCommon()
}

// probePing checks the store answers at all.
func (p *prober) probePing() bool {
	took, err := p.run(ProbePing, func(ctx context.Context) error { return p.d.st.Ping(ctx) })
	if err != nil {
		p.unreachable(err)
		return false
	}
	p.res.reachable = true
	p.pingTook = took
	return true
}
