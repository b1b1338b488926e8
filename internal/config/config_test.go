package config

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInvalidFiles(t *testing.T) {
	// One file per rule; each must fail with the key path and a hint of why.
	cases := map[string][]string{
		"unknown_key":          {"database.max_connections: unknown key (line 3)"},
		"unknown_section":      {"colector: unknown key (line 3)"},
		"bad_duration":         {"collector.refresh_interval:", "soon"},
		"bad_int":              {"database.max_conns:", "two"},
		"not_mapping":          {"database: expected a mapping", "database.url: required"},
		"log_level":            {`log.level: must be one of debug, info, warn, error (got "verbose")`},
		"log_format":           {`log.format: must be text or json (got "xml")`},
		"listen":               {`server.listen: must be host:port or :port (got "9394")`},
		"negative_timeout":     {"server.write_timeout: must be a positive duration"},
		"tls_half":             {"server.tls: cert_file and key_file must be set together"},
		"token_twice":          {"server.auth.bearer_token: set bearer_token or bearer_token_file, not both"},
		"basic_half":           {"server.auth.basic_username: basic_username and basic_password must be set together"},
		"missing_db_url":       {"database.url: required"},
		"db_scheme":            {`database.url: scheme must be postgres or postgresql (got "mysql")`},
		"max_conns":            {"database.max_conns: must be between 1 and 20 (got 0)"},
		"app_name":             {"database.application_name: must not be empty"},
		"refresh_fast":         {"collector.refresh_interval: must be at least 1s (got 100ms)"},
		"refresh_timeout":      {"collector.refresh_timeout: must not exceed collector.refresh_interval"},
		"label_groups":         {"metrics.max_label_groups: must be at least 1 (got 0)"},
		"staleness":            {"metrics.max_staleness: must be 0 or at least twice collector.refresh_interval"},
		"cache_scheme":         {`cache.url: unsupported scheme "mongodb"`},
		"cache_memory_address": {"cache.url: memory:// takes no address"},
		"yaml_syntax":          {"config file: yaml:"},
		"ttl":                  {"ttl.policies.status.base_tll: unknown key (line 7)", `ttl.mode: must be cost-aware or tasker (got: "fast")`},
		"write_timeout":        {"server.write_timeout: must exceed analytics.statement_timeout (30s <= 1m0s)"},
		"readiness_timeout":    {"server.readiness_timeout: must be shorter than server.write_timeout (5s >= 5s)"},
		"cache_option":         {"cache.url: redis: unexpected option: bogus_option"},
		"cache_capability":     {"cache.capabilities.teleportation: unknown capability"},
		"cache_rule":           {`cache.detectors[0].version: bad version "seven"`},
		"cache_rule_key":       {"cache.detectors[0].colour: unknown key (line 7)", "cache.detectors[0].set: required"},
		"cache_skip_readwrite": {"cache.skip_probes[1]: read_write cannot be skipped: every coordination strategy depends on it"},
		"token_file":           {"server.auth.bearer_token_file: open /nonexistent/token: no such file or directory"},
	}
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(cases) {
		t.Fatalf("%d invalid files but %d cases: every file needs its expectation", len(files), len(cases))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			want, ok := cases[name]
			if !ok {
				t.Fatalf("no expectation for %s", file)
			}
			_, _, err := loadFile(t, file, nil)
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("want *config.Error, got %v", err)
			}
			msg := err.Error()
			for _, w := range want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not mention %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestEveryProblemReported(t *testing.T) {
	// Three independent mistakes: all three must be reported at once.
	_, err := Parse([]byte("log:\n  level: loud\ndatabase:\n  max_conns: 99\n  bogus: 1\n"))
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	for _, want := range []string{"log.level", "database.max_conns", "database.bogus: unknown key", "database.url: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%s", want, err)
		}
	}
	if len(cerr.Problems) != 4 {
		t.Errorf("want 4 problems, got %d:\n%s", len(cerr.Problems), err)
	}
}

