package ttl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tasker-systems/tasker-sidecar/coord"
	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/internal/lifecycle"
	"github.com/tasker-systems/tasker-sidecar/store"
)

// Cache is the coordinated two-level cache (docs/ttl.md). It implements
// Getter. Create it with New; Stop ends its background refreshes.
type Cache struct {
	cfg    Config
	st     store.Store
	report func() detector.Report
	coord  *coord.Coordinator // with the report's conditional methods
	notify func(error)
	logger *slog.Logger
	m      *metrics
	now    func() time.Time
	rnd    func() float64 // uniform [0, 1)

	defaultPolicy Policy
	policies      map[string]Policy

	// l1 is the in-process level, bounded by bytes (Config.L1MaxBytes):
	// otter's W-TinyLFU admission and eviction, each entry weighed by
	// weigh. A value larger than l1MaxItem is served but not kept.
	l1        *otter.Cache[entryID, *entry]
	l1MaxItem int

	// flights are the cold loads under way, one per entry; admission
	// bounds their waiters per resource. Both guarded by flightMu.
	flightMu  sync.Mutex
	flights   map[entryID]*flight
	admission map[string]*admission

	health health
	mech   atomic.Value // string: mechanism last used, for the gauge

	tracer trace.Tracer

	lifeMu  sync.Mutex
	stopped bool
	bg      sync.WaitGroup
	bgCtx   context.Context
	bgStop  context.CancelFunc
}

// entryID names an entry of the in-process level. An entry cached with
// LocalOnly is another entry than the shared one of the same parameters.
type entryID struct {
	resource, params string
	local            bool // LocalOnly: never coordinated through the shared store
}

// entry is one key in the in-process level, with its statistics. Once
// evicted from the level it lives on for the requests and refreshes that
// hold it, and is garbage after them: the next request creates a new one.
type entry struct {
	id       entryID
	key      string // key in the shared store
	resource string
	pol      Policy
	m        *resourceMetrics
	adm      *admission

	env        atomic.Pointer[envelope]
	refreshing atomic.Bool
	retryAt    atomic.Int64 // unix nanos: no refresh attempt before
	fails      atomic.Int32

	stats  keyStats
	tasker taskerRecord
}

// health is the shared store's state as the cache has seen it.
type health struct {
	degraded  atomic.Bool
	probing   atomic.Bool
	lastProbe atomic.Int64 // unix nanos

	mu     sync.Mutex
	since  time.Time
	reason string
}

