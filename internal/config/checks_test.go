package config

import (
	"errors"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
)

const dbLine = "database: {url: 'postgres://db.example/tasker'}\n"

// Each document must be refused with exactly these problems (issue 10 item
// 5: duplicate keys were accepted, last wins; NaN passed every range check;
// port 99999 passed check-config and then failed run).
func TestParseRefuses(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{"duplicate section", dbLine + "log: {level: info}\nlog: {level: debug}\n",
			[]string{"log: duplicate key (line 3; first at line 2)"}},
		{"duplicate key in a section", "database:\n  url: postgres://db/tasker\n  max_conns: 3\n  max_conns: 4\n",
			[]string{"database.max_conns: duplicate key (line 4; first at line 3)"}},
		{"duplicate policy", dbLine + "ttl:\n  policies:\n    status: {base_ttl: 20s}\n    status: {base_ttl: 30s}\n",
			[]string{"ttl.policies.status: duplicate key (line 5; first at line 4)"}},
		{"duplicate key inside a policy", dbLine + "ttl:\n  policies:\n    status:\n      base_ttl: 20s\n      base_ttl: 30s\n",
			[]string{"ttl.policies.status.base_ttl: duplicate key (line 6; first at line 5)"}},
		{"duplicate header", dbLine + "tracing:\n  headers:\n    x-key: a\n    x-key: b\n",
			[]string{"tracing.headers.x-key: duplicate key (line 5; first at line 4)"}},
		{"duplicate key in a list item", dbLine + "cache:\n  detectors:\n    - name: a\n      name: b\n      set: {locking: true}\n",
			[]string{"cache.detectors[0].name: duplicate key (line 5; first at line 4)"}},
		{"NaN sampling ratio", dbLine + "tracing: {sampling_ratio: .nan}\n",
			[]string{"tracing.sampling_ratio: must be a finite number (got NaN) (line 2)"}},
		{"infinite sampling ratio", dbLine + "tracing: {sidecar_sampling_ratio: -.inf}\n",
			[]string{"tracing.sidecar_sampling_ratio: must be a finite number (got -Inf) (line 2)"}},
		{"NaN jitter", dbLine + "ttl: {cost_aware: {jitter: .NaN}}\n",
			[]string{"ttl.cost_aware.jitter: must be a finite number (got NaN) (line 2)"}},
		{"infinite rate", dbLine + "tracing: {max_spans_per_second: .inf}\n",
			[]string{"tracing.max_spans_per_second: must be a finite number (got +Inf) (line 2)"}},
		{"listen port too high", dbLine + "server: {listen: ':99999'}\n",
			[]string{`server.listen: port must be a number from 0 to 65535 (got "99999")`}},
		{"listen port negative", dbLine + "server: {listen: ':-1'}\n",
			[]string{`server.listen: port must be a number from 0 to 65535 (got "-1")`}},
		{"listen on a name", dbLine + "server: {listen: 'sidecar.example:9394'}\n",
			[]string{`server.listen: host must be empty (every interface), an IP address or localhost (got "sidecar.example")`}},
		{"database port", "database: {url: 'postgres://db.example:99999/tasker'}\n",
			[]string{`database.url: db.example: port must be a number from 1 to 65535 (got "99999")`}},
		{"database second host's port", "database: {url: 'postgres://a.example:5432,b.example:0/tasker'}\n",
			[]string{`database.url: b.example: port must be a number from 1 to 65535 (got "0")`}},
		{"database key=value port", "database: {url: 'host=db.example port=70000 dbname=tasker'}\n",
			[]string{"database.url: invalid port"}},
		{"redis port", dbLine + "cache: {url: 'redis://cache.example:65536/0'}\n",
			[]string{`cache.url: cache.example: port must be a number from 1 to 65535 (got "65536")`}},
		{"memcached port", dbLine + "cache: {url: 'memcached://a.example,b.example:0'}\n",
			[]string{`cache.url: b.example: port must be a number from 1 to 65535 (got "0")`}},
		{"sentinel without master", dbLine + "cache: {url: 'redis+sentinel://s.example:26379'}\n",
			[]string{"cache.url: redis+sentinel:// needs master_name="}},
		{"memcached key prefix", dbLine + "cache: {url: 'memcached://m.example', key_prefix: 'a b'}\n",
			[]string{"cache.key_prefix: at most 150 bytes, no spaces or control characters, for memcached"}},
		{"tracing URL port", dbLine + "tracing: {endpoint: 'http://otel.example:99999'}\n",
			[]string{`tracing.endpoint: port must be a number from 1 to 65535 (got "99999")`}},
		{"tracing host:port port", dbLine + "tracing: {endpoint: 'otel.example:0'}\n",
			[]string{`tracing.endpoint: must be host:port with a port from 1 to 65535 (got "otel.example:0")`}},
		{"TLS files missing", dbLine + "server: {tls: {cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem}}\n",
			[]string{"server.tls: open /nonexistent/cert.pem: no such file or directory"}},
		{"empty key", dbLine + "'': 1\n",
			[]string{`"": unknown key (line 2)`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			assertProblems(t, err, c.want)
		})
	}
}

