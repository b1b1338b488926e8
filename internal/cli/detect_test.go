package cli

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/detector"
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
		strategy  string // "": no report on stdout
		mechanism string
		errLine   string // the one line on stderr, "" for none
	}{
		{"redis", []string{"--cache-url", redisURL()}, exitOK, "distributed_atomic", "redis_lua_scripts", ""},
		{"memcached", []string{"--cache-url", memcachedURL()}, exitOK, "distributed_atomic", "memcached_meta_leases", ""},
		{"memory", []string{"--cache-url", "memory://"}, exitOK, "local_only", "in_process", ""},
		// Unreachable: the report anyway (local_only, provenance for every
		// capability), the error on stderr, and a failing exit code.
		{"unreachable redis", []string{"--cache-url", "redis://:hush@127.0.0.1:1/0"}, exitFailure, "local_only", "in_process", "cache store unreachable"},
		{"unreachable memcached", []string{"--cache-url", "memcached://app:hush@127.0.0.1:1"}, exitFailure, "local_only", "in_process", "cache store unreachable"},
		{"invalid url", []string{"--cache-url", "mongodb://db"}, exitUsage, "", "", `cache.url: unsupported scheme "mongodb"`},
		{"bad format", []string{"--cache-url", "memory://", "--format", "xml"}, exitUsage, "", "", "--format must be json or text"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, append([]string{"detect"}, c.args...)...)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout, stderr)
			}
			if strings.Contains(stdout+stderr, "hush") {
				t.Errorf("password leaked:\n%s\n%s", stdout, stderr)
			}
			if c.errLine != "" {
				lines := strings.Split(strings.TrimSpace(stderr), "\n")
				if len(lines) != 1 || !strings.Contains(lines[0], c.errLine) {
					t.Errorf("want one line containing %q, got:\n%s", c.errLine, stderr)
				}
			} else if stderr != "" {
				t.Errorf("stderr: %s", stderr)
			}
			if c.strategy == "" {
				if stdout != "" {
					t.Errorf("want no report, got:\n%s", stdout)
				}
				return
			}
			var rep struct {
				Store        map[string]any `json:"store"`
				Capabilities map[string]struct {
					Value    any    `json:"value"`
					Source   string `json:"source"`
					Evidence string `json:"evidence"`
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
			for _, name := range detector.Capabilities() {
				capab, ok := rep.Capabilities[name]
				if !ok || capab.Value == nil || !slices.Contains(detector.Sources(), capab.Source) || capab.Evidence == "" {
					t.Errorf("capability %s lacks value, source or evidence: %+v", name, capab)
				}
			}
			if len(rep.Capabilities) != len(detector.Capabilities()) {
				t.Errorf("%d capabilities, want %d", len(rep.Capabilities), len(detector.Capabilities()))
			}
			if rep.Conflicts == nil {
				t.Error("conflicts must be an array, not null")
			}
			if reachable := c.code == exitOK; rep.Store["reachable"] != reachable {
				t.Errorf("store.reachable = %v, want %v", rep.Store["reachable"], reachable)
			}
			if c.code != exitOK && rep.Store["error"] == nil {
				t.Errorf("store.error missing: %v", rep.Store)
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
	// Unreachable: the text report too, then the error line.
	code, stdout, stderr = runCLI(t, nil, "detect", "--cache-url", "redis://127.0.0.1:1", "--format", "text")
	if code != exitFailure || !strings.Contains(stdout, "local_only") || !strings.Contains(stdout, "read_write") ||
		!strings.Contains(stderr, "cache store unreachable") {
		t.Errorf("unreachable: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}
