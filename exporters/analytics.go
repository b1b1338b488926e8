package exporters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/gin-gonic/gin"

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

type analyticsAPI struct {
	svc   *analytics.Service
	cache ttl.Getter
	log   *slog.Logger
	now   func() time.Time
}

// MountAnalytics adds the analytics, per-task and handler routes to r,
// which must be Server.Router() so that they get the server's metrics,
// recovery and authentication middleware (registered on the engine before
// Router returns). Every response is computed through cache; nil computes
// every request.
func MountAnalytics(r *gin.Engine, a *analytics.Service, cache ttl.Getter, logger *slog.Logger) {
	if cache == nil {
		cache = ttl.Uncached{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	api := &analyticsAPI{svc: a, cache: cache, log: logger.With("component", "analytics"), now: time.Now}
	r.GET(PathPerformance, noCache, api.performance)
	r.GET(PathBottlenecks, noCache, api.bottlenecks)
	r.GET(PathTaskContext, noCache, api.taskContext)
	r.GET(PathTaskSteps, noCache, api.taskSteps)
	r.GET(PathTaskGraph, noCache, api.taskGraph)
	r.GET(PathTasksContext, noCache, api.tasksContext)
	r.GET(PathTasksSteps, noCache, api.tasksSteps)
	r.GET(PathTasksGraph, noCache, api.tasksGraph)
	r.GET(PathHandlers, noCache, api.handlers)
	r.GET(PathHandlerNS, noCache, api.handlerNamespace)
	r.GET(PathHandlerDetail, noCache, api.handlerDetail)
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

// serve writes the cached JSON object with its cache_info, or the error.
func (a *analyticsAPI) serve(c *gin.Context, resource, params, failure string, scope *analytics.Scope,
	compute func(ctx context.Context) (any, error)) {
	body, info, err := a.cache.Get(c.Request.Context(), resource, params, func(ctx context.Context) ([]byte, error) {
		v, err := compute(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	})
	if err == nil {
		body, err = withCacheInfo(body, info)
	}
	if err != nil {
		a.fail(c, err, failure, scope)
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", body)
}

func (a *analyticsAPI) fail(c *gin.Context, err error, failure string, scope *analytics.Scope) {
	var nf *analytics.NotFoundError
	if errors.As(err, &nf) {
		c.JSON(http.StatusNotFound, gin.H{"error": nf.Message})
		return
	}
	a.log.Warn("analytics request failed", "route", c.FullPath(), "err", err, "class", errorClass(err))
	c.JSON(http.StatusServiceUnavailable, failureBody{
		Error: failure, Message: errorText(err), Scope: scope, Timestamp: railsTime(a.now()),
	})
}

// withCacheInfo appends "cache_info" to a JSON object. It copies: body may
// be the cache's own slice.
func withCacheInfo(body []byte, info ttl.Info) ([]byte, error) {
	end := len(body)
	for end > 0 && (body[end-1] == ' ' || body[end-1] == '\n' || body[end-1] == '\r' || body[end-1] == '\t') {
		end--
	}
	if end < 2 || body[0] != '{' || body[end-1] != '}' {
		return nil, fmt.Errorf("cached analytics value is not a JSON object")
	}
	// Ages and TTLs are floats with a decimal point, as every duration the
	// API sends (docs/endpoints.md).
	ci, err := json.Marshal(struct {
		Cached     bool      `json:"cached"`
		AgeSeconds jsonFloat `json:"age_seconds"`
		TTLSeconds jsonFloat `json:"ttl_seconds"`
		Stale      bool      `json:"stale"`
	}{info.Cached, jsonFloat(info.AgeSeconds), jsonFloat(info.TTLSeconds), info.Stale})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, end+len(ci)+16)
	out = append(out, body[:end-1]...)
	if end > 2 {
		out = append(out, ',')
	}
	out = append(out, `"cache_info":`...)
	out = append(out, ci...)
	return append(out, '}'), nil
}

func (a *analyticsAPI) performance(c *gin.Context) {
	since, err := analytics.ParseSince(c.Query("since"), a.now())
	if err != nil {
		badRequest(c, err)
		return
	}
	params := ""
	if since != nil {
		params = url.Values{"since": {since.Format(time.RFC3339Nano)}}.Encode()
	}
	a.serve(c, ttl.ResourcePerformance, params, errPerformance, nil, func(ctx context.Context) (any, error) {
		return a.svc.Performance(ctx, since)
	})
}

func (a *analyticsAPI) bottlenecks(c *gin.Context) {
	q, err := analytics.ParseBottleneckQuery(c.Query("namespace"), c.Query("name"), c.Query("version"), c.Query("period"))
	if err != nil {
		badRequest(c, err)
		return
	}
	a.serve(c, ttl.ResourceBottlenecks, q.Params(), errBottlenecks, &q.Scope, func(ctx context.Context) (any, error) {
		return a.svc.Bottlenecks(ctx, q)
	})
}

// taskNotFound is the 404 of an unknown task.
var taskNotFound = &analytics.NotFoundError{Message: "Task not found"}

// one serves a single-task route: the first element of a batch answer,
// with generated_at, or a 404.
func one[T any](a *analyticsAPI, c *gin.Context, resource string,
	batch func(ctx context.Context, ids []int64) ([]T, []int64, error), wrap func(T, time.Time) any) {
	id, err := analytics.ParseTaskID(c.Param("id"))
	if err != nil {
		badRequest(c, err)
		return
	}
	// "one:" keeps the single-task body (and its 404) apart from the batch
	// form's entry for the same id.
	a.serve(c, resource, "one:"+analytics.IDParams([]int64{id}), errTasks, nil, func(ctx context.Context) (any, error) {
		got, _, err := batch(ctx, []int64{id})
		if err != nil {
			return nil, err
		}
		if len(got) == 0 {
			return nil, taskNotFound
		}
		return wrap(got[0], a.now()), nil
	})
}

// batchBody answers the ?ids= forms; ids that name no task are listed, not
// an error, as Tasker's batch functions skip them.
type batchBody[T any] struct {
	Tasks          []T            `json:"tasks"`
	MissingTaskIDs []int64        `json:"missing_task_ids"`
	GeneratedAt    analytics.Time `json:"generated_at"`
}

func many[T any](a *analyticsAPI, c *gin.Context, resource string,
	batch func(ctx context.Context, ids []int64) ([]T, []int64, error)) {
	ids, err := analytics.ParseTaskIDs(c.Query("ids"), a.svc.Options().MaxBatch)
	if err != nil {
		badRequest(c, err)
		return
	}
	a.serve(c, resource, analytics.IDParams(ids), errTasks, nil, func(ctx context.Context) (any, error) {
		got, missing, err := batch(ctx, ids)
		if err != nil {
			return nil, err
		}
		if got == nil {
			got = []T{}
		}
		return batchBody[T]{Tasks: got, MissingTaskIDs: missing, GeneratedAt: analytics.Time(a.now())}, nil
	})
}

type contextBody struct {
	analytics.TaskContext
	GeneratedAt analytics.Time `json:"generated_at"`
}

type stepsBody struct {
	analytics.TaskSteps
	GeneratedAt analytics.Time `json:"generated_at"`
}

func (a *analyticsAPI) taskContext(c *gin.Context) {
	one(a, c, ResourceTaskContext, a.svc.TaskContexts, func(v analytics.TaskContext, now time.Time) any {
		return contextBody{v, analytics.Time(now)}
	})
}

func (a *analyticsAPI) taskSteps(c *gin.Context) {
	one(a, c, ResourceTaskSteps, a.svc.TaskSteps, func(v analytics.TaskSteps, now time.Time) any {
		return stepsBody{v, analytics.Time(now)}
	})
}

func (a *analyticsAPI) taskGraph(c *gin.Context) {
	one(a, c, ttl.ResourceTaskGraph, a.svc.TaskGraphs, func(v analytics.TaskGraph, _ time.Time) any { return v })
}

func (a *analyticsAPI) tasksContext(c *gin.Context) {
	many(a, c, ResourceTaskContext, a.svc.TaskContexts)
}
func (a *analyticsAPI) tasksSteps(c *gin.Context) { many(a, c, ResourceTaskSteps, a.svc.TaskSteps) }
func (a *analyticsAPI) tasksGraph(c *gin.Context) {
	many(a, c, ttl.ResourceTaskGraph, a.svc.TaskGraphs)
}

func (a *analyticsAPI) handlers(c *gin.Context) {
	a.serve(c, ttl.ResourceHandlers, "view=index", errHandlers, nil, func(ctx context.Context) (any, error) {
		return a.svc.Handlers(ctx)
	})
}

func (a *analyticsAPI) handlerNamespace(c *gin.Context) {
	ns := c.Param("namespace")
	params := url.Values{"view": {"namespace"}, "namespace": {ns}}.Encode()
	a.serve(c, ttl.ResourceHandlers, params, errHandlers, nil, func(ctx context.Context) (any, error) {
		return a.svc.Namespace(ctx, ns)
	})
}

func (a *analyticsAPI) handlerDetail(c *gin.Context) {
	ns, name, version := c.Param("namespace"), c.Param("name"), c.Query("version")
	params := url.Values{"view": {"handler"}, "namespace": {ns}, "name": {name}, "version": {version}}.Encode()
	a.serve(c, ttl.ResourceHandlers, params, errHandlers, nil, func(ctx context.Context) (any, error) {
		return a.svc.Handler(ctx, ns, name, version)
	})
}
