//go:build e2e

package dashboards_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
	"github.com/tasker-systems/tasker-sidecar/internal/simulate"
)

// TestSeriesPerReplica measures how many series one replica exports with
// the default configuration on a database with more named tasks than the
// label cap (metrics.max_label_groups and stream.max_label_groups, 100),
// before and after live activity, and checks that the per-task families
// keep at most cap + 1 (namespace, task) pairs ("other" included). The
// numbers go to docs/operations.md (Sizing, series); at the cap they are
// the fixed series plus 101 times the most one pair can have, computed
// from the engine's states and the histograms' buckets as scraped.
func TestSeriesPerReplica(t *testing.T) {
	sidecarBin := buildSidecar(t)
	for _, eng := range []string{"rails", "core"} {
		t.Run(eng, func(t *testing.T) { seriesPerReplica(t, sidecarBin, eng) })
	}
}

// labelCap is the default of both caps (config.example.yaml).
const labelCap = 100

// The simulator gives a namespace it has no story for two named tasks
// (internal/simulate/catalog.go, genericTasks): 60 namespaces make 120
// pairs, 20 beyond the cap.
const seriesNamespaces = 60

func seriesPerReplica(t *testing.T, sidecarBin, eng string) {
	ctx := context.Background()
	db := pgtest.New(t)
	runOK(t, sidecarBin, "schema", "apply", "--engine", eng, "--database-url", db.URL)
	pool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var namespaces []string
	for i := range seriesNamespaces {
		namespaces = append(namespaces, fmt.Sprintf("ns%02d", i))
	}
	bulk, live, e := simulate.Bulk, simulate.Live, engine.Rails()
	if eng == "core" {
		bulk, live, e = simulate.BulkCore, simulate.LiveCore, engine.Core()
	}
	if _, err := bulk(ctx, pool, 3000, simulate.Options{Namespaces: namespaces, Seed: 1}, nil); err != nil {
		t.Fatalf("bulk: %v", err)
	}
	// The defaults but for the cache store (so that the cache families
	// exist as in a deployment with one) and tracing, which stays off.
	addr := startSidecarWith(t, sidecarBin, db.URL, nil, `cache:
  url: redis://127.0.0.1:6379
  key_prefix: "series_%d:"
`)
	var quiet scrape
	waitFor(t, 30*time.Second, "the health gauges per named task", func() []string {
		quiet = scrapeMetrics(t, addr)
		if quiet.families["tasker_tasks_by_name"] == 0 {
			return []string{"no tasker_tasks_by_name yet"}
		}
		return nil
	})

	// Live activity in every pair: at 60 tasks a second for 90 s each of
	// the 120 pairs gets about 45 tasks, enough to reach most of its
	// label combinations.
	liveCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := live(liveCtx, pool, 60, 90*time.Second, simulate.Options{Namespaces: namespaces, Seed: 2}, nil); err != nil {
		t.Fatalf("live: %v", err)
	}
	time.Sleep(3 * time.Second) // the stream's last polls
	busy := scrapeMetrics(t, addr)

	perTask := []string{"tasker_task_transitions_total", "tasker_step_transitions_total", "tasker_task_duration_seconds",
		"tasker_step_duration_seconds", "tasker_step_retries_total", "tasker_step_backoff_seconds"}
	pairs := busy.pairs(perTask...)
	if pairs > labelCap+1 {
		t.Errorf("%s: the transition families carry %d (namespace, task) pairs, above the cap %d + other", eng, pairs, labelCap)
	}
	if pairs < labelCap {
		t.Errorf("%s: only %d (namespace, task) pairs have transitions; the measurement needs the cap reached", eng, pairs)
	}
	// At the cap: each of the 101 pairs in every combination its labels
	// can take.
	outcomes := map[string]bool{}
	for _, from := range e.StepStates.All {
		for _, to := range e.StepStates.All {
			if o, ok := e.AttemptOutcome(from, to); ok {
				outcomes[o] = true
			}
		}
	}
	perPair := len(e.TaskStates.All) + len(e.StepStates.All) + 1 + // transitions, retries
		len(engine.RunEndStates())*busy.histogramSeries("tasker_task_duration_seconds") +
		len(outcomes)*busy.histogramSeries("tasker_step_duration_seconds") +
		busy.histogramSeries("tasker_step_backoff_seconds")
	streamAtCap := (labelCap + 1) * perPair
	streamNow := 0
	for _, f := range perTask {
		streamNow += busy.families[f]
	}
	atCap := busy.total - streamNow + streamAtCap
	t.Logf("%s: %d series with no activity since start (%d named-task pairs in the database), %d after 90 s of "+
		"live activity in every pair (%d in the transition families, %d pairs); at the cap: %d per pair, %d in the "+
		"transition families, %d in all",
		eng, quiet.total, seriesNamespaces*2, busy.total, streamNow, pairs, perPair, streamAtCap, atCap)
	t.Logf("%s: largest families after activity: %s", eng, busy.largest(12))
	if os.Getenv("SERIES_DUMP") != "" {
		t.Logf("%s: every family: %s", eng, busy.largest(1000))
	}
}

