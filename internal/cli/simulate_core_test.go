package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/engine"
	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

func TestSimulateDemoEngineFlag(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"simulate bad engine", []string{"simulate", "--engine", "django", "--database-url", "postgres://x/y", "--tasks", "1"}, exitUsage, `--engine "django": must be rails or core`},
		{"simulate auto is not an engine to write", []string{"simulate", "--engine", "auto", "--database-url", "postgres://x/y", "--tasks", "1"}, exitUsage, "must be rails or core"},
		{"simulate core nothing to do", []string{"simulate", "--engine", "core", "--database-url", "postgres://x/y"}, exitUsage, "nothing to do"},
		{"simulate help names the flag", []string{"simulate", "--help"}, exitOK, "--engine"},
		{"demo bad engine", []string{"demo", "--engine", "django"}, exitUsage, `--engine "django": must be rails or core`},
		{"demo help names the flag", []string{"demo", "--help"}, exitOK, "--engine"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d\nstderr: %s", code, c.code, stderr)
			}
			if !strings.Contains(stdout+stderr, c.contains) {
				t.Errorf("output lacks %q:\n%s%s", c.contains, stdout, stderr)
			}
		})
	}
}

// A short core run, bulk and live, against a real database leaves rows whose
// states are all tasker-core's.
func TestSimulateCoreWritesValidStates(t *testing.T) {
	db := pgtest.New(t)
	if code, _, stderr := runCLI(t, nil, "schema", "apply", "--engine", "core", "--database-url", db.URL); code != exitOK {
		t.Fatalf("schema apply: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, nil, "simulate", "--engine", "core", "--database-url", db.URL,
		"--tasks", "200", "--rate", "20", "--duration", "3s", "--seed", "5")
	if code != exitOK {
		t.Fatalf("simulate: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "wrote 200 tasks") || !strings.Contains(stdout, "live:") {
		t.Errorf("output:\n%s%s", stdout, stderr)
	}
	conn := db.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	core := engine.Core()
	for _, q := range []struct {
		table  string
		states []string
	}{
		{core.Tables.TaskTransitions, core.TaskStates.All},
		{core.Tables.StepTransitions, core.StepStates.All},
	} {
		var total, invalid int64
		err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE NOT (to_state = ANY($1))) FROM `+q.table, q.states).
			Scan(&total, &invalid)
		if err != nil {
			t.Fatal(err)
		}
		if total == 0 || invalid != 0 {
			t.Errorf("%s: %d rows, %d in states outside the engine's", q.table, total, invalid)
		}
	}
	var tasks int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks`).Scan(&tasks); err != nil {
		t.Fatal(err)
	}
	if tasks <= 200 {
		t.Errorf("%d tasks, want the 200 of bulk and some live ones", tasks)
	}
}
