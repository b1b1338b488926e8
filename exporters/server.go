// Package exporters serves the sidecar's HTTP API: Tasker-compatible health
// endpoints computed from the refresher's last snapshot, and the Prometheus
// exposition, including the domain collector built here.
package exporters

import (
	"context"
	"crypto/tls"
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
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// Defaults applied to zero-valued Options fields.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	// DefaultWriteTimeout is config.Default's, so that a request that uses
	// its whole DefaultRequestTimeout can still write its answer.
	DefaultWriteTimeout     = 75 * time.Second
	DefaultRequestTimeout   = 30 * time.Second
	DefaultIdleTimeout      = 120 * time.Second
	DefaultShutdownTimeout  = 10 * time.Second
	DefaultReadinessTimeout = 5 * time.Second // Tasker's readiness_timeout_seconds
	DefaultMetricsInFlight  = 10
)

// Options configures a Server. Zero durations take the defaults above.
type Options struct {
	Listen string // host:port; ":0" picks a free port, see Addr

	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
	// RequestTimeout is the deadline of every request's context, so that no
	// handler waits without bound (issue 10). It must be shorter than
	// WriteTimeout, or the answer to a request that used all of it is cut
	// off. Live and ready get ReadinessTimeout instead.
	RequestTimeout time.Duration

	// Both set: serve HTTPS. The files are re-read when the certificate
	// file changes, so rotated certificates need no restart.
	TLSCertFile string
	TLSKeyFile  string

	Auth Auth

	ReadinessTimeout time.Duration
	// RefreshInterval is the refresher's period; data older than twice this
	// is stale.
	RefreshInterval time.Duration

	// Registerer receives the server's own metrics; Gatherer is served on
	// /metrics. Leave both nil for a private registry.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// MetricsMaxRequestsInFlight bounds concurrent scrapes (default 10).
	MetricsMaxRequestsInFlight int

	Health HealthSource
	Checks []Checker

	Logger *slog.Logger
}

// Auth protects every route except live and ready when any field is set.
// A request passes with either the bearer token or the basic credentials.
type Auth struct {
	BearerToken   string
	BasicUser     string
	BasicPassword string
}

func (a Auth) enabled() bool {
	return a.BearerToken != "" || a.BasicUser != "" || a.BasicPassword != ""
}

// String keeps the secrets out of anything that formats an Options value.
func (a Auth) String() string {
	return fmt.Sprintf("{BearerToken:%s BasicUser:%q BasicPassword:%s}",
		mask(a.BearerToken), a.BasicUser, mask(a.BasicPassword))
}

// GoString covers %#v, which does not use String.
func (a Auth) GoString() string { return "exporters.Auth" + a.String() }

// LogValue keeps the secrets out of slog output.
func (a Auth) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("bearer_token", mask(a.BearerToken)),
		slog.String("basic_user", a.BasicUser),
		slog.String("basic_password", mask(a.BasicPassword)),
	)
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "[REDACTED]"
}

// Server is the sidecar's HTTP API.
type Server struct {
	opts    Options
	log     *slog.Logger
	engine  *gin.Engine
	metrics *httpMetrics
	auth    *authenticator
	cert    *certReloader
	now     func() time.Time

	checkMu     sync.Mutex
	checkStatus map[string]string // last status of each readiness check, for logChanges

	mu      sync.Mutex
	started bool
	addr    net.Addr
	bound   chan struct{}
}

// New validates opts and builds the router. Nothing listens until Run.
func New(opts Options) (*Server, error) {
	opts = withDefaults(opts)
	if err := validate(opts); err != nil {
		return nil, err
	}
	if opts.Registerer == nil {
		reg := prometheus.NewRegistry()
		opts.Registerer, opts.Gatherer = reg, reg
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "http")

	s := &Server{opts: opts, log: log, now: time.Now, bound: make(chan struct{}), checkStatus: map[string]string{}}
	var err error
	if s.metrics, err = newHTTPMetrics(opts.Registerer); err != nil {
		return nil, err
	}
	if len(opts.Checks) > 0 {
		if err := opts.Registerer.Register(newReadinessCollector(s)); err != nil {
			return nil, fmt.Errorf("exporters: register readiness metrics: %w", err)
		}
	}
	if opts.Auth.enabled() {
		s.auth = newAuthenticator(opts.Auth)
	}
	if opts.TLSCertFile != "" {
		if s.cert, err = newCertReloader(opts.TLSCertFile, opts.TLSKeyFile, log); err != nil {
			return nil, err
		}
	}
	s.engine = s.routes()
	return s, nil
}

