package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/internal/pgtest"
)

// --engine picks the schema: each run twice on a fresh database (the second a
// no-op), leaving that engine's tables and not the other's.
func TestSchemaApplyEngines(t *testing.T) {
	cases := []struct {
		name        string
		args        []string
		stdout      string
		rails, core int // base tables in public named tasker_* and in schema tasker
	}{
		{"default is rails", nil, "Tasker schema applied", 13, 0},
		{"rails", []string{"--engine", "rails"}, "Tasker schema applied", 13, 0},
		{"core", []string{"--engine", "core"}, "tasker-core schema applied", 0, 11},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := pgtest.New(t)
			for i := 0; i < 2; i++ {
				args := append([]string{"schema", "apply", "--database-url", db.URL}, tc.args...)
				code, stdout, stderr := runCLI(t, nil, args...)
				if code != exitOK {
					t.Fatalf("run %d: exit %d: %s", i+1, code, stderr)
				}
				if !strings.Contains(stdout, tc.stdout) {
					t.Errorf("run %d: stdout %q lacks %q", i+1, stdout, tc.stdout)
				}
			}
			var rails, core int
			if err := db.Conn(t).QueryRow(context.Background(), `SELECT
				count(*) FILTER (WHERE table_schema = 'public' AND table_name LIKE 'tasker\_%'),
				count(*) FILTER (WHERE table_schema = 'tasker')
				FROM information_schema.tables WHERE table_type = 'BASE TABLE'`).Scan(&rails, &core); err != nil {
				t.Fatal(err)
			}
			if rails != tc.rails || core != tc.core {
				t.Errorf("%d Rails and %d tasker-core tables, want %d and %d", rails, core, tc.rails, tc.core)
			}
		})
	}
}

func TestSchemaApplyEngineFlag(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"unknown engine", []string{"schema", "apply", "--engine", "django", "--database-url", "postgres://x/y"},
			exitUsage, `--engine "django": must be rails or core`},
		{"unknown engine before missing url", []string{"schema", "apply", "--engine", "Core"},
			exitUsage, "must be rails or core"},
		{"help names the engines", []string{"schema", "apply", "--help"}, exitOK, "--engine rails|core"},
		{"schema help names the flag", []string{"schema", "--help"}, exitOK, "--engine rails|core"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, nil, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d: %s", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.contains) {
				t.Errorf("stderr lacks %q:\n%s", tc.contains, stderr)
			}
		})
	}
}
