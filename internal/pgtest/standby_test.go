package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The standby follows the primary: a table written on the primary after
// the copy is read on the standby, which is in recovery and refuses
// writes.
func TestStandbyFollowsThePrimary(t *testing.T) {
	db := New(t)
	sb := StartStandby(t)
	primary := db.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := primary.Exec(ctx, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)"); err != nil {
		t.Fatal(err)
	}
	sb.WaitCaughtUp(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, sb.URLFor(db.Name))
	if err != nil {
		t.Fatalf("connect to the standby's copy of %s: %v", db.Name, err)
	}
	defer conn.Close(context.Background())
	var n int
	var recovery bool
	if err := conn.QueryRow(ctx, "SELECT count(*), pg_is_in_recovery() FROM t").Scan(&n, &recovery); err != nil {
		t.Fatal(err)
	}
	if n != 10 || !recovery {
		t.Fatalf("standby: %d rows, in recovery %v; want 10 rows in recovery", n, recovery)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (11)"); err == nil {
		t.Fatal("the standby accepted a write")
	}
}
