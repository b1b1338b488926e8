package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/deploy"
	"github.com/tasker-systems/tasker-sidecar/internal/engine"
)

// The sidecar exports the states of the engine it is attached to, and the
// two engines' state machines differ (tasker-core has no task state
// in_progress, and steps waiting for a retry in waiting_for_retry). A panel
// or rule written for one engine's states shows nothing, or half the
// picture, on the other; TestStateMatchersWorkOnBothEngines catches that
// from the expressions alone, without a sidecar on each engine.

var (
	// selectorRE finds a metric's label matchers; stateMatcherRE the
	// matchers on a state label within them.
	selectorRE     = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^{}]*)\}`)
	stateMatcherRE = regexp.MustCompile(`\b(to_state|state)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	// A state regex is an alternation of plain names.
	alternationRE = regexp.MustCompile(`^[a-z_]+(\|[a-z_]+)*$`)
)

// stateMatcher is one matcher on a state label, and where it was found.
type stateMatcher struct {
	where, metric, op, value string
	// oneEngine: the panel's title says it is for one engine only.
	oneEngine bool
}

func stateMatchers(where, expr string, oneEngine bool) []stateMatcher {
	var out []stateMatcher
	for _, sel := range selectorRE.FindAllStringSubmatch(expr, -1) {
		for _, m := range stateMatcherRE.FindAllStringSubmatch(sel[2], -1) {
			out = append(out, stateMatcher{where: where, metric: sel[1], op: m[2], value: m[3], oneEngine: oneEngine})
		}
	}
	return out
}

// panelAndRuleStateMatchers reads every state matcher of the committed
// dashboards (the generator's output: TestGeneratedManifestsAreCurrent and
// the dashboards tests hold them to it) and of the rule file.
func panelAndRuleStateMatchers(t *testing.T) []stateMatcher {
	t.Helper()
	var out []stateMatcher
	files, err := filepath.Glob(filepath.Join(root, deploy.DashboardsDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s: %v", deploy.DashboardsDir, err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var board struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(raw, &board); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range board.Panels {
			oneEngine := strings.HasSuffix(p.Title, "(Rails)") || strings.HasSuffix(p.Title, "(tasker-core)")
			for _, tg := range p.Targets {
				out = append(out, stateMatchers(filepath.Base(f)+": "+p.Title, tg.Expr, oneEngine)...)
			}
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			out = append(out, stateMatchers(deploy.RulesFile+": "+r.Alert+r.Record, r.Expr, false)...)
		}
	}
	return out
}

// machineOf says which state machine a metric's state label holds.
func machineOf(metric string) (func(engine.Engine) engine.StateSets, bool) {
	switch {
	case strings.Contains(metric, "step"):
		return func(e engine.Engine) engine.StateSets { return e.StepStates }, true
	case strings.Contains(metric, "task"):
		return func(e engine.Engine) engine.StateSets { return e.TaskStates }, true
	}
	return nil, false
}

// class names what a state means on its engine, and counterpart returns the
// states meaning the same on the other engine. Rails has no backoff state:
// its retry wait is error rows with attempts left (the retry classes), so
// error is its counterpart of core's waiting_for_retry.
func class(s engine.StateSets, st string) string {
	switch {
	case slices.Contains(s.InBackoff, st):
		return "backoff"
	case slices.Contains(s.Running, st):
		return "running"
	case slices.Contains(s.Waiting, st):
		return "waiting"
	case slices.Contains(s.Terminal, st):
		return "terminal"
	}
	return "other"
}

func counterpart(s engine.StateSets, class string) []string {
	switch class {
	case "backoff":
		if len(s.InBackoff) > 0 {
			return s.InBackoff
		}
		return s.Failed
	case "running":
		return s.Running
	case "waiting":
		return s.Waiting
	case "terminal":
		return s.Terminal
	}
	return nil
}

