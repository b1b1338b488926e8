package api

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/net/html"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/readiness"
	"github.com/tasker-systems/tasker-sidecar/server"
)

const frontPassword = "pw-front-7c1e9a"

// frontOptions is a server with everything the front page can show, its
// database URL carrying a password in the userinfo and in a parameter.
func frontOptions(checks ...readiness.Checker) options {
	src := &fakeSource{}
	src.Set(goodState(healthyCounts))
	o := baseOptions(src)
	o.Checks = checks
	o.Front = Front{
		Version: "1.2.3", Revision: "abc123",
		DatabaseURL:      "postgres://tasker:" + frontPassword + "@db.example:5432/tasker_prod?sslpassword=" + frontPassword,
		Engine:           func() (engine.Engine, bool) { return engine.Rails(), true },
		ConfiguredEngine: engine.KindAuto,
		Cache: func() FrontCache {
			return FrontCache{Store: "redis 7.4.0", Address: "cache.example:6379", Reachable: true,
				Strategy: "distributed_atomic", Mechanism: "cas_script"}
		},
		DocsURL: "https://example.test/docs/",
		Replication: func() (collector.Replication, time.Time) {
			return collector.Replication{Known: true}, time.Now()
		},
	}
	return o
}

func healthyCheck(name string) readiness.Checker {
	return readiness.CheckFunc(name, func(context.Context) readiness.CheckResult {
		return readiness.CheckResult{Status: readiness.StatusHealthy, Message: "fine"}
	})
}

func unhealthyCheck(name string) readiness.Checker {
	return readiness.CheckFunc(name, func(context.Context) readiness.CheckResult {
		return readiness.CheckResult{Status: readiness.StatusUnhealthy, Message: "down", Error: "dial db.example: " + frontPassword}
	})
}

// hrefs parses the page and returns every link target and the page's text.
func hrefs(t *testing.T, body []byte) (links []string, text string) {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("front page does not parse: %v", err)
	}
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		switch n.Type {
		case html.ElementNode:
			if n.Data == "a" {
				for _, a := range n.Attr {
					if a.Key == "href" {
						links = append(links, a.Val)
					}
				}
			}
			if n.Data == "script" || n.Data == "link" || n.Data == "img" {
				t.Errorf("front page has a <%s>; it must need nothing external", n.Data)
			}
		case html.TextNode:
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return links, strings.Join(strings.Fields(b.String()), " ")
}

