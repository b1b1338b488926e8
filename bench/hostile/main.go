// Command hostile sends the request patterns of issue 10 ("bounded memory and
// bounded waiting") to a running sidecar and reports what they cost it: peak
// RSS and goroutines, the shared Redis's memory growth, the latency of
// single-task lookups and how every request ended. bench/hostile.sh starts the
// sidecar (before and after builds) and calls it once per scenario:
//
//	batch   distinct ?ids= batch graph requests (item 1: memory grows with the
//	        variety of requests); answers are checked against the single-task
//	        route
//	params  8 clients sending distinct bottlenecks?period= values while 2
//	        clients look up random single tasks (item 2, no fault)
//	lock    a 30 s ACCESS EXCLUSIVE lock on tasker_tasks while 100 expensive
//	        requests per second with distinct parameters arrive, and 2 clients
//	        keep looking up a set of recently read tasks (item 2, with fault)
//
// It prints one markdown table row.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

type options struct {
	scenario    string
	base        string
	pid         int
	label       string
	dbURL       string
	redisURL    string
	tasks       int
	requests    int
	concurrency int
	duration    time.Duration
	lock        time.Duration
	rate        int
	deadline    time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.scenario, "scenario", "batch", "batch, params or lock")
	flag.StringVar(&o.base, "url", "http://127.0.0.1:9395", "sidecar base URL")
	flag.IntVar(&o.pid, "pid", 0, "sidecar process id (for peak RSS from /proc)")
	flag.StringVar(&o.label, "label", "", "first column of the row (e.g. before/after)")
	flag.StringVar(&o.dbURL, "database-url", "", "the benchmark database (lock scenario, task count)")
	flag.StringVar(&o.redisURL, "redis-url", "redis://127.0.0.1:6379/0", "the shared store, for its memory")
	flag.IntVar(&o.requests, "requests", 4000, "batch: distinct batch requests")
	flag.IntVar(&o.concurrency, "concurrency", 8, "batch: concurrent clients")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "params and lock: how long the flood lasts")
	flag.DurationVar(&o.lock, "lock", 30*time.Second, "lock: how long tasker_tasks stays locked")
	flag.IntVar(&o.rate, "rate", 100, "lock: expensive requests per second")
	flag.DurationVar(&o.deadline, "client-timeout", 90*time.Second, "client-side timeout of one request")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx := context.Background()
	if o.dbURL == "" {
		return fmt.Errorf("--database-url is required")
	}
	conn, err := pgx.Connect(ctx, o.dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT max(task_id) FROM tasker_tasks").Scan(&o.tasks); err != nil {
		return err
	}
	rdb := redis.NewClient(mustRedis(o.redisURL))
	defer rdb.Close()

	client := &http.Client{Timeout: o.deadline, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	s := newSampler(client, o.base, o.pid, rdb)
	s.start()
	var r *result
	switch o.scenario {
	case "batch":
		r, err = batch(client, o)
	case "params":
		r, err = params(client, o)
	case "lock":
		r, err = lock(ctx, client, o)
	default:
		err = fmt.Errorf("unknown scenario %q", o.scenario)
	}
	peak := s.stop()
	if err != nil {
		return err
	}
	fmt.Printf("| %s | %s | %s | %d | %s | %s | %s | %s |\n", o.label, o.scenario, mib(peak.rssHWM), peak.goroutines,
		mib(peak.redisGrowth), r.lookups, r.ends(), r.note)
	return nil
}

