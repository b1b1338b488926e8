package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Standby is a hot standby of the tests' server (AdminURL), made with
// pg_basebackup -R in a temporary directory and started on a free loopback
// port: a real streaming replica, as an operator would point the sidecar
// at. It is stopped and removed at cleanup.
type Standby struct {
	Server
	// Started is how long making and starting it took, for the report in
	// docs/operations.md#read-replicas.
	Started time.Duration
}

// hbaOnce makes the replication pg_hba entry once per test binary.
var (
	hbaOnce sync.Once
	hbaErr  error
)

// replicationHBA is the line the primary needs for pg_basebackup and the
// standby's WAL receiver: trust for replication connections from the
// loopback, as the shared server trusts every loopback connection
// (scripts/services.sh writes the same line).
const replicationHBA = "host replication all 127.0.0.1/32 trust"

// StartStandby makes a hot standby of AdminURL's server and waits until it
// accepts connections and has replayed everything the primary had written
// when it was made. settings are extra postgresql.conf lines for the
// standby (max_standby_streaming_delay, hot_standby_feedback...).
//
// The primary must accept replication connections from 127.0.0.1; when it
// does not and its pg_hba.conf is a local file this process may write (the
// test machine's own server), the entry is added and the configuration
// reloaded, once. Otherwise the test fails naming the line to add.
func StartStandby(t testing.TB, settings ...string) *Standby {
	t.Helper()
	start := time.Now()
	bin, err := binDir()
	if err != nil {
		t.Fatalf("PostgreSQL server binaries are required for this test: %v", err)
	}
	primary, err := url.Parse(AdminURL())
	if err != nil {
		t.Fatalf("parse admin URL: %v", err)
	}
	hbaOnce.Do(func() { hbaErr = allowReplication() })
	if hbaErr != nil {
		t.Fatalf("the primary at %s must accept replication connections from 127.0.0.1 (add %q to its pg_hba.conf and reload): %v",
			primary.Host, replicationHBA, hbaErr)
	}
	s := &Standby{Server: Server{t: t, bin: bin, port: freePort(t)}}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			t.Fatalf("running as root needs a postgres user to own the standby: %v", err)
		}
		s.asUser = "postgres"
	}
	base, err := os.MkdirTemp("", "sidecar-standby-")
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
	// (Cleanups run last-registered first: the slot, registered below, is
	// dropped before the standby stops, so dropSlot waits for its sender.)
	host, port := primary.Hostname(), cmpOr(primary.Port(), "5432")
	userName := cmpOr(primary.User.Username(), "postgres")
	// -X stream (the default) copies the WAL written during the copy; -R
	// writes primary_conninfo and standby.signal. A reload that added the
	// replication entry takes the postmaster a moment.
	// Without TLS: on the loopback it buys nothing, and a busy machine
	// has seen the WAL stream's TLS connection drop during the copy. A
	// failed copy is made again (it removes its directory itself).
	conninfo := fmt.Sprintf("host=%s port=%s user=%s sslmode=disable", host, port, userName)
	// A replication slot keeps the primary from recycling the WAL the
	// standby has yet to stream: the shared server is busy with the other
	// tests' writes and keeps no WAL of its own (wal_keep_size 0), and has
	// removed the segment right after the copy. It is dropped at cleanup;
	// one left by a test binary that died is dropped by the next (slotName).
	slot := slotName()
	dropStaleSlots()
	t.Cleanup(func() { dropSlot(slot) })
	for try := 1; ; try++ {
		out, err := s.command("pg_basebackup", "-d", conninfo, "-D", s.dir, "-R", "-C", "-S", slot,
			"--no-sync", "--checkpoint=fast").CombinedOutput()
		if err == nil {
			break
		}
		if try == 5 {
			t.Fatalf("pg_basebackup: %v\n%s", err, out)
		}
		t.Logf("pg_basebackup failed (try %d): %v\n%s", try, err, out)
		_ = os.RemoveAll(s.dir)
		dropSlot(slot)
		time.Sleep(time.Duration(try) * 200 * time.Millisecond)
	}
	conf := append([]string{"hot_standby = on", "fsync = off",
		// The primary's own settings may have come along in the copy; these
		// make the standby a separate server on the loopback only.
		fmt.Sprintf("port = %d", s.port), "listen_addresses = '127.0.0.1'", "unix_socket_directories = ''",
		"shared_buffers = 32MB"}, settings...)
	// A Debian cluster keeps postgresql.conf and pg_hba.conf outside its
	// data directory: the copy has neither then.
	s.appendFile("postgresql.conf", strings.Join(conf, "\n"))
	if _, err := os.Stat(filepath.Join(s.dir, "pg_hba.conf")); errors.Is(err, os.ErrNotExist) {
		s.appendFile("pg_hba.conf", "local all all trust\nhost all all 127.0.0.1/32 trust")
	}
	s.Start()
	s.WaitCaughtUp(t, 60*time.Second)
	s.Started = time.Since(start)
	t.Logf("standby of %s on port %d ready after %s", primary.Host, s.port, s.Started.Round(time.Millisecond))
	return s
}