// New returns a cache over st. report is called whenever a shared-store
// operation is about to be coordinated, so a re-run detector that changes the
// mechanism takes effect at once (nil: in-process only); notify receives
// every shared-store error (e.g. (*detector.Detector).NotifyError; may be
// nil). Metrics go to reg (may be nil); a nil logger discards logs.
func New(st store.Store, report func() detector.Report, notify func(error), cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Cache, error) {
	if st == nil {
		return nil, errors.New("ttl: nil store")
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("ttl config: %w", errors.Join(errs...))
	}
	c := &Cache{}
	l1, err := otter.New(&otter.Options[entryID, *entry]{
		MaximumWeight: uint64(cfg.L1MaxBytes),
		Weigher:       weigh,
		OnDeletion: func(ev otter.DeletionEvent[entryID, *entry]) {
			if ev.Cause == otter.CauseOverflow {
				c.m.l1Evictions.Inc()
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("ttl: in-process level: %w", err)
	}
	m, err := newMetrics(reg, l1)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if report == nil {
		report = func() detector.Report { return detector.Report{Mechanism: detector.MechanismInProcess} }
	}
	if notify == nil {
		notify = func(error) {}
	}
	*c = Cache{
		cfg:           cfg,
		st:            st,
		report:        report,
		coord:         coord.New(st, func() coord.Methods { return report().Methods }),
		notify:        notify,
		logger:        logger.With("component", "ttl_cache"),
		m:             m,
		now:           time.Now,
		rnd:           rand.Float64,
		defaultPolicy: cfg.Policy(ResourceDefault),
		policies:      map[string]Policy{},
		l1:            l1,
		l1MaxItem:     int(cfg.L1MaxBytes / 8),
		flights:       map[entryID]*flight{},
		admission:     map[string]*admission{},
	}
	for name := range builtinPolicies() {
		c.policies[name] = cfg.Policy(name)
	}
	for name := range cfg.Policies {
		c.policies[name] = cfg.Policy(name)
	}
	c.mech.Store("")
	c.tracer = noop.NewTracerProvider().Tracer("")
	c.bgCtx, c.bgStop = context.WithCancel(context.Background())
	return c, nil
}

// SetTracerProvider makes the cache record spans of its own work: each
// request (cache.get), each recomputation (cache.recompute) and each read
// and write of the shared store (cache.store.get, cache.store.put). Call it
// before the first Get.
func (c *Cache) SetTracerProvider(tp trace.TracerProvider) {
	c.tracer = tp.Tracer("github.com/tasker-systems/tasker-sidecar/ttl")
}

var _ Getter = (*Cache)(nil)

// Start does nothing: the cache's background work (refresh-ahead) starts
// with the requests that need it. It is here for the one lifecycle
// (internal/lifecycle).
func (c *Cache) Start(context.Context) error { return nil }

// Shutdown cancels background refreshes and waits for them, or for ctx to
// end. Get keeps working afterwards, without starting new background work:
// values are refreshed only when they are no longer servable. Safe twice.
func (c *Cache) Shutdown(ctx context.Context) error {
	c.lifeMu.Lock()
	c.stopped = true
	c.lifeMu.Unlock()
	c.bgStop()
	done := make(chan struct{})
	go func() {
		c.bg.Wait()
		close(done)
	}()
	return lifecycle.Wait(ctx, done)
}

// Degraded reports whether the cache fell back to in-process caching because
// the shared store failed or is unreachable, and why, for readiness.
func (c *Cache) Degraded() (bool, string) {
	if !c.cfg.Enabled {
		return false, ""
	}
	if c.health.degraded.Load() {
		c.maybeProbe()
		c.health.mu.Lock()
		since, reason := c.health.since, c.health.reason
		c.health.mu.Unlock()
		return true, fmt.Sprintf("shared cache store failed %s ago (%s): caching in-process only until it answers",
			c.now().Sub(since).Truncate(time.Millisecond), reason)
	}
	if k := c.st.Kind(); k == store.KindRedis || k == store.KindMemcached {
		rep := c.report()
		if !rep.Store.Reachable && !rep.Store.DetectedAt.IsZero() {
			return true, "shared cache store unreachable at the last capability detection: caching in-process only"
		}
	}
	return false, ""
}

// Get serves the value of (resource, params): from the in-process level
// while it is usable, else from the shared store, else computed once for
// the whole cluster. A value past its refresh point is served while one
// replica refreshes it in the background; past its TTL and grace, only the
// request that wins the refresh gate waits for the recomputation, and every
// other one gets the old value at once; a refresh that fails leaves the old
// value in service, flagged stale, up to the policy's max staleness. Only a
// true cold miss (nothing within max staleness) waits on another replica.
//
// Waiting is bounded: past the policy's max_waiters, or when ctx's deadline
// comes first, the request is answered at once with the last value within
// max staleness, flagged stale, or else with an *OverloadedError
// (errors.Is ErrOverloaded). A request whose client went away
// (context.Canceled) gets ctx's error, and when every request waiting for a
// computation went away so, the computation is cancelled.
//
// Errors are compute's errors (or ctx's, or an *OverloadedError); cache
// failures never surface. The returned bytes are shared with other callers:
// do not modify them.
func (c *Cache) Get(ctx context.Context, resource, params string, compute func(ctx context.Context) ([]byte, error), opts ...Option) ([]byte, Info, error) {
	ctx, span := c.tracer.Start(ctx, "cache.get")
	v, info, err := c.get(ctx, resource, params, compute, getOptions(opts))
	// Attributes only for a span that records: building them costs the
	// hit path most of its time and all its allocations.
	if span.IsRecording() {
		span.SetAttributes(attribute.String("cache.resource", resource), attribute.Bool("cache.cached", info.Cached),
			attribute.Bool("cache.stale", info.Stale), attribute.Float64("cache.age_seconds", info.AgeSeconds))
	}
	endSpan(span, err)
	return v, info, err
}

func (c *Cache) get(ctx context.Context, resource, params string, compute func(ctx context.Context) ([]byte, error), o options) ([]byte, Info, error) {
	if !c.cfg.Enabled {
		return c.uncached(ctx, resource, compute)
	}
	start := c.now()
	var t0 time.Time
	if c.cfg.Mode == ModeTasker {
		t0 = time.Now() // Tasker times the whole fetch, on the real clock
	}
	e := c.entry(resource, params, o.localOnly)
	e.stats.request(start)
	if env := e.env.Load(); env != nil {
		// An expired value is served at once while recomputations of it
		// fail (stale-if-error), while one is under way for this replica
		// (a request of this replica recomputes it, or this replica
		// watches another one do it), and while this replica pauses after
		// an overloaded computation (see overloaded): only the request
		// that recomputes waits for the database.
		if f := c.freshness(env, e.pol, start); f <= stale || (f == expired &&
			(e.fails.Load() > 0 || e.refreshing.Load() || start.UnixNano() < e.retryAt.Load())) {
			if f != fresh {
				c.kick(ctx, e, compute)
			}
			if f >= stale {
				e.m.l1Stale.Inc()
				c.staleServed(e)
			} else {
				e.m.l1Fresh.Inc()
			}
			c.taskerTrack(e, true, t0)
			return env.value, c.info(e, env, true, start), nil
		}
	}
	v, info, err := c.load(ctx, e, compute)
	c.taskerTrack(e, info.Cached, t0)
	return v, info, err
}

func (c *Cache) staleServed(e *entry) {
	if e.fails.Load() > 0 {
		e.m.staleError.Inc()
	} else {
		e.m.staleRefreshing.Inc()
	}
}

func (c *Cache) info(e *entry, env *envelope, cached bool, now time.Time) Info {
	age := max(now.Sub(env.at), 0)
	e.m.age.Set(age.Seconds())
	return Info{
		Cached:     cached,
		AgeSeconds: math.Round(age.Seconds()*1000) / 1000,
		TTLSeconds: math.Round(env.ttl.Seconds()*1000) / 1000,
		Stale:      age >= env.ttl,
	}
}

func (c *Cache) uncached(ctx context.Context, resource string, compute func(context.Context) ([]byte, error)) ([]byte, Info, error) {
	v, err := compute(ctx)
	result := "ok"
	if err != nil {
		result = "error"
	}
	c.m.recomputes.WithLabelValues(resource, "uncached", result).Inc()
	return v, Info{}, err
}

func (c *Cache) taskerTrack(e *entry, hit bool, t0 time.Time) {
	if c.cfg.Mode == ModeTasker {
		e.tasker.record(c.cfg.Tasker, hit, time.Since(t0), c.now())
	}
}

// entry finds or creates the in-process entry of (resource, params).
func (c *Cache) entry(resource, params string, local bool) *entry {
	id := entryID{resource, params, local}
	if e, ok := c.l1.GetIfPresent(id); ok {
		return e
	}
	pol, ok := c.policies[resource]
	if !ok {
		pol = c.defaultPolicy
	}
	e := &entry{id: id, key: c.key(resource, params), resource: resource, pol: pol,
		m: c.m.resource(resource), adm: c.admissionOf(resource, pol)}
	// Another request may have created it meanwhile: its entry wins.
	e, _ = c.l1.SetIfAbsent(id, e)
	return e
}

// entryOverhead is what an entry costs besides its key, parameters and
// value, roughly: the entry with its statistics (224 bytes, unsafe.Sizeof
// on amd64 with Go 1.26), its envelope (72), otter's node and hash-table
// slot (about 150), rounded up for allocation size classes. An estimate:
// the budget is meant to bound memory, not to account for it exactly.
const entryOverhead = 512

// weigh is the weight of an entry in the in-process level, in bytes. otter
// weighs an entry when it is written, so reweigh writes it again whenever
// its value changes.
func weigh(id entryID, e *entry) uint32 {
	n := entryOverhead + len(id.resource) + len(id.params) + len(e.key)
	if env := e.env.Load(); env != nil {
		n += len(env.value)
	}
	return uint32(min(n, math.MaxUint32))
}

// reweigh makes the in-process level account for e's current value, by
// writing the same entry again (otter computes weights on writes). An entry
// evicted meanwhile, or replaced by a newer entry of the same id, is left
// alone. A value larger than an eighth of the budget is served but not kept:
// its entry leaves the level, so that one huge answer cannot flush
// everything else.
func (c *Cache) reweigh(e *entry) {
	env := e.env.Load()
	big := env != nil && len(env.value) > c.l1MaxItem
	if big {
		e.m.tooLargeL1.Inc()
	}
	c.l1.ComputeIfPresent(e.id, func(cur *entry) (*entry, otter.ComputeOp) {
		switch {
		case cur != e:
			return cur, otter.CancelOp
		case big:
			return nil, otter.InvalidateOp
		}
		return e, otter.WriteOp
	})
}

// key is the shared-store key: everything that changes the answer (key
// version, resource, parameters) hashed, under a hash tag so the value and
// its lock share a Redis Cluster slot, and short enough for memcached with
// the longest key prefix it allows.
func (c *Cache) key(resource, params string) string {
	h := sha256.Sum256([]byte(c.cfg.KeyVersion + "\x00" + resource + "\x00" + params))
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' {
			return r
		}
		return -1
	}, resource)
	if len(name) > 32 {
		name = name[:32]
	}
	return "ttl:{" + name + ":" + hex.EncodeToString(h[:12]) + "}"
}

