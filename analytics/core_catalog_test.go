package analytics

import (
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// TestCoreCatalog: on tasker-core the handler catalog comes from
// named_tasks and named_tasks_named_steps; every namespace, handler and
// step template is compared with the tables read directly, and the
// dependency graph with the edges of the handler's newest task.
func TestCoreCatalog(t *testing.T) {
	db := coreSimulated(t, 200)
	ctx := testCtx(t)
	pool := servicePool(t, db.URL)
	svc := New(pool, Config{}, nil, WithAttachment(&fixedAttachment{e: engine.Core()}))

	cat, err := svc.Handlers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := pool.Query(ctx, `SELECT tn.name::text, count(DISTINCT nt.name)::int FROM tasker.named_tasks nt
	    JOIN tasker.task_namespaces tn USING (task_namespace_uuid) GROUP BY 1 ORDER BY 1`)
	want, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (NamespaceSummary, error) {
		var n NamespaceSummary
		return n, r.Scan(&n.Name, &n.HandlerCount)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 || !slices.Equal(cat.Namespaces, want) || cat.TotalNamespaces != len(want) {
		t.Fatalf("namespaces %v, want %v", cat.Namespaces, want)
	}

	type handlerRow struct{ ns, name, version, uuid string }
	rows, _ = pool.Query(ctx, `SELECT tn.name::text, nt.name::text, nt.version::text, nt.named_task_uuid::text
	    FROM tasker.named_tasks nt JOIN tasker.task_namespaces tn USING (task_namespace_uuid) ORDER BY 1, 2, 3`)
	handlers, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (handlerRow, error) {
		var h handlerRow
		return h, r.Scan(&h.ns, &h.name, &h.version, &h.uuid)
	})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := svc.Namespace(ctx, handlers[0].ns)
	if err != nil || ns.TotalHandlers == 0 {
		t.Fatalf("namespace %s: %+v %v", handlers[0].ns, ns, err)
	}
	ran := 0
	for _, h := range handlers {
		v, err := svc.HandlerReport(ctx, h.ns, h.name, h.version)
		if err != nil {
			t.Fatalf("%s.%s@%s: %v", h.ns, h.name, h.version, err)
		}
		d := v.(*CoreHandlerDetail).Handler
		if d.NamedTaskUUID != h.uuid || d.FullName != h.ns+"."+h.name+"@"+h.version {
			t.Errorf("handler %+v for %+v", d, h)
		}
		rows, _ := pool.Query(ctx, `SELECT ns.name::text, ns.description::text, x.default_retryable, x.default_max_attempts
		    FROM tasker.named_tasks_named_steps x JOIN tasker.named_steps ns USING (named_step_uuid)
		    WHERE x.named_task_uuid = $1 ORDER BY x.created_at, x.ntns_uuid`, h.uuid)
		tmpl, err := pgx.CollectRows(rows, pgx.RowToStructByPos[CoreStepTemplate])
		if err != nil {
			t.Fatal(err)
		}
		if js(d.StepTemplates) != js(tmpl) || len(tmpl) == 0 {
			t.Errorf("%s templates\n got %s\nwant %s", h.name, js(d.StepTemplates), js(tmpl))
		}
		var newest *string
		var edges int
		if err := pool.QueryRow(ctx, `SELECT (SELECT task_uuid::text FROM tasker.tasks WHERE named_task_uuid = $1 ORDER BY task_uuid DESC LIMIT 1)`, h.uuid).Scan(&newest); err != nil {
			t.Fatal(err)
		}
		if newest != nil {
			ran++
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM tasker.workflow_step_edges e JOIN tasker.workflow_steps ws
			    ON ws.workflow_step_uuid = e.to_step_uuid WHERE ws.task_uuid = $1`, *newest).Scan(&edges); err != nil {
				t.Fatal(err)
			}
		}
		g := d.DependencyGraph
		if (newest == nil) != (g.SourceTaskUUID == nil) || newest != nil && *newest != *g.SourceTaskUUID ||
			len(g.Edges) != edges || len(g.ExecutionOrder) != len(g.Nodes) {
			t.Errorf("%s graph %+v, newest task %v with %d edges", h.name, g, newest, edges)
		}
	}
	if ran == 0 {
		t.Error("no handler has run: the graphs were not checked")
	}

	for _, tc := range []struct{ ns, name, version, msg string }{
		{"no_such_namespace", "x", "", MsgNamespaceNotFound},
		{handlers[0].ns, "no_such_handler", "", MsgHandlerNotFound},
		{handlers[0].ns, handlers[0].name, "9.9.9", MsgHandlerNotFound},
	} {
		_, err := svc.HandlerReport(ctx, tc.ns, tc.name, tc.version)
		var nf *NotFoundError
		if !errors.As(err, &nf) || nf.Message != tc.msg {
			t.Errorf("%+v: %v, want %q", tc, err, tc.msg)
		}
	}

	// Without the attachment saying core, the Rails tables are read and
	// are not there.
	rails := New(pool, Config{}, nil, WithAttachment(&fixedAttachment{e: engine.Rails()}))
	if _, err := rails.Handlers(ctx); err == nil {
		t.Error("Rails catalog on a core database: no error")
	}
}
