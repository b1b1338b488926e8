package analytics

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

func TestCompareVersions(t *testing.T) {
	got := sortVersions([]string{"1.10.0", "0.1.0", "1.2.0", "1.2", "2.0.0", "1.2.0"})
	want := []string{"0.1.0", "1.2", "1.2.0", "1.10.0", "2.0.0"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestTemplateGraphOrder(t *testing.T) {
	g := templateGraph(
		[]StepTemplate{{Name: "validate"}, {Name: "charge"}, {Name: "notify"}, {Name: "audit"}},
		nil,
		[]TemplateEdge{{"validate", "charge"}, {"charge", "notify"}, {"validate", "audit"}, {"charge", "notify"}},
		nil)
	if want := []string{"validate", "charge", "notify", "audit"}; !reflect.DeepEqual(g.ExecutionOrder, want) {
		t.Errorf("execution order %v, want %v", g.ExecutionOrder, want)
	}
	if len(g.Edges) != 3 {
		t.Errorf("duplicate edge kept: %v", g.Edges)
	}
}

// commit runs build in its own committed transaction, for tests that read
// through the service's pool.
func commit(t *testing.T, db pgtest.DB, build func(f *fixture)) {
	t.Helper()
	f := newFixture(t, db)
	build(f)
	if err := f.tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestHandlerCatalog(t *testing.T) {
	db := pgtest.NewTasker(t)
	var v1Task int64
	commit(t, db, func(f *fixture) {
		charge1 := f.namedTask("pay", "charge", "1.0.0")
		f.namedTask("pay", "charge", "1.10.0")
		f.namedTask("pay", "charge", "1.2.0")
		f.namedTask("pay", "refund", "0.1.0")
		f.namedTask("ship", "send", "2.0.0")
		f.namedTask("ship", "send", "1.0.0")
		for _, s := range []struct {
			name      string
			retryable bool
			limit     int32
		}{{"validate", true, 3}, {"charge_card", false, 1}, {"notify", true, 5}} {
			f.exec(`INSERT INTO tasker_named_tasks_named_steps (named_task_id, named_step_id, skippable,
				default_retryable, default_retry_limit, created_at, updated_at) VALUES ($1, $2, false, $3, $4, now(), now())`,
				charge1, f.namedStep(s.name), s.retryable, s.limit)
		}
		f.exec(`UPDATE tasker_named_tasks SET description = 'Charges a card', configuration = '{"timeout": 30}' WHERE named_task_id = $1`, charge1)
		// An older run with another shape, then the latest one.
		old := f.task(charge1, 2*time.Hour)
		f.edge(f.step(old, "validate", stepOpts{}), f.step(old, "notify", stepOpts{}))
		v1Task = f.task(charge1, time.Hour)
		v := f.step(v1Task, "validate", stepOpts{})
		c := f.step(v1Task, "charge_card", stepOpts{})
		n := f.step(v1Task, "notify", stepOpts{})
		f.edge(v, c)
		f.edge(c, n)
	})
	svc := New(servicePool(t, db.URL), Config{}, nil)
	ctx := testCtx(t)

	cat, err := svc.Handlers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantNS := []NamespaceSummary{{"pay", 2}, {"ship", 1}}
	if !reflect.DeepEqual(cat.Namespaces, wantNS) || cat.TotalNamespaces != 2 || cat.GeneratedAt.Std().IsZero() {
		t.Errorf("catalog %+v", cat)
	}

	ns, err := svc.Namespace(ctx, "pay")
	if err != nil {
		t.Fatal(err)
	}
	wantH := []HandlerSummary{
		{Name: "charge", Namespace: "pay", Versions: []string{"1.0.0", "1.2.0", "1.10.0"}, LatestVersion: "1.10.0", HandlerCount: 3},
		{Name: "refund", Namespace: "pay", Versions: []string{"0.1.0"}, LatestVersion: "0.1.0", HandlerCount: 1},
	}
	if !reflect.DeepEqual(ns.Handlers, wantH) || ns.TotalHandlers != 2 {
		t.Errorf("namespace %+v", ns)
	}
	if _, err := svc.Namespace(ctx, "nope"); !errors.Is(err, ErrNotFound) || err.Error() != MsgNamespaceNotFound {
		t.Errorf("unknown namespace: %v", err)
	}

	for _, tc := range []struct {
		ns, name, version string
		want              string // version picked, or the 404 message
	}{
		{"pay", "charge", "", "1.0.0"},
		{"pay", "charge", "0.1.0", "1.0.0"}, // the default, missing: lowest
		{"pay", "charge", "latest", "1.10.0"},
		{"pay", "charge", "1.2.0", "1.2.0"},
		{"pay", "refund", "", "0.1.0"},
		{"ship", "send", "", "1.0.0"},
		{"pay", "charge", "9.9.9", MsgHandlerNotFound},
		{"pay", "nope", "", MsgHandlerNotFound},
		{"nope", "charge", "", MsgNamespaceNotFound},
	} {
		d, err := svc.Handler(ctx, tc.ns, tc.name, tc.version)
		switch {
		case err != nil:
			if !errors.Is(err, ErrNotFound) || err.Error() != tc.want {
				t.Errorf("%s/%s@%q: error %v, want %q", tc.ns, tc.name, tc.version, err, tc.want)
			}
		case d.Handler.Version != tc.want:
			t.Errorf("%s/%s@%q: picked %s, want %s", tc.ns, tc.name, tc.version, d.Handler.Version, tc.want)
		}
	}

	d, err := svc.Handler(ctx, "pay", "charge", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	h := d.Handler
	wantT := []StepTemplate{
		{Name: "validate", DependentSystem: "fixture", DefaultRetryable: true, DefaultRetryLimit: 3},
		{Name: "charge_card", DependentSystem: "fixture", DefaultRetryable: false, DefaultRetryLimit: 1},
		{Name: "notify", DependentSystem: "fixture", DefaultRetryable: true, DefaultRetryLimit: 5},
	}
	if !reflect.DeepEqual(h.StepTemplates, wantT) {
		t.Errorf("templates %+v", h.StepTemplates)
	}
	if string(h.Configuration) != `{"timeout": 30}` || deref(h.Description) != "Charges a card" || h.FullName != "pay.charge@1.0.0" ||
		!slices.Equal(h.AvailableVersions, []string{"1.0.0", "1.2.0", "1.10.0"}) {
		t.Errorf("handler %+v", h)
	}
	wantG := TemplateGraph{
		Nodes:          []string{"validate", "charge_card", "notify"},
		Edges:          []TemplateEdge{{"validate", "charge_card"}, {"charge_card", "notify"}},
		ExecutionOrder: []string{"validate", "charge_card", "notify"},
		SourceTaskID:   &v1Task,
	}
	if !reflect.DeepEqual(h.DependencyGraph, wantG) {
		t.Errorf("graph %+v, want %+v", h.DependencyGraph, wantG)
	}
	// A handler that never ran has its templates but no edges.
	d, err = svc.Handler(ctx, "pay", "charge", "latest")
	if err != nil {
		t.Fatal(err)
	}
	if g := d.Handler.DependencyGraph; g.SourceTaskID != nil || len(g.Edges) != 0 || string(d.Handler.Configuration) != `"{}"` {
		t.Errorf("never-run handler: %+v, configuration %s", g, d.Handler.Configuration)
	}
}