// coordinator returns the coordinator of e: the one for the detector's
// current mechanism, or the in-process one for a LocalOnly entry and while
// the shared store is failing.
func (c *Cache) coordinator(e *entry) coord.Mechanism {
	if e.id.local {
		return coord.Local()
	}
	var co coord.Mechanism = coord.Local()
	if c.health.degraded.Load() {
		c.maybeProbe()
	} else {
		co = c.coord.For(c.report().Mechanism)
	}
	if mech := co.Name(); c.mech.Load() != mech {
		c.mech.Store(mech)
		c.m.useMechanism(mech)
	}
	return co
}

// storeFailed records a failed shared-store operation. The caller carries on
// in-process. A store that cannot be reached degrades the whole cache to
// in-process until a ping answers; other errors (a refused script, a value
// too large) only cost this operation, and the detector is told so that it
// can pick another mechanism.
func (c *Cache) storeFailed(e *entry, op string, err error) {
	if errors.Is(err, context.Canceled) {
		// The work was abandoned (its requests left, or Stop): that says
		// nothing about the store.
		return
	}
	c.m.coordErrors.WithLabelValues(e.resource, op).Inc()
	c.notify(err)
	if store.Classify(err) != store.ClassUnavailable {
		c.logger.Warn("shared cache operation failed; this request is served in-process", "resource", e.resource, "op", op, "err", err)
		return
	}
	if c.health.degraded.Swap(true) {
		return
	}
	c.health.mu.Lock()
	c.health.since, c.health.reason = c.now(), err.Error()
	c.health.mu.Unlock()
	c.health.lastProbe.Store(time.Now().UnixNano())
	c.m.degraded.Set(1)
	c.logger.Warn("shared cache store failed: caching in-process only until it answers", "op", op, "err", err)
}

// maybeProbe pings a failed store at most every recheck interval, in the
// background, and returns to it when it answers.
func (c *Cache) maybeProbe() {
	last := c.health.lastProbe.Load()
	if time.Since(time.Unix(0, last)) < c.cfg.RecheckInterval || !c.health.probing.CompareAndSwap(false, true) {
		return
	}
	c.health.lastProbe.Store(time.Now().UnixNano())
	if !c.goBackground(func() {
		defer c.health.probing.Store(false)
		ctx, cancel := context.WithTimeout(c.bgCtx, c.cfg.StoreTimeout)
		defer cancel()
		if err := c.st.Ping(ctx); err != nil {
			c.logger.Debug("shared cache store still failing", "err", err)
			return
		}
		if c.health.degraded.Swap(false) {
			c.m.degraded.Set(0)
			c.logger.Info("shared cache store answers again: coordinating through it")
		}
	}) {
		c.health.probing.Store(false)
	}
}

func (c *Cache) goBackground(fn func()) bool {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.stopped {
		return false
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		fn()
	}()
	return true
}

// detach gives work that outlives the request a context of its own: the
// request's values (trace spans) without its cancellation, ended by Stop.
func (c *Cache) detach(ctx context.Context) (context.Context, context.CancelFunc) {
	d, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(c.bgCtx, cancel)
	return d, func() { stop(); cancel() }
}

// op bounds one shared-store operation.
func (c *Cache) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.StoreTimeout)
}

// decode turns a shared-store value into an envelope; a value this code
// cannot read (another version, a stub) counts as absent.
func (c *Cache) decode(e *entry, raw []byte) *envelope {
	if len(raw) == 0 {
		return nil
	}
	env, err := decodeEnvelope(raw)
	if err != nil {
		c.logger.Debug("unreadable value in the shared store; treated as a miss", "resource", e.resource, "err", err)
		return nil
	}
	return env
}

// adopt makes env the entry's value unless the entry already holds a newer
// one, and feeds the change-rate and cost estimates.
func (c *Cache) adopt(e *entry, env *envelope, own bool) {
	for {
		prev := e.env.Load()
		if prev != nil && !env.at.After(prev.at) {
			return
		}
		if !e.env.CompareAndSwap(prev, env) {
			continue
		}
		if prev != nil {
			e.stats.observeChange(env.at.Sub(prev.at), env.digest != prev.digest)
		}
		if !own {
			e.stats.observeCost(env.cost)
			// Another replica refreshed it: the database answers, so
			// this replica's backoff no longer applies.
			e.fails.Store(0)
			e.retryAt.Store(0)
		}
		e.m.ttl.Set(env.ttl.Seconds())
		c.reweigh(e)
		return
	}
}

// newer returns the shared store's value of e if it is newer than cur.
func (c *Cache) newer(ctx context.Context, co coord.Mechanism, e *entry, cur *envelope) (*envelope, error) {
	octx, cancel := c.op(ctx)
	defer cancel()
	octx, span := c.tracer.Start(octx, "cache.store.get", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("cache.resource", e.resource)))
	raw, _, err := co.Get(octx, e.key, 0)
	endSpan(span, err)
	if err != nil {
		return nil, err
	}
	env := c.decode(e, raw)
	if env == nil || (cur != nil && !env.at.After(cur.at)) {
		return nil, nil
	}
	return env, nil
}

// result of a cold load, shared by coalesced requests.
type result struct {
	env    *envelope
	cached bool // from the shared store, not computed for these requests
}

