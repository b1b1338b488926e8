package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/testlog"
)

// syncBuffer is written by the code under test while the test reads it.
type syncBuffer = testlog.Buffer

func runCLI(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = run(context.Background(), &environment{stdout: &out, stderr: &errOut, environ: environ}, args)
	return code, out.String(), errOut.String()
}

func TestCommandsExitCodes(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		env      []string
		code     int
		contains string
	}{
		{"no command", nil, nil, exitUsage, "Usage: sidecar <command>"},
		{"help", []string{"--help"}, nil, exitOK, "Commands:"},
		{"unknown command", []string{"frobnicate"}, nil, exitUsage, `unknown command "frobnicate"`},
		{"version", []string{"version"}, nil, exitOK, "tasker-sidecar, version"},
		{"--version", []string{"--version"}, nil, exitOK, "tasker-sidecar, version"},
		{"run help", []string{"run", "--help"}, nil, exitOK, "Usage: sidecar run"},
		{"check-config help", []string{"check-config", "-h"}, nil, exitOK, "Usage: sidecar check-config"},
		{"schema help", []string{"schema", "--help"}, nil, exitOK, "sidecar schema apply"},
		{"schema apply help", []string{"schema", "apply", "--help"}, nil, exitOK, "--create-database"},
		{"simulate help", []string{"simulate", "--help"}, nil, exitOK, "--rate"},
		{"demo help", []string{"demo", "--help"}, nil, exitOK, "--tasks"},
		{"version help", []string{"version", "--help"}, nil, exitOK, "Usage: sidecar version"},
		{"bad flag", []string{"run", "--no-such-flag"}, nil, exitUsage, "flag provided but not defined"},
		{"stray argument", []string{"check-config", "extra"}, nil, exitUsage, "unexpected arguments: extra"},
		{"schema without apply", []string{"schema"}, nil, exitUsage, "only schema subcommand is apply"},
		{"schema apply without url", []string{"schema", "apply"}, nil, exitUsage, "--database-url or SIDECAR_DATABASE_URL is required"},
		{"simulate nothing to do", []string{"simulate", "--database-url", "postgres://x/y"}, nil, exitUsage, "nothing to do"},
		{"simulate negative", []string{"simulate", "--database-url", "postgres://x/y", "--tasks", "-1"}, nil, exitUsage, "must not be negative"},
		{"check-config missing url", []string{"check-config"}, nil, exitUsage, "database.url: required"},
		{"run invalid config", []string{"run", "--database-url", "mysql://x", "--cache-url", "mongodb://y"}, nil, exitUsage, "cache.url: unsupported scheme"},
		{"run invalid env", []string{"run"}, []string{"SIDECAR_DATABASE_URL=postgres://h/db", "SIDECAR_DATABASE_MAX_CONNS=lots"}, exitUsage, "database.max_conns (env SIDECAR_DATABASE_MAX_CONNS)"},
		{"demo invalid listen", []string{"demo", "--listen", "nowhere"}, nil, exitUsage, "server.listen"},
		{"demo bad rate", []string{"demo", "--rate", "-1"}, nil, exitUsage, "--rate must be positive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, c.env, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout, stderr)
			}
			if !strings.Contains(stdout+stderr, c.contains) {
				t.Errorf("output lacks %q\nstdout: %s\nstderr: %s", c.contains, stdout, stderr)
			}
		})
	}
}

func TestCheckConfigPrintsRedacted(t *testing.T) {
	code, stdout, stderr := runCLI(t, []string{"SIDECAR_CACHE_URL=redis://:cachepw@127.0.0.1:6379/0"},
		"check-config", "--database-url", "postgres://tasker:dbpw@db:5432/tasker", "--listen", "127.0.0.1:9999")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"listen: 127.0.0.1:9999", "tasker:xxxxx@db:5432", "refresh_interval: 15s"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("effective config lacks %q:\n%s", want, stdout)
		}
	}
	for _, secret := range []string{"dbpw", "cachepw"} {
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("output leaks %q", secret)
		}
	}
}

