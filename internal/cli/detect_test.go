package cli

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func redisURL() string {
	if u := os.Getenv("SIDECAR_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379"
}

func memcachedURL() string {
	if u := os.Getenv("SIDECAR_TEST_MEMCACHED_URL"); u != "" {
		return u
	}
	return "memcached://127.0.0.1:11211"
}

func TestDetectCommand(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		code      int
		strategy  string
		mechanism string
		errLine   string
	}{
		{"redis", []string{"--cache-url", redisURL()}, exitOK, "distributed_atomic", "redis_lua_scripts", ""},
		{"memcached", []string{"--cache-url", memcachedURL()}, exitOK, "distributed_atomic", "memcached_meta_leases", ""},
		{"memory", []string{"--cache-url", "memory://"}, exitOK, "local_only", "in_process", ""},
		{"unreachable", []string{"--cache-url", "redis://:hush@127.0.0.1:1/0"}, exitFailure, "", "", "cache store unreachable"},
		{"invalid url", []string{"--cache-url", "mongodb://db"}, exitUsage, "", "", `cache.url: unsupported scheme "mongodb"`},
		{"bad format", []string{"--cache-url", "memory://", "--format", "xml"}, exitUsage, "", "", "--format must be json or text"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, append([]string{"detect"}, c.args...)...)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout, stderr)
			}
			if c.errLine != "" {
				lines := strings.Split(strings.TrimSpace(stderr), "\n")
				if len(lines) != 1 || !strings.Contains(lines[0], c.errLine) {
					t.Errorf("want one line containing %q, got:\n%s", c.errLine, stderr)
				}
				if strings.Contains(stderr, "hush") {
					t.Errorf("password leaked: %s", stderr)
				}
				return
			}
			var rep struct {
				Store        map[string]any `json:"store"`
				Capabilities map[string]struct {
					Value    any    `json:"value"`
					Source   string `json:"source"`
					Evidence any    `json:"evidence"`
				} `json:"capabilities"`
				Strategy  string `json:"strategy"`
				Mechanism string `json:"mechanism"`
				Conflicts []any  `json:"conflicts"`
			}
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("bad JSON: %v\n%s", err, stdout)
			}
			if rep.Strategy != c.strategy || rep.Mechanism != c.mechanism {
				t.Errorf("strategy %s/%s, want %s/%s", rep.Strategy, rep.Mechanism, c.strategy, c.mechanism)
			}
			for _, name := range []string{"distributed", "atomic_increment", "locking", "ttl_inspection", "namespace_support", "compression_support", "key_transformation"} {
				capab, ok := rep.Capabilities[name]
				if !ok || capab.Source == "" || capab.Evidence == nil {
					t.Errorf("capability %s lacks value, source or evidence: %+v", name, capab)
				}
			}
			if rep.Conflicts == nil {
				t.Error("conflicts must be an array, not null")
			}
		})
	}
}

func TestDetectDeclaredConflict(t *testing.T) {
	// Declaring that memcached cannot lock while its add probe succeeds: the
	// declaration wins, and the report must show the conflict.
	file := t.TempDir() + "/c.yaml"
	if err := os.WriteFile(file, []byte("cache:\n  capabilities:\n    locking: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, nil, "detect", "--config", file, "--cache-url", memcachedURL())
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Capabilities map[string]struct {
			Value  any    `json:"value"`
			Source string `json:"source"`
		} `json:"capabilities"`
		Conflicts []map[string]any `json:"conflicts"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if l := rep.Capabilities["locking"]; l.Value != false || l.Source != "declared" {
		t.Errorf("the declaration must win: %+v", l)
	}
	if len(rep.Conflicts) != 1 || rep.Conflicts[0]["capability"] != "locking" {
		t.Errorf("want one conflict on locking, got %v", rep.Conflicts)
	}
}

func TestDetectText(t *testing.T) {
	code, stdout, stderr := runCLI(t, nil, "detect", "--cache-url", "memory://", "--format", "text")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "local_only") {
		t.Errorf("text report lacks the strategy:\n%s", stdout)
	}
}
