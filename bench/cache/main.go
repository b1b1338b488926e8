// Command cache benchmarks the coordinated cache (package ttl) as a cluster:
// N sidecar replicas, each with its own store client, capability detector and
// cache, share one Redis or one Memcached, while R clients hammer the same
// resources through randomly chosen replicas for several freshness windows.
// A fake database counts every recomputation and stamps every value with the
// moment it was computed, so the age of every served value is checked
// independently of what the cache claims.
//
//	go run ./bench/cache -stores redis,memcached,local,disabled -replicas 1,4,16 -clients 16,64
//
// It prints one markdown row per run (see docs/benchmarks.md).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tasker-systems/tasker-sidecar/detector"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
	"github.com/tasker-systems/tasker-sidecar/store"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

type options struct {
	stores    []string
	replicas  []int
	clients   []int
	ttl       time.Duration
	windows   int
	warmup    time.Duration
	compute   time.Duration
	think     time.Duration
	resources int
	redisURL  string
	mcURL     string
	keyPrefix string
}

func main() { os.Exit(run()) }

func run() int {
	var o options
	var stores, replicas, clients string
	flag.StringVar(&stores, "stores", "redis,memcached,local,disabled",
		"stores to run: redis, redis:checked_release, redis:set_nx, memcached, memcached:add, local, disabled")
	flag.StringVar(&replicas, "replicas", "1,4,16", "replica counts N")
	flag.StringVar(&clients, "clients", "16,64", "concurrent client counts R")
	flag.DurationVar(&o.ttl, "ttl", 2*time.Second, "freshness window: every resource's TTL (fixed: min = base = max)")
	flag.IntVar(&o.windows, "windows", 5, "freshness windows measured after warm-up")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "warm-up before measuring (cold misses happen here)")
	flag.DurationVar(&o.compute, "compute", 10*time.Millisecond, "time the fake database takes per recomputation")
	flag.DurationVar(&o.think, "think", time.Millisecond, "pause of each client between requests")
	flag.IntVar(&o.resources, "resources", 4, "distinct resources (keys) requested")
	flag.StringVar(&o.redisURL, "redis-url", envOr("SIDECAR_TEST_REDIS_URL", "redis://127.0.0.1:6379"), "shared Redis")
	flag.StringVar(&o.mcURL, "memcached-url", envOr("SIDECAR_TEST_MEMCACHED_URL", "memcached://127.0.0.1:11211"), "shared Memcached")
	flag.StringVar(&o.keyPrefix, "key-prefix", envOr("SIDECAR_BENCH_KEY_PREFIX", "sidecar-bench:"), "prefix of every key the benchmark writes in the shared stores")
	flag.Parse()
	o.stores = strings.Split(stores, ",")
	var err error
	if o.replicas, err = ints(replicas); err != nil {
		fmt.Fprintln(os.Stderr, "-replicas:", err)
		return 2
	}
	if o.clients, err = ints(clients); err != nil {
		fmt.Fprintln(os.Stderr, "-clients:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store.RouteDriverLogs(logger)

	fmt.Printf("TTL %s (refresh-ahead window %s), %d windows after %s warm-up, database %s per recomputation, %d resources, clients pause %s between requests\n\n",
		o.ttl, min(5*o.compute, o.ttl/10), o.windows, o.warmup, o.compute, o.resources, o.think)
	fmt.Println("| store | mechanism | N | R | requests/s | cold start | recomputations per resource per window | per refresh (cluster) | waits on DB after warm-up | stale responses | p50 | p99 | max age served | staleness bound |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range o.stores {
		for _, n := range o.replicas {
			for _, r := range o.clients {
				res, err := runOne(o, s, n, r, logger)
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s N=%d R=%d: %v\n", s, n, r, err)
					return 1
				}
				fmt.Println(res.row())
			}
		}
	}
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad count %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// db is the fake database: it counts recomputations per resource with their
// times, and stamps each value with when it was computed.
type db struct {
	delay time.Duration
	mu    sync.Mutex
	calls map[string][]time.Time
}

type value struct {
	Resource string `json:"resource"`
	Snapshot int64  `json:"snapshot_unix_nano"`
	N        int    `json:"n"`
}

func (d *db) compute(resource string) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		now := time.Now()
		d.mu.Lock()
		d.calls[resource] = append(d.calls[resource], now)
		n := len(d.calls[resource])
		d.mu.Unlock()
		select {
		case <-time.After(d.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return json.Marshal(value{Resource: resource, Snapshot: now.UnixNano(), N: n})
	}
}

// count is the number of recomputations of every resource in [from, to).
func (d *db) count(from, to time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, calls := range d.calls {
		for _, t := range calls {
			if !t.Before(from) && t.Before(to) {
				n++
			}
		}
	}
	return n
}

type result struct {
	store, mechanism string
	n, r             int
	requests         int
	elapsed          time.Duration
	cold             float64 // recomputations per resource during warm-up (the cold start)
	perWindow        float64 // mean over resources
	perRefresh       float64 // mean over resources
	waits            float64 // requests that waited on the database after warm-up
	stale            int
	p50, p99         time.Duration
	maxAge           time.Duration
	bound            time.Duration
}

func (r result) row() string {
	perRefresh := num(r.perRefresh)
	if r.store == "disabled" {
		perRefresh = "–" // the database never rests: there are no refreshes to tell apart
	}
	return fmt.Sprintf("| %s | %s | %d | %d | %.0f | %s | %s | %s | %.0f | %d | %s | %s | %s | %s |",
		r.store, r.mechanism, r.n, r.r, float64(r.requests)/r.elapsed.Seconds(), num(r.cold), num(r.perWindow), perRefresh,
		r.waits, r.stale, dur(r.p50), dur(r.p99), dur(r.maxAge), dur(r.bound))
}

func num(f float64) string {
	if f >= 100 {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.2f", f)
}

func dur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

type replica struct {
	cache *ttl.Cache
	reg   *prometheus.Registry
	st    store.Store
}

func openReplica(o options, spec, keyVersion string, logger *slog.Logger) (replica, error) {
	kind, variant, _ := strings.Cut(spec, ":")
	url := "memory://"
	declared := map[string]bool{}
	switch kind {
	case "redis":
		url = o.redisURL
		switch variant {
		case "checked_release":
			declared["scripting"] = false
		case "set_nx":
			declared["scripting"] = false
			declared["conditional_delete"] = false
		}
	case "memcached":
		url = o.mcURL
		if variant == "add" {
			declared["meta_commands"] = false
		}
	case "local", "disabled":
	default:
		return replica{}, fmt.Errorf("unknown store %q", spec)
	}
	st, err := store.Open(store.Config{URL: secret.URL(url), KeyPrefix: o.keyPrefix, PoolSize: 8})
	if err != nil {
		return replica{}, err
	}
	// The declarations above contradict the probes on purpose; the
	// detector's warnings about it are noise here.
	det, err := detector.New(st, detector.Config{Capabilities: declared}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return replica{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := det.Run(ctx); err != nil {
		return replica{}, err
	}
	cfg := ttl.DefaultConfig()
	cfg.Enabled = kind != "disabled"
	cfg.KeyVersion = keyVersion
	cfg.CostAware.Jitter = 0 // a fixed TTL makes "a window" well defined
	// Above 3 × the computation time, so the window is this (or TTL/10).
	cfg.RefreshAheadMin = 5 * o.compute
	// max_staleness as sidecar run sets it for pinned TTLs (coverStaleness):
	// the TTL, two query timeouts (one refresh, one crashed lease) and a
	// second, which leaves the staleness budget room for the refresh-ahead
	// lead (a value refreshed ahead of its predecessor's expiry expires one
	// TTL after it; at exactly TTL + two query timeouts the budget would cap
	// that, and the refresh period would be TTL − window).
	cfg.Policies = map[string]ttl.Policy{ttl.ResourceDefault: {BaseTTL: o.ttl, MinTTL: o.ttl, MaxTTL: o.ttl,
		QueryTimeout: time.Second, MaxStaleness: staleness(o.ttl)}}
	reg := prometheus.NewRegistry()
	c, err := ttl.New(st, det.Report, func(err error) { det.NotifyError(err) }, cfg, reg, logger)
	if err != nil {
		return replica{}, err
	}
	return replica{cache: c, reg: reg, st: st}, nil
}

// staleness is the policy's max_staleness for a TTL: see openReplica.
func staleness(ttl time.Duration) time.Duration { return ttl + 2*time.Second + time.Second }

func runOne(o options, spec string, n, r int, logger *slog.Logger) (result, error) {
	keyVersion := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	reps := make([]replica, n)
	for i := range reps {
		rep, err := openReplica(o, spec, keyVersion, logger)
		if err != nil {
			return result{}, err
		}
		reps[i] = rep
	}
	defer func() {
		for _, rep := range reps {
			_ = rep.cache.Shutdown(context.Background())
			_ = rep.st.Close()
		}
	}()
	resources := make([]string, o.resources)
	for i := range resources {
		resources[i] = fmt.Sprintf("bench_%d", i)
	}
	d := &db{delay: o.compute, calls: map[string][]time.Time{}}

	start := time.Now()
	warmEnd := start.Add(o.warmup)
	end := warmEnd.Add(time.Duration(o.windows) * o.ttl)
	var (
		mu       sync.Mutex
		lat      []time.Duration
		maxAge   time.Duration
		stale    int
		requests atomic.Int64
		failed   atomic.Int64
		wg       sync.WaitGroup
	)
	var before float64
	warmDone := make(chan struct{})
	go func() {
		time.Sleep(time.Until(warmEnd))
		before = waits(reps)
		close(warmDone)
	}()
	for range r {
		wg.Go(func() {
			var myLat []time.Duration
			var myMax time.Duration
			myStale := 0
			for {
				now := time.Now()
				if now.After(end) {
					break
				}
				rep := reps[rand.IntN(n)]
				res := resources[rand.IntN(len(resources))]
				v, info, err := rep.cache.Get(context.Background(), res, "", d.compute(res))
				done := time.Now()
				if err != nil {
					failed.Add(1)
					continue
				}
				if now.After(warmEnd) {
					requests.Add(1)
					myLat = append(myLat, done.Sub(now))
					var val value
					if json.Unmarshal(v, &val) == nil {
						myMax = max(myMax, done.Sub(time.Unix(0, val.Snapshot)))
					}
					if info.Stale {
						myStale++
					}
				}
				time.Sleep(o.think)
			}
			mu.Lock()
			lat = append(lat, myLat...)
			maxAge = max(maxAge, myMax)
			stale += myStale
			mu.Unlock()
		})
	}
	wg.Wait()
	<-warmDone
	after := waits(reps)
	if f := failed.Load(); f > 0 {
		return result{}, fmt.Errorf("%d requests failed", f)
	}

	res := result{store: spec, mechanism: mechanismOf(reps[0]), n: n, r: r, requests: int(requests.Load()),
		elapsed: end.Sub(warmEnd), waits: after - before, stale: stale, maxAge: maxAge,
		bound: staleness(o.ttl)}
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50 = lat[len(lat)/2]
		res.p99 = lat[len(lat)*99/100]
	}
	if spec == "disabled" {
		res.waits = float64(res.requests)
	}
	res.perWindow, res.perRefresh = recomputations(d, resources, warmEnd, end, o.ttl)
	res.cold = float64(d.count(start, warmEnd)) / float64(len(resources))
	return res, nil
}

// recomputations returns, averaged over resources, recomputations per
// freshness window and per refresh in [from, to]. Recomputations less than
// half a TTL apart belong to the same refresh. Per window is measured over
// whole refresh periods (first refresh to the start of the last one), so a
// run's edges do not count as half windows; with one refresh or none (no
// caching: the database is never idle) it is the plain count over the
// phase.
func recomputations(d *db, resources []string, from, to time.Time, window time.Duration) (perWindow, perRefresh float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, res := range resources {
		var in []time.Time
		for _, t := range d.calls[res] {
			if !t.Before(from) && !t.After(to) {
				in = append(in, t)
			}
		}
		var starts []int // index in `in` of each refresh's first recomputation
		for i, t := range in {
			if i == 0 || t.Sub(in[i-1]) >= window/2 {
				starts = append(starts, i)
			}
		}
		if len(starts) > 0 {
			perRefresh += float64(len(in)) / float64(len(starts))
		}
		if len(starts) >= 2 {
			last := starts[len(starts)-1]
			span := in[last].Sub(in[0])
			perWindow += float64(last) / (span.Seconds() / window.Seconds())
		} else {
			perWindow += float64(len(in)) / (to.Sub(from).Seconds() / window.Seconds())
		}
	}
	k := float64(len(resources))
	return perWindow / k, perRefresh / k
}

func waits(reps []replica) float64 {
	var sum float64
	for _, rep := range reps {
		mfs, err := rep.reg.Gather()
		if err != nil {
			continue
		}
		for _, mf := range mfs {
			switch mf.GetName() {
			case "tasker_sidecar_cache_misses_total", "tasker_sidecar_cache_coalesced_waits_total", "tasker_sidecar_cache_lease_waits_total":
				for _, m := range mf.GetMetric() {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func mechanismOf(rep replica) string {
	mfs, err := rep.reg.Gather()
	if err != nil {
		return "?"
	}
	for _, mf := range mfs {
		if mf.GetName() != "tasker_sidecar_cache_coordination_mechanism" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetGauge().GetValue() == 1 {
				return m.GetLabel()[0].GetValue()
			}
		}
	}
	return "none (caching disabled)"
}
