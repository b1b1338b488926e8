package api

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// PathFront is the front page: what this sidecar is attached to, whether it
// is ready, and links to every route and to the docs (issue 15).
const PathFront = "/"

// Front is what the front page shows besides the routes and readiness,
// which the server knows itself. Every field may be left zero; the page
// then says "unknown".
type Front struct {
	// Version and Revision are the build's (prometheus/common/version, as
	// tasker_sidecar_build_info reports them).
	Version  string
	Revision string

	// DatabaseURL is database.url; only its host and database name are
	// shown, never its user or password, so the caller may pass the
	// redacted form (secret.URL.String()) and should.
	DatabaseURL string
	// Engine is the engine the last schema check found
	// (collector.DB.Engine); nil or false before one did.
	Engine func() (engine.Engine, bool)
	// ConfiguredEngine is database.engine.
	ConfiguredEngine engine.Kind
	// Replication is where the database is, primary or hot standby, and
	// a standby's lag (collector.DB.Replication); nil or not Known shows
	// nothing.
	Replication func() (collector.Replication, time.Time)

	// Cache is the cache store and coordination strategy, as /capabilities
	// reports them; nil when there is none to report.
	Cache func() FrontCache

	// DocsURL is where the docs are browsed (a directory URL ending in
	// "/"); empty shows the file names without links.
	DocsURL string
}

// FrontCache is the cache store as the front page shows it.
type FrontCache struct {
	// Store names the store (product and version, or its kind).
	Store string
	// Address is the store's host:port list (detector.Identity.Address,
	// never credentials).
	Address   string
	Reachable bool
	// Strategy and Mechanism are the detector's coordination strategy and
	// the mechanism it settled on.
	Strategy  string
	Mechanism string
}

// frontDocs are the docs the front page links, in reading order.
var frontDocs = []string{
	"endpoints.md", "operations.md", "architecture.md", "metrics.md", "alerts.md", "analytics.md",
	"cache-detection.md", "ttl.md", "stream.md", "traces.md", "tasker-semantics.md", "tasker-core.md", "benchmarks.md",
}

// frontDescriptions say what the well-known routes answer; the page lists
// every GET route the router has, described or not.
var frontDescriptions = map[string]string{
	PathLive:          "liveness probe: touches nothing",
	PathReady:         "readiness probe: every readiness check",
	PathStatus:        "Tasker's health status: the refresher's counts",
	PathMetrics:       "Prometheus exposition",
	PathTaskerMetrics: "the same exposition, at Tasker's path",
	"/capabilities":   "the cache detection report and the engine",
	PathPerformance:   "analytics: system performance",
	PathBottlenecks:   "analytics: bottlenecks",
	PathHandlers:      "the handler catalog",
	PathV1Performance: "tasker-core's own analytics API, drop-in (tasker-core databases only)",
	PathV1Bottlenecks: "tasker-core's own analytics API, drop-in (tasker-core databases only)",
}

type frontRoute struct {
	Path        string
	Link        bool // false for a template with parameters (":id")
	Public      bool // answered without credentials
	Description string
}

type frontDoc struct {
	Name string
	URL  string // empty: no link
}

type frontCheck struct {
	Name   string
	Status string
}

type frontPage struct {
	Version, Revision string
	DBHost, DBName    string
	Engine            string
	Configured        string
	Role              string
	Cache             *FrontCache
	Ready             bool
	ReadyMessage      string
	Checks            []frontCheck
	Routes            []frontRoute
	Docs              []frontDoc
	AuthOn            bool
}