// load is the cold path: one flight per entry in this replica, which the
// requests of the entry wait for (bounded by the resource's max_waiters and
// by their own deadlines).
func (c *Cache) load(ctx context.Context, e *entry, compute func(context.Context) ([]byte, error)) ([]byte, Info, error) {
	f, led := c.join(ctx, e)
	if f == nil {
		return c.reject(e, RejectWaiters, nil)
	}
	if led {
		go c.fly(f, compute)
	} else {
		e.m.coalesced.Inc()
	}
	select {
	case <-f.done:
		c.leave(f, e, nil)
		if f.err != nil {
			return nil, Info{}, f.err
		}
		if f.e != e {
			// The flight's entry was evicted and e created since: e
			// keeps the value too.
			c.adopt(e, f.res.env, true)
		}
		return f.res.env.value, c.info(e, f.res.env, f.res.cached, c.now()), nil
	case <-ctx.Done():
		err := ctx.Err()
		c.leave(f, e, err)
		if errors.Is(err, context.DeadlineExceeded) {
			return c.reject(e, RejectDeadline, err)
		}
		// The client went away: nobody reads the answer.
		return nil, Info{}, err
	}
}

// flight is one cold load of an entry, shared by the requests that wait for
// it. golang.org/x/sync/singleflight cannot be used: it does not say how
// many callers still wait for a DoChan call, and Forget only stops new
// callers from joining, so a call cannot be cancelled once its last waiter
// left. A flight counts its waiters instead.
type flight struct {
	id     entryID
	e      *entry
	ctx    context.Context // the requests' values, not their cancellation
	cancel context.CancelFunc
	done   chan struct{} // closed when res and err are set

	res result
	err error

	// Guarded by Cache.flightMu.
	waiters int
	keep    bool // a waiter left at its deadline: the answer is still wanted
}

// admission is the waiting of one resource's requests for cold
// computations on this replica, bounded by the policy's max_waiters.
type admission struct {
	resource string
	max      int

	// Guarded by Cache.flightMu.
	waiters int // requests waiting for a flight
	flights int // flights running, with or without waiters

	lastReject atomic.Int64 // unix nanos (Cache.now) of the last rejection
	cost       atomicFloat  // seconds, EWMA of the resource's computations, for Retry-After
}

func (c *Cache) admissionOf(resource string, pol Policy) *admission {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	a := c.admission[resource]
	if a == nil {
		a = &admission{resource: resource, max: pol.MaxWaiters}
		c.admission[resource] = a
	}
	return a
}

// join adds a waiter to e's flight, starting one (led) if none runs. It
// returns nil when the resource is at its bound: max_waiters requests
// waiting, or, for a new flight, max_waiters flights running (flights left
// running by waiters that reached their deadline count, so that a flood of
// distinct parameters cannot pile up computations either).
//
// A flight runs on a context of its own, with the first request's values
// (trace spans) and not its cancellation: coalesced requests must not fail
// because the first one left. leave cancels it when nobody wants the answer.
func (c *Cache) join(ctx context.Context, e *entry) (f *flight, led bool) {
	a := e.adm
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	if a.waiters >= a.max {
		return nil, false
	}
	f = c.flights[e.id]
	if f == nil {
		if a.flights >= a.max {
			return nil, false
		}
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{id: e.id, e: e, ctx: fctx, cancel: cancel, done: make(chan struct{})}
		c.flights[e.id] = f
		a.flights++
		led = true
	}
	f.waiters++
	a.waiters++
	e.m.waiters.Set(float64(a.waiters))
	return f, led
}

// fly runs the flight and publishes its result.
func (c *Cache) fly(f *flight, compute func(context.Context) ([]byte, error)) {
	defer func() {
		if r := recover(); r != nil {
			// A bug here must not take the sidecar down from a goroutine
			// nobody can recover in.
			c.logger.Error("cache load panicked", "resource", f.e.resource, "panic", r, "stack", string(debug.Stack()))
			f.res, f.err = result{}, fmt.Errorf("%s: cache load panicked: %v", f.e.resource, r)
		}
		f.cancel()
		c.flightMu.Lock()
		if c.flights[f.id] == f {
			delete(c.flights, f.id)
		}
		f.e.adm.flights--
		c.flightMu.Unlock()
		close(f.done)
	}()
	f.res, f.err = c.fill(f.ctx, f.e, compute)
}

// leave removes a waiter from f; cause is why it left early (its context's
// error), nil when it got the answer. When the last waiter leaves because
// its client went away (context.Canceled), and none left at its deadline,
// the flight is cancelled: its database query with it. A waiter that
// reached its deadline (context.DeadlineExceeded) leaves the flight running,
// bounded by the policy's query timeout, because its client, or the next
// request, still wants the answer: the next request then finds it in the
// cache instead of starting over and reaching the same deadline.
func (c *Cache) leave(f *flight, e *entry, cause error) {
	a := e.adm
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	f.waiters--
	a.waiters--
	e.m.waiters.Set(float64(a.waiters))
	switch {
	case cause == nil:
	case errors.Is(cause, context.DeadlineExceeded):
		f.keep = true
	case f.waiters == 0 && !f.keep:
		f.cancel()
		// Later requests start a new flight rather than join one that
		// is ending.
		if c.flights[f.id] == f {
			delete(c.flights, f.id)
		}
	}
}

// reject answers a request that may not wait (reason RejectWaiters) or
// waited until its deadline (RejectDeadline, cause the context's error): with
// the entry's last value within max staleness, flagged stale, or with an
// *OverloadedError.
func (c *Cache) reject(e *entry, reason string, cause error) ([]byte, Info, error) {
	now := c.now()
	e.m.rejections[reason].Inc()
	e.adm.lastReject.Store(now.UnixNano())
	if env := e.env.Load(); c.alive(e, env) {
		e.m.l1Stale.Inc()
		info := c.info(e, env, true, now)
		info.Stale = true
		return env.value, info, nil
	}
	return nil, Info{}, &OverloadedError{Resource: e.resource, Reason: reason, RetryAfter: c.retryAfter(e), Err: cause}
}

// retryAfter estimates when a rejected request is worth retrying: about
// what one computation of the resource takes (the one it would have waited
// for), at least a second and at most the query timeout, in whole seconds
// as Retry-After has them.
func (c *Cache) retryAfter(e *entry) time.Duration {
	d := time.Duration(max(e.stats.cost.load(), e.adm.cost.load()) * float64(time.Second))
	d = min(max(d, time.Second), max(e.pol.QueryTimeout, time.Second))
	return (d + time.Second - 1).Truncate(time.Second)
}

// saturationWindow is how long a rejection keeps Saturated true.
const saturationWindow = 10 * time.Second

