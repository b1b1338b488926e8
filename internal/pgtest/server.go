package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"testing"
)

// Server is a private PostgreSQL cluster that a test may stop and start, to
// prove how the sidecar behaves while its database is down. The shared server
// cannot be stopped without breaking every other test running beside it.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	// asUser runs the server binaries as the postgres user when the tests run
	// as root, which PostgreSQL refuses.
	asUser string
}

// StartServer initialises a cluster in a temporary directory and starts it on
// a free loopback port with trust authentication. It is stopped at cleanup.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Fatalf("PostgreSQL server binaries are required for this test: %v", err)
	}
	s := &Server{t: t, bin: bin, port: freePort(t)}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			t.Fatalf("running as root needs a postgres user to own the test cluster: %v", err)
		}
		s.asUser = "postgres"
	}
	base, err := os.MkdirTemp("", "sidecar-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = filepath.Join(base, "data")
	if s.asUser != "" {
		s.run("chown", "-R", s.asUser, base)
	}
	t.Cleanup(func() {
		_ = s.ctl("stop", "-m", "immediate")
		_ = os.RemoveAll(base)
	})
	s.pg("initdb", "-D", s.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	s.Start()
	return s
}

// URL is the connection URL of the server's postgres database.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Start starts the server and waits until it accepts connections.
func (s *Server) Start() {
	s.t.Helper()
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off", s.port)
	if err := s.ctl("start", "-w", "-t", "60", "-o", opts, "-l", filepath.Join(filepath.Dir(s.dir), "log")); err != nil {
		log, _ := os.ReadFile(filepath.Join(filepath.Dir(s.dir), "log"))
		s.t.Fatalf("start test PostgreSQL: %v\n%s", err, log)
	}
}

// Stop shuts the server down at once, dropping every connection.
func (s *Server) Stop() {
	s.t.Helper()
	if err := s.ctl("stop", "-w", "-m", "immediate"); err != nil {
		s.t.Fatalf("stop test PostgreSQL: %v", err)
	}
}

func (s *Server) ctl(args ...string) error {
	args = append([]string{"-D", s.dir}, args...)
	cmd := s.command("pg_ctl", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

func (s *Server) pg(name string, args ...string) {
	s.t.Helper()
	if out, err := s.command(name, args...).CombinedOutput(); err != nil {
		s.t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, name)
	if s.asUser != "" {
		return exec.Command("runuser", append([]string{"-u", s.asUser, "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

func (s *Server) run(name string, args ...string) {
	s.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		s.t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

// binDir finds the newest installed server (Debian keeps them per version).
func binDir() (string, error) {
	if dir := os.Getenv("SIDECAR_TEST_PG_BIN"); dir != "" {
		return dir, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(matches) == 0 {
		if p, err := exec.LookPath("pg_ctl"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("no pg_ctl under /usr/lib/postgresql/*/bin or on PATH (set SIDECAR_TEST_PG_BIN)")
	}
	sort.Strings(matches)
	return filepath.Dir(matches[len(matches)-1]), nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
