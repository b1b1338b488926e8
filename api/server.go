// Package api is the sidecar's HTTP API on gin: the router and its
// middleware (auth, request deadlines, HEAD, 499, request metrics),
// Tasker-compatible health endpoints computed from the refresher's last
// snapshot and the readiness checks, the Prometheus exposition and the
// analytics routes. The listener is package server's.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tasker-systems/tasker-sidecar/exporters"
	"github.com/tasker-systems/tasker-sidecar/readiness"
	"github.com/tasker-systems/tasker-sidecar/server"
)

// Route templates. Live and ready stay unauthenticated, as in Tasker, so
// that kubelet probes need no credentials.
const (
	PathLive          = "/tasker/health/live"
	PathReady         = "/tasker/health/ready"
	PathStatus        = "/tasker/health/status"
	PathMetrics       = "/metrics"
	PathTaskerMetrics = "/tasker/metrics"
)

// metricsMaxInFlight bounds concurrent scrapes.
const metricsMaxInFlight = 10

// Deps are what the API serves besides its configuration.
type Deps struct {
	// Registerer receives the API's own metrics; Gatherer is served on
	// /metrics. Leave both nil for a private registry.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer

	// Health is the refresher's state (collector.Refresher), read by the
	// status route.
	Health readiness.HealthSource
	// RefreshInterval is the refresher's period; data older than twice this
	// is stale.
	RefreshInterval time.Duration
	// Checks are the readiness checks, also exported as metrics
	// (exporters.NewReadinessCollector) when there are any.
	Checks []readiness.Checker

	// Front is what the front page (GET /) shows besides the routes and
	// readiness; the zero value shows those alone.
	Front Front

	Logger *slog.Logger
}

// Server is the sidecar's HTTP API: the gin router over a server.Server.
type Server struct {
	cfg       server.Config
	deps      Deps
	log       *slog.Logger
	engine    *gin.Engine
	metrics   *httpMetrics
	auth      *server.Authenticator // nil when auth is off
	readiness *readiness.Evaluator
	listener  *server.Server
	now       func() time.Time
}

// New validates cfg and deps and builds the router. Nothing listens until
// Run or Start.
func New(cfg server.Config, deps Deps) (*Server, error) {
	if err := validate(cfg, deps); err != nil {
		return nil, err
	}
	if deps.Registerer == nil {
		reg := prometheus.NewRegistry()
		deps.Registerer, deps.Gatherer = reg, reg
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "http")

	s := &Server{cfg: cfg, deps: deps, log: log, now: time.Now}
	var err error
	if s.readiness, err = readiness.NewEvaluator(deps.Checks, cfg.ReadinessTimeout, log); err != nil {
		return nil, fmt.Errorf("api: invalid options: %w", err)
	}
	if s.metrics, err = newHTTPMetrics(deps.Registerer); err != nil {
		return nil, err
	}
	if len(deps.Checks) > 0 {
		if err := deps.Registerer.Register(exporters.NewReadinessCollector(s.readiness)); err != nil {
			return nil, fmt.Errorf("api: register readiness metrics: %w", err)
		}
	}
	if s.auth, err = server.NewAuthenticator(cfg.Auth); err != nil {
		return nil, err
	}
	s.engine = s.routes()
	if s.listener, err = server.New(cfg, s.Handler(), log); err != nil {
		return nil, err
	}
	return s, nil
}

func validate(cfg server.Config, d Deps) error {
	errs := cfg.Validate()
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if d.RefreshInterval <= 0 {
		add("refresh interval must be positive, got %s", d.RefreshInterval)
	}
	if (d.Registerer == nil) != (d.Gatherer == nil) {
		add("set both Registerer and Gatherer, or neither")
	}
	if d.Health == nil {
		add("health source is required")
	}
	if len(errs) > 0 {
		return fmt.Errorf("api: invalid options: %w", errors.Join(errs...))
	}
	return nil
}