// Saturated reports whether some resource turns requests away: it is at
// its max_waiters now, or rejected requests in the last 10 s. The message
// names the resources, for readiness (a degraded check: the sidecar still
// answers, some requests with stale values or 503).
func (c *Cache) Saturated() (bool, string) {
	now := c.now()
	var parts []string
	c.flightMu.Lock()
	for _, name := range slices.Sorted(maps.Keys(c.admission)) {
		a := c.admission[name]
		last := a.lastReject.Load()
		switch {
		case a.waiters >= a.max:
			parts = append(parts, fmt.Sprintf("%s: %d requests waiting (max_waiters %d)", name, a.waiters, a.max))
		case last != 0 && now.Sub(time.Unix(0, last)) < saturationWindow:
			parts = append(parts, fmt.Sprintf("%s: requests turned away %s ago", name,
				max(now.Sub(time.Unix(0, last)), 0).Truncate(time.Millisecond)))
		}
	}
	c.flightMu.Unlock()
	if len(parts) == 0 {
		return false, ""
	}
	return true, "cache saturated, answering with stale values or 503: " + strings.Join(parts, "; ")
}

// Lease waiters poll the shared store with a doubling backoff up to this.
const (
	pollMin = 5 * time.Millisecond
	pollMax = 100 * time.Millisecond
)

// fill finds or computes a value no level can serve: a cold miss, or a
// value past its TTL and grace. It reads the shared store and takes the
// cold-miss lease in one step where the mechanism can.
//
// When an old value within max staleness exists (in-process or in the shared
// store), this is a refresh, not a cold miss: the request that wins the
// refresh gate recomputes (renewExpired), and every other request, on this
// replica or another, is answered at once with the old value, flagged stale
// with its age, while this replica watches the shared store for the new one
// (watch). A gate whose holder died expires after a lease period and the next
// request anywhere takes it, so a crash costs one extra computation at most.
//
// Only a true cold miss (nothing, or nothing within max staleness) waits: a
// replica that loses the lease polls the shared store for the winner's value
// rather than recompute. With no old value, a waiter that outlasts two lease
// periods (holders keep failing) computes without a lease: a client never
// gets an error because coordination did not work out. Max staleness is
// checked whenever an old value would be handed out, so one that died
// meanwhile is never served.
func (c *Cache) fill(ctx context.Context, e *entry, compute func(context.Context) ([]byte, error)) (result, error) {
	fallback := e.env.Load()
	fromL2 := false
	if fallback != nil {
		switch f := c.freshness(fallback, e.pol, c.now()); {
		case f <= stale:
			// Adopted since the request looked.
			return result{env: fallback, cached: true}, nil
		case f == dead:
			fallback = nil
		}
	}
	co := c.coordinator(e)
	leaseTTL := e.pol.leaseTTL()
	giveUp := time.Now().Add(2 * leaseTTL)
	// missed: counted as a miss (once per flight, when it starts to wait
	// or to compute for a cold miss).
	waited, missed := false, false
	for poll := pollMin; ; {
		if ctx.Err() != nil {
			// Every request waiting for this flight went away.
			return result{}, ctx.Err()
		}
		octx, cancel := c.op(ctx)
		raw, l, err := co.Get(octx, e.key, leaseTTL)
		cancel()
		if err != nil {
			c.storeFailed(e, "get", err)
			co, raw, l = coord.Local(), nil, coord.Grant{Won: true}
		}
		if env := c.decode(e, raw); env != nil {
			f := c.freshness(env, e.pol, c.now())
			if f <= stale || (f == expired && e.fails.Load() > 0) {
				c.adopt(e, env, false)
				if f >= stale {
					e.m.l2Stale.Inc()
					c.staleServed(e)
				} else {
					e.m.l2Fresh.Inc()
				}
				if f != fresh {
					c.kick(ctx, e, compute)
				}
				return result{env: env, cached: true}, nil
			}
			if f != dead && (fallback == nil || env.at.After(fallback.at)) {
				fallback, fromL2 = env, true
			}
			// Present but past its grace: recompute through the refresh
			// gate (the value key is not free to lease).
			octx, cancel := c.op(ctx)
			l, err = co.Gate(octx, e.key, leaseTTL)
			cancel()
			if err != nil {
				c.storeFailed(e, "lease", err)
				co, l = coord.Local(), coord.Grant{Won: true}
			}
		}
		if !c.alive(e, fallback) {
			fallback = nil
		}
		if fallback != nil {
			if l.Won {
				return c.renewExpired(ctx, co, e, l, fallback, fromL2, compute)
			}
			// Another replica holds the gate: it recomputes, or backs off
			// after a failure. The old value is served now.
			c.adopt(e, fallback, false)
			c.staleHit(e, fromL2)
			c.watch(ctx, co, e, fallback, leaseTTL)
			return result{env: fallback, cached: true}, nil
		}
		if l.Won {
			if l.Recheck {
				// The lease and the read were two steps: a replica that
				// released in between has written first.
				if env, err := c.newer(ctx, co, e, nil); err == nil && env != nil && c.alive(e, env) {
					if c.freshness(env, e.pol, c.now()) <= stale {
						c.releaseLease(ctx, co, e, l)
						c.adopt(e, env, false)
						c.hit(e, env, true)
						return result{env: env, cached: true}, nil
					}
					l.Recheck = false
					return c.renewExpired(ctx, co, e, l, env, true, compute)
				}
			}
			if !missed {
				e.m.miss.Inc()
			}
			env, err := c.recompute(ctx, e, compute, "cold", nil)
			if err != nil {
				// Nothing old to serve: the error goes to the client and
				// the next request anywhere tries at once.
				c.releaseLease(ctx, co, e, l)
				return result{}, err
			}
			e.fails.Store(0)
			e.retryAt.Store(0)
			c.write(ctx, co, e, env, l)
			return result{env: env}, nil
		}
		if !waited {
			waited, missed = true, true
			e.m.miss.Inc()
			e.m.leaseWait.Inc()
		}
		if time.Now().After(giveUp) {
			c.logger.Warn("waited two lease periods for another replica's value; computing here", "resource", e.resource)
			co = coord.Local()
			continue
		}
		if !sleep(ctx, poll/2+time.Duration(c.rnd()*float64(poll/2))) {
			return result{}, ctx.Err()
		}
		poll = min(2*poll, pollMax)
	}
}

