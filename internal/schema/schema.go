// Package schema holds a Tasker-compatible database schema for demos and tests,
// and the list of tables the sidecar reads.
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

// DDL returns the SQL that creates the Tasker tables, indexes and view.
func DDL() string { return ddl }

// Required lists the Tasker tables the sidecar queries. A database missing any of
// them is not a Tasker database the sidecar can observe.
var Required = engine.RailsTables.List()

// Apply creates the schema. It is idempotent, so it can run on every demo start.
func Apply(ctx context.Context, conn *pgx.Conn) error {
	// Simple protocol: the file holds many statements, which the extended
	// protocol would refuse.
	if _, err := conn.Exec(ctx, ddl, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("apply Tasker schema: %w", err)
	}
	return nil
}
