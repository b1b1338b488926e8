// Package dashboards generates the Grafana dashboards of the sidecar with the
// Grafana Foundation SDK. The JSON Grafana loads is committed under
// grafana/dashboards/; `go run ./dashboards/cmd/generate` rewrites it and a
// test fails when the two differ, so the dashboards cannot drift from this
// code. The end-to-end test evaluates every panel query against a real
// Prometheus scraping a real sidecar, so they cannot drift from the metrics
// either.
//
// Adding a panel is one function returning a panel, listed in its
// dashboard's rows.
package dashboards

// The SDK marks its classic dashboard model deprecated in favour of the v2
// schema, which only Grafana 12 with dynamic dashboards enabled loads. The
// classic model (schemaVersion 42) is what every Grafana in use imports and
// provisions from files, so it is the one generated here.
//lint:file-ignore SA1019 the classic dashboard model is deliberate (see above)

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Data source uids, provisioned by grafana/provisioning/datasources. The
// dashboards select Prometheus through a variable whose default is
// PrometheusUID, so they work unchanged with the provisioned data source and
// can be pointed at another one from the dashboard.
const (
	PrometheusUID = "tasker-prometheus"
	JaegerUID     = "tasker-jaeger"
)

// Tag is on every dashboard, for Grafana's dashboard links and search.
const Tag = "tasker-sidecar"

// gridWidth is Grafana's grid: 24 columns.
const gridWidth = 24

// Dashboard is one generated dashboard.
type Dashboard struct {
	// File is the name of its JSON under grafana/dashboards/.
	File  string
	board board
}

// All returns the dashboards, in the order the files are listed.
func All() []Dashboard {
	return []Dashboard{
		{File: "tasker-overview.json", board: overview()},
		{File: "tasker-workflows.json", board: workflows()},
		{File: "tasker-cache.json", board: cache()},
		{File: "tasker-sidecar.json", board: sidecar()},
		{File: "tasker-core.json", board: coreOps()},
	}
}

// Build returns the dashboard model.
func (d Dashboard) Build() (dashboard.Dashboard, error) {
	return d.board.build()
}

// JSON returns the file content: indented, with a final newline, stable
// between runs.
func (d Dashboard) JSON() ([]byte, error) {
	model, err := d.Build()
	if err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", d.File, err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(model); err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", d.File, err)
	}
	// PromQL is full of <, > and &, which encoding/json escapes (the SDK's
	// MarshalJSON methods included) and which make the committed files hard
	// to review. Nothing here contains a backslash, so every \u003c is an
	// escape; a test checks that.
	unescape := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&")
	return []byte(unescape.Replace(buf.String())), nil
}

// board is what a dashboard is made of before layout.
type board struct {
	uid, title, description string
	variables               []cog.Builder[dashboard.VariableModel]
	links                   []cog.Builder[dashboard.DashboardLink]
	rows                    []row
}

// row is a titled band of panels, laid out left to right and wrapped at the
// grid's width.
type row struct {
	title  string
	panels []panel
}

// panel is one visualisation and its size in grid units.
type panel struct {
	width, height uint32
	builder       cog.Builder[dashboard.Panel]
}

// Panel sizes. Heights are in grid rows of 30 px.
func full(b cog.Builder[dashboard.Panel]) panel    { return panel{gridWidth, 8, b} }
func half(b cog.Builder[dashboard.Panel]) panel    { return panel{gridWidth / 2, 8, b} }
func third(b cog.Builder[dashboard.Panel]) panel   { return panel{gridWidth / 3, 8, b} }
func quarter(b cog.Builder[dashboard.Panel]) panel { return panel{gridWidth / 4, 4, b} }

func (b board) build() (dashboard.Dashboard, error) {
	d := dashboard.NewDashboardBuilder(b.title).
		Uid(b.uid).
		Description(b.description).
		Tags([]string{Tag}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		Variables(append([]cog.Builder[dashboard.VariableModel]{datasourceVariable()}, b.variables...)).
		Links(append([]cog.Builder[dashboard.DashboardLink]{siblingDashboards()}, b.links...))

	// Positions and ids are set here rather than by the SDK's automatic
	// layout, which places a panel that does not fit past the grid's edge.
	var id, y uint32
	for _, r := range b.rows {
		id++
		d.WithRow(dashboard.NewRowBuilder(r.title).Id(id).GridPos(dashboard.GridPos{X: 0, Y: y, W: gridWidth, H: 1}))
		y++
		var x, lineHeight uint32
		for _, p := range r.panels {
			if p.width == 0 || p.width > gridWidth {
				return dashboard.Dashboard{}, fmt.Errorf("row %q: panel width %d outside 1..%d", r.title, p.width, gridWidth)
			}
			if x+p.width > gridWidth {
				x, y, lineHeight = 0, y+lineHeight, 0
			}
			built, err := p.builder.Build()
			if err != nil {
				return dashboard.Dashboard{}, err
			}
			id++
			panelID := id
			built.Id = &panelID
			built.GridPos = &dashboard.GridPos{X: x, Y: y, W: p.width, H: p.height}
			d.WithPanel(placed(built))
			x += p.width
			lineHeight = max(lineHeight, p.height)
		}
		y += lineHeight
	}
	return d.Build()
}

// placed hands an already built and positioned panel to the dashboard
// builder.
type placed dashboard.Panel

func (p placed) Build() (dashboard.Panel, error) { return dashboard.Panel(p), nil }

// datasourceVariable is the Prometheus data source every query uses.
func datasourceVariable() cog.Builder[dashboard.VariableModel] {
	return dashboard.NewDatasourceVariableBuilder("datasource").
		Label("Data source").
		Type("prometheus").
		Current(option("Prometheus", PrometheusUID))
}

// siblingDashboards links the sidecar's dashboards to each other.
func siblingDashboards() cog.Builder[dashboard.DashboardLink] {
	return dashboard.NewDashboardLinkBuilder("Tasker").
		Type(dashboard.DashboardLinkTypeDashboards).
		Tags([]string{Tag}).
		AsDropdown(true).
		IncludeVars(true).
		KeepTime(true)
}

func option(text, value string) dashboard.VariableOption {
	return dashboard.VariableOption{
		Text:  dashboard.StringOrArrayOfString{String: &text},
		Value: dashboard.StringOrArrayOfString{String: &value},
	}
}
