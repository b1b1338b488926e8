// An external test package: the property involves the pre-flight of
// internal/cli, which imports this package.
package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/internal/cli"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
)

// FuzzLoad feeds YAML documents to Parse, the loader check-config uses for
// the file. It must never panic; whatever it refuses is a *config.Error
// whose problems each name a key path; whatever it accepts, Validate finds
// clean and the pre-flight of run accepts too, so a configuration that
// passes check-config never fails at start-up (issue 10).
//
// Seeds: every configuration under testdata and config.example.yaml, plus
// the committed corpus in testdata/fuzz/FuzzLoad. Run it with
//
//	go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime 10s ./internal/config/
func FuzzLoad(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	invalid, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range append(append(files, invalid...), "../../config.example.yaml") {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data)
		if err != nil {
			var cerr *config.Error
			if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
				t.Fatalf("Parse refused with %T %v, want a *config.Error with problems", err, err)
			}
			for _, p := range cerr.Problems {
				if path, _, ok := strings.Cut(p.Error(), ": "); !ok || path == "" {
					t.Errorf("problem without a key path: %q", p)
				}
			}
			return
		}
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Fatalf("Parse accepted a configuration Validate refuses: %v", errs)
		}
		if err := cli.Preflight(cfg); err != nil {
			t.Fatalf("Parse accepted a configuration the pre-flight of run refuses:\n%s\n%v", data, err)
		}
	})
}
