package dashboards_test

//lint:file-ignore SA1019 the classic dashboard model is deliberate (see dashboards.go)

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"gopkg.in/yaml.v3"

	"github.com/tasker-systems/tasker-sidecar/dashboards"
)

const (
	committedDir   = "../grafana/dashboards"
	datasourcesDir = "../grafana/provisioning/datasources"
	providersDir   = "../grafana/provisioning/dashboards"
)

func TestCommittedDashboardsMatchGenerator(t *testing.T) {
	want := map[string]bool{}
	for _, d := range dashboards.All() {
		want[d.File] = true
		generated, err := d.JSON()
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(filepath.Join(committedDir, d.File))
		if err != nil {
			t.Fatalf("%v (run make dashboards)", err)
		}
		if !bytes.Equal(committed, generated) {
			t.Errorf("grafana/dashboards/%s differs from the generator's output: run make dashboards and commit the result\n%s",
				d.File, firstDifference(committed, generated))
		}
	}
	entries, err := os.ReadDir(committedDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") && !want[e.Name()] {
			t.Errorf("grafana/dashboards/%s is not generated: delete it or add it to dashboards.All", e.Name())
		}
	}
}

// firstDifference shows the first differing line, which is usually enough
// to see what changed.
func firstDifference(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range max(len(la), len(lb)) {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + ":\n  committed: " + x + "\n  generated: " + y
		}
	}
	return ""
}

// TestDashboardsDecodeStrictly reads the committed files back with the
// SDK's strict decoder, which rejects unknown fields and wrong types: what
// Grafana would stumble over on import.
func TestDashboardsDecodeStrictly(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	for _, d := range dashboards.All() {
		raw, err := os.ReadFile(filepath.Join(committedDir, d.File))
		if err != nil {
			t.Fatal(err)
		}
		var model dashboard.Dashboard
		if err := realError(model.UnmarshalJSONStrict(raw)); err != nil {
			t.Errorf("%s: %v", d.File, err)
			continue
		}
		if err := realError(model.Validate()); err != nil {
			t.Errorf("%s: %v", d.File, err)
		}
	}
}

// realError turns the SDK's "no error" (an empty cog.BuildErrors inside a
// non-nil error interface) into nil.
func realError(err error) error {
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

// The parts of the committed JSON the tests look at.
type (
	board struct {
		UID        string     `json:"uid"`
		Title      string     `json:"title"`
		Panels     []panel    `json:"panels"`
		Templating templating `json:"templating"`
		Links      []struct {
			URL string `json:"url"`
		} `json:"links"`
	}
	templating struct {
		List []variable `json:"list"`
	}
	variable struct {
		Type       string         `json:"type"`
		Name       string         `json:"name"`
		Query      any            `json:"query"`
		Datasource *datasourceRef `json:"datasource"`
		Current    struct {
			Value any `json:"value"`
		} `json:"current"`
	}
	panel struct {
		ID          int                      `json:"id"`
		Type        string                   `json:"type"`
		Title       string                   `json:"title"`
		Description string                   `json:"description"`
		Datasource  *datasourceRef           `json:"datasource"`
		GridPos     struct{ X, Y, W, H int } `json:"gridPos"`
		Targets     []target                 `json:"targets"`
	}
	target struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	}
	datasourceRef struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
)

func committedBoards(t *testing.T) map[string]board {
	t.Helper()
	out := map[string]board{}
	for _, d := range dashboards.All() {
		raw, err := os.ReadFile(filepath.Join(committedDir, d.File))
		if err != nil {
			t.Fatal(err)
		}
		var b board
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatalf("%s: %v", d.File, err)
		}
		out[d.File] = b
	}
	return out
}

type provisionedDatasource struct {
	Name     string `yaml:"name"`
	UID      string `yaml:"uid"`
	Type     string `yaml:"type"`
	JSONData struct {
		ExemplarTraceIDDestinations []struct {
			Name          string `yaml:"name"`
			DatasourceUID string `yaml:"datasourceUid"`
		} `yaml:"exemplarTraceIdDestinations"`
	} `yaml:"jsonData"`
}

func provisioned(t *testing.T) map[string]provisionedDatasource {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(datasourcesDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no data source provisioning files in %s: %v", datasourcesDir, err)
	}
	out := map[string]provisionedDatasource{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			APIVersion  int                     `yaml:"apiVersion"`
			Datasources []provisionedDatasource `yaml:"datasources"`
		}
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if doc.APIVersion != 1 {
			t.Errorf("%s: apiVersion %d, want 1", f, doc.APIVersion)
		}
		for _, ds := range doc.Datasources {
			if ds.UID == "" {
				t.Errorf("%s: data source %q has no fixed uid", f, ds.Name)
			}
			if _, dup := out[ds.UID]; dup {
				t.Errorf("%s: uid %q provisioned twice", f, ds.UID)
			}
			out[ds.UID] = ds
		}
	}
	return out
}

