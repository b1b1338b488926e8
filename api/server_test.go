package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/exporters"
	"github.com/tasker-systems/tasker-sidecar/internal/testtls"
	"github.com/tasker-systems/tasker-sidecar/readiness"
	"github.com/tasker-systems/tasker-sidecar/server"
)

const (
	token    = "tok-3f9a1c77e2b8"
	user     = "prom"
	password = "pw-8d2e61b0c4aa"
)

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func basic(u, p string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(u, p) }
}

func TestAuth(t *testing.T) {
	src := &fakeSource{}
	src.Set(goodState(healthyCounts))
	both := server.AuthConfig{BearerToken: token, BasicUsername: user, BasicPassword: password}
	tests := []struct {
		name      string
		auth      server.AuthConfig
		path      string
		cred      func(*http.Request)
		wantCode  int
		wantMsg   string
		challenge []string
	}{
		{"no auth configured", server.AuthConfig{}, PathStatus, nil, 200, "", nil},
		{"missing token", server.AuthConfig{BearerToken: token}, PathStatus, nil, 401, "Authentication required", []string{`Bearer realm="tasker-sidecar"`}},
		{"wrong token", server.AuthConfig{BearerToken: token}, PathStatus, bearer("nope"), 401, "Invalid credentials", []string{`Bearer realm="tasker-sidecar"`}},
		{"token prefix", server.AuthConfig{BearerToken: token}, PathStatus, bearer(token[:5]), 401, "Invalid credentials", nil},
		{"right token", server.AuthConfig{BearerToken: token}, PathStatus, bearer(token), 200, "", nil},
		{"lower-case scheme", server.AuthConfig{BearerToken: token}, PathStatus, func(r *http.Request) { r.Header.Set("Authorization", "bearer "+token) }, 200, "", nil},
		{"basic when only token is set", server.AuthConfig{BearerToken: token}, PathStatus, basic(user, token), 401, "Invalid credentials", nil},
		{"missing basic", server.AuthConfig{BasicUsername: user, BasicPassword: password}, PathStatus, nil, 401, "Authentication required",
			[]string{`Basic realm="tasker-sidecar", charset="UTF-8"`}},
		{"wrong password", server.AuthConfig{BasicUsername: user, BasicPassword: password}, PathStatus, basic(user, "nope"), 401, "Invalid credentials", nil},
		{"wrong user", server.AuthConfig{BasicUsername: user, BasicPassword: password}, PathStatus, basic("root", password), 401, "Invalid credentials", nil},
		{"right basic", server.AuthConfig{BasicUsername: user, BasicPassword: password}, PathStatus, basic(user, password), 200, "", nil},
		{"either accepted: token", both, PathStatus, bearer(token), 200, "", nil},
		{"either accepted: basic", both, PathStatus, basic(user, password), 200, "", nil},
		{"both challenges", both, PathStatus, nil, 401, "Authentication required",
			[]string{`Bearer realm="tasker-sidecar"`, `Basic realm="tasker-sidecar", charset="UTF-8"`}},
		{"unknown scheme", both, PathStatus, func(r *http.Request) { r.Header.Set("Authorization", "Digest x") }, 401, "Invalid credentials", nil},
		{"metrics protected", both, PathMetrics, nil, 401, "Authentication required", nil},
		{"tasker metrics protected", both, PathTaskerMetrics, nil, 401, "Authentication required", nil},
		{"metrics with token", both, PathMetrics, bearer(token), 200, "", nil},
		{"live open", both, PathLive, nil, 200, "", nil},
		{"live open with wrong token", both, PathLive, bearer("nope"), 200, "", nil},
		{"ready open", both, PathReady, nil, 200, "", nil},
		{"unknown route hidden", both, "/nope", nil, 401, "Authentication required", nil},
		{"unknown route with token", both, "/nope", bearer(token), 404, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := baseOptions(src)
			opts.Auth = tc.auth
			s := newServer(t, opts)
			var setup []func(*http.Request)
			if tc.cred != nil {
				setup = append(setup, tc.cred)
			}
			r := do(t, s, http.MethodGet, tc.path, setup...)
			if r.code != tc.wantCode {
				t.Fatalf("code = %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			if tc.wantCode != 401 {
				if h := r.header.Get("WWW-Authenticate"); h != "" {
					t.Errorf("WWW-Authenticate on %d: %q", r.code, h)
				}
				return
			}
			assertJSON(t, r.header)
			m := r.json(t)
			if m["error"] != "Unauthorized" || m["message"] != tc.wantMsg {
				t.Errorf("body = %s", r.body)
			}
			got := r.header.Values("WWW-Authenticate")
			if len(got) == 0 {
				t.Errorf("no WWW-Authenticate header")
			}
			if tc.challenge != nil && strings.Join(got, "|") != strings.Join(tc.challenge, "|") {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
		})
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	s := newServer(t, baseOptions(&fakeSource{}))
	r := do(t, s, http.MethodGet, "/tasker/health/nope")
	if r.code != http.StatusNotFound {
		t.Fatalf("code = %d", r.code)
	}
	assertJSON(t, r.header)
	if m := r.json(t); m["error"] != "Not Found" || m["message"] != "No route matches GET /tasker/health/nope" {
		t.Errorf("404 body = %s", r.body)
	}

	r = do(t, s, http.MethodPost, PathLive)
	if r.code != http.StatusMethodNotAllowed {
		t.Fatalf("code = %d", r.code)
	}
	assertJSON(t, r.header)
	if r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("Allow = %q", r.header.Get("Allow"))
	}
	if m := r.json(t); m["error"] != "Method Not Allowed" || !strings.Contains(m["message"].(string), "POST") {
		t.Errorf("405 body = %s", r.body)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := &fakeSource{}
	src.Set(goodState(healthyCounts))
	reg.MustRegister(exporters.NewDomainCollector(src, exporters.Config{}))
	opts := baseOptions(src)
	opts.Registerer, opts.Gatherer = reg, reg
	s := newServer(t, opts)

	do(t, s, http.MethodGet, PathLive)
	do(t, s, http.MethodGet, "/some/raw/path/12345")
	for _, path := range []string{PathMetrics, PathTaskerMetrics} {
		r := do(t, s, http.MethodGet, path)
		if r.code != http.StatusOK {
			t.Fatalf("%s: code = %d", path, r.code)
		}
		assertNoCache(t, r.header)
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s: Content-Type = %q", path, ct)
		}
		body := string(r.body)
		for _, want := range []string{
			`tasker_sidecar_http_requests_total{code="200",handler="/tasker/health/live"} 1`,
			`tasker_sidecar_http_requests_total{code="404",handler="unmatched"} 1`,
			`tasker_sidecar_http_request_duration_seconds_bucket{handler="/tasker/health/live"`,
			`tasker_tasks{state="error"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %s", path, want)
			}
		}
		if strings.Contains(body, "12345") {
			t.Errorf("raw path leaked into a label")
		}
	}

	r := do(t, s, http.MethodGet, PathMetrics, func(r *http.Request) {
		r.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	})
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Errorf("OpenMetrics not negotiated: %q", ct)
	}

	problems, err := testutil.GatherAndLint(reg, "tasker_sidecar_http_requests_total", "tasker_sidecar_http_request_duration_seconds")
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// A second server on the same registry reuses the metrics rather than failing.
func TestSharedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := baseOptions(&fakeSource{})
	opts.Registerer, opts.Gatherer = reg, reg
	newServer(t, opts)
	newServer(t, opts)
}

func TestNewValidates(t *testing.T) {
	reg := prometheus.NewRegistry()
	tests := []struct {
		name string
		edit func(*options)
		want string
	}{
		{"no listen", func(o *options) { o.Listen = "" }, "listen: must be host:port or :port"},
		{"no health", func(o *options) { o.Health = nil }, "health source is required"},
		{"no interval", func(o *options) { o.RefreshInterval = 0 }, "refresh interval must be positive"},
		{"negative timeout", func(o *options) { o.IdleTimeout = -time.Second }, "idle_timeout: must be a positive duration"},
		{"readiness after write", func(o *options) { o.ReadinessTimeout, o.WriteTimeout = 10*time.Second, 5*time.Second }, "must be shorter than server.write_timeout"},
		{"cert without key", func(o *options) { o.TLS.CertFile = "x.pem" }, "tls: cert_file and key_file must be set together"},
		{"user without password", func(o *options) { o.Auth.BasicUsername = "u" }, "basic_username and basic_password must be set together"},
		{"registerer only", func(o *options) { o.Registerer = reg }, "set both Registerer and Gatherer"},
		{"nil check", func(o *options) { o.Checks = []readiness.Checker{nil} }, "check 0 is nil"},
		{"unnamed check", func(o *options) { o.Checks = []readiness.Checker{readiness.CheckFunc("", nil)} }, "check 0 has no name"},
		{"duplicate check", func(o *options) {
			o.Checks = []readiness.Checker{readiness.CheckFunc("db", nil), readiness.CheckFunc("db", nil)}
		}, `"db" is used twice`},
		{"missing cert file", func(o *options) { o.TLS.CertFile, o.TLS.KeyFile = "/nonexistent.pem", "/nonexistent.key" }, "tls: open /nonexistent.pem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := baseOptions(&fakeSource{})
			tc.edit(&opts)
			_, err := New(opts.Config, opts.Deps)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRunReturnsBindError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opts := baseOptions(&fakeSource{})
	opts.Listen = ln.Addr().String()
	s := newServer(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Run = %v, want a bind error", err)
	}
	if s.Addr() != nil {
		t.Errorf("Addr = %v after a failed bind", s.Addr())
	}
}

func TestRunTwice(t *testing.T) {
	s := newServer(t, baseOptions(&fakeSource{}))
	start(t, s)
	if err := s.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestGracefulShutdown(t *testing.T) {
	opts := baseOptions(&fakeSource{})
	opts.ShutdownTimeout = 5 * time.Second
	s := newServer(t, opts)
	entered := make(chan struct{})
	s.Router().GET("/slow", func(c *gin.Context) {
		close(entered)
		// Real time on purpose: a slow request still in flight when Run's
		// context ends, which the graceful shutdown must let finish.
		time.Sleep(300 * time.Millisecond)
		c.String(http.StatusOK, "done")
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	<-s.Bound()

	got := make(chan response, 1)
	go func() {
		res, err := http.Get("http://" + s.Addr().String() + "/slow")
		if err != nil {
			got <- response{code: -1, body: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		got <- response{code: res.StatusCode, body: body}
	}()
	<-entered
	cancel()

	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if r := <-got; r.code != http.StatusOK || string(r.body) != "done" {
		t.Fatalf("in-flight request: %d %s", r.code, r.body)
	}
	if _, err := http.Get("http://" + s.Addr().String() + PathLive); err == nil {
		t.Error("server still accepts connections after Run returned")
	}
}

func TestShutdownTimeout(t *testing.T) {
	opts := baseOptions(&fakeSource{})
	opts.ShutdownTimeout = 50 * time.Millisecond
	s := newServer(t, opts)
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	s.Router().GET("/stuck", func(c *gin.Context) {
		close(entered)
		<-release
	})
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	<-s.Bound()
	go func() {
		if res, err := http.Get("http://" + s.Addr().String() + "/stuck"); err == nil {
			res.Body.Close()
		}
	}()
	<-entered
	cancel()
	if err := <-runErr; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want a shutdown deadline error", err)
	}
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := testtls.SelfSigned(t)
	src := &fakeSource{}
	src.Set(goodState(healthyCounts))
	opts := baseOptions(src)
	opts.TLS.CertFile, opts.TLS.KeyFile = certFile, keyFile
	opts.Auth = server.AuthConfig{BearerToken: token}
	s := newServer(t, opts)
	addr := start(t, s)

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if r := get(t, client, "https://"+addr+PathLive); r.code != http.StatusOK {
		t.Errorf("live over TLS: %d", r.code)
	}
	if r := get(t, client, "https://"+addr+PathStatus); r.code != http.StatusUnauthorized {
		t.Errorf("status over TLS without token: %d", r.code)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+PathStatus, nil)
	bearer(token)(req)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.TLS == nil {
		t.Errorf("status over TLS with token: %d, TLS %v", res.StatusCode, res.TLS != nil)
	}

	// Plain HTTP against the TLS port gets Go's 400, not our data.
	if r := get(t, http.DefaultClient, "http://"+addr+PathLive); r.code != http.StatusBadRequest {
		t.Errorf("plain HTTP on the TLS port: %d", r.code)
	}
	// A client that does not trust the certificate fails the handshake.
	if _, err := http.Get("https://" + addr + PathLive); err == nil {
		t.Error("untrusted certificate accepted")
	}
}

// TestNoSecretsLeak drives every route with right and wrong credentials and a
// failing refresh whose error echoes a DSN, then searches logs and bodies.
func TestNoSecretsLeak(t *testing.T) {
	const dbPassword = "dbpw-5e7c9a"
	logs := &syncBuffer{}
	src := &fakeSource{}
	st := goodState(healthyCounts)
	st.LastError = fmt.Errorf("connect postgres://tasker:%s@db:5432/tasker (password=%s): %w", dbPassword, dbPassword, errRefused)
	src.Set(st)

	opts := baseOptions(src)
	opts.Logger = debugLogger(logs)
	opts.Auth = server.AuthConfig{BearerToken: token, BasicUsername: user, BasicPassword: password}
	opts.Checks = []readiness.Checker{
		readiness.NewRefreshCheck(src, opts.RefreshInterval),
		readiness.NewDatabaseCheck(func(context.Context) (time.Duration, error) { return 0, st.LastError }, nil, nil),
	}
	s := newServer(t, opts)
	opts.Logger.Info("options", "opts", opts, "auth", opts.Auth)

	var bodies []string
	creds := []func(*http.Request){nil, bearer(token), bearer(token + "x"), basic(user, password), basic(user, password+"x"),
		func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+password) }}
	for _, path := range []string{PathLive, PathReady, PathStatus, PathMetrics, "/nope"} {
		for _, cred := range creds {
			var setup []func(*http.Request)
			if cred != nil {
				setup = append(setup, cred)
			}
			r := do(t, s, http.MethodGet, path, setup...)
			bodies = append(bodies, string(r.body))
			for k, v := range r.header {
				bodies = append(bodies, k+": "+strings.Join(v, ","))
			}
		}
	}
	printed := fmt.Sprintf("%v %+v %#v %s", opts, opts, opts, opts.Auth)
	for _, secret := range []string{token, password, dbPassword} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("secret %q in logs", secret)
		}
		for _, b := range bodies {
			if strings.Contains(b, secret) {
				t.Errorf("secret %q in a response: %s", secret, b)
			}
		}
		if strings.Contains(printed, secret) {
			t.Errorf("secret %q in formatted options: %s", secret, printed)
		}
	}
	if !strings.Contains(logs.String(), "authentication failed") || !strings.Contains(logs.String(), `route=/tasker/health/status`) {
		t.Errorf("debug request log missing:\n%s", logs.String())
	}
}

func TestHandlerPanic(t *testing.T) {
	logs := &syncBuffer{}
	opts := baseOptions(&fakeSource{})
	opts.Logger = debugLogger(logs)
	s := newServer(t, opts)
	s.Router().GET("/panics", func(*gin.Context) { panic("kaboom") })
	r := do(t, s, http.MethodGet, "/panics")
	if r.code != http.StatusInternalServerError {
		t.Fatalf("code = %d", r.code)
	}
	if m := r.json(t); m["error"] != "Internal Server Error" {
		t.Errorf("body = %s", r.body)
	}
	if !strings.Contains(logs.String(), "handler panicked") || !strings.Contains(logs.String(), "kaboom") {
		t.Errorf("panic not logged:\n%s", logs.String())
	}
	if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues("/panics", "500")); got != 1 {
		t.Errorf("500 not counted: %v", got)
	}
}

func TestPromLogger(t *testing.T) {
	logs := &syncBuffer{}
	promLogger{debugLogger(logs)}.Println("error gathering metrics:", errors.New("boom"))
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("log = %s", logs.String())
	}
}

// notifyHandler signals ch when a record with message msg has been
// handled, so a test can wait for what the server logs after a response.
type notifyHandler struct {
	slog.Handler
	msg string
	ch  chan struct{}
}

func (h notifyHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return err
}

func (h notifyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return notifyHandler{h.Handler.WithAttrs(as), h.msg, h.ch}
}

func (h notifyHandler) WithGroup(name string) slog.Handler {
	return notifyHandler{h.Handler.WithGroup(name), h.msg, h.ch}
}

// Every request's context has a deadline: RequestTimeout, or the readiness
// timeout on the probes.
func TestRequestDeadline(t *testing.T) {
	opts := baseOptions(&fakeSource{})
	opts.RequestTimeout = time.Hour
	opts.ReadinessTimeout = 90 * time.Minute
	opts.WriteTimeout = 2 * time.Hour
	deadlines := make(chan time.Time, 1)
	capture := func(ctx context.Context) {
		d, ok := ctx.Deadline()
		if !ok {
			d = time.Time{}
		}
		deadlines <- d
	}
	opts.Checks = []readiness.Checker{readiness.CheckFunc("deadline", func(ctx context.Context) readiness.CheckResult {
		capture(ctx)
		return readiness.CheckResult{Status: readiness.StatusHealthy}
	})}
	s := newServer(t, opts)
	s.Router().GET("/added", func(c *gin.Context) {
		capture(c.Request.Context())
		c.Status(http.StatusNoContent)
	})
	for _, tc := range []struct {
		path string
		max  time.Duration
	}{
		{"/added", opts.RequestTimeout},
		// Longer than RequestTimeout here: the probes keep their own timeout.
		{PathReady, opts.ReadinessTimeout},
	} {
		t.Run(tc.path, func(t *testing.T) {
			before := time.Now()
			do(t, s, http.MethodGet, tc.path)
			after := time.Now()
			d := <-deadlines
			if d.IsZero() {
				t.Fatal("the request's context has no deadline")
			}
			if !d.After(before) || d.After(after.Add(tc.max)) {
				t.Errorf("deadline %s after the request began, want at most %s", d.Sub(before), tc.max)
			}
			if tc.path == PathReady && d.Sub(before) <= opts.RequestTimeout {
				t.Errorf("readiness cut to the request timeout: %s", d.Sub(before))
			}
		})
	}
}

// A handler that gives up at the deadline answers 503, counted as such.
func TestRequestDeadlineIs503(t *testing.T) {
	opts := baseOptions(&fakeSource{})
	opts.RequestTimeout = 20 * time.Millisecond
	s := newServer(t, opts)
	s.Router().GET("/waits", func(c *gin.Context) {
		select {
		case <-c.Request.Context().Done():
			c.JSON(http.StatusServiceUnavailable, errorBody{Error: "Service Unavailable", Message: c.Request.Context().Err().Error()})
		case <-time.After(30 * time.Second): // no deadline: fail, do not hang
			c.Status(http.StatusOK)
		}
	})
	r := do(t, s, http.MethodGet, "/waits")
	if r.code != http.StatusServiceUnavailable || r.json(t)["message"] != context.DeadlineExceeded.Error() {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues("/waits", "503")); got != 1 {
		t.Errorf("requests_total{code=503} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues("/waits", "499")); got != 0 {
		t.Errorf("requests_total{code=499} = %v, want 0: the deadline is ours, not the client's", got)
	}
}

// A client that goes away is counted as 499 and logged at debug, whatever
// the handler wrote after its context ended.
func TestClientDisconnectIs499(t *testing.T) {
	logs := &syncBuffer{}
	gone := make(chan struct{}, 1)
	opts := baseOptions(&fakeSource{})
	opts.Logger = slog.New(notifyHandler{
		Handler: slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}),
		msg:     "client disconnected", ch: gone,
	})
	s := newServer(t, opts)
	entered := make(chan struct{})
	s.Router().GET("/waits", func(c *gin.Context) {
		close(entered)
		<-c.Request.Context().Done()
		// What a handler that reads its context's error as a failure writes.
		c.JSON(http.StatusServiceUnavailable, errorBody{Error: "Service Unavailable", Message: "query failed"})
	})
	addr := start(t, s)

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/waits", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	<-entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want it cancelled", err)
	}
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatalf("the disconnect was not logged:\n%s", logs)
	}
	if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues("/waits", "499")); got != 1 {
		t.Errorf("requests_total{code=499} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues("/waits", "503")); got != 0 {
		t.Errorf("requests_total{code=503} = %v, want 0", got)
	}
	out := logs.String()
	if !strings.Contains(out, `level=DEBUG msg="client disconnected"`) || !strings.Contains(out, "status=499") ||
		!strings.Contains(out, "written_status=503") {
		t.Errorf("log:\n%s", out)
	}
	if strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") {
		t.Errorf("a client disconnect logged above debug:\n%s", out)
	}
}

// HEAD answers wherever GET does, with GET's status and headers and no
// body, including routes added through Router after New.
func TestHead(t *testing.T) {
	src := &fakeSource{}
	src.Set(goodState(healthyCounts))
	for _, tc := range []struct {
		name       string
		auth       server.AuthConfig
		path       string
		cred       func(*http.Request)
		wantCode   int
		sameLength bool // false where the body carries a duration
	}{
		{"live", server.AuthConfig{}, PathLive, nil, 200, true},
		{"ready", server.AuthConfig{}, PathReady, nil, 200, false},
		{"status", server.AuthConfig{}, PathStatus, nil, 200, true},
		{"metrics", server.AuthConfig{}, PathMetrics, nil, 200, false},
		{"added route", server.AuthConfig{}, "/added", nil, 200, true},
		{"unknown route", server.AuthConfig{}, "/nope", nil, 404, true},
		{"status without credentials", server.AuthConfig{BearerToken: token}, PathStatus, nil, 401, true},
		{"status with credentials", server.AuthConfig{BearerToken: token}, PathStatus, bearer(token), 200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := baseOptions(src)
			opts.Auth = tc.auth
			s := newServer(t, opts)
			s.Router().GET("/added", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"added": true}) })
			addr := start(t, s)
			send := func(method string) (*http.Response, []byte) {
				req, err := http.NewRequest(method, "http://"+addr+tc.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Accept-Encoding", "identity")
				if tc.cred != nil {
					tc.cred(req)
				}
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", method, tc.path, err)
				}
				defer res.Body.Close()
				body, err := io.ReadAll(res.Body)
				if err != nil {
					t.Fatal(err)
				}
				return res, body
			}
			get, getBody := send(http.MethodGet)
			head, headBody := send(http.MethodHead)
			if get.StatusCode != tc.wantCode || head.StatusCode != tc.wantCode {
				t.Fatalf("GET %d, HEAD %d, want %d", get.StatusCode, head.StatusCode, tc.wantCode)
			}
			if len(getBody) == 0 {
				t.Fatal("GET has no body to compare with")
			}
			if len(headBody) != 0 {
				t.Errorf("HEAD body = %q, want none", headBody)
			}
			for _, h := range []string{"Content-Type", "Cache-Control", "Pragma", "Expires", "WWW-Authenticate"} {
				if g, hd := get.Header.Values(h), head.Header.Values(h); strings.Join(g, "|") != strings.Join(hd, "|") {
					t.Errorf("%s: GET %q, HEAD %q", h, g, hd)
				}
			}
			if tc.sameLength && get.Header.Get("Content-Length") != head.Header.Get("Content-Length") {
				t.Errorf("Content-Length: GET %q, HEAD %q", get.Header.Get("Content-Length"), head.Header.Get("Content-Length"))
			}
		})
	}
}

func TestEcho(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"short", "/nope", "/nope"},
		{"exactly the limit", strings.Repeat("a", maxEcho), strings.Repeat("a", maxEcho)},
		{"long", strings.Repeat("a", 70_000), strings.Repeat("a", maxEcho) + "…"},
		// 2-byte runes: 200 bytes is a boundary; at 199 the cut backs off.
		{"runes", strings.Repeat("é", 1000), strings.Repeat("é", maxEcho/2) + "…"},
		{"rune across the limit", "a" + strings.Repeat("é", 1000), "a" + strings.Repeat("é", (maxEcho-1)/2) + "…"},
		{"invalid bytes", "/\xff\xfe\x00x", "/\uFFFD\x00x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := echo(tc.in)
			if got != tc.want {
				t.Errorf("echo = %q (%d bytes), want %q", got, len(got), tc.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("not valid UTF-8: %q", got)
			}
		})
	}
}

// Error messages repeat at most maxEcho bytes of the request, as valid
// UTF-8, whatever the client sent.
func TestErrorsEchoBoundedInput(t *testing.T) {
	s := newServer(t, baseOptions(&fakeSource{}))
	for _, tc := range []struct {
		name, method, target string
		code                 int
		prefix               string
	}{
		{"long path", http.MethodGet, "/" + strings.Repeat("a", 60_000), 404, "No route matches GET /"},
		{"long multibyte path", http.MethodGet, "/" + strings.Repeat("%C3%A9", 20_000), 404, "No route matches GET /"},
		{"invalid UTF-8 path", http.MethodGet, "/%FF%FE" + strings.Repeat("%00", 5000), 404, "No route matches GET /\uFFFD"},
		{"long method", strings.Repeat("X", 5000), PathLive, 405, "Method XXXX"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, s, tc.method, tc.target)
			if r.code != tc.code {
				t.Fatalf("code = %d", r.code)
			}
			if !utf8.Valid(r.body) || !json.Valid(r.body) {
				t.Fatalf("body is not valid UTF-8 JSON: %q", r.body)
			}
			msg, _ := r.json(t)["message"].(string)
			if !strings.HasPrefix(msg, tc.prefix) || !strings.Contains(msg, "…") {
				t.Errorf("message = %.300q", msg)
			}
			if len(msg) > len("Method  is not allowed; allowed: GET, HEAD")+maxEcho+len("…") {
				t.Errorf("message is %d bytes: the input is not cut", len(msg))
			}
			if tc.code == 405 && r.header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q", r.header.Get("Allow"))
			}
		})
	}
}