func mustRedis(u string) *redis.Options {
	opt, err := redis.ParseURL(u)
	if err != nil {
		panic(err)
	}
	return opt
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// result is what a scenario saw from the client side.
type result struct {
	codes   sync.Map // status code (or "timeout") -> *atomic.Int64
	lookups string   // p50/p99 of single-task lookups
	note    string
	maxWait atomic.Int64 // longest expensive request, nanoseconds
}

func (r *result) count(code string) {
	v, _ := r.codes.LoadOrStore(code, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// ends lists how the requests ended, by status, and the longest one.
func (r *result) ends() string {
	var parts []string
	r.codes.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%s×%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(parts)
	s := strings.Join(parts, " ")
	if m := r.maxWait.Load(); m > 0 {
		s += fmt.Sprintf("; longest %.1f s", time.Duration(m).Seconds())
	}
	return s
}

func (r *result) waited(d time.Duration) {
	for {
		cur := r.maxWait.Load()
		if int64(d) <= cur || r.maxWait.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// get fetches a URL; the status is "timeout" when the client gave up.
func get(client *http.Client, url string) (int, []byte, string) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil, "error"
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	code := strconv.Itoa(resp.StatusCode)
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
		code += "+Retry-After"
	}
	return resp.StatusCode, body, code
}

// batch sends o.requests distinct 50-id graph requests and checks a sample
// of answers against the single-task route.
func batch(client *http.Client, o options) (*result, error) {
	r := &result{}
	var next atomic.Int64
	var wrong atomic.Int64
	var checked atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range o.concurrency {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
			for next.Add(1) <= int64(o.requests) {
				ids := make([]string, 50)
				for i := range ids {
					ids[i] = strconv.Itoa(1 + rnd.IntN(o.tasks))
				}
				status, body, code := get(client, o.base+"/tasker/tasks/graph?ids="+strings.Join(ids, ","))
				r.count(code)
				if status != http.StatusOK {
					continue
				}
				if rnd.IntN(100) == 0 {
					checked.Add(1)
					if !sameAsSingle(client, o.base, body) {
						wrong.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	r.lookups = "–"
	r.note = fmt.Sprintf("%d requests in %.0f s; %d of %d sampled answers differ from the single-task route",
		o.requests, time.Since(start).Seconds(), wrong.Load(), checked.Load())
	return r, nil
}

// sameAsSingle compares each task of a batch graph answer with the
// single-task answer for it (cache_info and generated_at aside).
func sameAsSingle(client *http.Client, base string, body []byte) bool {
	var b struct {
		Tasks []json.RawMessage `json:"tasks"`
	}
	if json.Unmarshal(body, &b) != nil || len(b.Tasks) == 0 {
		return false
	}
	for _, raw := range b.Tasks[:min(3, len(b.Tasks))] {
		var t map[string]any
		if json.Unmarshal(raw, &t) != nil {
			return false
		}
		id := fmt.Sprint(t["task_id"])
		status, single, _ := get(client, base+"/tasker/tasks/"+id+"/graph")
		if status != http.StatusOK {
			return false
		}
		var s map[string]any
		if json.Unmarshal(single, &s) != nil {
			return false
		}
		// generated_at is when each answer was computed.
		for _, k := range []string{"cache_info", "generated_at"} {
			delete(s, k)
			delete(t, k)
		}
		a, _ := json.Marshal(t)
		c, _ := json.Marshal(s)
		if !bytes.Equal(a, c) {
			return false
		}
	}
	return true
}

// lookups runs n clients looking up single tasks until stop is closed and
// returns their latency percentiles. pick chooses the task.
func lookups(client *http.Client, base string, n int, pick func(*rand.Rand) int, stop <-chan struct{}) func() string {
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				status, _, _ := get(client, fmt.Sprintf("%s/tasker/tasks/%d/context", base, pick(rnd)))
				d := time.Since(t0)
				if status != http.StatusOK && status != http.StatusNotFound {
					failed.Add(1)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	return func() string {
		wg.Wait()
		if len(lat) == 0 {
			return "none"
		}
		slices.Sort(lat)
		q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		return fmt.Sprintf("%d, p50 %s, p99 %s, %d failed", len(lat), q(0.5).Round(10*time.Microsecond),
			q(0.99).Round(10*time.Microsecond), failed.Load())
	}
}

// params: 8 clients send distinct period= values; 2 look up random tasks.
func params(client *http.Client, o options) (*result, error) {
	r := &result{}
	stop := make(chan struct{})
	done := lookups(client, o.base, 2, func(rnd *rand.Rand) int { return 1 + rnd.IntN(o.tasks) }, stop)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(100+i)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				_, _, code := get(client, fmt.Sprintf("%s/tasker/analytics/bottlenecks?period=%d", o.base, 1+rnd.IntN(8760)))
				r.waited(time.Since(t0))
				r.count(code)
			}
		})
	}
	time.Sleep(o.duration)
	close(stop)
	wg.Wait()
	r.lookups = done()
	r.note = fmt.Sprintf("%s flood", o.duration)
	return r, nil
}

// lock holds an ACCESS EXCLUSIVE lock on tasker_tasks while o.rate
// expensive requests per second with distinct parameters arrive; 2 clients
// look up 50 tasks read just before.
func lock(ctx context.Context, client *http.Client, o options) (*result, error) {
	r := &result{}
	warm := make([]int, 50)
	for i := range warm {
		warm[i] = 1 + rand.IntN(o.tasks)
		get(client, fmt.Sprintf("%s/tasker/tasks/%d/context", o.base, warm[i]))
	}
	locker, err := pgx.Connect(ctx, o.dbURL)
	if err != nil {
		return r, err
	}
	defer locker.Close(ctx)
	tx, err := locker.Begin(ctx)
	if err != nil {
		return r, err
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE tasker_tasks IN ACCESS EXCLUSIVE MODE"); err != nil {
		return r, err
	}
	unlocked := time.AfterFunc(o.lock, func() { _ = tx.Rollback(context.Background()) })
	defer unlocked.Stop()

	stop := make(chan struct{})
	done := lookups(client, o.base, 2, func(rnd *rand.Rand) int { return warm[rnd.IntN(len(warm))] }, stop)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(o.rate))
	end := time.After(o.duration)
	now := time.Now()
loop:
	for i := 0; ; i++ {
		select {
		case <-end:
			break loop
		case <-tick.C:
		}
		url := fmt.Sprintf("%s/tasker/analytics/bottlenecks?period=%d", o.base, 1+rand.IntN(8760))
		if i%2 == 0 {
			since := now.Add(-time.Duration(rand.Int64N(int64(24 * time.Hour)))).UTC().Format(time.RFC3339Nano)
			url = o.base + "/tasker/analytics/performance?since=" + since
		}
		wg.Go(func() {
			t0 := time.Now()
			_, _, code := get(client, url)
			r.waited(time.Since(t0))
			r.count(code)
		})
	}
	tick.Stop()
	wg.Wait()
	close(stop)
	r.lookups = done()
	r.note = fmt.Sprintf("%s lock, %d req/s for %s", o.lock, o.rate, o.duration)
	return r, nil
}

// sampler polls the sidecar's own metrics, its /proc status and the
// shared Redis every 200 ms.
type sampler struct {
	client *http.Client
	base   string
	pid    int
	rdb    *redis.Client

	stopc chan struct{}
	done  chan peak
}

type peak struct {
	goroutines  int
	rssHWM      int64
	redisGrowth int64
}

func newSampler(client *http.Client, base string, pid int, rdb *redis.Client) *sampler {
	return &sampler{client: &http.Client{Timeout: 2 * time.Second}, base: base, pid: pid, rdb: rdb,
		stopc: make(chan struct{}), done: make(chan peak, 1)}
}

func (s *sampler) start() {
	base := s.redisUsed()
	go func() {
		var p peak
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if g := s.goroutines(); g > p.goroutines {
				p.goroutines = g
			}
			if u := s.redisUsed() - base; u > p.redisGrowth {
				p.redisGrowth = u
			}
			select {
			case <-s.stopc:
				p.rssHWM = s.hwm()
				s.done <- p
				return
			case <-t.C:
			}
		}
	}()
}

func (s *sampler) stop() peak {
	close(s.stopc)
	return <-s.done
}

func (s *sampler) goroutines() int {
	resp, err := s.client.Get(s.base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int(f)
		}
	}
	return 0
}

func (s *sampler) redisUsed() int64 {
	info, err := s.rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// hwm is the process's peak resident set size (VmHWM).
func (s *sampler) hwm() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
