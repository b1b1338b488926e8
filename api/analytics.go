package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/errgroup"

	"github.com/tasker-systems/tasker-sidecar/analytics"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// Routes of the analytics API. The per-task routes use the parameter name
// :id, which any other /tasker/tasks/:id route must share (gin rejects two
// names for one path segment).
const (
	PathPerformance   = "/tasker/analytics/performance"
	PathBottlenecks   = "/tasker/analytics/bottlenecks"
	PathTaskContext   = "/tasker/tasks/:id/context"
	PathTaskSteps     = "/tasker/tasks/:id/steps"
	PathTaskGraph     = "/tasker/tasks/:id/graph"
	PathTasksContext  = "/tasker/tasks/context" // ?ids=1,2,3
	PathTasksSteps    = "/tasker/tasks/steps"
	PathTasksGraph    = "/tasker/tasks/graph"
	PathHandlers      = "/tasker/handlers"
	PathHandlerNS     = "/tasker/handlers/:namespace"
	PathHandlerDetail = "/tasker/handlers/:namespace/:name"
)

// Cache resources of the per-task routes; their policies are package ttl's.
const (
	ResourceTaskContext = ttl.ResourceTaskContext
	ResourceTaskSteps   = ttl.ResourceTaskSteps
)

// Error titles of the 503 bodies; the first two are Tasker's.
const (
	errPerformance = "Performance analytics failed"
	errBottlenecks = "Bottleneck analysis failed"
	errTasks       = "Task analysis failed"
	errHandlers    = "Handler lookup failed"
)

// defaultRetryAfter is the Retry-After of an overload that carries no
// estimate of its own.
const defaultRetryAfter = 5 * time.Second

// analyticsAPI serves the analytics routes. The per-task resources are
// fields so that a test can watch their batch computations.
type analyticsAPI struct {
	svc   *analytics.Service
	cache ttl.Getter
	log   *slog.Logger
	now   func() time.Time
	// lag is WithReplicationLag's; nil on a primary or when not given.
	lag func() time.Duration

	contexts taskRoute[analytics.TaskContext, int64]
	steps    taskRoute[analytics.TaskSteps, int64]
	graphs   taskRoute[analytics.TaskGraph, int64]
	// The same routes on tasker-core, whose tasks are UUIDs.
	coreContexts taskRoute[analytics.CoreTaskContext, string]
	coreSteps    taskRoute[analytics.CoreTaskSteps, string]
	coreGraphs   taskRoute[analytics.CoreTaskGraph, string]
}

// MountAnalytics adds the analytics, per-task and handler routes to r,
// which must be Server.Router() so that they get the server's metrics,
// recovery and authentication middleware (registered on the engine before
// Router returns). Every response is computed through cache; nil computes
// every request.
func MountAnalytics(r *gin.Engine, a *analytics.Service, cache ttl.Getter, logger *slog.Logger, opts ...AnalyticsOption) {
	api := newAnalyticsAPI(a, cache, logger)
	for _, o := range opts {
		o(api)
	}
	api.mount(r)
}

// AnalyticsOption configures MountAnalytics.
type AnalyticsOption func(*analyticsAPI)

// WithReplicationLag adds a hot standby's replication lag (lag() returns 0
// on a primary; collector.DB.Replication) to the age of every analytics
// answer: numbers computed a second ago on a standby an hour behind are an
// hour old (docs/operations.md#read-replicas).
func WithReplicationLag(lag func() time.Duration) AnalyticsOption {
	return func(a *analyticsAPI) { a.lag = lag }
}