// Start starts the server with the settings written in its data directory
// and waits until it accepts connections.
func (s *Standby) Start() {
	s.t.Helper()
	logFile := filepath.Join(filepath.Dir(s.dir), "log")
	if err := s.ctl("start", "-w", "-t", "60", "-l", logFile); err != nil {
		log, _ := os.ReadFile(logFile)
		s.t.Fatalf("start standby: %v\n%s", err, log)
	}
}

// URLFor is the standby's URL of database name (a pgtest DB's Name).
func (s *Standby) URLFor(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, url.PathEscape(name))
}

// Exec runs sql on the standby's postgres database (pg_wal_replay_pause(),
// pg_wal_replay_resume()).
func (s *Standby) Exec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		t.Fatalf("connect to standby: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("standby: %s: %v", sql, err)
	}
}

// WaitCaughtUp waits until the standby has replayed everything the primary
// had written when it was called.
func (s *Standby) WaitCaughtUp(t testing.TB, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	lsn, err := primaryLSN(ctx)
	if err != nil {
		t.Fatalf("read the primary's WAL position: %v", err)
	}
	var last error
	for ctx.Err() == nil {
		var ok bool
		last = func() error {
			conn, err := pgx.Connect(ctx, s.URL())
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			return conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&ok)
		}()
		if last == nil && ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(filepath.Dir(s.dir), "log"))
	t.Fatalf("standby did not replay up to %s within %s (last error: %v)\n%s", lsn, timeout, last, log)
}

func primaryLSN(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var lsn string
	err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
	return lsn, err
}

// allowReplication makes sure the primary accepts replication connections
// from the loopback: it asks the server (pg_hba_file_rules), and when no
// line allows them adds replicationHBA to the server's pg_hba.conf and
// reloads. Idempotent: the line is added only when missing.
func allowReplication() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return fmt.Errorf("PostgreSQL is required for this test: %w", err)
	}
	defer conn.Close(context.Background())
	var allowed bool
	err = conn.QueryRow(ctx, `
SELECT EXISTS (SELECT 1 FROM pg_hba_file_rules
               WHERE 'replication' = ANY(database) AND type = 'host' AND auth_method = 'trust'
                 AND address IN ('all', '127.0.0.1', '0.0.0.0'))`).Scan(&allowed)
	if err != nil {
		return fmt.Errorf("read pg_hba_file_rules: %w", err)
	}
	if allowed {
		return nil
	}
	var file string
	if err := conn.QueryRow(ctx, "SHOW hba_file").Scan(&file); err != nil {
		return err
	}
	text, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("the server's pg_hba.conf is not readable here: %w", err)
	}
	if !strings.Contains(string(text), replicationHBA) {
		// At the end: PostgreSQL takes the first matching line, so a line
		// above that rejected replication would still win; the test
		// machine's file (scripts/services.sh) has none.
		if err := os.WriteFile(file, append(text, []byte("\n"+replicationHBA+"\n")...), 0); err != nil {
			return fmt.Errorf("add the replication entry to %s: %w", file, err)
		}
	}
	var reloaded bool
	if err := conn.QueryRow(ctx, "SELECT pg_reload_conf()").Scan(&reloaded); err != nil || !reloaded {
		return errors.Join(errors.New("reload the configuration"), err)
	}
	return nil
}

// appendFile appends text as lines to name in the data directory, making it
// when missing, owned by the server's user.
func (s *Standby) appendFile(name, text string) {
	s.t.Helper()
	path := filepath.Join(s.dir, name)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err == nil {
		_, err = f.WriteString("\n" + text + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		s.t.Fatalf("configure standby: %v", err)
	}
	if s.asUser != "" {
		s.run("chown", s.asUser, path)
	}
}

// slotPrefix starts the name of every slot the harness makes; the process
// id follows, so that a slot whose process is gone can be told apart.
const slotPrefix = "sidecar_test_standby_"

var slotSeq atomic.Int64

func slotName() string {
	return fmt.Sprintf("%s%d_%d", slotPrefix, os.Getpid(), slotSeq.Add(1))
}

// dropSlot drops the slot, waiting (bounded) for its WAL sender to go: a
// slot in use cannot be dropped. Errors are ignored: the next test binary
// drops what is left (dropStaleSlots).
func dropSlot(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	for ctx.Err() == nil {
		// Terminating the sender is what the standby's stop does anyway;
		// doing it here does not wait for the standby's own shutdown.
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
		                       WHERE slot_name = $1 AND active_pid IS NOT NULL`, name)
		var n int
		err := conn.QueryRow(ctx, `SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots
		                           WHERE slot_name = $1 AND NOT active`, name).Scan(&n)
		if err == nil {
			var left bool
			if conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, name).Scan(&left) == nil && !left {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dropStaleSlots drops the harness's inactive slots whose process is gone
// (a test binary killed before its cleanup): a forgotten slot would keep
// the shared server's WAL forever.
func dropStaleSlots() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE $1 AND NOT active`, slotPrefix+"%")
	if err != nil {
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, name := range names {
		pid, _, _ := strings.Cut(strings.TrimPrefix(name, slotPrefix), "_")
		if _, err := os.Stat("/proc/" + pid); err == nil {
			continue // its process still runs: a standby being made
		}
		_, _ = conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name)
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