func TestDatasourcesAreProvisioned(t *testing.T) {
	sources := provisioned(t)
	if sources[dashboards.PrometheusUID].Type != "prometheus" {
		t.Errorf("uid %s is not a provisioned prometheus data source", dashboards.PrometheusUID)
	}
	if sources[dashboards.JaegerUID].Type != "jaeger" {
		t.Errorf("uid %s is not a provisioned jaeger data source", dashboards.JaegerUID)
	}
	links := sources[dashboards.PrometheusUID].JSONData.ExemplarTraceIDDestinations
	if len(links) == 0 {
		t.Errorf("the Prometheus data source does not link exemplars to traces")
	}
	for _, l := range links {
		if sources[l.DatasourceUID].Type != "jaeger" {
			t.Errorf("exemplar label %q links to %q, not a provisioned jaeger data source", l.Name, l.DatasourceUID)
		}
	}

	for file, b := range committedBoards(t) {
		// A data source is either the dashboard's variable, whose default
		// must be provisioned, or a provisioned uid.
		vars := map[string]string{}
		for _, v := range b.Templating.List {
			if v.Type != "datasource" {
				continue
			}
			uid, _ := v.Current.Value.(string)
			if ds, ok := sources[uid]; !ok || ds.Type != v.Query {
				t.Errorf("%s: variable %s defaults to %q, not a provisioned %v data source", file, v.Name, uid, v.Query)
			}
			vars["${"+v.Name+"}"] = uid
		}
		check := func(where string, ref *datasourceRef) {
			if ref == nil {
				t.Errorf("%s: %s has no data source", file, where)
				return
			}
			uid := ref.UID
			if resolved, ok := vars[uid]; ok {
				uid = resolved
			}
			if ds, ok := sources[uid]; !ok || ds.Type != ref.Type {
				t.Errorf("%s: %s uses %s %q, not provisioned", file, where, ref.Type, ref.UID)
			}
		}
		for _, p := range b.Panels {
			if p.Type == "row" {
				continue
			}
			check("panel "+p.Title, p.Datasource)
			for _, tg := range p.Targets {
				check("panel "+p.Title+" query "+tg.RefID, tg.Datasource)
			}
		}
		for _, v := range b.Templating.List {
			if v.Type == "query" {
				check("variable "+v.Name, v.Datasource)
			}
		}
		for _, l := range b.Links {
			if strings.Contains(l.URL, "explore") && !strings.Contains(l.URL, dashboards.JaegerUID) {
				t.Errorf("%s: explore link %s does not use the provisioned Jaeger", file, l.URL)
			}
		}
	}
}

func TestDashboardProviderLoadsTheGeneratedFiles(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(providersDir, "tasker-sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.APIVersion != 1 || len(doc.Providers) != 1 || doc.Providers[0].Type != "file" || doc.Providers[0].Options.Path == "" {
		t.Errorf("want one file provider with a path, got %+v", doc)
	}
}

func TestDashboardStructure(t *testing.T) {
	uids := map[string]string{}
	for file, b := range committedBoards(t) {
		if prev, dup := uids[b.UID]; dup || b.UID == "" {
			t.Errorf("%s: uid %q empty or also used by %s", file, b.UID, prev)
		}
		uids[b.UID] = file
		ids := map[int]bool{}
		var cells [][2]int
		for _, p := range b.Panels {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: panel %q: id %d empty or repeated", file, p.Title, p.ID)
			}
			ids[p.ID] = true
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: panel %q leaves the grid: %+v", file, p.Title, g)
			}
			for x := g.X; x < g.X+g.W; x++ {
				for y := g.Y; y < g.Y+g.H; y++ {
					if slices.Contains(cells, [2]int{x, y}) {
						t.Errorf("%s: panel %q overlaps another at %d,%d", file, p.Title, x, y)
					}
					cells = append(cells, [2]int{x, y})
				}
			}
			if p.Type == "row" {
				continue
			}
			if p.Title == "" || p.Description == "" {
				t.Errorf("%s: panel %d needs a title and a description", file, p.ID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q: query %q empty or refId repeated", file, p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				// The generator undoes encoding/json's \u003c escapes,
				// which is only safe while no text has a backslash.
				if strings.Contains(tg.Expr, `\`) || strings.Contains(p.Description, `\`) {
					t.Errorf("%s: panel %q has a backslash", file, p.Title)
				}
				// Fixed windows would not follow the scrape interval and
				// could not be shortened by the end-to-end test.
				if strings.Contains(tg.Expr, "[") && !strings.Contains(tg.Expr, "[$__rate_interval]") {
					t.Errorf("%s: panel %q: range windows must be [$__rate_interval]: %s", file, p.Title, tg.Expr)
				}
			}
		}
	}
}