// TestStateMatchersWorkOnBothEngines holds every state matcher of a panel or
// a rule to three things: it names only states some engine has ("new", no
// transition yet, included), it selects at least one state on each engine,
// and where it names a state only one engine has, it also names a state of
// the same class (running, waiting, backoff) of the other engine: a panel
// of Rails' in_progress tasks must also count core's running task states.
// Panels titled "(Rails)" or "(tasker-core)" are for one engine and skip the
// last two.
func TestStateMatchersWorkOnBothEngines(t *testing.T) {
	matchers := panelAndRuleStateMatchers(t)
	if len(matchers) < 10 {
		t.Fatalf("found only %d state matchers: is the extraction broken?", len(matchers))
	}
	runChecks(t, matchers)
}

func runChecks(t interface{ Errorf(string, ...any) }, matchers []stateMatcher) {
	engines := []engine.Engine{engine.Rails(), engine.Core()}
	for _, m := range matchers {
		machine, ok := machineOf(m.metric)
		if !ok {
			t.Errorf("%s: %s has a state label but names neither tasks nor steps", m.where, m.metric)
			continue
		}
		if !alternationRE.MatchString(m.value) {
			t.Errorf("%s: %s %s%q: write state matchers as alternations of state names", m.where, m.metric, m.op, m.value)
			continue
		}
		named := strings.Split(m.value, "|")
		for _, st := range named {
			if st != "new" && !slices.ContainsFunc(engines, func(e engine.Engine) bool { return machine(e).Has(st) }) {
				t.Errorf("%s: %s names %q, a state of neither engine", m.where, m.metric, st)
			}
		}
		if m.oneEngine {
			continue
		}
		for i, e := range engines {
			states := append(machine(e).All, "new")
			selected := slices.ContainsFunc(states, func(st string) bool {
				return slices.Contains(named, st) == (m.op == "=" || m.op == "=~")
			})
			if !selected {
				t.Errorf("%s: %s%s%q selects no state of %s", m.where, m.metric, m.op, m.value, e.Name)
			}
			other := engines[1-i]
			for _, st := range named {
				if !machine(e).Has(st) || machine(other).Has(st) {
					continue
				}
				want := counterpart(machine(other), class(machine(e), st))
				if !slices.ContainsFunc(want, func(o string) bool { return slices.Contains(named, o) }) {
					t.Errorf("%s: %s%s%q names %s's %s state %q but none of %s's (%s)",
						m.where, m.metric, m.op, m.value, e.Name, class(machine(e), st), st, other.Name, strings.Join(want, ", "))
				}
			}
		}
	}
}

// TestStateMatchersCheckCatchesOneEngineQueries makes sure the check above
// can fail: the queries the dashboards had before tasker-core.
func TestStateMatchersCheckCatchesOneEngineQueries(t *testing.T) {
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{`max by (state) (tasker_tasks{job="$job",state=~"new|pending|in_progress|error"})`, false},
		{`max by (state) (tasker_tasks{job="$job",state!~"complete|cancelled|resolved_manually"})`, true},
		{`tasker_steps_by_name{state=~"in_progress|enqueued|enqueued_for_orchestration"}`, true},
		{`tasker_steps_by_name{state="enqueued"}`, false},
		{`tasker_step_transitions_total{to_state=~"complete|error|waiting_for_retry"}`, true},
		{`tasker_step_transitions_total{to_state="waiting_for_retry"}`, false},
		{`tasker_tasks{state="steps_in_process"}`, false},
		{`tasker_tasks{state="in_progres"}`, false},
		{`tasker_tasks{state=~"in_.*"}`, false},
	} {
		ok := checkOne(tc.expr)
		if ok != tc.ok {
			t.Errorf("%s: passes %v, want %v", tc.expr, ok, tc.ok)
		}
	}
}

// checkOne runs TestStateMatchersWorkOnBothEngines's checks on one
// expression and reports whether it passes.
func checkOne(expr string) bool {
	var rec recorder
	runChecks(&rec, stateMatchers("test", expr, false))
	return !rec.failed
}

type recorder struct{ failed bool }

func (r *recorder) Errorf(string, ...any) { r.failed = true }
