package engine

import (
	"slices"
	"strings"
	"testing"
)

// classesOf names the classes of sets that st belongs to, in a fixed order.
func classesOf(sets StateSets, st string) []string {
	var out []string
	for _, c := range []struct {
		name   string
		states []string
	}{
		{"terminal", sets.Terminal}, {"active", sets.Active()}, {"running", sets.Running},
		{"waiting", sets.Waiting}, {"backoff", sets.InBackoff}, {"failed", sets.Failed},
	} {
		if slices.Contains(c.states, st) {
			out = append(out, c.name)
		}
	}
	return out
}

// TestStateClasses lists every state of every machine with exactly the
// classes it belongs to, in the order All must give them.
func TestStateClasses(t *testing.T) {
	type row struct {
		state   string
		classes string
	}
	for _, tc := range []struct {
		name string
		sets StateSets
		want []row
	}{
		{"rails tasks", Rails().TaskStates, []row{
			{"pending", "active waiting"}, {"in_progress", "active running"},
			{"complete", "terminal"}, {"error", "terminal failed"},
			{"cancelled", "terminal"}, {"resolved_manually", "terminal"},
		}},
		{"rails steps", Rails().StepStates, []row{
			{"pending", "active waiting"}, {"in_progress", "active running"},
			{"complete", "terminal"}, {"error", "terminal failed"},
			{"cancelled", "terminal"}, {"resolved_manually", "terminal"},
		}},
		{"core tasks", Core().TaskStates, []row{
			{"pending", "active"},
			{"initializing", "active running"}, {"enqueuing_steps", "active running"},
			{"steps_in_process", "active running"}, {"evaluating_results", "active running"},
			{"waiting_for_dependencies", "active waiting"}, {"waiting_for_retry", "active waiting backoff"},
			{"blocked_by_failures", "active waiting"},
			{"complete", "terminal"}, {"error", "terminal failed"},
			{"cancelled", "terminal"}, {"resolved_manually", "terminal"},
		}},
		{"core steps", Core().StepStates, []row{
			{"pending", "active waiting"}, {"enqueued", "active running"}, {"in_progress", "active running"},
			{"enqueued_for_orchestration", "active running"},
			{"enqueued_as_error_for_orchestration", "active running"},
			{"waiting_for_retry", "active waiting backoff"},
			{"complete", "terminal"}, {"error", "terminal failed"},
			{"cancelled", "terminal"}, {"resolved_manually", "terminal"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var order []string
			for _, r := range tc.want {
				order = append(order, r.state)
				if got := strings.Join(classesOf(tc.sets, r.state), " "); got != r.classes {
					t.Errorf("%s is in %q, want %q", r.state, got, r.classes)
				}
			}
			if !slices.Equal(tc.sets.All, order) {
				t.Errorf("All = %v, want %v", tc.sets.All, order)
			}
			// Every state of every class is a state of the machine.
			for _, class := range [][]string{tc.sets.Terminal, tc.sets.Running, tc.sets.Waiting, tc.sets.InBackoff, tc.sets.Failed} {
				for _, st := range class {
					if !tc.sets.Has(st) {
						t.Errorf("class member %q is no state", st)
					}
				}
			}
		})
	}
}

// TestStateSetsDisjoint checks the rules StateSets documents, apart from
// the listing above, so that a state added later to one class is checked.
func TestStateSetsDisjoint(t *testing.T) {
	for name, e := range map[string]Engine{"rails": Rails(), "core": Core()} {
		for entity, s := range map[string]StateSets{"tasks": e.TaskStates, "steps": e.StepStates} {
			if n := len(slices.Compact(slices.Sorted(slices.Values(s.All)))); n != len(s.All) {
				t.Errorf("%s %s: All %v repeats a state", name, entity, s.All)
			}
			for _, st := range s.All {
				n := 0
				for _, class := range [][]string{s.Terminal, s.Running, s.Waiting} {
					if slices.Contains(class, st) {
						n++
					}
				}
				if n > 1 {
					t.Errorf("%s %s: %s is in %d of terminal, running, waiting", name, entity, st, n)
				}
				if slices.Contains(s.InBackoff, st) && !slices.Contains(s.Waiting, st) {
					t.Errorf("%s %s: %s is in backoff but not waiting", name, entity, st)
				}
				if slices.Contains(s.Failed, st) && !slices.Contains(s.Terminal, st) {
					t.Errorf("%s %s: %s is failed but not terminal", name, entity, st)
				}
			}
		}
	}
}

// TestRailsFromConstants checks that Rails() describes what the rest of
// the package says about the Rails engine.
func TestRailsFromConstants(t *testing.T) {
	r := Rails()
	for _, s := range []StateSets{r.TaskStates, r.StepStates} {
		if !slices.Equal(s.All, States()) || !slices.Equal(s.Terminal, RunEndStates()) {
			t.Errorf("Rails states %v terminal %v, want States() and RunEndStates()", s.All, s.Terminal)
		}
		for _, st := range s.All {
			if slices.Contains(s.Terminal, st) != EndsRun(st) {
				t.Errorf("%s: terminal %v, EndsRun %v", st, slices.Contains(s.Terminal, st), EndsRun(st))
			}
		}
	}
	if r.Tables != RailsTables || r.Schema != "" || r.KeyType != "bigint" || r.RetryLimitColumn != "retry_limit" {
		t.Errorf("Rails() = %+v", r)
	}
	c := Core()
	if c.Schema != "tasker" || c.KeyType != "uuid" || c.RetryLimitColumn != "max_attempts" {
		t.Errorf("Core() = %+v", c)
	}
	for _, table := range c.Tables.List() {
		if !strings.HasPrefix(table, c.Schema+".") || strings.Contains(table, "tasker_") {
			t.Errorf("core table %q is not in schema %s without a prefix", table, c.Schema)
		}
	}
}

// TestEnginesShareNothing checks that a caller changing one engine's
// slices changes no other value.
func TestEnginesShareNothing(t *testing.T) {
	a := Core()
	a.StepStates.All[0] = "changed"
	a.TaskStates.Terminal[0] = "changed"
	if Core().StepStates.All[0] != Pending || Core().TaskStates.Terminal[0] != Complete {
		t.Error("Core() shares its slices")
	}
	r := Rails()
	r.TaskStates.All[0] = "changed"
	if r.StepStates.All[0] != Pending || States()[0] != Pending {
		t.Error("Rails() shares slices between tasks and steps or with States()")
	}
	if act := Core().TaskStates.Active(); len(act) != 8 || Core().TaskStates.All[0] != Pending {
		t.Errorf("Active() = %v or changed All", act)
	}
}

func TestParseKind(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Kind
		err  bool
	}{
		{"auto", KindAuto, false},
		{"rails", KindRails, false},
		{"core", KindCore, false},
		{"", "", true},
		{"Rails", "", true},
		{" core", "", true},
		{"tasker-core", "", true},
	} {
		got, err := ParseKind(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParseKind(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && !strings.Contains(err.Error(), "auto, rails or core") {
			t.Errorf("ParseKind(%q) error %q does not name the allowed values", tc.in, err)
		}
	}
}

func TestFor(t *testing.T) {
	for _, k := range []Kind{KindRails, KindCore} {
		e, err := For(k)
		if err != nil || e.Kind != k {
			t.Errorf("For(%s) = %s, %v", k, e.Kind, err)
		}
	}
	for _, k := range []Kind{KindAuto, "other"} {
		if _, err := For(k); err == nil {
			t.Errorf("For(%s) succeeded", k)
		}
	}
}