// The same rules hold for what comes from SIDECAR_* variables.
func TestEnvRefuses(t *testing.T) {
	cases := []struct {
		env  string
		want string
	}{
		{"SIDECAR_TRACING_SAMPLING_RATIO=NaN", `tracing.sampling_ratio (env SIDECAR_TRACING_SAMPLING_RATIO): must be a finite number (got "NaN")`},
		{"SIDECAR_TTL_COST_AWARE_JITTER=+Inf", `ttl.cost_aware.jitter (env SIDECAR_TTL_COST_AWARE_JITTER): must be a finite number (got "+Inf")`},
		{"SIDECAR_TRACING_MAX_SPANS_PER_SECOND=-infinity", `tracing.max_spans_per_second (env SIDECAR_TRACING_MAX_SPANS_PER_SECOND): must be a finite number (got "-infinity")`},
		{"SIDECAR_LISTEN=:99999", `server.listen: port must be a number from 0 to 65535 (got "99999")`},
	}
	for _, c := range cases {
		t.Run(c.env, func(t *testing.T) {
			_, _, err := loadFile(t, "", []string{"SIDECAR_DATABASE_URL=postgres://db.example/tasker", c.env})
			assertProblems(t, err, []string{c.want})
		})
	}
}

// Validate covers a Config built in code, which no decoder checked.
func TestValidateRefusesNonFinite(t *testing.T) {
	cfg := Default()
	cfg.Database.URL = "postgres://db.example/tasker"
	cfg.Tracing.SamplingRatio = math.NaN()
	cfg.TTL.CostAware.Jitter = math.Inf(1)
	var got []string
	for _, err := range cfg.Validate() {
		got = append(got, err.Error())
	}
	for _, want := range []string{
		"tracing.sampling_ratio: must be a finite number (got NaN)",
		"tracing.sampling_ratio: must be between 0 and 1 (got NaN)",
		"ttl.cost_aware.jitter: must be a finite number (got +Inf)",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("Validate does not report %q; got %q", want, got)
		}
	}
}

func TestParseAccepts(t *testing.T) {
	for _, doc := range []string{
		"server: {listen: ':0'}\n",
		"server: {listen: '127.0.0.1:9394'}\n",
		"server: {listen: '[::1]:9394'}\n",
		"server: {listen: 'localhost:65535'}\n",
		"cache: {url: 'redis+cluster://a.example:7000?addr=b.example:7001'}\n",
		"cache: {url: 'redis+sentinel://s.example:26379?master_name=main'}\n",
		"cache: {url: 'memcached://a.example,b.example:11212'}\n",
		"tracing: {endpoint: 'http://otel.example'}\n",
		"tracing: {sampling_ratio: 0, sidecar_sampling_ratio: 1}\n",
		"ttl:\n  policies:\n    status: {base_ttl: 20s}\n    handlers: {base_ttl: 40s}\n",
	} {
		if _, err := Parse([]byte(dbLine + doc)); err != nil {
			t.Errorf("%q: %v", doc, err)
		}
	}
	if _, err := Parse([]byte("database: {url: 'postgres://a.example:5432,b.example:5433/tasker'}\n")); err != nil {
		t.Errorf("several database hosts: %v", err)
	}
}

// assertProblems wants a *Error whose problems are exactly want, each
// matched as a substring.
func assertProblems(t *testing.T, err error, want []string) {
	t.Helper()
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	for _, w := range want {
		if !slices.ContainsFunc(cerr.Problems, func(p error) bool { return strings.Contains(p.Error(), w) }) {
			t.Errorf("no problem mentions %q:\n%s", w, err)
		}
	}
	if len(cerr.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(cerr.Problems), len(want), err)
	}
}

// config.example.yaml states the defaults (issue 10 moved
// database.max_conns from 2 to 3 and the checkpoint under a state
// directory): loaded without its database URL, it is Default(), key by key.
func TestExampleStatesTheDefaults(t *testing.T) {
	data, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database.URL = ""
	// The example says /tmp for $TMPDIR, which a test machine may set.
	if cfg.Stream.Checkpoint.StateDir == "/tmp" {
		cfg.Stream.Checkpoint.StateDir = os.TempDir()
	}
	want := strings.Split(Default().Dump(), "\n")
	got := strings.Split(cfg.Dump(), "\n")
	if len(got) != len(want) {
		t.Fatalf("the example has %d lines of effective configuration, the defaults %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d of the effective configuration: example %q, default %q", i+1, strings.TrimSpace(got[i]), strings.TrimSpace(want[i]))
		}
	}
}
