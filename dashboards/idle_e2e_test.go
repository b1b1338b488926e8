//go:build e2e

package dashboards_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

// The idle end-to-end test is the night shift's view: a sidecar attached
// to a quiet Tasker database (nothing moves while it runs), scraped by a
// real Prometheus. A panel showing "No data" there cannot be told from a
// sidecar that is not scraped, so at least idleMinShare of the panel
// queries must return numbers (zeros), and every one that does not must
// say in its panel description when it is empty. Slow (about 2 minutes),
// so built only with -tags e2e.

// idleMinShare is the least share of panel queries returning numbers per
// engine and database, just under what the dashboards reach now
// (docs/metrics.md, "Zero, not no data"): a panel that loses its zeros
// fails here. The 95 % is not reached; the reasons are there.
var idleMinShare = map[string]float64{
	"rails/empty": 0.77, "core/empty": 0.70,
	"rails/history": 0.88, "core/history": 0.77,
}

// saysWhenEmpty matches the sentence of a panel description that tells
// when the panel is empty ("Empty until ...", "No data while ...").
var saysWhenEmpty = regexp.MustCompile(`(?i)\b(empty|no data)\b`)

// TestPrometheusIdle runs once per engine (the engine is only known after
// attach, and the series made from its state machine differ) and per
// database: "empty" has the schema and nothing else; "history" also has
// 300 finished and unfinished tasks written before the sidecar starts,
// and no activity while it runs (the quiet night).
func TestPrometheusIdle(t *testing.T) {
	prometheusBin := lookPath(t, "prometheus")
	sidecarBin := buildSidecar(t)
	for _, eng := range []string{"rails", "core"} {
		for _, history := range []bool{false, true} {
			name := eng + "/empty"
			if history {
				name = eng + "/history"
			}
			t.Run(name, func(t *testing.T) { idle(t, prometheusBin, sidecarBin, eng, history) })
		}
	}
}

func idle(t *testing.T, prometheusBin, sidecarBin, eng string, history bool) {
	started := time.Now()
	db := pgtest.New(t)
	runOK(t, sidecarBin, "schema", "apply", "--engine", eng, "--database-url", db.URL)
	if eng == "core" {
		// tasker-core always runs with its queues (in its database or in
		// one of their own): here they exist and are empty.
		withPGMQQueues(t, db, map[string]int{"orchestration_step_results": 0, "orchestration_task_requests": 0,
			"orchestration_task_finalizations": 0})
	}
	what := "empty"
	if history {
		what = "history"
		runOK(t, sidecarBin, "simulate", "--engine", eng, "--database-url", db.URL, "--tasks", "300", "--seed", "1")
	}
	otlp := startOTLPReceiver(t)
	// The defaults but for a key prefix of the run's own and tracing on:
	// no declared capability, default recount and analytics intervals.
	sidecarAddr := startSidecarWith(t, sidecarBin, db.URL, tracingTo(otlp.url), `cache:
  url: redis://127.0.0.1:6379
  key_prefix: "idle_%d:"
`)
	prom := startPrometheus(t, prometheusBin, sidecarAddr)

	// Rate windows need two scrapes inside $__rate_interval and the range
	// queries look back 20 s: wait until Prometheus has 20 s of scrapes.
	up := promQuery{where: "scrapes", instant: true,
		expr: fmt.Sprintf(`count_over_time(up{job=%q}[30s]) >= 20`, e2eJob)}
	waitFor(t, 60*time.Second, "20 s of scrapes", func() []string {
		if n, err := prom.query(up); err != nil || n == 0 {
			return []string{fmt.Sprintf("%d samples (%v)", n, err)}
		}
		return nil
	})

	// The tasker-core dashboard is tasker-core's alone: on Rails every
	// panel of it is empty by design (its descriptions say so); counting it
	// there would measure the engine, not the zeros.
	panels := panelQueries(t)
	left := len(panels)
	if eng == "core" {
		panels = slices.DeleteFunc(panels, func(q promQuery) bool { return notServedYet(q.expr) })
		if n := left - len(panels); n > 0 {
			t.Logf("left out: %d queries on tasker-core families the sidecar does not serve yet (notYetServed)", n)
		}
	} else {
		panels = slices.DeleteFunc(panels, onCoreBoard)
		t.Logf("left out: %d queries of %s, whose series exist only on a tasker-core database", left-len(panels), coreOnlyBoard)
	}
	var empty []promQuery
	nanOnly := 0
	for _, q := range panels {
		n, series, err := prom.queryCounts(q)
		if err != nil {
			t.Fatalf("%s: %v\n    %s", q.where, err, q.expr)
		}
		if n == 0 {
			empty = append(empty, q)
			if series > 0 {
				nanOnly++
			}
		}
	}
	withData := len(panels) - len(empty)
	share := float64(withData) / float64(len(panels))
	withSeries := withData + nanOnly
	t.Logf("%s, %s database, no activity: %d of %d panel queries return numbers (%.1f%%); %d return a series "+
		"(%.1f%%, %d of them only NaN: a quantile or a share of nothing); %d return nothing; in %s",
		eng, what, withData, len(panels), 100*share, withSeries, 100*float64(withSeries)/float64(len(panels)),
		nanOnly, len(panels)-withSeries, time.Since(started).Round(time.Millisecond))
	for _, q := range empty {
		why := "the panel description does not say when it is empty"
		if m := saysWhenEmpty.FindStringIndex(q.description); m != nil {
			why = sentenceAt(q.description, m[0])
		} else {
			t.Errorf("%s: no data on a quiet database, and %s", q.where, why)
		}
		t.Logf("empty: %s\n    why: %s\n    %s", q.where, why, q.expr)
	}
	if min := idleMinShare[eng+"/"+what]; share < min {
		t.Errorf("%s, %s database: %.1f%% of the panel queries return numbers with no activity, want at least %.0f%%",
			eng, what, 100*share, 100*min)
	}
}

// sentenceAt returns the sentence of text around byte offset i.
func sentenceAt(text string, i int) string {
	start := strings.LastIndex(text[:i], ". ")
	if start < 0 {
		start = 0
	} else {
		start += 2
	}
	end := strings.Index(text[i:], ".")
	if end < 0 {
		return text[start:]
	}
	return text[start : i+end+1]
}