// Router exposes the engine so that other packages can add routes before
// Run. Routes added later are authenticated like status and metrics.
func (s *Server) Router() *gin.Engine { return s.engine }

// Handler is what Run serves: the router, with HEAD answered as GET.
func (s *Server) Handler() http.Handler { return headAsGet(s.engine) }

// headKey marks a HEAD request served as GET, for the request log.
type headKey struct{}

// headAsGet answers HEAD wherever GET is routed, including the routes other
// packages add through Router. gin has no HEAD fallback, so every route
// answered 405 (issue 10). net/http discards the body of a HEAD response
// (chunkWriter.Write in net/http/server.go checks the original request's
// method), and sets the same Content-Length a GET would get when the body
// fits its buffer; the handler runs unchanged.
func headAsGet(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			r = r.WithContext(context.WithValue(r.Context(), headKey{}, true))
			r.Method = http.MethodGet
		}
		h.ServeHTTP(w, r)
	})
}

// method is the method the client sent, for the request log.
func method(r *http.Request) string {
	if head, _ := r.Context().Value(headKey{}).(bool); head {
		return http.MethodHead
	}
	return r.Method
}

// Addr is the bound address, nil before the listener is bound.
func (s *Server) Addr() net.Addr { return s.listener.Addr() }

// Bound is closed once the listener is bound, after which Addr is set.
func (s *Server) Bound() <-chan struct{} { return s.listener.Bound() }

// Start binds the listener and serves in the background (server.Server).
func (s *Server) Start(ctx context.Context) error {
	if s.auth != nil && s.listener.Addr() == nil {
		s.log.Info("credentials required", "routes", "all but "+PathLive+" and "+PathReady)
	}
	return s.listener.Start(ctx)
}

// Done is closed when the server stopped serving (server.Server.Done); Err
// says why.
func (s *Server) Done() <-chan struct{} { return s.listener.Done() }

// Err is why serving stopped, nil while serving and after a clean shutdown.
func (s *Server) Err() error { return s.listener.Err() }

// Shutdown stops serving gracefully within ctx; safe without Start and
// more than once.
func (s *Server) Shutdown(ctx context.Context) error { return s.listener.Shutdown(ctx) }

// Run serves until ctx is done, then shuts down gracefully within the
// shutdown timeout. A bind error is returned at once; a clean shutdown
// returns nil.
func (s *Server) Run(ctx context.Context) error {
	if s.auth != nil {
		s.log.Info("credentials required", "routes", "all but "+PathLive+" and "+PathReady)
	}
	return s.listener.Run(ctx)
}

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	// Nothing fronts the sidecar inside the pod; never trust X-Forwarded-For.
	_ = e.SetTrustedProxies(nil)

	// observe is outermost so that it records the 500 written by recovery,
	// and sees the request's context before deadline replaces it.
	e.Use(s.observe, gin.CustomRecoveryWithWriter(io.Discard, s.recovered), s.deadline)
	if s.auth != nil {
		e.Use(s.authenticate)
	}
	// A HEAD request arrives here as GET (headAsGet): its body is never
	// sent, and saying GET keeps its Content-Length that of the GET.
	e.NoRoute(func(c *gin.Context) {
		c.JSON(http.StatusNotFound, errorBody{Error: "Not Found",
			Message: "No route matches " + echo(c.Request.Method) + " " + echo(c.Request.URL.Path)})
	})
	e.NoMethod(func(c *gin.Context) {
		allow := withHead(c.Writer.Header().Get("Allow"))
		c.Header("Allow", allow)
		c.JSON(http.StatusMethodNotAllowed, errorBody{Error: "Method Not Allowed",
			Message: "Method " + echo(c.Request.Method) + " is not allowed; allowed: " + allow})
	})

	e.GET(PathFront, noCache, s.front)
	e.GET(PathLive, noCache, s.live)
	e.GET(PathReady, noCache, s.ready)
	e.GET(PathStatus, s.status)

	metrics := gin.WrapH(promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{
		ErrorLog:            promLogger{s.log},
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            s.deps.Registerer,
		MaxRequestsInFlight: metricsMaxInFlight,
		EnableOpenMetrics:   true,
	}))
	e.GET(PathMetrics, noCache, metrics)
	e.GET(PathTaskerMetrics, noCache, metrics)
	return e
}

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// maxEcho bounds how much of a request an error message repeats: the path
// alone may be 64 KB (MaxHeaderBytes), and the answer must stay short.
const maxEcho = 200