func TestFrontPage(t *testing.T) {
	s := newServer(t, frontOptions(healthyCheck("database"), healthyCheck("cache")))
	// Routes mounted later through Router, as /capabilities and analytics
	// are, are listed too; a template with a parameter is shown, not linked.
	s.Router().GET("/capabilities", func(c *gin.Context) { c.String(200, "{}") })
	s.Router().GET(PathTaskContext, func(c *gin.Context) { c.String(200, "{}") })

	r := do(t, s, http.MethodGet, PathFront)
	if r.code != 200 {
		t.Fatalf("GET / = %d, want 200: %s", r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if cc := r.header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	links, text := hrefs(t, r.body)
	want := []string{PathLive, PathReady, PathStatus, PathMetrics, PathTaskerMetrics, "/capabilities"}
	for _, d := range frontDocs {
		want = append(want, "https://example.test/docs/"+d)
	}
	for _, w := range want {
		if !slices.Contains(links, w) {
			t.Errorf("front page does not link %s; links: %v", w, links)
		}
	}
	if slices.Contains(links, PathTaskContext) || !strings.Contains(text, PathTaskContext) {
		t.Errorf("%s should be listed unlinked; links %v", PathTaskContext, links)
	}
	for _, w := range []string{
		"Version 1.2.3, revision abc123", "tasker_prod on db.example:5432", engine.Rails().Name,
		"redis 7.4.0 at cache.example:6379", "distributed_atomic (cas_script)", "Ready: every check passed",
		"database: healthy", "cache: healthy", "db.example:5432 (primary)",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("front page lacks %q:\n%s", w, text)
		}
	}
	if bytes.Contains(r.body, []byte(frontPassword)) || bytes.Contains(r.body, []byte("tasker:")) {
		t.Errorf("the database user or password reached the page:\n%s", r.body)
	}
}

func TestFrontReadiness(t *testing.T) {
	o := frontOptions(healthyCheck("cache"), unhealthyCheck("database"))
	// Every value is escaped: hrefs fails on a <script> element.
	o.Front.Revision = "<script>alert(1)</script>"
	// A standby says so, with its lag.
	o.Front.Replication = func() (collector.Replication, time.Time) {
		return collector.Replication{Known: true, Standby: true, Lag: 75*time.Second + 300*time.Millisecond}, time.Now()
	}
	s := newServer(t, o)
	r := do(t, s, http.MethodGet, PathFront)
	if r.code != 200 {
		t.Fatalf("GET / = %d, want 200 whatever readiness says", r.code)
	}
	_, text := hrefs(t, r.body)
	for _, w := range []string{"Not ready", "database: unhealthy", "cache: healthy", "revision <script>alert(1)</script>",
		"db.example:5432 (hot standby, replication lag 1m15s)"} {
		if !strings.Contains(text, w) {
			t.Errorf("front page lacks %q:\n%s", w, text)
		}
	}
	// A check's error may carry anything; the page shows statuses only.
	if bytes.Contains(r.body, []byte(frontPassword)) {
		t.Errorf("a check's error reached the page:\n%s", r.body)
	}
}

// TestFrontZero: without Front filled in, the page still answers with the
// routes and readiness.
func TestFrontZero(t *testing.T) {
	src := &fakeSource{}
	src.Set(goodState(healthyCounts))
	s := newServer(t, baseOptions(src))
	r := do(t, s, http.MethodGet, PathFront)
	if r.code != 200 {
		t.Fatalf("GET / = %d, want 200", r.code)
	}
	links, text := hrefs(t, r.body)
	if !slices.Contains(links, PathMetrics) {
		t.Errorf("no link to %s: %v", PathMetrics, links)
	}
	for _, w := range []string{"Version unknown", "not detected yet", "no checks configured", "endpoints.md"} {
		if !strings.Contains(text, w) {
			t.Errorf("front page lacks %q:\n%s", w, text)
		}
	}
}

func TestFrontAuthAndMethods(t *testing.T) {
	cases := []struct {
		name  string
		auth  server.AuthConfig
		path  string
		setup []func(*http.Request)
		code  int
	}{
		{"open", server.AuthConfig{}, PathFront, nil, 200},
		{"no token", server.AuthConfig{BearerToken: token}, PathFront, nil, 401},
		{"wrong token", server.AuthConfig{BearerToken: token}, PathFront, []func(*http.Request){bearer("nope")}, 401},
		{"token", server.AuthConfig{BearerToken: token}, PathFront, []func(*http.Request){bearer(token)}, 200},
		{"basic", server.AuthConfig{BasicUsername: user, BasicPassword: password}, PathFront, []func(*http.Request){basic(user, password)}, 200},
		{"unknown path", server.AuthConfig{}, "/nope", nil, 404},
		{"unknown path under /", server.AuthConfig{}, "/index.html", nil, 404},
		{"unknown path with token", server.AuthConfig{BearerToken: token}, "/nope", []func(*http.Request){bearer(token)}, 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := frontOptions(healthyCheck("database"))
			o.Auth = c.auth
			s := newServer(t, o)
			for _, m := range []string{http.MethodGet, http.MethodHead} {
				if r := do(t, s, m, c.path, c.setup...); r.code != c.code {
					t.Errorf("%s %s = %d, want %d: %s", m, c.path, r.code, c.code, r.body)
				}
			}
		})
	}
	s := newServer(t, frontOptions())
	if r := do(t, s, http.MethodPost, PathFront); r.code != 405 || r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST / = %d Allow %q, want 405 GET, HEAD", r.code, r.header.Get("Allow"))
	}
}

// TestFrontHead: over a real listener, HEAD answers the GET's headers and
// no body.
func TestFrontHead(t *testing.T) {
	s := newServer(t, frontOptions(healthyCheck("database")))
	addr := start(t, s)
	res, err := http.Head("http://" + addr + PathFront)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(res.Body); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/html; charset=utf-8" || body.Len() != 0 {
		t.Errorf("HEAD / = %d %q with %d body bytes, want 200 text/html and none",
			res.StatusCode, res.Header.Get("Content-Type"), body.Len())
	}
}

// TestFrontDocsExist: every doc the page links is in docs/, and every doc
// in docs/ is linked.
func TestFrontDocsExist(t *testing.T) {
	files, err := filepath.Glob("../docs/*.md")
	if err != nil || len(files) == 0 {
		t.Fatalf("no docs found: %v", err)
	}
	var have []string
	for _, f := range files {
		have = append(have, filepath.Base(f))
	}
	for _, d := range frontDocs {
		if _, err := os.Stat(filepath.Join("..", "docs", d)); err != nil {
			t.Errorf("front page links %s: %v", d, err)
		}
	}
	for _, h := range have {
		if !slices.Contains(frontDocs, h) {
			t.Errorf("docs/%s is not on the front page (frontDocs)", h)
		}
	}
}

func TestDatabaseWhere(t *testing.T) {
	cases := []struct {
		conn, host, name string
	}{
		{"postgres://u:" + frontPassword + "@db:5432/tasker?sslmode=disable", "db:5432", "tasker"},
		{"postgres://u:xxxxx@db/tasker?password=xxxxx", "db", "tasker"},
		{"postgresql:///tasker?host=/var/run/postgresql", "/var/run/postgresql", "tasker"},
		{"host=db port=5432 dbname=tasker user=u password=" + frontPassword, "db", "tasker"},
		{"postgres://u:p%zz@db/tasker", "", ""}, // does not parse: nothing shown
		{"", "", ""},
	}
	for _, c := range cases {
		host, name := databaseWhere(c.conn)
		if host != c.host || name != c.name {
			t.Errorf("databaseWhere(%q) = %q, %q; want %q, %q", c.conn, host, name, c.host, c.name)
		}
		if strings.Contains(host+name, frontPassword) {
			t.Errorf("databaseWhere(%q) shows the password", c.conn)
		}
	}
}
