package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/schema"
)

// The handles the sidecar holds satisfy Querier.
var (
	_ engine.Querier = (*pgxpool.Pool)(nil)
	_ engine.Querier = (*pgx.Conn)(nil)
	_ engine.Querier = pgx.Tx(nil)
)

// coreTables creates the named tables of tasker-core's schema with only
// their keys: Detect looks at names, and the full schema is
// internal/schema's business.
func coreTables(ctx context.Context, t *testing.T, conn *pgx.Conn, tables ...string) {
	t.Helper()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS tasker"); err != nil {
		t.Fatal(err)
	}
	for _, name := range tables {
		if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (id uuid PRIMARY KEY)", name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDetectAndResolve(t *testing.T) {
	rails := func(ctx context.Context, t *testing.T, conn *pgx.Conn) {
		if err := schema.Apply(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	core := func(ctx context.Context, t *testing.T, conn *pgx.Conn) {
		coreTables(ctx, t, conn, engine.Core().Tables.List()...)
	}
	for _, tc := range []struct {
		name  string
		setup []func(context.Context, *testing.T, *pgx.Conn)
		// detect is Detect's kind, or a fragment of its error.
		detect     string
		detectErr  error // errors.Is target, when Detect fails with one
		configured engine.Kind
		resolve    string // Resolve's kind, or a fragment of its error
	}{
		{name: "empty",
			detect:     "no Tasker tables: found neither tasker_tasks (the Rails engine; search_path schemas: public) nor tasker.tasks (tasker-core)",
			detectErr:  engine.ErrNoTables,
			configured: engine.KindAuto, resolve: "no Tasker tables"},
		{name: "rails", setup: []func(context.Context, *testing.T, *pgx.Conn){rails},
			detect: "rails", configured: engine.KindAuto, resolve: "rails"},
		{name: "rails insisted", setup: []func(context.Context, *testing.T, *pgx.Conn){rails},
			detect: "rails", configured: engine.KindRails, resolve: "rails"},
		{name: "core", setup: []func(context.Context, *testing.T, *pgx.Conn){core},
			detect: "core", configured: engine.KindAuto, resolve: "core"},
		{name: "core insisted", setup: []func(context.Context, *testing.T, *pgx.Conn){core},
			detect: "core", configured: engine.KindCore, resolve: "core"},
		{name: "both", setup: []func(context.Context, *testing.T, *pgx.Conn){rails, core},
			detect: "found both the Rails engine's tables and tasker-core's (the Rails engine: tasker_tasks, " +
				"tasker_workflow_steps, tasker_task_transitions, tasker_workflow_step_transitions, tasker_named_tasks, " +
				"tasker_task_namespaces, tasker_named_steps, tasker_workflow_step_edges; tasker-core: tasker.tasks, " +
				"tasker.workflow_steps, tasker.task_transitions, tasker.workflow_step_transitions, tasker.named_tasks, " +
				"tasker.task_namespaces, tasker.named_steps, tasker.workflow_step_edges): set database.engine to rails or core",
			detectErr:  engine.ErrBothEngines,
			configured: engine.KindCore, resolve: "core"},
		{name: "both, rails insisted", setup: []func(context.Context, *testing.T, *pgx.Conn){rails, core},
			detect: "found both", detectErr: engine.ErrBothEngines, configured: engine.KindRails, resolve: "rails"},
		{name: "partial core",
			setup: []func(context.Context, *testing.T, *pgx.Conn){func(ctx context.Context, t *testing.T, c *pgx.Conn) {
				coreTables(ctx, t, c, "tasker.tasks", "tasker.workflow_steps", "tasker.task_transitions",
					"tasker.named_tasks", "tasker.task_namespaces", "tasker.named_steps")
			}},
			detect:     "tasker-core's tables are incomplete: missing tasker.workflow_step_transitions, tasker.workflow_step_edges",
			configured: engine.KindCore,
			resolve:    "tasker-core's tables are incomplete: missing tasker.workflow_step_transitions, tasker.workflow_step_edges"},
		{name: "partial rails",
			setup: []func(context.Context, *testing.T, *pgx.Conn){rails, func(ctx context.Context, t *testing.T, c *pgx.Conn) {
				if _, err := c.Exec(ctx, "DROP TABLE tasker_named_steps CASCADE"); err != nil {
					t.Fatal(err)
				}
			}},
			detect:     "the Rails engine's tables are incomplete: missing tasker_named_steps",
			configured: engine.KindAuto,
			resolve:    "the Rails engine's tables are incomplete: missing tasker_named_steps"},
		{name: "rails insisted on core",
			setup:      []func(context.Context, *testing.T, *pgx.Conn){core},
			detect:     "core",
			configured: engine.KindRails,
			resolve: "the Rails engine's tables are incomplete: missing tasker_tasks, tasker_workflow_steps, " +
				"tasker_task_transitions, tasker_workflow_step_transitions, tasker_named_tasks, tasker_task_namespaces, " +
				"tasker_named_steps, tasker_workflow_step_edges; tasker-core's tables are all there: set database.engine to core or auto"},
		{name: "core insisted on rails",
			setup:      []func(context.Context, *testing.T, *pgx.Conn){rails},
			detect:     "rails",
			configured: engine.KindCore,
			resolve:    "tasker-core's tables are incomplete: missing tasker.tasks, tasker.workflow_steps, tasker.task_transitions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn := pgtest.New(t).Conn(t)
			for _, setup := range tc.setup {
				setup(ctx, t, conn)
			}

			kind, err := engine.Detect(ctx, conn)
			if err != nil {
				if !strings.Contains(err.Error(), tc.detect) {
					t.Errorf("Detect: %v, want %q", err, tc.detect)
				}
				if tc.detectErr != nil && !errors.Is(err, tc.detectErr) {
					t.Errorf("Detect: %v is not %v", err, tc.detectErr)
				}
			} else if string(kind) != tc.detect {
				t.Errorf("Detect = %s, want %q", kind, tc.detect)
			}

			e, err := engine.Resolve(ctx, conn, tc.configured)
			if err != nil {
				if !strings.Contains(err.Error(), tc.resolve) {
					t.Errorf("Resolve(%s): %v, want %q", tc.configured, err, tc.resolve)
				}
			} else if string(e.Kind) != tc.resolve {
				t.Errorf("Resolve(%s) = %s, want %q", tc.configured, e.Kind, tc.resolve)
			}
		})
	}
}

// TestDetectSearchPath checks that the Rails tables are found through the
// session's search_path, as the sidecar's unqualified queries find them,
// and tasker-core's in schema tasker whatever the search_path.
func TestDetectSearchPath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := pgtest.New(t)
	conn := db.Conn(t)
	for _, sql := range []string{"CREATE SCHEMA app", "SET search_path = app"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if err := schema.Apply(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if k, err := engine.Detect(ctx, conn); err != nil || k != engine.KindRails {
		t.Errorf("Detect with search_path app = %s, %v; want rails", k, err)
	}

	// A pool with the default search_path does not see schema app.
	pool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, err = engine.Detect(ctx, pool)
	if !errors.Is(err, engine.ErrNoTables) || !strings.Contains(err.Error(), "search_path schemas: public)") {
		t.Errorf("Detect with search_path public: %v, want no tables in public", err)
	}

	coreTables(ctx, t, conn, engine.Core().Tables.List()...)
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog"); err != nil {
		t.Fatal(err)
	}
	if k, err := engine.Detect(ctx, conn); err != nil || k != engine.KindCore {
		t.Errorf("Detect with search_path pg_catalog = %s, %v; want core", k, err)
	}
}