// echo makes client input fit for an error message: valid UTF-8, at most
// maxEcho bytes, "…" when cut.
func echo(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxEcho {
		return s
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// withHead adds HEAD to an Allow list that has GET, as headAsGet serves it.
func withHead(allow string) string {
	methods := strings.Split(allow, ", ")
	if slices.Contains(methods, http.MethodGet) && !slices.Contains(methods, http.MethodHead) {
		methods = append(methods, http.MethodHead)
	}
	return strings.Join(methods, ", ")
}

// deadline gives every request's context a deadline, so that no handler
// waits without bound for a connection, a lock or a computation (issue 10).
// The probes keep their own, shorter readiness timeout.
func (s *Server) deadline(c *gin.Context) {
	d := s.cfg.RequestTimeout
	if publicRoutes[c.FullPath()] {
		d = s.cfg.ReadinessTimeout
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), d)
	defer cancel()
	c.Request = c.Request.WithContext(ctx)
	c.Next()
}

func noCache(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", "0")
}

// unmatched labels 404s and 405s: the raw path is unbounded.
const unmatched = "unmatched"

// StatusClientClosedRequest is nginx's code for a request whose client went
// away before the answer: recorded in the request metrics instead of what
// the handler wrote, so that impatient clients do not fire 5xx alerts.
const StatusClientClosedRequest = 499

func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	// Only the client (or a forced close) cancels the context net/http
	// gives the request; our own deadline is on a child, set by deadline.
	client := c.Request.Context()
	c.Next()
	elapsed := time.Since(start)
	route := c.FullPath()
	if route == "" {
		route = unmatched
	}
	written := c.Writer.Status()
	code, msg := written, "request"
	if errors.Is(client.Err(), context.Canceled) {
		code, msg = StatusClientClosedRequest, "client disconnected"
	}
	s.metrics.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	s.metrics.duration.WithLabelValues(route).Observe(elapsed.Seconds())
	if s.log.Enabled(client, slog.LevelDebug) {
		// Headers are never logged: they carry the credentials.
		attrs := []slog.Attr{
			slog.String("method", method(c.Request)),
			slog.String("route", route),
			slog.String("path", echo(c.Request.URL.Path)),
			slog.Int("status", code),
			slog.Duration("duration", elapsed),
			slog.String("remote", c.ClientIP()),
		}
		if code != written {
			attrs = append(attrs, slog.Int("written_status", written))
		}
		s.log.LogAttrs(client, slog.LevelDebug, msg, attrs...)
	}
}

func (s *Server) recovered(c *gin.Context, v any) {
	s.log.Error("handler panicked", "route", c.FullPath(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	c.AbortWithStatusJSON(http.StatusInternalServerError, errorBody{Error: "Internal Server Error", Message: "internal error"})
}

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prometheus.BuildFQName("tasker_sidecar", "http", "requests_total"),
			Help: "HTTP requests served, by route template and status code.",
		}, []string{"handler", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    prometheus.BuildFQName("tasker_sidecar", "http", "request_duration_seconds"),
			Help:    "Time to serve HTTP requests, by route template.",
			Buckets: prometheus.DefBuckets,
		}, []string{"handler"}),
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// register reuses an identical collector already in reg, so that several
// servers (tests, restarts within one process) can share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("api: register metrics: %w", err)
	}
	return c, nil
}

// promLogger routes promhttp's gathering errors to slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error("metrics gathering", "error", fmt.Sprint(v...)) }
