package collector

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Reasons a refresh fails, used as the bounded `reason` label of
// tasker_sidecar_refresh_errors_total. Never put error text in a label.
const (
	ReasonTimeout    = "timeout"
	ReasonConnection = "connection"
	ReasonQuery      = "query"
	ReasonSchema     = "schema"
	// ReasonRecoveryConflict is a statement a hot standby cancelled to
	// replay the primary's changes (IsRecoveryConflict).
	ReasonRecoveryConflict = "recovery_conflict"
)

// Reasons lists every reason label value, so counters can be pre-created.
func Reasons() []string {
	return []string{ReasonTimeout, ReasonConnection, ReasonQuery, ReasonSchema, ReasonRecoveryConflict}
}

// Classify maps a refresh or ping error to one of the Reason constants.
// Order matters: a connect attempt that times out is a connection problem
// (the server is unreachable), not a slow query.
func Classify(err error) string { return classify(err) }

func classify(err error) string {
	var schemaErr *SchemaError
	if errors.As(err, &schemaErr) {
		return ReasonSchema
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || errors.Is(err, ErrClosed) {
		return ReasonConnection
	}
	if IsRecoveryConflict(err) {
		return ReasonRecoveryConflict
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classifySQLState(pgErr.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return ReasonTimeout
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err) {
		return ReasonConnection
	}
	return ReasonQuery
}

// classifySQLState sorts server errors by SQLSTATE
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
func classifySQLState(code string) string {
	switch code {
	case "57014", // query_canceled: statement_timeout, or our cancel on deadline
		"55P03": // lock_not_available: lock_timeout
		return ReasonTimeout
	case "57P01", "57P02", "57P03", // admin/crash shutdown, cannot_connect_now
		"53300", // too_many_connections
		"3D000": // invalid_catalog_name: the database is gone
		return ReasonConnection
	case "42P01", // undefined_table
		"42703", // undefined_column
		"42883", // undefined_function
		"3F000": // invalid_schema_name
		return ReasonSchema
	}
	switch {
	case strings.HasPrefix(code, "08"), // connection_exception
		strings.HasPrefix(code, "28"): // invalid_authorization_specification
		return ReasonConnection
	}
	return ReasonQuery
}
