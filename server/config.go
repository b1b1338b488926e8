// Package server is the sidecar's HTTP listener: its configuration (the
// server: section), the credentials check, the TLS certificate reloader and
// the listen, serve and graceful-shutdown lifecycle over any http.Handler.
// It imports no router, so that internal/config can hold its Config; the
// routes are package api's.
package server

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/hostport"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// Config is the server: section. The yaml tags are the key paths under
// server.
type Config struct {
	Listen            string        `yaml:"listen" env:"SIDECAR_LISTEN"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout"`
	// ReadinessTimeout bounds the probes and the readiness checks.
	ReadinessTimeout time.Duration `yaml:"readiness_timeout"`
	// RequestTimeout is the deadline of every request but the probes, so
	// that no handler waits without bound (issue 10). It must be shorter
	// than WriteTimeout, or the answer to a request that used all of it is
	// cut off.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	TLS            TLSConfig     `yaml:"tls"`
	Auth           AuthConfig    `yaml:"auth"`
}

// TLSConfig turns on HTTPS when both files are set. The files are re-read
// when the certificate file changes, so rotated certificates need no
// restart.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// AuthConfig protects every endpoint except liveness and readiness, which
// kubelet probes without credentials. A request passes with either the
// bearer token or the basic credentials.
type AuthConfig struct {
	BearerToken       secret.String `yaml:"bearer_token"`
	BearerTokenFile   string        `yaml:"bearer_token_file"`
	BasicUsername     string        `yaml:"basic_username"`
	BasicPassword     secret.String `yaml:"basic_password"`
	BasicPasswordFile string        `yaml:"basic_password_file"`
}

// DefaultConfig is the server section used for every key not set elsewhere.
func DefaultConfig() Config {
	return Config{
		Listen:            ":9394",
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// Longer than analytics.statement_timeout, so a cold analytics
		// request can still answer.
		WriteTimeout:     75 * time.Second,
		IdleTimeout:      120 * time.Second,
		ShutdownTimeout:  15 * time.Second,
		ReadinessTimeout: 5 * time.Second, // Tasker's health.readiness_timeout_seconds
		RequestTimeout:   30 * time.Second,
	}
}

// Validate returns every problem, each prefixed with its key path relative
// to the server section.
func (c Config) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if err := hostport.CheckListen(c.Listen); err != nil {
		add("listen", "%v", err)
	}
	for _, t := range []struct {
		path string
		d    time.Duration
	}{
		{"idle_timeout", c.IdleTimeout},
		{"read_header_timeout", c.ReadHeaderTimeout},
		{"read_timeout", c.ReadTimeout},
		{"readiness_timeout", c.ReadinessTimeout},
		{"request_timeout", c.RequestTimeout},
		{"shutdown_timeout", c.ShutdownTimeout},
		{"write_timeout", c.WriteTimeout},
	} {
		if t.d <= 0 {
			add(t.path, "must be a positive duration such as 5s (got %s)", t.d)
		}
	}
	// The messages name server.write_timeout in full: they are read in
	// check-config's output, where the section prefix is added only to the
	// key.
	if c.ReadinessTimeout > 0 && c.WriteTimeout > 0 && c.ReadinessTimeout >= c.WriteTimeout {
		add("readiness_timeout", "must be shorter than server.write_timeout (%s >= %s), or a slow check cuts off the readiness answer", c.ReadinessTimeout, c.WriteTimeout)
	}
	if c.RequestTimeout > 0 && c.WriteTimeout > 0 && c.RequestTimeout >= c.WriteTimeout {
		add("request_timeout", "must be shorter than server.write_timeout (%s >= %s), or a request that uses all of it cannot write its answer", c.RequestTimeout, c.WriteTimeout)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		add("tls", "cert_file and key_file must be set together")
	} else if err := checkTLSFiles(c.TLS); err != nil {
		add("tls", "%v", err)
	}
	a := c.Auth
	if a.BearerToken != "" && a.BearerTokenFile != "" {
		add("auth.bearer_token", "set bearer_token or bearer_token_file, not both")
	}
	if a.BasicPassword != "" && a.BasicPasswordFile != "" {
		add("auth.basic_password", "set basic_password or basic_password_file, not both")
	}
	if _, _, err := a.Credentials(); err != nil {
		errs = append(errs, err) // starts with its key path
	}
	hasPassword := a.BasicPassword != "" || a.BasicPasswordFile != ""
	if (a.BasicUsername != "") != hasPassword {
		add("auth.basic_username", "basic_username and basic_password must be set together")
	}
	return errs
}

// Credentials returns the bearer token and basic-auth password, reading the
// *_file variants so that a Kubernetes Secret mounted as a file can be used.
// Its errors start with the key path relative to the server section.
func (a AuthConfig) Credentials() (token, password string, err error) {
	token, err = fromFile(a.BearerToken, a.BearerTokenFile)
	if err != nil {
		return "", "", fmt.Errorf("auth.bearer_token_file: %w", err)
	}
	password, err = fromFile(a.BasicPassword, a.BasicPasswordFile)
	if err != nil {
		return "", "", fmt.Errorf("auth.basic_password_file: %w", err)
	}
	return token, password, nil
}

func fromFile(value secret.String, file string) (string, error) {
	if file == "" {
		return value.Value(), nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return s, nil
}

// checkTLSFiles loads the key pair as New does, so a missing or mismatched
// file fails check-config and not only run.
func checkTLSFiles(c TLSConfig) error {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
		return err
	}
	return nil
}