func TestCheckConfigListsEveryProblem(t *testing.T) {
	file := t.TempDir() + "/bad.yaml"
	if err := os.WriteFile(file, []byte("log:\n  level: loud\ndatabase:\n  url: postgres://h/db\n  max_conns: 0\ncollector:\n  refresh_intervall: 5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, nil, "check-config", "--config", file)
	if code != exitUsage {
		t.Fatalf("exit %d, want 2", code)
	}
	for _, want := range []string{"3 problem(s)", "log.level", "database.max_conns", "collector.refresh_intervall: unknown key (line 7)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestSchemaApply(t *testing.T) {
	db := pgtest.New(t)
	for i := 0; i < 2; i++ { // the second run must be a no-op, not an error
		code, stdout, stderr := runCLI(t, nil, "schema", "apply", "--database-url", db.URL)
		if code != exitOK {
			t.Fatalf("run %d: exit %d: %s", i, code, stderr)
		}
		if !strings.Contains(stdout, "Tasker schema applied") {
			t.Errorf("stdout: %s", stdout)
		}
	}
	conn := db.Conn(t)
	var n int
	if err := conn.QueryRow(context.Background(),
		"SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'tasker_%' AND table_type = 'BASE TABLE'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 13 {
		t.Errorf("want the 13 Tasker tables, got %d", n)
	}
}

func TestSchemaApplyCreatesDatabase(t *testing.T) {
	db := pgtest.New(t)
	// A name that does not exist yet on the same server; dropped at cleanup.
	url := strings.Replace(db.URL, "/"+db.Name, "/"+db.Name+"_new", 1)
	t.Cleanup(func() {
		conn := db.Conn(t)
		_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{db.Name + "_new"}.Sanitize()+" WITH (FORCE)")
	})
	code, _, stderr := runCLI(t, nil, "schema", "apply", "--create-database", "--database-url", url)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestSchemaApplyUnreachable(t *testing.T) {
	code, _, stderr := runCLI(t, nil, "schema", "apply", "--database-url", "postgres://u:topsecret@127.0.0.1:1/db?connect_timeout=2")
	if code != exitFailure {
		t.Fatalf("exit %d, want 1", code)
	}
	if strings.Contains(stderr, "topsecret") {
		t.Errorf("password leaked: %s", stderr)
	}
}

// sidecar runs `sidecar run` in-process and returns its base URL.
type sidecar struct {
	base   string
	stderr *syncBuffer
	stop   func() int
}

func startSidecar(t *testing.T, environ []string, args ...string) *sidecar {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	stderr := &syncBuffer{}
	// Each sidecar keeps its stream checkpoint apart from the others running in parallel.
	environ = append([]string{"SIDECAR_STREAM_CHECKPOINT_FILE=" + t.TempDir() + "/checkpoint.json"}, environ...)
	env := &environment{stdout: io.Discard, stderr: stderr, environ: environ, ready: func(a string) { addrc <- a }}
	done := make(chan int, 1)
	go func() { done <- run(ctx, env, append([]string{"run", "--listen", "127.0.0.1:0"}, args...)) }()
	s := &sidecar{stderr: stderr}
	select {
	case addr := <-addrc:
		s.base = "http://" + addr
	case code := <-done:
		cancel()
		t.Fatalf("sidecar exited %d before serving:\n%s", code, stderr)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("sidecar did not start:\n%s", stderr)
	}
	var once sync.Once
	code := 0
	s.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("sidecar did not stop:\n%s", stderr)
			}
		})
		return code
	}
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *sidecar) get(t *testing.T, path string) (int, map[string]any) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}
	resp, err := client.Get(s.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("GET %s: bad JSON %v: %s", path, err, body)
		}
	} else {
		m = map[string]any{"text": string(body)}
	}
	return resp.StatusCode, m
}

// eventually polls cond until it holds or the deadline passes. The deadline
// is generous: it guards against hangs, it does not measure speed.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond) // poll interval of this bounded wait
	}
	t.Fatalf("timed out after %s waiting for %s", within, what)
	return 0
}

func num(t *testing.T, m map[string]any, path ...string) int64 {
	t.Helper()
	var cur any = m
	for _, p := range path {
		obj, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%s: not an object at %q in %v", strings.Join(path, "."), p, m)
		}
		cur = obj[p]
	}
	f, ok := cur.(float64)
	if !ok {
		t.Fatalf("%s: not a number: %v", strings.Join(path, "."), cur)
	}
	return int64(f)
}