// renewExpired recomputes old, a value past its TTL and grace but within max
// staleness, under the refresh gate l this request won. While recomputations
// of the key are failing (here, or anywhere in the cluster according to the
// shared failure count), the old value is served at once and the retry runs
// in the background, so no request waits on a failing database. Otherwise
// the request waits for the recomputation (a rarely read key is not served
// minutes old while the database answers), and the requests that arrive
// meanwhile are served the old value from the in-process level. If the
// recomputation fails, the old value is served if it is still within max
// staleness (the computation may have taken up to query_timeout), and the
// gate is held for the backoff.
func (c *Cache) renewExpired(ctx context.Context, co coord.Mechanism, e *entry, l coord.Grant, old *envelope, fromL2 bool, compute func(context.Context) ([]byte, error)) (result, error) {
	if l.Recheck {
		// The gate and the read were two steps: a replica that released
		// in between has written first.
		if env, err := c.newer(ctx, co, e, old); err == nil && env != nil && c.freshness(env, e.pol, c.now()) <= stale {
			c.releaseLease(ctx, co, e, l)
			c.adopt(e, env, false)
			c.hit(e, env, true)
			return result{env: env, cached: true}, nil
		}
		l.Recheck = false
	}
	// In the in-process level before anything else: requests arriving
	// from now on are served it at once. Adopting a value from another
	// replica resets this replica's backoff, so it comes first.
	c.adopt(e, old, false)
	if c.failing(ctx, co, e) && c.renewInBackground(ctx, co, e, l, old, compute) {
		c.staleHit(e, fromL2)
		return result{env: old, cached: true}, nil
	}
	e.m.miss.Inc()
	own := e.refreshing.CompareAndSwap(false, true)
	env, err := c.recompute(ctx, e, compute, "cold", old)
	released := false
	switch {
	case err == nil:
		e.fails.Store(0)
		e.retryAt.Store(0)
		c.write(ctx, co, e, env, l)
	case ctx.Err() != nil:
		// Abandoned by every request: not the database's failure.
		c.releaseLease(ctx, co, e, l)
		released = true
	case errors.Is(err, ErrOverloaded):
		c.overloaded(ctx, co, e, l, err)
		released = true
	case c.alive(e, old):
		c.refreshFailed(ctx, co, e, l, old, err)
	}
	if own {
		e.refreshing.Store(false)
	}
	switch {
	case err == nil:
		return result{env: env}, nil
	case ctx.Err() != nil:
		return result{}, err
	case c.alive(e, old): // checked again after holding the lease (a round trip)
		e.m.staleError.Inc()
		return result{env: old, cached: true}, nil
	case released:
		return result{}, err
	}
	// It went past max staleness: as on a cold miss, the error goes to the
	// client and the next request anywhere tries at once.
	c.releaseLease(ctx, co, e, l)
	return result{}, err
}

// failing says whether recomputations of e are failing: this replica's
// own, or the cluster's count in the shared store, which this replica then
// adopts, so that it serves the old value at once like the replica that
// failed.
func (c *Cache) failing(ctx context.Context, co coord.Mechanism, e *entry) bool {
	if e.fails.Load() > 0 {
		return true
	}
	octx, cancel := c.op(ctx)
	defer cancel()
	n, ok, err := co.Failures(octx, e.key)
	if err != nil {
		c.storeFailed(e, "backoff", err)
		return false
	}
	if !ok || n <= 0 {
		return false
	}
	e.fails.Store(int32(min(n, math.MaxInt32)))
	return true
}

// renewInBackground runs renew under the lease l in the background, unless a
// refresh of e already runs here or the cache is stopping.
func (c *Cache) renewInBackground(ctx context.Context, co coord.Mechanism, e *entry, l coord.Grant, cur *envelope, compute func(context.Context) ([]byte, error)) bool {
	if !e.refreshing.CompareAndSwap(false, true) {
		return false
	}
	dctx, cancel := c.detach(ctx)
	if !c.goBackground(func() {
		defer cancel()
		defer e.refreshing.Store(false)
		c.renew(dctx, co, e, l, cur, compute)
	}) {
		cancel()
		e.refreshing.Store(false)
		return false
	}
	return true
}

// watch follows another replica's refresh of e after this one lost the gate
// with an old value in hand: for one lease period it polls the shared store
// for the new value in the background, and meanwhile the requests of this
// replica are served the old value from the in-process level, without a
// round trip. When the period ends without a new value (the holder died, or
// holds the gate for its backoff), the next request tries the gate again.
func (c *Cache) watch(ctx context.Context, co coord.Mechanism, e *entry, cur *envelope, leaseTTL time.Duration) {
	if !co.Shared() || !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	dctx, cancel := c.detach(ctx)
	if !c.goBackground(func() {
		defer cancel()
		defer e.refreshing.Store(false)
		c.awaitRefresh(dctx, co, e, cur, leaseTTL)
	}) {
		cancel()
		e.refreshing.Store(false)
	}
}

// hit counts a value served from a cache level.
func (c *Cache) hit(e *entry, env *envelope, fromL2 bool) {
	if c.freshness(env, e.pol, c.now()) >= stale {
		c.staleHit(e, fromL2)
		return
	}
	if fromL2 {
		e.m.l2Fresh.Inc()
	} else {
		e.m.l1Fresh.Inc()
	}
}

// staleHit counts a value served past its TTL.
func (c *Cache) staleHit(e *entry, fromL2 bool) {
	if fromL2 {
		e.m.l2Stale.Inc()
	} else {
		e.m.l1Stale.Inc()
	}
	c.staleServed(e)
}

