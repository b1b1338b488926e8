package config

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

func TestInvalidFiles(t *testing.T) {
	// One file per rule; each must fail with the key path and a hint of why,
	// and for nothing else: every problem reported must match one of its
	// expectations, so a file cannot pass on another rule's behalf.
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
		"pgmq_scheme":          {`pgmq.database_url: scheme must be postgres or postgresql (got "mysql")`},
		"max_conns":            {"database.max_conns: must be between 1 and 20 (got 0)"},
		"app_name":             {"database.application_name: must not be empty"},
		"refresh_fast":         {"collector.refresh_interval: must be at least 1s (got 100ms)"},
		"refresh_timeout":      {"collector.refresh_timeout: must not exceed collector.refresh_interval"},
		"label_groups":         {"metrics.max_label_groups: must be at least 1 (got 0)"},
		"staleness":            {"metrics.max_staleness: must be 0 or at least twice collector.refresh_interval"},
		"cache_scheme":         {`cache.url: unsupported scheme "mongodb"`},
		"cache_memory_address": {"cache.url: memory:// takes no address"},
		"yaml_syntax":          {"config file: yaml:", "database.url: required"},
		"ttl":                  {"ttl.policies.status.base_tll: unknown key (line 7)", `ttl.mode: must be cost-aware or tasker (got: "fast")`},
		"write_timeout":        {"server.write_timeout: must exceed analytics.statement_timeout (30s <= 1m0s)"},
		"readiness_timeout":    {"server.readiness_timeout: must be shorter than server.write_timeout (5s >= 5s)"},
		"request_timeout":      {"server.request_timeout: must be shorter than server.write_timeout (1m15s >= 1m15s)"},
		"cache_option":         {"cache.url: redis: unexpected option: bogus_option"},
		"cache_capability":     {"cache.capabilities.teleportation: unknown capability"},
		"cache_rule":           {`cache.detectors[0].version: bad version "seven"`},
		"cache_rule_key":       {"cache.detectors[0].colour: unknown key (line 7)", "cache.detectors[0].set: required"},
		"cache_skip_readwrite": {"cache.skip_probes[1]: read_write cannot be skipped: every coordination strategy depends on it"},
		"token_file":           {"server.auth.bearer_token_file: open /nonexistent/token: no such file or directory"},
		// config.Validate: every key of the positive-duration check
		"server_read_header_timeout": {"server.read_header_timeout: must be a positive duration such as 5s (got 0s)"},
		"server_read_timeout":        {"server.read_timeout: must be a positive duration such as 5s (got -1s)"},
		"server_idle_timeout":        {"server.idle_timeout: must be a positive duration such as 5s (got 0s)"},
		"server_shutdown_timeout":    {"server.shutdown_timeout: must be a positive duration such as 5s (got -5s)"},
		"server_readiness_timeout":   {"server.readiness_timeout: must be a positive duration such as 5s (got -1s)"},
		"server_request_timeout":     {"server.request_timeout: must be a positive duration such as 5s (got 0s)"},
		"cache_dial_timeout":         {"cache.dial_timeout: must be a positive duration such as 5s (got 0s)"},
		"cache_read_timeout":         {"cache.read_timeout: must be a positive duration such as 5s (got -1s)"},
		"cache_write_timeout":        {"cache.write_timeout: must be a positive duration such as 5s (got 0s)"},
		"database_connect_timeout":   {"database.connect_timeout: must be a positive duration such as 5s (got 0s)"},
		"database_statement_timeout": {"database.statement_timeout: must be a positive duration such as 5s (got -1s)"},
		"collector_refresh_interval": {"collector.refresh_interval: must be a positive duration such as 5s (got 0s)"},
		// config.Validate: auth, database.url, collector, metrics, cache.url
		"basic_twice":               {"server.auth.basic_password: set basic_password or basic_password_file, not both"},
		"basic_password_only":       {"server.auth.basic_username: basic_username and basic_password must be set together"},
		"basic_password_file":       {"server.auth.basic_password_file: open /nonexistent/password: no such file or directory"},
		"basic_password_file_empty": {"server.auth.basic_password_file: testdata/secrets/empty is empty"},
		"token_file_empty":          {"server.auth.bearer_token_file: testdata/secrets/empty is empty"},
		"db_url_malformed":          {`database.url: not a valid URL: invalid port ":nope" after host`},
		"db_url_not_url":            {"database.url: must be a postgres:// URL or a key=value connection string"},
		"database_engine":           {`database.engine: unknown engine "mongo": want auto, rails or core`},
		"refresh_timeout_negative":  {"collector.refresh_timeout: must not be negative (got -1s)"},
		"staleness_negative":        {"metrics.max_staleness: must not be negative (got -1m0s)"},
		"cache_url_empty":           {"cache.url: required (use memory:// for an in-process cache)"},
		// detector.Config.Validate, reported under cache.
		"cache_capability_observed": {"cache.capabilities.eviction_policy: observed only, cannot be declared"},
		"cache_rule_name":           {"cache.detectors[0].name: required"},
		"cache_rule_duplicate":      {"cache.detectors[1].name: duplicate of detectors[0]"},
		"cache_rule_product":        {`cache.detectors[0].product: unknown product "mongodb"`},
		"cache_rule_address_regex":  {"cache.detectors[0].address: bad regular expression"},
		"cache_rule_address_glob":   {`cache.detectors[0].address: bad glob "["`},
		"cache_rule_set_unknown":    {"cache.detectors[0].set.teleportation: unknown capability"},
		"cache_rule_set_observed":   {"cache.detectors[0].set.eviction_policy: observed only, cannot be declared"},
		"cache_probe_timeout":       {"cache.probe_timeout: must not be negative"},
		"cache_detect_timeout":      {"cache.detect_timeout: must not be negative"},
		"cache_detect_shorter":      {"cache.detect_timeout: shorter than probe_timeout (100ms < 500ms)"},
		"cache_probe_prefix":        {"cache.probe_prefix: at most 64 bytes, no spaces or control characters"},
		"cache_recheck_interval":    {"cache.recheck_interval: must not be negative"},
		"cache_refresh_interval":    {"cache.refresh_interval: must not be negative"},
		"cache_skip_unknown":        {`cache.skip_probes[0]: unknown or mandatory probe "teleport"`},
		// collector.StreamConfig.Validate, reported under stream.
		"stream_batch_size":           {"stream.batch_size: must be between 1 and 1000000 (got 0)"},
		"stream_max_batches_per_poll": {"stream.max_batches_per_poll: must be at least 1 (got 0)"},
		"stream_poll_interval":        {"stream.poll_interval: must be a positive duration such as 5s (got 0s)"},
		"stream_poll_timeout":         {"stream.poll_timeout: must be a positive duration such as 5s (got -1s)"},
		"stream_gap_horizon":          {"stream.gap_horizon: must be a positive duration such as 5s (got 0s)"},
		"stream_stale_after":          {"stream.stale_after: must be a positive duration such as 5s (got -1s)"},
		"stream_lease_ttl":            {"stream.lease.ttl: must be a positive duration such as 5s (got 0s)"},
		"stream_gap_horizon_short":    {"stream.gap_horizon: must be at least twice poll_interval, or late rows are given up before they are re-checked (got 3s)"},
		"stream_stale_after_short":    {"stream.stale_after: must be at least twice poll_interval (got 3s)"},
		"stream_start_gap_window":     {"stream.start_gap_window: must not be negative (got -1)"},
		"stream_recount_interval":     {"stream.recount_interval: must not be negative (got -1s)"},
		"stream_max_label_groups":     {"stream.max_label_groups: must be at least 1 (got 0)"},
		"stream_checkpoint_key":       {"stream.checkpoint.key: required"},
		"stream_checkpoint_interval":  {"stream.checkpoint.interval: must not be negative (got -1s)"},
		"stream_lease_key":            {"stream.lease.key: required"},
		"stream_lease_ttl_short":      {"stream.lease.ttl: must be at least three poll intervals, or the lease lapses between renewals (got 2s)"},
		// config.Validate: analytics (enabled by default)
		"analytics_statement_timeout":  {"analytics.statement_timeout: must be a positive duration (got -1s)"},
		"analytics_metrics_interval":   {"analytics.metrics_interval: must be a positive duration (got 0s)"},
		"analytics_metrics_window":     {"analytics.metrics_window: must be a positive duration (got -1h0m0s)"},
		"analytics_max_batch":          {"analytics.max_batch: must be between 1 and 1000 (got 1001)"},
		"analytics_lookup_max_waiters": {"analytics.lookup_max_waiters: must be between 1 and 10000 (got 0)"},
		"analytics_pool":               {"analytics.max_concurrent: with analytics.lookup_max_concurrent must leave at least one of database.max_conns (3) for health work (got 2 + 1)"},
		// ttl.Config.Validate, reported under ttl.
		"ttl_l1_max_entries":                       {"ttl.l1_max_entries: removed: the in-process level is bounded by bytes now; set l1_max_bytes instead"},
		"ttl_l1_max_bytes":                         {"ttl.l1_max_bytes: must be at least 1048576 (1 MiB) (got: 1000)"},
		"ttl_refresh_ahead_factor":                 {"ttl.refresh_ahead_factor: must not be negative (got: -1)"},
		"ttl_refresh_ahead_min":                    {"ttl.refresh_ahead_min: must not be negative (got: -1s)"},
		"ttl_stale_while_revalidate":               {"ttl.stale_while_revalidate: must be between 0 and 1 (got: 1.5)"},
		"ttl_retry_backoff_min":                    {"ttl.retry_backoff_min: must be positive (got: 0s)"},
		"ttl_retry_backoff_max":                    {"ttl.retry_backoff_max: must not be less than retry_backoff_min 1s (got: 500ms)"},
		"ttl_recheck_interval":                     {"ttl.recheck_interval: must be positive (got: 0s)"},
		"ttl_store_timeout":                        {"ttl.store_timeout: must be positive (got: -1s)"},
		"ttl_stale_read_cost":                      {"ttl.cost_aware.stale_read_cost: must be positive (got: 0s)"},
		"ttl_jitter":                               {"ttl.cost_aware.jitter: must be between 0 and 0.5 (got: 0.6)"},
		"ttl_policy_name":                          {"ttl.policies.bad name: resource names must be non-empty without spaces or control characters"},
		"ttl_policy_base_ttl_negative":             {"ttl.policies.status.base_ttl: must not be negative (got: -1s)"},
		"ttl_policy_min_ttl_negative":              {"ttl.policies.status.min_ttl: must not be negative (got: -1s)"},
		"ttl_policy_max_ttl_negative":              {"ttl.policies.status.max_ttl: must not be negative (got: -1s)"},
		"ttl_policy_max_staleness_negative":        {"ttl.policies.status.max_staleness: must not be negative (got: -1s)"},
		"ttl_policy_query_timeout_negative":        {"ttl.policies.status.query_timeout: must not be negative (got: -1s)"},
		"ttl_policy_min_ttl":                       {"ttl.policies.status.min_ttl: 1m30s is above base_ttl 1m0s"},
		"ttl_policy_max_ttl":                       {"ttl.policies.status.max_ttl: 30s is below base_ttl 1m0s"},
		"ttl_policy_max_staleness":                 {"ttl.policies.status.max_staleness: 30s must cover min_ttl 15s plus two query timeouts of 10s"},
		"ttl_tasker_default_ttl":                   {"ttl.tasker.default_ttl: default_ttl must be positive (got: 0)"},
		"ttl_tasker_min_adaptive_ttl":              {"ttl.tasker.min_adaptive_ttl: min_adaptive_ttl must be positive (got: 0)"},
		"ttl_tasker_dashboard_cache_ttl":           {"ttl.tasker.dashboard_cache_ttl: dashboard_cache_ttl must be positive (got: 0)"},
		"ttl_tasker_adaptive_calculation_interval": {"ttl.tasker.adaptive_calculation_interval: adaptive_calculation_interval must be positive (got: -1)"},
		"ttl_tasker_max_adaptive_ttl":              {"ttl.tasker.max_adaptive_ttl: max_adaptive_ttl must be positive (got: 0)", "ttl.tasker.min_adaptive_ttl: min_adaptive_ttl (30) must be less than max_adaptive_ttl (0)"},
		"ttl_tasker_adaptive_order":                {"ttl.tasker.min_adaptive_ttl: min_adaptive_ttl (600) must be less than max_adaptive_ttl (600)"},
		"ttl_tasker_hit_rate_smoothing_factor":     {"ttl.tasker.hit_rate_smoothing_factor: hit_rate_smoothing_factor must be between 0.0 and 1.0 (got: 1.5)"},
		"ttl_tasker_access_frequency_decay_rate":   {"ttl.tasker.access_frequency_decay_rate: access_frequency_decay_rate must be between 0.0 and 1.0 (got: -0.1)"},
		"ttl_tasker_cache_pressure_threshold":      {"ttl.tasker.cache_pressure_threshold: cache_pressure_threshold must be between 0.0 and 1.0 (got: 2.0)"},
		// traces.Config.Validate, reported under tracing.
		"tracing_protocol":               {`tracing.protocol: must be grpc or http/protobuf (got "thrift")`},
		"tracing_endpoint_url":           {`tracing.endpoint: must be an http(s) URL or host:port (got "ftp://collector:4318")`},
		"tracing_endpoint_port":          {`tracing.endpoint: host:port needs a port (got "collector")`},
		"tracing_timeout":                {"tracing.timeout: must be a positive duration such as 10s (got 0s)"},
		"tracing_service_name":           {"tracing.service_name: required"},
		"tracing_sidecar_service_name":   {"tracing.sidecar_service_name: required"},
		"tracing_sampling_ratio":         {"tracing.sampling_ratio: must be between 0 and 1 (got 1.5)"},
		"tracing_sidecar_sampling_ratio": {"tracing.sidecar_sampling_ratio: must be between 0 and 1 (got -0.1)"},
		"tracing_max_spans_per_second":   {"tracing.max_spans_per_second: must not be negative (got -1)"},
		"tracing_max_spans_per_trace":    {"tracing.max_spans_per_trace: must be at least 1 (got 0)"},
		"tracing_max_pending_tasks":      {"tracing.max_pending_tasks: must not be negative (got -1)"},
		// decoding
		"top_level_list":       {"(top level): expected a mapping (line 1)", "database.url: required"},
		"detectors_not_list":   {"cache.detectors: expected a list (line 4)"},
		"policies_not_mapping": {"ttl.policies: expected a mapping (line 4)"},
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
			for _, p := range cerr.Problems {
				if !slices.ContainsFunc(want, func(w string) bool { return strings.Contains(p.Error(), w) }) {
					t.Errorf("unexpected problem %q", p)
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
		{"file collector.refresh_interval", cfg.Collector.Interval, 30 * time.Second},
		{"file metrics.max_label_groups", cfg.Metrics.MaxLabelGroups, 25},
		{"default server.write_timeout kept", cfg.Server.WriteTimeout, 75 * time.Second},
		{"default database.application_name kept", cfg.Database.ApplicationName, "tasker-sidecar"},
		{"default database.engine detects", cfg.Database.Engine, engine.KindAuto},
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

func TestSecretURLString(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres://u:pw@h:5432/db?sslmode=disable", "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgres://h/db?password=pw&sslmode=require", "postgres://h/db?password=xxxxx&sslmode=require"},
		{"redis://:pw@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"host=h user=u password=pw dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"host=h password='p w' dbname=d", "host=h password=xxxxx dbname=d"},
		{"postgres://u:p%zz@h/db", "postgres://u:xxxxx@h/db"},
		{"memory://", "memory://"},
		{"redis://h:6379/0?dial_timeout=2s&a=1", "redis://h:6379/0?dial_timeout=2s&a=1"},
		{"redis+sentinel://h:26379/0?master_name=m&sentinel_password=s3", "redis+sentinel://h:26379/0?master_name=m&sentinel_password=xxxxx"},
		{"rediss://h:6380/0?auth_token=t0k", "rediss://h:6380/0?auth_token=xxxxx"},
		{"", ""},
	}
	for _, c := range cases {
		if got := SecretURL(c.in).String(); got != c.want {
			t.Errorf("SecretURL(%q).String() = %q, want %q", c.in, got, c.want)
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
