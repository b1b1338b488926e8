package cli

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/config"
	"github.com/tasker-systems/tasker-sidecar/ttl"
)

// preflightCases are configurations at the edge of what check-config
// accepts, each as a YAML document. accept says what check-config must
// answer; either way run must agree (TestCheckConfigAcceptedStarts).
// Most of the refused ones passed check-config before issue 10 and then
// made run exit 1.
var preflightCases = []struct {
	name   string
	yaml   string
	env    []string // process environment (read by the OTLP exporter)
	accept bool
	want   string // in check-config's output when refused
}{
	{"listen port 0 picks one", "server: {listen: '127.0.0.1:0'}\n", nil, true, ""},
	{"listen on localhost", "server: {listen: 'localhost:0'}\n", nil, true, ""},
	{"listen port out of range", "server: {listen: ':99999'}\n", nil, false, `server.listen: port must be a number from 0 to 65535 (got "99999")`},
	{"listen port by name", "server: {listen: ':http'}\n", nil, false, `server.listen: port must be a number`},
	{"listen on a host name", "server: {listen: 'sidecar.invalid:0'}\n", nil, false, `server.listen: host must be empty (every interface), an IP address or localhost`},
	{"database port out of range", "database: {url: 'postgres://db.invalid:99999/tasker'}\n", nil, false, `database.url: db.invalid: port must be a number from 1 to 65535 (got "99999")`},
	{"database key=value port out of range", "database: {url: 'host=db.invalid port=99999 dbname=tasker'}\n", nil, false, "database.url: invalid port"},
	{"database CA file missing", "database: {url: 'postgres://db.invalid/tasker?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem'}\n", nil, false, "database.url:"},
	{"database several hosts", "database: {url: 'postgres://a.invalid:5432,b.invalid:5433/tasker'}\n", nil, true, ""},
	{"cache port out of range", "cache: {url: 'redis://cache.invalid:70000/0'}\n", nil, false, `cache.url: cache.invalid: port must be a number from 1 to 65535 (got "70000")`},
	{"cache cluster seed port out of range", "cache: {url: 'redis+cluster://a.invalid:7000?addr=b.invalid:0'}\n", nil, false, `cache.url: b.invalid: port must be a number from 1 to 65535 (got "0")`},
	{"memcached port out of range", "cache: {url: 'memcached://a.invalid:11211,b.invalid:65536'}\n", nil, false, `cache.url: b.invalid: port must be a number from 1 to 65535 (got "65536")`},
	{"sentinel without master_name", "cache: {url: 'redis+sentinel://s.invalid:26379'}\n", nil, false, "cache.url:"},
	{"memcached with an illegal key prefix", "cache: {url: 'memcached://m.invalid:11211', key_prefix: 'has space:'}\n", nil, false, "cache.key_prefix:"},
	{"TLS files missing", "server: {tls: {cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem}}\n", nil, false, "server.tls: open /nonexistent/cert.pem"},
	{"tracing endpoint port out of range", "tracing: {enabled: true, endpoint: 'http://otel.invalid:99999'}\n", nil, false, `tracing.endpoint: port must be a number from 1 to 65535 (got "99999")`},
	{"tracing host:port port out of range", "tracing: {enabled: true, endpoint: 'otel.invalid:0'}\n", nil, false, `tracing.endpoint: must be host:port with a port from 1 to 65535`},
	{"tracing protocol from the environment", "tracing: {enabled: true, endpoint: 'otel.invalid:4318', insecure: true}\n", []string{"OTEL_EXPORTER_OTLP_PROTOCOL=thrift"}, false, "tracing.protocol:"},
	{"tracing enabled", "tracing: {enabled: true, endpoint: 'http://otel.invalid:4318'}\n", nil, true, ""},
	{"tracing over gRPC", "tracing: {enabled: true, protocol: grpc, endpoint: 'otel.invalid:4317', insecure: true}\n", nil, true, ""},
	{"NaN sampling ratio", "tracing: {sampling_ratio: .nan}\n", nil, false, "tracing.sampling_ratio: must be a finite number (got NaN)"},
	{"infinite jitter", "ttl: {cost_aware: {jitter: .inf}}\n", nil, false, "ttl.cost_aware.jitter: must be a finite number (got +Inf)"},
	{"duplicate key", "log: {level: info}\nlog: {level: debug}\n", nil, false, "log: duplicate key (line 3; first at line 2)"},
	{"duplicate policy", "ttl:\n  policies:\n    status: {base_ttl: 20s}\n    status: {base_ttl: 30s}\n", nil, false, "ttl.policies.status: duplicate key (line 5; first at line 4)"},
	{"stream checkpoint in a state directory", "stream: {checkpoint: {state_dir: /nonexistent/state}}\n", nil, true, ""},
}