// alive says whether env may still be served as an old value: it is not
// past max staleness now. fill checks it before every return of its
// fallback, since a failed computation or a lease wait can outlast it.
func (c *Cache) alive(e *entry, env *envelope) bool {
	return env != nil && c.freshness(env, e.pol, c.now()) != dead
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// releaseLease gives l back, even when ctx was cancelled: an abandoned
// computation's lease would otherwise block the next attempt for a lease
// period.
func (c *Cache) releaseLease(ctx context.Context, co coord.Mechanism, e *entry, l coord.Grant) {
	octx, cancel := c.op(context.WithoutCancel(ctx))
	defer cancel()
	if err := co.Release(octx, e.key, l); err != nil {
		c.storeFailed(e, "release", err)
	}
}

// write stores env in the shared store (releasing the lease) and in the
// entry. The physical TTL runs to the end of the staleness budget, so the
// value stays available to stale-if-error. A value larger than
// max_value_bytes stays in-process: one answer must not take a large share
// of the store the cluster (and Tasker) share. The write is made even if
// the requests that waited for the value have gone: it cost a computation.
func (c *Cache) write(ctx context.Context, co coord.Mechanism, e *entry, env *envelope, l coord.Grant) {
	c.adopt(e, env, true)
	phys := e.pol.MaxStaleness - c.now().Sub(env.at)
	if !co.Shared() || phys <= 0 {
		c.releaseLease(ctx, co, e, l)
		return
	}
	if int64(len(env.value)) > c.cfg.MaxValueBytes {
		e.m.tooLargeL2.Inc()
		c.logger.Debug("value larger than max_value_bytes: kept in-process only", "resource", e.resource,
			"bytes", len(env.value), "max_value_bytes", c.cfg.MaxValueBytes)
		c.releaseLease(ctx, co, e, l)
		return
	}
	octx, cancel := c.op(context.WithoutCancel(ctx))
	defer cancel()
	octx, span := c.tracer.Start(octx, "cache.store.put", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("cache.resource", e.resource)))
	err := co.Put(octx, e.key, env.encode(), phys, l)
	endSpan(span, err)
	if err != nil {
		c.storeFailed(e, "put", err)
	}
}

// recompute calls compute once, bounded by the policy's query timeout, and
// wraps the value with its adaptive TTL. prev is the value it replaces, if
// any: a value computed ahead of prev's expiry takes over prev's remaining
// freshness (anchored).
func (c *Cache) recompute(ctx context.Context, e *entry, compute func(context.Context) ([]byte, error), reason string, prev *envelope) (*envelope, error) {
	qctx, cancel := context.WithTimeout(ctx, e.pol.QueryTimeout)
	defer cancel()
	qctx, span := c.tracer.Start(qctx, "cache.recompute", trace.WithAttributes(
		attribute.String("cache.resource", e.resource), attribute.String("cache.reason", reason)))
	at := c.now()
	t0 := time.Now()
	v, err := c.call(qctx, e, compute)
	endSpan(span, err)
	cost := time.Since(t0)
	e.m.computeTime[reason].Observe(cost.Seconds())
	c.m.recomputes.WithLabelValues(e.resource, reason, recomputeResult(ctx, err)).Inc()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.resource, err)
	}
	e.stats.observeCost(cost)
	e.adm.cost.update(func(old float64) float64 {
		if old == 0 {
			return cost.Seconds()
		}
		return 0.7*old + 0.3*cost.Seconds()
	})
	env := &envelope{at: at, cost: cost, digest: digestOf(v), value: v}
	env.ttl = c.anchored(e, prev, env, c.ttlFor(e, env))
	return env, nil
}

// recomputeResult is the result label of recomputations_total: ok; error;
// cancelled when ctx (the flight's or the refresh's, not the query timeout)
// ended, because every waiting request went away or Stop was called;
// overloaded when compute refused for lack of capacity (ErrOverloaded).
func recomputeResult(ctx context.Context, err error) string {
	switch {
	case err == nil:
		return "ok"
	case ctx.Err() != nil:
		return "cancelled"
	case errors.Is(err, ErrOverloaded):
		return "overloaded"
	}
	return "error"
}

// anchored is the TTL of env, computed with ttl as its freshness window,
// when it replaces prev. A refresh-ahead computation starts up to one window
// W before prev expires; if env's freshness counted from its own start, each
// refresh would come W earlier than the last, and the database would see one
// recomputation per TTL − W instead of one per TTL (up to 11 % more, since
// W may reach TTL/10). So env expires ttl after prev did: what was left of
// prev's freshness when env's computation started is added to ttl. The lead
// is bounded by prev's window (a writer's clock ahead of ours cannot stretch
// it) and the total by the staleness budget, as the TTL is.
func (c *Cache) anchored(e *entry, prev, env *envelope, ttl time.Duration) time.Duration {
	if prev == nil {
		return ttl
	}
	lead := min(prev.at.Add(prev.ttl).Sub(env.at), c.window(prev))
	if lead <= 0 {
		return ttl
	}
	return max(ttl, min(ttl+lead, e.pol.ttlCap())).Truncate(time.Millisecond)
}

// call runs compute, turning a panic into an error: it may run in a
// background goroutine, where a panic would take the whole sidecar down.
func (c *Cache) call(ctx context.Context, e *entry, compute func(context.Context) ([]byte, error)) (v []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.logger.Error("compute panicked", "resource", e.resource, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("compute panicked: %v", r)
		}
	}()
	return compute(ctx)
}

// ttlFor is the adaptive TTL of a value about to be written.
func (c *Cache) ttlFor(e *entry, env *envelope) time.Duration {
	if c.cfg.Mode == ModeTasker {
		// A policy whose bounds meet is pinned by its caller (a loop that
		// refreshes on its own interval): adapting it would let the shared
		// copy outlive that interval.
		if e.pol.MinTTL > 0 && e.pol.MinTTL == e.pol.MaxTTL {
			return e.pol.MinTTL
		}
		base := int(e.pol.BaseTTL / time.Second)
		if _, ok := c.policies[e.resource]; !ok {
			base = c.cfg.Tasker.DefaultTTL
		}
		r := &e.tasker
		t := time.Duration(taskerTTL(c.cfg.Tasker, base, r.hitRate.load(), r.avgGenTime.load(), r.accessFreq.load())) * time.Second
		// Tasker's TTL as computed, unless it would break the staleness
		// budget (it does not with the default policies).
		return min(t, e.pol.ttlCap())
	}
	// The value about to be written is compared with the one it replaces
	// too, so the first refresh already counts.
	var interval time.Duration
	differs := false
	if prev := e.env.Load(); prev != nil && env.at.After(prev.at) {
		interval, differs = env.at.Sub(prev.at), env.digest != prev.digest
	}
	lambda, known := e.stats.changeRateWith(interval, differs)
	return costAwareTTL(e.pol, c.cfg.CostAware, e.stats.cost.load(), e.stats.requestRate(c.now()), lambda, known, c.rnd())
}

// kick starts a background refresh of e unless one is running here or a
// failed one is backing off.
func (c *Cache) kick(ctx context.Context, e *entry, compute func(context.Context) ([]byte, error)) {
	if c.now().UnixNano() < e.retryAt.Load() || !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	dctx, cancel := c.detach(ctx)
	if !c.goBackground(func() {
		defer cancel()
		defer e.refreshing.Store(false)
		c.refresh(dctx, e, compute)
	}) {
		cancel()
		e.refreshing.Store(false)
	}
}

