// Package schema holds Tasker-compatible database schemas for demos and tests,
// one per engine: the Rails engine's (tasker.sql) and tasker-core's
// (tasker_core.sql), and the list of Rails tables the sidecar reads.
package schema

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

//go:embed tasker.sql
var ddl string

//go:embed tasker_core.sql
var coreDDL string

// DDL returns the SQL that creates the Tasker tables, indexes and view.
func DDL() string { return ddl }

// CoreDDL returns the SQL that creates tasker-core's schema `tasker`: its
// tables, constraints and indexes, and a UUIDv7 generator where PostgreSQL
// has none.
func CoreDDL() string { return coreDDL }

// Required lists the Tasker tables the sidecar queries. A database missing any of
// them is not a Tasker database the sidecar can observe.
var Required = engine.RailsTables.List()

// Apply creates the Rails engine's schema. It is idempotent, so it can run on
// every demo start.
func Apply(ctx context.Context, conn *pgx.Conn) error {
	return run(ctx, conn, ddl, "Tasker")
}

// ApplyCore creates tasker-core's schema. It is idempotent, like Apply.
func ApplyCore(ctx context.Context, conn *pgx.Conn) error {
	return run(ctx, conn, coreDDL, "tasker-core")
}

func run(ctx context.Context, conn *pgx.Conn, sql, name string) error {
	// Simple protocol: the file holds many statements, which the extended
	// protocol would refuse.
	if _, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("apply %s schema: %w", name, err)
	}
	return nil
}
