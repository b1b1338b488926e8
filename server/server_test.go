package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	return cfg
}

var hello = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })

// Start and Shutdown follow the OpenTelemetry Collector's component
// lifecycle: Shutdown without Start, and twice, is fine; Start after
// Shutdown and a second Start do nothing (the first listener keeps
// serving).
func TestLifecycle(t *testing.T) {
	s, err := New(testConfig(), hello, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown before Start = %v", err)
	}
	if err := s.Start(context.Background()); err != nil || s.Addr() != nil {
		t.Errorf("Start after Shutdown = %v, bound %v; want nothing started", err, s.Addr())
	}

	if s, err = New(testConfig(), hello, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-s.Bound()
	res, err := http.Get("http://" + s.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "hello" {
		t.Errorf("served %q", body)
	}
	addr := s.Addr().String()
	if err := s.Start(context.Background()); err != nil {
		t.Errorf("second Start = %v", err)
	}
	if s.Addr().String() != addr {
		t.Errorf("second Start bound %s, first %s", s.Addr(), addr)
	}
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Errorf("Shutdown %d = %v", i+1, err)
		}
	}
	select {
	case <-s.Done():
	default:
		t.Error("Done not closed after Shutdown")
	}
	if _, err := http.Get("http://" + s.Addr().String() + "/"); err == nil {
		t.Error("still serving after Shutdown")
	}
}

func TestStartReturnsBindError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig()
	cfg.Listen = ln.Addr().String()
	s, err := New(cfg, hello, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Start = %v, want a bind error", err)
	}
	if s.Addr() != nil {
		t.Errorf("Addr = %v after a failed bind", s.Addr())
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after a failed Start = %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"listen without port", func(c *Config) { c.Listen = "9394" }, `listen: must be host:port or :port (got "9394")`},
		{"listen on a name", func(c *Config) { c.Listen = "sidecar.invalid:0" }, "listen: host must be empty"},
		{"port out of range", func(c *Config) { c.Listen = ":99999" }, `listen: port must be a number from 0 to 65535 (got "99999")`},
		{"zero timeout", func(c *Config) { c.IdleTimeout = 0 }, "idle_timeout: must be a positive duration such as 5s (got 0s)"},
		{"request after write", func(c *Config) { c.RequestTimeout = c.WriteTimeout }, "request_timeout: must be shorter than server.write_timeout"},
		{"readiness after write", func(c *Config) { c.ReadinessTimeout = c.WriteTimeout }, "readiness_timeout: must be shorter than server.write_timeout"},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "x.pem" }, "tls: cert_file and key_file must be set together"},
		{"missing files", func(c *Config) { c.TLS = TLSConfig{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"} }, "tls: open /nonexistent/c.pem"},
		{"token twice", func(c *Config) { c.Auth.BearerToken, c.Auth.BearerTokenFile = "t", "/nonexistent/t" }, "auth.bearer_token: set bearer_token or bearer_token_file, not both"},
		{"unreadable token file", func(c *Config) { c.Auth.BearerTokenFile = "/nonexistent/t" }, "auth.bearer_token_file: open /nonexistent/t"},
		{"user without password", func(c *Config) { c.Auth.BasicUsername = "u" }, "auth.basic_username: basic_username and basic_password must be set together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.edit(&cfg)
			errs := cfg.Validate()
			if tc.want == "" {
				if len(errs) > 0 {
					t.Errorf("Validate = %v", errs)
				}
				return
			}
			found := false
			for _, err := range errs {
				found = found || strings.HasPrefix(err.Error(), tc.want)
			}
			if !found {
				t.Errorf("Validate = %v, want a problem starting with %q", errs, tc.want)
			}
		})
	}
}
