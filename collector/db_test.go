package collector

import (
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// closedPort returns a local TCP port with nothing listening on it.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestOpenWhileDatabaseDown(t *testing.T) {
	t.Parallel()
	logger, logs := captureLogger(t)
	reg := prometheus.NewRegistry()
	db, err := Open(DBConfig{URL: secret.URL("postgres://sidecar:s3cr3t@" + closedPort(t) + "/tasker?sslmode=disable&connect_timeout=2")}, reg, logger)
	if err != nil {
		t.Fatalf("Open must not need the database: %v", err)
	}
	defer db.Close()

	if _, err := db.Ping(testCtx(t)); err == nil || classify(err) != ReasonConnection {
		t.Errorf("Ping err = %v (reason %s), want a connection error", err, classify(err))
	} else if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("Ping error leaks the password: %v", err)
	}
	if _, err := db.Refresh(testCtx(t)); classify(err) != ReasonConnection {
		t.Errorf("Refresh err = %v (reason %s), want a connection error", err, classify(err))
	}
	if _, err := db.CheckSchema(testCtx(t)); err == nil {
		t.Error("CheckSchema succeeded against a closed port")
	}
	if db.MissingTables() != nil {
		t.Errorf("MissingTables = %v, want nil when never checked", db.MissingTables())
	}
	// Pool metrics still scrape while the database is down.
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Errorf("gather: %d metrics, %v", n, err)
	}
	if out := logs.String(); !strings.Contains(out, "database unreachable") || strings.Contains(out, "s3cr3t") {
		t.Errorf("logs should report the outage once and never the password:\n%s", out)
	}
	if n := strings.Count(logs.String(), "database unreachable"); n != 1 {
		t.Errorf("outage logged %d times, want once", n)
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, pgtest.NewTasker(t).URL)
	db.Close()
	db.Close() // idempotent
	if _, err := db.Ping(testCtx(t)); err != ErrClosed {
		t.Errorf("Ping after Close = %v, want ErrClosed", err)
	}
	if _, err := db.Refresh(testCtx(t)); err != ErrClosed || classify(err) != ReasonConnection {
		t.Errorf("Refresh after Close = %v, want ErrClosed classified as connection", err)
	}
}

func TestOpenRejectsBadURLWithoutLeakingPassword(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"postgres://sidecar:s3cr3t@db.example:notaport/tasker",
		"postgres://sidecar:s3cr3t@[::1/tasker",
		"postgres://sidecar:s3cr3t@db.example/tasker?sslmode=bogus",
		"postgres://sidecar:s3cr3t%zz@db.example/tasker",
		"postgres://sidecar:s3c@r3t@db.example:x/tasker",
		"postgres://sidecar@db.example/tasker?password=s3cr3t&connect_timeout=soon",
		"host=db.example password=s3cr3t port=notaport",
		"host=db.example password='s3cr3t' sslmode=bogus",
		"postgres://sidecar:s3cr3t@db.example/tasker?statement_timeout=1&pool_max_conns=zero",
	} {
		_, err := Open(DBConfig{URL: secret.URL(u)}, nil, nil)
		if err == nil {
			t.Errorf("Open(%q) succeeded, want a parse error", u)
			continue
		}
		for _, secret := range []string{"s3cr3t", "s3c@r3t", "r3t@", "s3cr3t%zz"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Open(%q) error leaks %q: %v", u, secret, err)
			}
		}
		t.Logf("%s -> %v", u, err)
	}
}

func TestRedacted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://sidecar:s3cr3t@db:5432/tasker?sslmode=disable", "postgres://sidecar:xxxxx@db:5432/tasker?sslmode=disable"},
		{"postgres://sidecar@db/tasker", "postgres://sidecar@db/tasker"},
		{"postgresql://db/tasker?password=s3cr3t", "postgresql://db/tasker?password=xxxxx"},
		{"postgres://db/tasker?user=x&sslpassword=s3cr3t", "postgres://db/tasker?user=x&sslpassword=xxxxx"},
		{"host=db password=s3cr3t dbname=tasker", "host=db password=xxxxx dbname=tasker"},
		{"host=db password = 's3 cr3t' dbname=tasker", "host=db password = xxxxx dbname=tasker"},
	} {
		db, err := Open(DBConfig{URL: secret.URL(tc.in)}, nil, nil)
		if err != nil {
			t.Errorf("Open(%q): %v", tc.in, err)
			continue
		}
		if got := db.Redacted(); got != tc.want {
			t.Errorf("Redacted(%q) = %q, want %q", tc.in, got, tc.want)
		}
		db.Close()
	}
}

func TestPoolMetrics(t *testing.T) {
	t.Parallel()
	db, reg := openTest(t, pgtest.NewTasker(t).URL)
	if _, err := db.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(newPoolCollector(db.pool.Stat))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	// One Ping dialled one connection and returned it idle.
	want := `
# HELP tasker_sidecar_db_pool_max_connections Configured maximum size of the pool.
# TYPE tasker_sidecar_db_pool_max_connections gauge
tasker_sidecar_db_pool_max_connections 3
# HELP tasker_sidecar_db_pool_new_connections_total Connections opened.
# TYPE tasker_sidecar_db_pool_new_connections_total counter
tasker_sidecar_db_pool_new_connections_total 1
# HELP tasker_sidecar_db_pool_connections Connections currently in the pool (acquired, idle and constructing).
# TYPE tasker_sidecar_db_pool_connections gauge
tasker_sidecar_db_pool_connections 1
# HELP tasker_sidecar_db_pool_acquired_connections Connections currently checked out of the pool.
# TYPE tasker_sidecar_db_pool_acquired_connections gauge
tasker_sidecar_db_pool_acquired_connections 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"tasker_sidecar_db_pool_max_connections", "tasker_sidecar_db_pool_new_connections_total",
		"tasker_sidecar_db_pool_connections", "tasker_sidecar_db_pool_acquired_connections"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(newPoolCollector(db.pool.Stat)); n != 13 {
		t.Errorf("pool collector exports %d metrics, want 13", n)
	}
	// The same registry cannot take a second pool: a wiring bug surfaces at
	// Open instead of as a scrape error.
	if _, err := Open(DBConfig{URL: secret.URL("postgres://x@127.0.0.1/x")}, reg, nil); err == nil {
		t.Error("second Open on the same registry succeeded")
	}
}