func withDefaults(o Options) Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.ReadTimeout, DefaultReadTimeout)
	def(&o.WriteTimeout, DefaultWriteTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.ShutdownTimeout, DefaultShutdownTimeout)
	def(&o.RequestTimeout, DefaultRequestTimeout)
	def(&o.ReadinessTimeout, DefaultReadinessTimeout)
	if o.MetricsMaxRequestsInFlight == 0 {
		o.MetricsMaxRequestsInFlight = DefaultMetricsInFlight
	}
	return o
}

func validate(o Options) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.Listen == "" {
		add("listen address is required")
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{
		{"read header timeout", o.ReadHeaderTimeout}, {"read timeout", o.ReadTimeout},
		{"write timeout", o.WriteTimeout}, {"idle timeout", o.IdleTimeout},
		{"shutdown timeout", o.ShutdownTimeout}, {"readiness timeout", o.ReadinessTimeout},
		{"request timeout", o.RequestTimeout},
	} {
		if t.d < 0 {
			add("%s must not be negative, got %s", t.name, t.d)
		}
	}
	if o.WriteTimeout > 0 && o.ReadinessTimeout >= o.WriteTimeout {
		add("readiness timeout (%s) must be shorter than write timeout (%s), or the answer is cut off",
			o.ReadinessTimeout, o.WriteTimeout)
	}
	if o.WriteTimeout > 0 && o.RequestTimeout >= o.WriteTimeout {
		add("request timeout (%s) must be shorter than write timeout (%s), or the answer is cut off",
			o.RequestTimeout, o.WriteTimeout)
	}
	if o.RefreshInterval <= 0 {
		add("refresh interval must be positive, got %s", o.RefreshInterval)
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		add("TLS needs both a certificate file and a key file")
	}
	if (o.Auth.BasicUser == "") != (o.Auth.BasicPassword == "") {
		add("basic auth needs both a user and a password")
	}
	if (o.Registerer == nil) != (o.Gatherer == nil) {
		add("set both Registerer and Gatherer, or neither")
	}
	if o.MetricsMaxRequestsInFlight < 0 {
		add("metrics max requests in flight must not be negative")
	}
	if o.Health == nil {
		add("health source is required")
	}
	seen := map[string]bool{}
	for i, c := range o.Checks {
		if c == nil {
			add("check %d is nil", i)
			continue
		}
		switch n := c.Name(); {
		case n == "":
			add("check %d has no name", i)
		case seen[n]:
			add("check name %q is used twice", n)
		default:
			seen[n] = true
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("exporters: invalid options: %w", errors.Join(errs...))
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

// Addr is the bound address, nil before Run has bound the listener.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Bound is closed once Run has bound the listener, after which Addr is set.
func (s *Server) Bound() <-chan struct{} { return s.bound }

// Run binds the listener, serves until ctx is done, then shuts down
// gracefully within ShutdownTimeout. A bind error is returned at once. A
// clean shutdown returns nil.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("exporters: Run called twice")
	}
	s.started = true
	s.mu.Unlock()

	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("exporters: listen on %s: %w", s.opts.Listen, err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		WriteTimeout:      s.opts.WriteTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		// Port scanners and TCP probes against a TLS port make this noisy.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.cert != nil {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cert.get}
	}

	s.mu.Lock()
	s.addr = ln.Addr()
	s.mu.Unlock()
	close(s.bound)
	s.log.Info("listening", "addr", ln.Addr().String(), "tls", s.cert != nil, "auth", s.auth != nil)

	served := make(chan error, 1)
	go func() {
		if s.cert != nil {
			served <- srv.ServeTLS(ln, "", "")
		} else {
			served <- srv.Serve(ln)
		}
	}()

	select {
	case err := <-served:
		return fmt.Errorf("exporters: serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "timeout", s.opts.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("exporters: graceful shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("exporters: serve: %w", err)
	}
	return nil
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

	e.GET(PathLive, noCache, s.live)
	e.GET(PathReady, noCache, s.ready)
	e.GET(PathStatus, s.status)

	metrics := gin.WrapH(promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{
		ErrorLog:            promLogger{s.log},
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            s.opts.Registerer,
		MaxRequestsInFlight: s.opts.MetricsMaxRequestsInFlight,
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
	d := s.opts.RequestTimeout
	if publicRoutes[c.FullPath()] {
		d = s.opts.ReadinessTimeout
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
		return c, fmt.Errorf("exporters: register metrics: %w", err)
	}
	return c, nil
}

// promLogger routes promhttp's gathering errors to slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error("metrics gathering", "error", fmt.Sprint(v...)) }