// frontTemplate escapes every value (html/template); it needs no script,
// style sheet or image from anywhere.
var frontTemplate = template.Must(template.New("front").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tasker-sidecar</title>
</head>
<body>
<h1>tasker-sidecar</h1>
<p>Version {{or .Version "unknown"}}{{with .Revision}}, revision {{.}}{{end}}</p>

<h2>Attached to</h2>
<table>
<tr><th>Database</th><td>{{or .DBName "unknown"}} on {{or .DBHost "unknown"}}{{with .Role}} ({{.}}){{end}}</td></tr>
<tr><th>Engine</th><td>{{or .Engine "not detected yet"}} (database.engine: {{or .Configured "auto"}})</td></tr>
{{- with .Cache}}
<tr><th>Cache store</th><td>{{or .Store "unknown"}}{{with .Address}} at {{.}}{{end}}{{if not .Reachable}} (unreachable){{end}}</td></tr>
<tr><th>Coordination</th><td>{{or .Strategy "unknown"}}{{with .Mechanism}} ({{.}}){{end}}</td></tr>
{{- else}}
<tr><th>Cache store</th><td>unknown</td></tr>
{{- end}}
</table>

<h2>Readiness</h2>
<p id="readiness">{{if .Ready}}Ready{{else}}Not ready{{end}}: {{.ReadyMessage}}</p>
{{- if .Checks}}
<ul>
{{- range .Checks}}
<li>{{.Name}}: {{.Status}}</li>
{{- end}}
</ul>
{{- end}}

<h2>Endpoints</h2>
<ul>
{{- range .Routes}}
<li>{{if .Link}}<a href="{{.Path}}">{{.Path}}</a>{{else}}<code>{{.Path}}</code>{{end}}{{with .Description}}: {{.}}{{end}}{{if and $.AuthOn .Public}} (no credentials needed){{end}}</li>
{{- end}}
</ul>

<h2>Docs</h2>
<ul>
{{- range .Docs}}
<li>{{if .URL}}<a href="{{.URL}}">{{.Name}}</a>{{else}}{{.Name}}{{end}}</li>
{{- end}}
</ul>
</body>
</html>
`))

// front renders the page. Readiness is one evaluation bounded by the
// readiness timeout, the same the ready probe runs, so the page never waits
// longer than a probe does.
func (s *Server) front(c *gin.Context) {
	f := s.deps.Front
	p := frontPage{Version: f.Version, Revision: f.Revision, Configured: string(f.ConfiguredEngine), AuthOn: s.auth != nil}
	p.DBHost, p.DBName = databaseWhere(f.DatabaseURL)
	if f.Engine != nil {
		if e, ok := f.Engine(); ok {
			p.Engine = e.Name
		}
	}
	if f.Replication != nil {
		if r, _ := f.Replication(); r.Standby {
			p.Role = fmt.Sprintf("hot standby, replication lag %s", r.Lag.Round(time.Second))
		} else {
			p.Role = r.Role()
		}
	}
	if f.Cache != nil {
		cache := f.Cache()
		p.Cache = &cache
	}

	r := s.readiness.Evaluate(c.Request.Context())
	p.Ready, p.ReadyMessage = r.Ready(), "every check passed"
	for i, ch := range s.readiness.Checks() {
		status := "no answer in time"
		if res := r.Results[i]; res != nil {
			status = res.Status
		}
		p.Checks = append(p.Checks, frontCheck{Name: ch.Name(), Status: status})
	}
	switch {
	case r.TimedOut:
		p.ReadyMessage = s.readiness.TimeoutMessage("the checks timed out after")
	case !p.Ready:
		p.ReadyMessage = "a check failed; " + PathReady + " and the log say which and why"
	case len(p.Checks) == 0:
		p.ReadyMessage = "no checks configured"
	}

	p.Routes = s.frontRoutes()
	for _, d := range frontDocs {
		doc := frontDoc{Name: d}
		if f.DocsURL != "" {
			doc.URL = f.DocsURL + d
		}
		p.Docs = append(p.Docs, doc)
	}

	var b bytes.Buffer
	if err := frontTemplate.Execute(&b, p); err != nil {
		s.log.Error("front page", "err", err)
		c.AbortWithStatusJSON(http.StatusInternalServerError, errorBody{Error: "Internal Server Error", Message: "internal error"})
		return
	}
	c.Data(http.StatusOK, "text/html; charset=utf-8", b.Bytes())
}

// frontRoutes are the router's GET routes at the time of the request,
// including those other packages mounted through Router (capabilities,
// analytics), sorted by path; the page itself is left out.
func (s *Server) frontRoutes() []frontRoute {
	var out []frontRoute
	for _, r := range s.engine.Routes() {
		if r.Method != http.MethodGet || r.Path == PathFront {
			continue
		}
		out = append(out, frontRoute{
			Path:        r.Path,
			Link:        !strings.ContainsAny(r.Path, ":*"),
			Public:      publicRoutes[r.Path],
			Description: frontDescriptions[r.Path],
		})
	}
	slices.SortFunc(out, func(a, b frontRoute) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// databaseWhere is the host and database name of a PostgreSQL URL or
// key=value connection string. It reads nothing else, so neither the user
// nor a password (in the userinfo or a parameter) can reach the page.
func databaseWhere(conn string) (host, name string) {
	if conn == "" {
		return "", ""
	}
	if strings.Contains(conn, "://") {
		u, err := url.Parse(conn)
		if err != nil {
			// The userinfo's boundaries are ambiguous in a URL that does
			// not parse; show nothing rather than guess.
			return "", ""
		}
		host = u.Host
		name = strings.TrimPrefix(u.Path, "/")
		q := u.Query()
		if host == "" {
			host = q.Get("host")
		}
		if name == "" {
			name = q.Get("dbname")
		}
		return host, name
	}
	for _, field := range strings.Fields(conn) {
		k, v, _ := strings.Cut(field, "=")
		switch k {
		case "host":
			host = strings.Trim(v, "'")
		case "dbname":
			name = strings.Trim(v, "'")
		}
	}
	return host, name
}
