package engine

import (
	"os"
	"regexp"
	"slices"
	"testing"
)

func TestStateSets(t *testing.T) {
	all := States()
	if len(all) != 6 {
		t.Fatalf("States() = %v, want Tasker's six", all)
	}
	for _, s := range RunEndStates() {
		if !IsState(s) || !EndsRun(s) {
			t.Errorf("run end state %q: IsState %v, EndsRun %v", s, IsState(s), EndsRun(s))
		}
	}
	if EndsRun(Pending) || EndsRun(InProgress) || IsState("other") {
		t.Error("pending and in_progress must not end a run; other is no state")
	}
	all[0] = "changed"
	if States()[0] != Pending {
		t.Error("States() shares its slice")
	}
}

// TestTablesInSchema checks the table names against the schema copy the
// tests run on.
func TestTablesInSchema(t *testing.T) {
	ddl, err := os.ReadFile("../schema/tasker.sql")
	if err != nil {
		t.Fatal(err)
	}
	list := RailsTables.List()
	for _, name := range list {
		if !regexp.MustCompile(`(?i)CREATE TABLE (IF NOT EXISTS )?(public\.)?` + name + `\b`).Match(ddl) {
			t.Errorf("table %q is not created by internal/schema/tasker.sql", name)
		}
	}
	if distinct := slices.Compact(slices.Sorted(slices.Values(list))); len(distinct) != 8 {
		t.Errorf("List() = %v, want eight distinct tables", list)
	}
}