// refresh renews a due or stale value: first check whether another replica
// already has, then take the refresh lease. The winner recomputes; everyone
// else keeps serving the current value and watches the shared store for the
// new one. A failed refresh keeps the old value and holds the lease for the
// backoff, so the cluster retries once per backoff, not once per replica.
func (c *Cache) refresh(ctx context.Context, e *entry, compute func(context.Context) ([]byte, error)) {
	cur := e.env.Load()
	if c.freshness(cur, e.pol, c.now()) == fresh {
		// The request that kicked this saw the value before a refresh
		// that has finished since.
		return
	}
	co := c.coordinator(e)
	if co.Shared() {
		env, err := c.newer(ctx, co, e, cur)
		if err != nil {
			c.storeFailed(e, "get", err)
			co = coord.Local()
		} else if env != nil {
			if c.freshness(env, e.pol, c.now()) == fresh {
				c.m.refreshes.WithLabelValues(e.resource, "elsewhere").Inc()
				c.adopt(e, env, false)
				return
			}
			c.adopt(e, env, false)
			cur = env
		}
	}
	leaseTTL := e.pol.leaseTTL()
	octx, cancel := c.op(ctx)
	l, err := co.Gate(octx, e.key, leaseTTL)
	cancel()
	if err != nil {
		c.storeFailed(e, "lease", err)
		co, l = coord.Local(), coord.Grant{Won: true}
	}
	if !l.Won {
		c.awaitRefresh(ctx, co, e, cur, leaseTTL)
		return
	}
	c.renew(ctx, co, e, l, cur, compute)
}

// renew recomputes e under the refresh lease l, cur being the value in
// service: the new value is written (the lease released with it), or cur
// stays in service and the lease is held for the backoff. The recomputation
// is a retry while this replica knows that recomputations of e are failing.
func (c *Cache) renew(ctx context.Context, co coord.Mechanism, e *entry, l coord.Grant, cur *envelope, compute func(context.Context) ([]byte, error)) {
	if l.Recheck && co.Shared() {
		if env, err := c.newer(ctx, co, e, cur); err == nil && env != nil {
			c.releaseLease(ctx, co, e, l)
			c.m.refreshes.WithLabelValues(e.resource, "elsewhere").Inc()
			c.adopt(e, env, false)
			return
		}
	}
	reason := "refresh"
	if e.fails.Load() > 0 {
		reason = "retry"
	}
	env, err := c.recompute(ctx, e, compute, reason, cur)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		// Stop: not the database's failure.
		c.releaseLease(ctx, co, e, l)
		return
	case errors.Is(err, ErrOverloaded):
		c.overloaded(ctx, co, e, l, err)
		return
	default:
		c.refreshFailed(ctx, co, e, l, cur, err)
		return
	}
	e.fails.Store(0)
	e.retryAt.Store(0)
	// Counted before the value is published, so that whoever sees the new
	// value also sees the refresh that made it.
	c.m.refreshes.WithLabelValues(e.resource, "ok").Inc()
	c.write(ctx, co, e, env, l)
}

// refreshFailed keeps cur in service and backs off. With a shared gate the
// backoff is the cluster's: the failure is counted in the shared store, the
// backoff grows with the cluster's count (not with this replica's, which
// would restart at the minimum on every replica), and this replica holds the
// gate for it, so the whole cluster retries once per backoff. Without one
// (in_process, shared_values_local_coalescing) it is this replica's.
func (c *Cache) refreshFailed(ctx context.Context, co coord.Mechanism, e *entry, l coord.Grant, cur *envelope, err error) {
	n := int64(e.fails.Add(1))
	octx, cancel := c.op(ctx)
	if cluster, ok, ferr := co.Failed(octx, e.key, e.pol.MaxStaleness); ferr != nil {
		c.storeFailed(e, "backoff", ferr)
	} else if ok && cluster > 0 {
		n = cluster
		e.fails.Store(int32(min(n, math.MaxInt32)))
	}
	cancel()
	backoff := min(c.cfg.RetryBackoffMin<<min(n-1, 20), c.cfg.RetryBackoffMax)
	e.retryAt.Store(c.now().Add(backoff).UnixNano())
	octx, cancel = c.op(ctx)
	if herr := co.Hold(octx, e.key, l, backoff); herr != nil {
		c.storeFailed(e, "lease", herr)
	}
	cancel()
	c.m.refreshes.WithLabelValues(e.resource, "error").Inc()
	c.logger.Warn("refresh failed; serving the previous value", "resource", e.resource,
		"age", c.now().Sub(cur.at).Truncate(time.Millisecond), "retry_in", backoff, "failures", n, "err", err)
}

// overloaded handles a recomputation refused because the work behind it is
// saturated: compute returned an error wrapping ErrOverloaded (the analytics
// service does when its connection queue is full). That says nothing about
// the key, so it is not a failure: the cluster's failure count and backoff
// are left alone, and the lease is released for whoever tries next. This
// replica alone pauses its attempts for retry_backoff_min, serving the old
// value meanwhile, so that its requests do not keep knocking on a full
// queue.
func (c *Cache) overloaded(ctx context.Context, co coord.Mechanism, e *entry, l coord.Grant, err error) {
	e.retryAt.Store(c.now().Add(c.cfg.RetryBackoffMin).UnixNano())
	c.releaseLease(ctx, co, e, l)
	c.m.refreshes.WithLabelValues(e.resource, "overloaded").Inc()
	c.logger.Debug("recomputation refused, overloaded; serving the previous value", "resource", e.resource,
		"retry_in", c.cfg.RetryBackoffMin, "err", err)
}

// awaitRefresh watches the shared store while another replica refreshes,
// for at most one lease period: if the holder died, the next request finds
// the lease free and refreshes itself.
func (c *Cache) awaitRefresh(ctx context.Context, co coord.Mechanism, e *entry, cur *envelope, leaseTTL time.Duration) {
	c.m.refreshes.WithLabelValues(e.resource, "elsewhere").Inc()
	poll := pollMin
	if cur != nil {
		poll = min(max(cur.cost/4, pollMin), pollMax)
	}
	deadline := time.Now().Add(leaseTTL)
	for time.Now().Before(deadline) {
		if !sleep(ctx, poll) {
			return
		}
		env, err := c.newer(ctx, co, e, cur)
		if err != nil {
			c.storeFailed(e, "get", err)
			return
		}
		if env != nil {
			c.adopt(e, env, false)
			return
		}
	}
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
