package collector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("health queries: %w", err) }
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"schema error", &SchemaError{Missing: []string{"tasker_tasks"}}, ReasonSchema},
		{"wrapped schema error", wrap(&SchemaError{Missing: []string{"tasker_tasks"}}), ReasonSchema},
		{"undefined table", &pgconn.PgError{Code: "42P01"}, ReasonSchema},
		{"undefined column", wrap(&pgconn.PgError{Code: "42703"}), ReasonSchema},
		{"statement timeout", wrap(&pgconn.PgError{Code: "57014"}), ReasonTimeout},
		{"lock timeout", &pgconn.PgError{Code: "55P03"}, ReasonTimeout},
		{"context deadline", wrap(context.DeadlineExceeded), ReasonTimeout},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, ReasonConnection},
		{"database dropped", &pgconn.PgError{Code: "3D000"}, ReasonConnection},
		{"auth failed", &pgconn.PgError{Code: "28P01"}, ReasonConnection},
		{"connection failure", &pgconn.PgError{Code: "08006"}, ReasonConnection},
		{"too many connections", &pgconn.PgError{Code: "53300"}, ReasonConnection},
		{"connect error", &pgconn.ConnectError{}, ReasonConnection},
		{"net error", wrap(&net.OpError{Op: "read", Err: errors.New("reset")}), ReasonConnection},
		{"eof", wrap(io.ErrUnexpectedEOF), ReasonConnection},
		{"closed", ErrClosed, ReasonConnection},
		{"permission denied", &pgconn.PgError{Code: "42501"}, ReasonQuery},
		{"division by zero", &pgconn.PgError{Code: "22012"}, ReasonQuery},
		{"anything else", errors.New("boom"), ReasonQuery},
		// PostgreSQL's postgres.c, ProcessInterrupts and ProcessRecoveryConflictInterrupt.
		{"recovery conflict, statement", wrap(&pgconn.PgError{Code: "40001", Message: "canceling statement due to conflict with recovery"}), ReasonRecoveryConflict},
		{"recovery conflict, session", &pgconn.PgError{Code: "40001", Message: "terminating connection due to conflict with recovery"}, ReasonRecoveryConflict},
		{"recovery conflict, buffer pin deadlock", &pgconn.PgError{Code: "40P01", Message: "canceling statement due to conflict with recovery"}, ReasonRecoveryConflict},
		// The message is translated under lc_messages; the code is what
		// counts (the sidecar's read-only reads meet no other 40001).
		{"recovery conflict, translated message", &pgconn.PgError{Code: "40001", Message: "storniere Anweisung wegen Konflikt mit der Wiederherstellung"}, ReasonRecoveryConflict},
		{"deadlock that is not one with replay", &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}, ReasonQuery},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("%s: Classify(%v) = %s, want %s", tc.name, tc.err, got, tc.want)
		}
	}
}