// TestCheckConfigAcceptedStarts proves issue 10's "whatever check-config
// accepts must start": for every configuration under internal/config/testdata
// and every edge case above, the real check-config command is run; when it
// accepts, the real run command must get as far as serving; when it
// refuses, run must refuse too, with exit 2 and not 1.
func TestCheckConfigAcceptedStarts(t *testing.T) {
	// The testdata files name their secrets relative to internal/config.
	t.Chdir("../config")
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	invalid, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(append(files, invalid...), "../../config.example.yaml")
	if len(files) < 100 {
		t.Fatalf("only %d configuration files found", len(files))
	}
	accepted := 0
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			if startsIfAccepted(t, file, nil) {
				accepted++
			}
		})
	}
	if accepted < 2 {
		t.Errorf("check-config accepted %d of the files, want at least valid.yaml and config.example.yaml", accepted)
	}
	dir := t.TempDir()
	for _, c := range preflightCases {
		t.Run(c.name, func(t *testing.T) {
			for _, kv := range c.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".yaml")
			// database.url is required; the cases about it set their own. The
			// line numbers in want count this line.
			doc := c.yaml
			if !strings.Contains(doc, "database:") {
				doc = "database: {url: 'postgres://db.invalid:5432/tasker'}\n" + doc
			}
			if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			var listen []string
			if !strings.Contains(doc, "listen:") {
				listen = []string{"--listen", "127.0.0.1:0"}
			}
			code, _, stderr := runCLI(t, nil, append([]string{"check-config", "--config", file}, listen...)...)
			if got := code == exitOK; got != c.accept {
				t.Fatalf("check-config exited %d, want accepted=%v:\n%s", code, c.accept, stderr)
			}
			if !c.accept && !strings.Contains(stderr, c.want) {
				t.Errorf("check-config's output does not mention %q:\n%s", c.want, stderr)
			}
			startsIfAccepted(t, file, listen)
		})
	}
}

// startsIfAccepted runs check-config on file, then run on the same file and
// flags, and reports whether check-config accepted it.
func startsIfAccepted(t *testing.T, file string, listen []string) bool {
	t.Helper()
	if listen == nil {
		listen = []string{"--listen", "127.0.0.1:0"}
	}
	environ := []string{"SIDECAR_STREAM_CHECKPOINT_STATE_DIR=" + t.TempDir()}
	args := append([]string{"--config", file}, listen...)
	checkCode, _, checkErr := runCLI(t, environ, append([]string{"check-config"}, args...)...)
	if checkCode != exitOK && checkCode != exitUsage {
		t.Fatalf("check-config exited %d:\n%s", checkCode, checkErr)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	served := make(chan string, 1)
	env := &environment{stdout: io.Discard, stderr: stderr, environ: environ, ready: func(a string) { served <- a }}
	done := make(chan int, 1)
	go func() { done <- run(ctx, env, append([]string{"run"}, args...)) }()
	select {
	case <-served:
		if checkCode != exitOK {
			t.Errorf("run served a configuration check-config refused:\n%s", checkErr)
		}
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("run exited %d on stopping:\n%s", code, stderr)
		}
	case code := <-done:
		switch {
		case checkCode == exitOK:
			t.Errorf("check-config accepted the configuration, but run exited %d before serving:\n%s", code, stderr)
		case code != exitUsage:
			t.Errorf("run exited %d on a configuration check-config refused, want %d:\n%s", code, exitUsage, stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("run neither served nor exited:\n%s", stderr)
	}
	return checkCode == exitOK
}

// Preflight reports each problem under the key path it comes from, as
// config.Validate does; a Config built in code that skipped Validate still
// cannot reach run.
func TestPreflightKeyPaths(t *testing.T) {
	base := config.Default()
	base.Database.URL = "postgres://db.invalid/tasker"
	if err := Preflight(base); err != nil {
		t.Fatalf("defaults with a database URL: %v", err)
	}
	cases := []struct {
		name string
		edit func(*config.Config)
		want string
	}{
		{"bad database URL", func(c *config.Config) { c.Database.URL = "host=x port=99999" }, "database: invalid database URL"},
		{"sentinel without master", func(c *config.Config) { c.Cache.URL = "redis+sentinel://s.invalid:26379" }, "cache.url: "},
		{"unreadable token", func(c *config.Config) { c.Server.Auth.BearerTokenFile = "/nonexistent/token" }, "server.auth.bearer_token_file: "},
		{"missing TLS files", func(c *config.Config) {
			c.Server.TLS.CertFile, c.Server.TLS.KeyFile = "/nonexistent/cert", "/nonexistent/key"
		}, "server: "},
		{"negative policy", func(c *config.Config) {
			c.TTL.Policies = map[string]ttl.Policy{"custom": {BaseTTL: -time.Second}}
		}, "ttl.policies.custom.base_ttl: must not be negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.edit(&cfg)
			err := Preflight(cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Preflight = %v, want a problem containing %q", err, c.want)
			}
		})
	}
}