// scrape is one /metrics answer: the number of series, per family.
type scrape struct {
	total    int
	families map[string]int
	// buckets is the number of le values of each histogram family.
	buckets map[string]int
	// pairsOf holds each family's (namespace, task) pairs.
	pairsOf map[string]map[string]bool
}

var (
	seriesLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? `)
	nsLabel    = regexp.MustCompile(`namespace="([^"]*)"`)
	taskLabel  = regexp.MustCompile(`task="([^"]*)"`)
	leLabel    = regexp.MustCompile(`le="([^"]*)"`)
)

func scrapeMetrics(t *testing.T, addr string) scrape {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s: %s", resp.Status, body)
	}
	s := scrape{families: map[string]int{}, buckets: map[string]int{}, pairsOf: map[string]map[string]bool{}}
	histograms := map[string]bool{}
	les := map[string]map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, _ := strings.Cut(f, " "); typ == "histogram" {
				histograms[name] = true
			}
			continue
		}
		m := seriesLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		family := m[1]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(family, suffix); ok && histograms[base] {
				family = base
				if suffix == "_bucket" {
					if le := leLabel.FindStringSubmatch(m[2]); le != nil {
						if les[base] == nil {
							les[base] = map[string]bool{}
						}
						les[base][le[1]] = true
					}
				}
			}
		}
		s.total++
		s.families[family]++
		ns, task := nsLabel.FindStringSubmatch(m[2]), taskLabel.FindStringSubmatch(m[2])
		if ns != nil && task != nil {
			if s.pairsOf[family] == nil {
				s.pairsOf[family] = map[string]bool{}
			}
			s.pairsOf[family][ns[1]+"/"+task[1]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape: %v", err)
	}
	for f, l := range les {
		s.buckets[f] = len(l)
	}
	return s
}

// pairs is the number of (namespace, task) pairs over families.
func (s scrape) pairs(families ...string) int {
	all := map[string]bool{}
	for _, f := range families {
		for p := range s.pairsOf[f] {
			all[p] = true
		}
	}
	return len(all)
}

// histogramSeries is the number of series one labelled histogram of
// family has: its buckets (+Inf included), _sum and _count.
func (s scrape) histogramSeries(family string) int { return s.buckets[family] + 2 }

// largest lists the n families with the most series.
func (s scrape) largest(n int) string {
	names := make([]string, 0, len(s.families))
	for f := range s.families {
		names = append(names, f)
	}
	sort.Slice(names, func(i, j int) bool {
		if s.families[names[i]] != s.families[names[j]] {
			return s.families[names[i]] > s.families[names[j]]
		}
		return names[i] < names[j]
	})
	var out []string
	for _, f := range names[:min(n, len(names))] {
		out = append(out, fmt.Sprintf("%s %d", f, s.families[f]))
	}
	return strings.Join(slices.Clip(out), ", ")
}