func TestValidFileAndDefaults(t *testing.T) {
	cfg, warnings, err := loadFile(t, "testdata/valid.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("unexpected warnings %v", warnings)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"file log.level", cfg.Log.Level, "debug"},
		{"file server.listen", cfg.Server.Listen, "127.0.0.1:9500"},
		{"file database.max_conns", cfg.Database.MaxConns, int32(3)},
		{"file collector.refresh_interval", cfg.Collector.RefreshInterval, 30 * time.Second},
		{"file metrics.max_label_groups", cfg.Metrics.MaxLabelGroups, 25},
		{"default server.write_timeout kept", cfg.Server.WriteTimeout, 75 * time.Second},
		{"default database.application_name kept", cfg.Database.ApplicationName, "tasker-sidecar"},
		{"default cache.dial_timeout kept", cfg.Cache.DialTimeout, 2 * time.Second},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestPrecedence(t *testing.T) {
	// flags > env > file > defaults, key by key.
	cases := []struct {
		name   string
		env    []string
		flags  []string
		listen string
		dbURL  string
		level  string
	}{
		{"file only", nil, nil, "127.0.0.1:9500", "postgres://tasker:hunter2@db.example:5432/tasker?sslmode=disable", "debug"},
		{"env beats file", []string{"SIDECAR_LISTEN=:7000", "SIDECAR_DATABASE_URL=postgres://env/db", "SIDECAR_LOG_LEVEL=warn"}, nil, ":7000", "postgres://env/db", "warn"},
		{"long env name works too", []string{"SIDECAR_SERVER_LISTEN=:7001"}, nil, ":7001", "postgres://tasker:hunter2@db.example:5432/tasker?sslmode=disable", "debug"},
		{"flag beats env", []string{"SIDECAR_LISTEN=:7000", "SIDECAR_LOG_LEVEL=warn"}, []string{"--listen", ":8000", "--log-level=error"}, ":8000", "postgres://tasker:hunter2@db.example:5432/tasker?sslmode=disable", "error"},
		{"flag beats file without env", nil, []string{"--database-url", "postgres://flag/db"}, "127.0.0.1:9500", "postgres://flag/db", "debug"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, _, err := loadFile(t, "testdata/valid.yaml", c.env, c.flags...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Server.Listen != c.listen || cfg.Database.URL.Value() != c.dbURL || cfg.Log.Level != c.level {
				t.Errorf("got listen=%q db=%q level=%q", cfg.Server.Listen, cfg.Database.URL.Value(), cfg.Log.Level)
			}
		})
	}
}

func TestEnvProblemsAndWarnings(t *testing.T) {
	env := []string{
		"SIDECAR_DATABASE_URL=postgres://localhost/db",
		"SIDECAR_DATABASE_MAX_CONNS=many",
		"SIDECAR_COLLECTOR_REFRESH_INTERVAL=often",
		"SIDECAR_SERVICE_HOST=10.0.0.1", // what Kubernetes injects for a Service called "sidecar"
	}
	_, warnings, err := loadFile(t, "", env)
	if err == nil {
		t.Fatal("want an error for bad env values")
	}
	for _, want := range []string{
		`database.max_conns (env SIDECAR_DATABASE_MAX_CONNS): invalid integer "many"`,
		`collector.refresh_interval (env SIDECAR_COLLECTOR_REFRESH_INTERVAL): invalid duration "often"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "SIDECAR_SERVICE_HOST") {
		t.Errorf("want one warning about SIDECAR_SERVICE_HOST, got %v", warnings)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	cfg, _, err := loadFile(t, "testdata/valid.yaml", []string{"SIDECAR_SERVER_AUTH_BASIC_USERNAME=ops", "SIDECAR_SERVER_AUTH_BASIC_PASSWORD=pa55word"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tracing.Headers = map[string]string{"x-honeycomb-team": "otlp-api-key"}
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	logger.Info("config", "database", cfg.Database.URL, "cache", cfg.Cache.URL, "token", cfg.Server.Auth.BearerToken, "password", cfg.Server.Auth.BasicPassword)
	outputs := map[string]string{
		"dump":    cfg.Dump(),
		"logs":    logs.String(),
		"sprintf": strings.Join([]string{cfg.Database.URL.String(), cfg.Cache.URL.String(), cfg.Server.Auth.BearerToken.String()}, " "),
	}
	for where, out := range outputs {
		for _, secret := range []string{"hunter2", "redispass", "s3cr3t-token", "pa55word", "otlp-api-key"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s leaks %q:\n%s", where, secret, out)
			}
		}
	}
	if !strings.Contains(outputs["dump"], "db.example:5432") {
		t.Errorf("dump should still show the database host:\n%s", outputs["dump"])
	}
	if cfg.Server.Auth.BearerToken.Value() != "s3cr3t-token" {
		t.Error("Value() must return the real token")
	}
}

func TestRedactURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres://u:pw@h:5432/db?sslmode=disable", "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgres://h/db?password=pw&sslmode=require", "postgres://h/db?password=xxxxx&sslmode=require"},
		{"redis://:pw@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"host=h user=u password=pw dbname=d", "host=h user=u password=<redacted> dbname=d"},
		{"host=h password='p w' dbname=d", "host=h password=<redacted> dbname=d"},
		{"postgres://u:p%zz@h/db", "postgres://<redacted>@h/db"},
		{"memory://", "memory://"},
		{"redis://h:6379/0?dial_timeout=2s&a=1", "redis://h:6379/0?dial_timeout=2s&a=1"},
		{"redis+sentinel://h:26379/0?master_name=m&sentinel_password=s3", "redis+sentinel://h:26379/0?master_name=m&sentinel_password=xxxxx"},
		{"rediss://h:6380/0?auth_token=t0k", "rediss://h:6380/0?auth_token=xxxxx"},
		{"", ""},
	}
	for _, c := range cases {
		if got := RedactURL(c.in); got != c.want {
			t.Errorf("RedactURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestExampleConfigLoads(t *testing.T) {
	// The shipped example must stay valid as keys change.
	data, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data); err != nil {
		t.Fatal(err)
	}
}

func loadFile(t *testing.T, file string, env []string, args ...string) (Config, []string, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var f Flags
	f.Register(fs)
	if file != "" {
		args = append([]string{"--config", file}, args...)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(fs, &f, env)
}