func newAnalyticsAPI(a *analytics.Service, cache ttl.Getter, logger *slog.Logger) *analyticsAPI {
	if cache == nil {
		cache = ttl.Uncached{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &analyticsAPI{svc: a, cache: cache, log: logger.With("component", "analytics"), now: time.Now,
		contexts: taskRoute[analytics.TaskContext, int64]{resource: ResourceTaskContext, load: a.TaskContexts, stamped: true,
			id:    func(t analytics.TaskContext) int64 { return t.TaskID },
			parse: analytics.ParseTaskID, parseList: analytics.ParseTaskIDs, params: analytics.TaskParams},
		steps: taskRoute[analytics.TaskSteps, int64]{resource: ResourceTaskSteps, load: a.TaskSteps, stamped: true,
			id:    func(t analytics.TaskSteps) int64 { return t.TaskID },
			parse: analytics.ParseTaskID, parseList: analytics.ParseTaskIDs, params: analytics.TaskParams},
		// A graph carries its own generated_at (database time).
		graphs: taskRoute[analytics.TaskGraph, int64]{resource: ttl.ResourceTaskGraph, load: a.TaskGraphs,
			id:    func(t analytics.TaskGraph) int64 { return t.TaskID },
			parse: analytics.ParseTaskID, parseList: analytics.ParseTaskIDs, params: analytics.TaskParams},
		// Core entries are keyed uuid=..., Rails' id=...: an engine switch
		// under a running sidecar cannot serve one engine's entry as the
		// other's.
		coreContexts: taskRoute[analytics.CoreTaskContext, string]{resource: ResourceTaskContext, load: a.CoreTaskContexts,
			stamped: true, id: func(t analytics.CoreTaskContext) string { return t.TaskUUID },
			parse: analytics.ParseTaskUUID, parseList: analytics.ParseTaskUUIDs, params: analytics.TaskUUIDParams},
		coreSteps: taskRoute[analytics.CoreTaskSteps, string]{resource: ResourceTaskSteps, load: a.CoreTaskSteps,
			stamped: true, id: func(t analytics.CoreTaskSteps) string { return t.TaskUUID },
			parse: analytics.ParseTaskUUID, parseList: analytics.ParseTaskUUIDs, params: analytics.TaskUUIDParams},
		coreGraphs: taskRoute[analytics.CoreTaskGraph, string]{resource: ttl.ResourceTaskGraph, load: a.CoreTaskGraphs,
			id:    func(t analytics.CoreTaskGraph) string { return t.TaskID },
			parse: analytics.ParseTaskUUID, parseList: analytics.ParseTaskUUIDs, params: analytics.TaskUUIDParams},
	}
}

func (a *analyticsAPI) mount(r *gin.Engine) {
	r.GET(PathPerformance, noCache, a.supportedPerformance, a.performance)
	r.GET(PathBottlenecks, noCache, a.supportedTasks, a.bottlenecks)
	// Context, steps and graph are computed on either engine, each request
	// choosing by the attachment's engine (analytics.Service.OnCore).
	r.GET(PathTaskContext, noCache, a.supportedTasks, eitherEngine(a, one, a.contexts, one, a.coreContexts))
	r.GET(PathTaskSteps, noCache, a.supportedTasks, eitherEngine(a, one, a.steps, one, a.coreSteps))
	r.GET(PathTaskGraph, noCache, a.supportedTasks, eitherEngine(a, one, a.graphs, one, a.coreGraphs))
	r.GET(PathTasksContext, noCache, a.supportedTasks, eitherEngine(a, many, a.contexts, many, a.coreContexts))
	r.GET(PathTasksSteps, noCache, a.supportedTasks, eitherEngine(a, many, a.steps, many, a.coreSteps))
	r.GET(PathTasksGraph, noCache, a.supportedTasks, eitherEngine(a, many, a.graphs, many, a.coreGraphs))
	// The handler catalog is read from either engine's tables.
	r.GET(PathHandlers, noCache, a.supportedTasks, a.handlers)
	r.GET(PathHandlerNS, noCache, a.supportedTasks, a.handlerNamespace)
	r.GET(PathHandlerDetail, noCache, a.supportedTasks, a.handlerDetail)
	a.mountV1(r)
}

// supportedPerformance answers 501 before any parameter is read while the
// attached engine's analytics are not computed
// (analytics.ErrEngineUnsupported): a tasker-core task key is not a Rails
// id, and must not get a 400 saying so. The performance route is also
// computed on tasker-core (analytics.Service.PerformanceReport).
func (a *analyticsAPI) supportedPerformance(c *gin.Context) {
	if err := a.svc.CorePerformanceSupported(); err != nil {
		c.AbortWithStatusJSON(http.StatusNotImplemented, errorBody{Error: "Not Implemented", Message: err.Error()})
	}
}

// supportedTasks is supported for the bottleneck analysis, the per-task
// context, steps and graph routes and the handler catalog, which are also
// computed on tasker-core (analytics.Service.BottlenecksReport,
// CoreTaskContexts, CoreTaskGraphs, HandlerReport).
func (a *analyticsAPI) supportedTasks(c *gin.Context) {
	if err := a.svc.CoreTasksSupported(); err != nil {
		c.AbortWithStatusJSON(http.StatusNotImplemented, errorBody{Error: "Not Implemented", Message: err.Error()})
	}
}

// failureBody is Tasker's analytics error shape; Scope only on bottlenecks.
type failureBody struct {
	Error     string           `json:"error"`
	Message   string           `json:"message"`
	Scope     *analytics.Scope `json:"scope,omitempty"`
	Timestamp railsTime        `json:"timestamp"`
}

func badRequest(c *gin.Context, err error) {
	c.JSON(http.StatusBadRequest, errorBody{Error: "Bad Request", Message: err.Error()})
}

// query returns the named query parameters, each given at most once, or
// answers 400: a malformed or repeated parameter is never silently dropped.
func query(c *gin.Context, names ...string) ([]string, bool) {
	q, err := analytics.ParseQuery(c.Request.URL.RawQuery)
	if err != nil {
		badRequest(c, err)
		return nil, false
	}
	out := make([]string, len(names))
	for i, name := range names {
		if out[i], err = analytics.QueryValue(q, name); err != nil {
			badRequest(c, err)
			return nil, false
		}
	}
	return out, true
}

// serve writes the cached JSON object with its cache_info, or the error.
func (a *analyticsAPI) serve(c *gin.Context, resource, params, failure string, scope *analytics.Scope,
	compute func(ctx context.Context) (any, error), opts ...ttl.Option) {
	body, info, err := a.cache.Get(c.Request.Context(), resource, params, func(ctx context.Context) ([]byte, error) {
		v, err := compute(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	}, opts...)
	a.respond(c, body, info, err, failure, scope)
}

// respond writes the JSON object body with cache_info appended, or answers
// err (or a failure to append) with fail.
func (a *analyticsAPI) respond(c *gin.Context, body []byte, info ttl.Info, err error, failure string, scope *analytics.Scope) {
	if err == nil {
		var lag time.Duration
		if a.lag != nil {
			lag = a.lag()
		}
		body, err = withCacheInfo(body, info, lag)
	}
	if err != nil {
		a.fail(c, err, failure, scope)
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", body)
}

// fail answers a failed request. A client that went away gets no answer
// (499 in the request metrics, logged at debug): its impatience is not a
// server error. An overloaded sidecar, or a request whose deadline passed,
// answers 503 with Retry-After; those are counted by the admission and
// cache metrics and logged at debug, so a flood does not flood the log.
func (a *analyticsAPI) fail(c *gin.Context, err error, failure string, scope *analytics.Scope) {
	ctxErr := c.Request.Context().Err()
	if errors.Is(ctxErr, context.Canceled) {
		a.log.Debug("analytics request abandoned by its client", "route", c.FullPath(), "err", err)
		c.AbortWithStatus(StatusClientClosedRequest)
		return
	}
	var nf *analytics.NotFoundError
	if errors.As(err, &nf) {
		c.JSON(http.StatusNotFound, gin.H{"error": nf.Message})
		return
	}
	body := failureBody{Error: failure, Message: errorText(err), Scope: scope, Timestamp: railsTime(a.now())}
	// Every 503 says when to come back: a failing database is retried by
	// the cache after its backoff, so an earlier retry only meets the error.
	c.Header("Retry-After", strconv.Itoa(retryAfterSeconds(err)))
	if errors.Is(err, ttl.ErrOverloaded) || ctxErr != nil {
		a.log.Debug("analytics request turned away", "route", c.FullPath(), "err", err)
		c.JSON(http.StatusServiceUnavailable, body)
		return
	}
	a.log.Warn("analytics request failed", "route", c.FullPath(), "err", err, "class", errorClass(err))
	c.JSON(http.StatusServiceUnavailable, body)
}

// retryAfterSeconds is the whole seconds (at least 1) an overload error
// suggests waiting: the cache's estimate (ttl.RetryAfter), the admission
// control's (analytics.OverloadedError), or defaultRetryAfter.
func retryAfterSeconds(err error) int {
	d, ok := ttl.RetryAfter(err)
	if !ok {
		var hint interface{ RetryAfter() time.Duration }
		if errors.As(err, &hint) {
			d, ok = hint.RetryAfter(), true
		}
	}
	if !ok || d <= 0 {
		d = defaultRetryAfter
	}
	return max(int((d+time.Second-1)/time.Second), 1)
}

// withCacheInfo appends "cache_info" to a JSON object. It copies: body may
// be the cache's own slice. A standby's replication lag is added to the
// age and reported beside it.
func withCacheInfo(body []byte, info ttl.Info, lag time.Duration) ([]byte, error) {
	// Ages and TTLs are floats with a decimal point, as every duration the
	// API sends (docs/endpoints.md).
	var lagSeconds *jsonFloat
	if lag > 0 {
		l := jsonFloat(lag.Seconds())
		lagSeconds = &l
	}
	ci, err := json.Marshal(struct {
		Cached     bool       `json:"cached"`
		AgeSeconds jsonFloat  `json:"age_seconds"`
		LagSeconds *jsonFloat `json:"replication_lag_seconds,omitempty"`
		TTLSeconds jsonFloat  `json:"ttl_seconds"`
		Stale      bool       `json:"stale"`
	}{info.Cached, jsonFloat(info.AgeSeconds + lag.Seconds()), lagSeconds, jsonFloat(info.TTLSeconds), info.Stale})
	if err != nil {
		return nil, err
	}
	return appendMember(body, "cache_info", ci)
}

// appendMember appends "name":value to the JSON object obj, into a new
// slice.
func appendMember(obj []byte, name string, value []byte) ([]byte, error) {
	end := len(obj)
	for end > 0 && (obj[end-1] == ' ' || obj[end-1] == '\n' || obj[end-1] == '\r' || obj[end-1] == '\t') {
		end--
	}
	if end < 2 || obj[0] != '{' || obj[end-1] != '}' {
		return nil, fmt.Errorf("cached analytics value is not a JSON object")
	}
	out := make([]byte, 0, end+len(name)+len(value)+8)
	out = append(out, obj[:end-1]...)
	if end > 2 {
		out = append(out, ',')
	}
	out = strconv.AppendQuote(out, name)
	out = append(out, ':')
	out = append(out, value...)
	return append(out, '}'), nil
}

func (a *analyticsAPI) performance(c *gin.Context) {
	v, ok := query(c, "since")
	if !ok {
		return
	}
	since, err := analytics.ParseSince(v[0], a.now())
	if err != nil {
		badRequest(c, err)
		return
	}
	params := ""
	var opts []ttl.Option
	if since != nil {
		params = url.Values{"since": {since.Format(time.RFC3339Nano)}}.Encode()
		// Every microsecond is a new key: it stays in this replica.
		opts = append(opts, ttl.LocalOnly())
	}
	if a.svc.OnCore() {
		// The body differs by engine: an engine switch under a running
		// sidecar must not serve one engine's answer as the other's.
		params = strings.TrimPrefix(params+"&engine=core", "&")
	}
	a.serve(c, ttl.ResourcePerformance, params, errPerformance, nil, func(ctx context.Context) (any, error) {
		return a.svc.PerformanceReport(ctx, since)
	}, opts...)
}

func (a *analyticsAPI) bottlenecks(c *gin.Context) {
	v, ok := query(c, "namespace", "name", "version", "period")
	if !ok {
		return
	}
	q, err := analytics.ParseBottleneckQuery(v[0], v[1], v[2], v[3])
	if err != nil {
		badRequest(c, err)
		return
	}
	var opts []ttl.Option
	if q != (analytics.BottleneckQuery{PeriodHours: analytics.DefaultPeriodHours}) {
		// Any scope and period make a key: only the default one, which
		// dashboards ask for, is shared between replicas.
		opts = append(opts, ttl.LocalOnly())
	}
	params := q.Params()
	if a.svc.OnCore() {
		params += "&engine=core"
	}
	a.serve(c, ttl.ResourceBottlenecks, params, errBottlenecks, &q.Scope, func(ctx context.Context) (any, error) {
		return a.svc.BottlenecksReport(ctx, q)
	}, opts...)
}

// taskNotFound is the 404 of an unknown task.
var taskNotFound = &analytics.NotFoundError{Message: "Task not found"}

// taskRoute is one per-task resource: its batch computation (tasks in id
// order, and the ids that name no task) and how to find a task's id.
type taskRoute[T any, K cmp.Ordered] struct {
	resource string
	load     func(ctx context.Context, ids []K) ([]T, []K, error)
	id       func(T) K
	// parse validates one id of the path, parseList an ids= list;
	// params is an id's cache key parameters.
	parse     func(raw string) (K, error)
	parseList func(raw string, limit int) ([]K, error)
	params    func(K) string
	// stamped: the single-task body carries generated_at after the task's
	// fields (context and steps, as Tasker's).
	stamped bool
}

// taskEntry is the cached value of one task under (resource, id=N): the
// task's answer and when it was computed. The single-task route and every
// batch that names the task share it, so that a new id combination costs
// only the tasks no entry holds yet (issue 10: one entry per combination
// filled 1.8 GB). An id that names no task gets no entry in any level: its
// lookup fails with taskNotFound, which the cache does not store, so ids a
// client invents cost a (batched) query each time but no memory.
type taskEntry struct {
	GeneratedAt analytics.Time  `json:"generated_at"`
	Task        json.RawMessage `json:"task"`
}

// loader turns r's batch computation into cache entries by task id.
func (r taskRoute[T, K]) loader(now func() time.Time) func(ctx context.Context, ids []K) (map[K][]byte, error) {
	return func(ctx context.Context, ids []K) (map[K][]byte, error) {
		got, _, err := r.load(ctx, ids)
		if err != nil {
			return nil, err
		}
		at := analytics.Time(now())
		out := make(map[K][]byte, len(got))
		for _, t := range got {
			task, err := json.Marshal(t)
			if err != nil {
				return nil, err
			}
			if out[r.id(t)], err = json.Marshal(taskEntry{GeneratedAt: at, Task: task}); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
}

// taskPart is one task of a request, as the cache served it.
type taskPart struct {
	entry   taskEntry
	info    ttl.Info
	missing bool
	err     error
}

// lookup serves task id of r through the cache; a miss is computed by b,
// together with the other misses of the request.
func lookup[T any, K cmp.Ordered](ctx context.Context, a *analyticsAPI, r taskRoute[T, K], b *taskBatch[K], id K) taskPart {
	b.started(id)
	// In-process only: a client can name any of the table's tasks, and
	// every task it names would be a key in the shared store, which is the
	// engine's own (4,000 distinct batches on 20,000 tasks wrote 91 MB to
	// Redis; on a million tasks it would be gigabytes). A task's answer is
	// an index probe of milliseconds, which each replica can afford.
	v, info, err := a.cache.Get(ctx, r.resource, r.params(id), func(ctx context.Context) ([]byte, error) {
		return b.compute(ctx, id)
	}, ttl.LocalOnly())
	b.returned(id)
	p := taskPart{info: info}
	switch {
	case errors.Is(err, analytics.ErrNotFound):
		p.missing = true
	case err != nil:
		p.err = err
	default:
		if err := json.Unmarshal(v, &p.entry); err != nil {
			p.err = fmt.Errorf("decode cached task %v: %w", id, err)
		}
	}
	return p
}

// one serves a single-task route: the task's entry, with generated_at
// where the route has it, or a 404.
// eitherEngine serves a per-task route from the variant of the engine
// attached at the request (Rails' integer ids or tasker-core's UUIDs);
// serveRails and serveCore are one or many, instantiated for each variant.
func eitherEngine[R, C any](a *analyticsAPI,
	serveRails func(*analyticsAPI, *gin.Context, taskRoute[R, int64]), rails taskRoute[R, int64],
	serveCore func(*analyticsAPI, *gin.Context, taskRoute[C, string]), core taskRoute[C, string]) gin.HandlerFunc {
	return func(c *gin.Context) {
		if a.svc.OnCore() {
			serveCore(a, c, core)
			return
		}
		serveRails(a, c, rails)
	}
}

func one[T any, K cmp.Ordered](a *analyticsAPI, c *gin.Context, r taskRoute[T, K]) {
	id, err := r.parse(c.Param("id"))
	if err != nil {
		badRequest(c, err)
		return
	}
	p := lookup(c.Request.Context(), a, r, newTaskBatch(r.loader(a.now), []K{id}), id)
	if p.missing {
		p.err = taskNotFound
	}
	body := []byte(p.entry.Task)
	if p.err == nil && r.stamped {
		var at []byte
		if at, p.err = json.Marshal(p.entry.GeneratedAt); p.err == nil {
			body, p.err = appendMember(body, "generated_at", at)
		}
	}
	a.respond(c, body, p.info, p.err, errTasks, nil)
}

// batchBody answers the ?ids= forms; ids that name no task are listed, not
// an error, as Tasker's batch functions skip them.
type batchBody[K any] struct {
	Tasks          []json.RawMessage `json:"tasks"`
	MissingTaskIDs []K               `json:"missing_task_ids"`
	GeneratedAt    analytics.Time    `json:"generated_at"`
}

// batchLookups is how many of a batch's tasks are looked up in the cache
// at once. The coordinated cache admits max_waiters (default 32) requests
// per resource waiting for cold computations, each id of a batch counting
// as one: a 50-id batch looked up all at once would be turned away by the
// cache on its own, and several batches must fit beside single-task
// lookups. Four at a time costs a cold 50-id batch about a dozen shared
// store round trips in a row; its tasks are still computed in one query.
const batchLookups = 4

// many serves a batch route from the per-task entries. Its cache_info
// aggregates theirs: cached when every task came from the cache (an id
// that names no task is looked up in the database each time), the oldest
// age, the smallest TTL, stale when any is; generated_at is the oldest
// task's. One task failing (an overloaded cache or database included) fails
// the request, as before.
func many[T any, K cmp.Ordered](a *analyticsAPI, c *gin.Context, r taskRoute[T, K]) {
	q, err := analytics.ParseQuery(c.Request.URL.RawQuery)
	if err != nil {
		badRequest(c, err)
		return
	}
	// A repeated ids parameter is merged: ids=1,2&ids=3 names three tasks.
	ids, err := r.parseList(strings.Join(q["ids"], ","), a.svc.Config().MaxBatch)
	if err != nil {
		badRequest(c, err)
		return
	}
	b := newTaskBatch(r.loader(a.now), ids)
	parts := make([]taskPart, len(ids))
	// The first failure cancels the lookups still under way: their answers
	// are not wanted any more.
	g, ctx := errgroup.WithContext(c.Request.Context())
	g.SetLimit(batchLookups)
	for i, id := range ids {
		g.Go(func() error {
			parts[i] = lookup(ctx, a, r, b, id)
			return parts[i].err
		})
	}
	if err := g.Wait(); err != nil {
		a.fail(c, err, errTasks, nil)
		return
	}

	body := batchBody[K]{Tasks: make([]json.RawMessage, 0, len(ids)), MissingTaskIDs: []K{}}
	info := ttl.Info{Cached: true}
	for i, p := range parts {
		if p.missing {
			body.MissingTaskIDs = append(body.MissingTaskIDs, ids[i])
			info.Cached = false
			continue
		}
		body.Tasks = append(body.Tasks, p.entry.Task)
		if len(body.Tasks) == 1 {
			body.GeneratedAt, info.AgeSeconds, info.TTLSeconds = p.entry.GeneratedAt, p.info.AgeSeconds, p.info.TTLSeconds
		}
		if p.entry.GeneratedAt.Std().Before(body.GeneratedAt.Std()) {
			body.GeneratedAt = p.entry.GeneratedAt
		}
		info.Cached = info.Cached && p.info.Cached
		info.AgeSeconds = max(info.AgeSeconds, p.info.AgeSeconds)
		info.TTLSeconds = min(info.TTLSeconds, p.info.TTLSeconds)
		info.Stale = info.Stale || p.info.Stale
	}
	if len(body.Tasks) == 0 {
		body.GeneratedAt, info = analytics.Time(a.now()), ttl.Info{}
	}
	raw, err := json.Marshal(body)
	a.respond(c, raw, info, err, errTasks, nil)
}

// taskBatch computes the cache misses of one request's task ids together,
// so that a cold batch of 50 ids is one query, not 50. The cache cannot be
// asked which ids it holds without computing them, so the first miss
// starts a run of the batch computation over itself and the ids it guesses
// are misses too, and later misses take their task from a run that covers
// them:
//
//   - while the request looks its ids up, a run covers every id whose
//     lookup has started and not returned, and, as long as no lookup has
//     been a hit (a cold batch), the ids not looked up yet as well;
//   - for the computations the cache starts after the request has its
//     answer (refreshes of values it served: a batch's entries, computed
//     together, fall due together), every id of the request not covered
//     by a newer run.
//
// Nothing waits for the lookups to settle (one may wait for another
// request's computation that waits for this one), so a run may compute a
// task whose lookup turns out a hit; that result is dropped. A run is used
// for an id only if it started after the id's lookup returned, or before:
// a refresh never gets a result older than the value it replaces.
type taskBatch[K cmp.Ordered] struct {
	load func(ctx context.Context, ids []K) (map[K][]byte, error)
	ids  []K

	mu         sync.Mutex
	seq        int64
	begun      map[K]bool        // ids whose lookup has started
	open       map[K]bool        // ids whose lookup has not returned
	computing  map[K]bool        // ids the cache has asked to compute
	sawHit     bool              // a lookup returned without computing
	returnedAt map[K]int64       // ids whose lookup has returned: seq then
	runs       map[K]*taskRun[K] // the latest run covering each id
}

type taskRun[K cmp.Ordered] struct {
	seq      int64 // b.seq when it started
	finished chan struct{}
	got      map[K][]byte
	err      error

	waiters   int
	abandoned bool
	cancel    context.CancelFunc
}

func newTaskBatch[K cmp.Ordered](load func(context.Context, []K) (map[K][]byte, error), ids []K) *taskBatch[K] {
	b := &taskBatch[K]{load: load, ids: ids, begun: map[K]bool{}, open: make(map[K]bool, len(ids)),
		computing: map[K]bool{}, returnedAt: map[K]int64{}, runs: map[K]*taskRun[K]{}}
	for _, id := range ids {
		b.open[id] = true
	}
	return b
}

// compute is the cache's compute function for id.
func (b *taskBatch[K]) compute(ctx context.Context, id K) ([]byte, error) {
	r := b.join(ctx, id)
	select {
	case <-r.finished:
	case <-ctx.Done():
		b.leave(r)
		return nil, ctx.Err()
	}
	b.leave(r)
	if r.err != nil {
		return nil, r.err
	}
	v, ok := r.got[id]
	if !ok {
		return nil, taskNotFound
	}
	return v, nil
}

// started records that id's lookup has begun.
func (b *taskBatch[K]) started(id K) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.begun[id] = true
}

// returned records that id's lookup has its answer.
func (b *taskBatch[K]) returned(id K) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.open, id)
	b.sawHit = b.sawHit || !b.computing[id]
	b.seq++
	b.returnedAt[id] = b.seq
}

// covering is a run id may use, or nil.
func (b *taskBatch[K]) covering(id K) *taskRun[K] {
	r := b.runs[id]
	if r == nil || r.abandoned {
		return nil
	}
	if at, ok := b.returnedAt[id]; ok && r.seq < at {
		return nil
	}
	return r
}

// join finds or starts the run that computes id, and waits on it.
func (b *taskBatch[K]) join(ctx context.Context, id K) *taskRun[K] {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.computing[id] = true
	r := b.covering(id)
	if r == nil {
		late := len(b.open) == 0
		ids := []K{id}
		for _, o := range b.ids {
			if o != id && b.covering(o) == nil && (late || b.open[o] && (b.begun[o] || !b.sawHit)) {
				ids = append(ids, o)
			}
		}
		slices.Sort(ids)
		r = b.run(ctx, ids)
	}
	r.waiters++
	return r
}

// run computes ids in the background, under ctx's values and deadline but
// not its cancellation: it is cancelled when every computation waiting on
// it has gone (leave). b.mu is held.
func (b *taskBatch[K]) run(ctx context.Context, ids []K) *taskRun[K] {
	b.seq++
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if dl, ok := ctx.Deadline(); ok {
		var cancelDeadline context.CancelFunc
		rctx, cancelDeadline = context.WithDeadline(rctx, dl)
		cancelRun := cancel
		cancel = func() { cancelDeadline(); cancelRun() }
	}
	r := &taskRun[K]{seq: b.seq, finished: make(chan struct{}), cancel: cancel}
	for _, id := range ids {
		b.runs[id] = r
	}
	go func() {
		defer cancel()
		r.got, r.err = b.load(rctx, ids)
		close(r.finished)
	}()
	return r
}

// leave stops waiting on r; the last waiter to leave an unfinished run
// cancels it, so that no query runs for nobody.
func (b *taskBatch[K]) leave(r *taskRun[K]) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r.waiters--
	select {
	case <-r.finished:
		return
	default:
	}
	if r.waiters == 0 {
		r.abandoned = true
		r.cancel()
	}
}

func (a *analyticsAPI) handlers(c *gin.Context) {
	a.serve(c, ttl.ResourceHandlers, a.catalogParams(url.Values{"view": {"index"}}), errHandlers, nil, func(ctx context.Context) (any, error) {
		return a.svc.Handlers(ctx)
	})
}

func (a *analyticsAPI) handlerNamespace(c *gin.Context) {
	h, err := analytics.ParseHandlerParams(c.Param("namespace"), "", "")
	if err != nil {
		badRequest(c, err)
		return
	}
	params := a.catalogParams(url.Values{"view": {"namespace"}, "namespace": {h.Namespace}})
	a.serve(c, ttl.ResourceHandlers, params, errHandlers, nil, func(ctx context.Context) (any, error) {
		return a.svc.Namespace(ctx, h.Namespace)
	})
}

func (a *analyticsAPI) handlerDetail(c *gin.Context) {
	v, ok := query(c, "version")
	if !ok {
		return
	}
	h, err := analytics.ParseHandlerParams(c.Param("namespace"), c.Param("name"), v[0])
	if err != nil {
		badRequest(c, err)
		return
	}
	params := a.catalogParams(url.Values{"view": {"handler"}, "namespace": {h.Namespace}, "name": {h.Name}, "version": {h.Version}})
	a.serve(c, ttl.ResourceHandlers, params, errHandlers, nil, func(ctx context.Context) (any, error) {
		return a.svc.HandlerReport(ctx, h.Namespace, h.Name, h.Version)
	})
}

// catalogParams encodes a catalog view's cache key; tasker-core's entries
// carry engine=core, so that an engine switch under a running sidecar does
// not serve one engine's catalog for the other's (the Rails keys are
// unchanged).
func (a *analyticsAPI) catalogParams(v url.Values) string {
	if a.svc.OnCore() {
		v.Set("engine", "core")
	}
	return v.Encode()
}
