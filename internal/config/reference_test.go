package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReadmeReference keeps the README's configuration reference true: every
// row names keys that exist, every default it gives is Default()'s, and every
// scalar key has a row. Defaults are written once, in the components'
// Default*Config functions; this test is what keeps the one place people read
// them from drifting (issue 11: the docs quoted two values for one default).
func TestReadmeReference(t *testing.T) {
	rows := readmeRows(t)
	cfg := Default()
	scalars := map[string]reflect.Value{}
	for _, l := range leaves(reflect.ValueOf(&cfg).Elem(), "") {
		scalars[l.path] = l.v
	}
	all := allPaths(reflect.ValueOf(cfg), "")

	seen := map[string]bool{}
	for _, r := range rows {
		if strings.ContainsAny(r.key, "<*") {
			prefix := r.key[:strings.IndexAny(r.key, "<*")]
			if !hasPrefix(all, prefix) {
				t.Errorf("README row %q: no key starts with %q", r.key, prefix)
			}
			continue
		}
		if !all[r.key] {
			t.Errorf("README row %q: no such key", r.key)
			continue
		}
		if seen[r.key] {
			t.Errorf("README: key %q has two rows", r.key)
		}
		seen[r.key] = true
		v, ok := scalars[r.key]
		if !ok {
			continue // a list or a map, set in the file only
		}
		want := render(v)
		if got := r.def; got != want && !(got == "$TMPDIR" && want == render(reflect.ValueOf(os.TempDir()))) {
			t.Errorf("README row %q: default %q, but Default() has %q", r.key, got, want)
		}
	}
	for path := range scalars {
		if !seen[path] {
			t.Errorf("README: no row for key %q (default %s)", path, render(scalars[path]))
		}
	}
}

type readmeRow struct{ key, def string }

var backticked = regexp.MustCompile("`([^`]*)`")

// readmeRows reads the table under "## Configuration": one key per row,
// its default as the first backticked value of the third column (`""` is an
// empty string, and so is "(required)" for a value without a default).
func readmeRows(t *testing.T) []readmeRow {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Configuration\n")
	if !ok {
		t.Fatal("README has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var rows []readmeRow
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 4 {
			t.Errorf("README row %q: want 4 columns", line)
			continue
		}
		keys := backticked.FindAllStringSubmatch(cells[0], -1)
		if len(keys) != 1 {
			t.Errorf("README row %q: one key per row", line)
			continue
		}
		def := ""
		if m := backticked.FindStringSubmatch(cells[2]); m != nil {
			def = m[1]
			if def == `""` { // how the table writes an empty string
				def = ""
			}
		} else if strings.TrimSpace(cells[2]) != "(required)" && strings.TrimSpace(cells[2]) != "" {
			t.Errorf("README row %q: the default must be backticked, empty or (required)", keys[0][1])
		}
		rows = append(rows, readmeRow{key: keys[0][1], def: def})
	}
	if len(rows) < 50 {
		t.Fatalf("README configuration table: %d rows parsed; the parser or the table changed", len(rows))
	}
	return rows
}

// render writes a default as the README does: durations without zero units
// (1m, not 1m0s), "" for an empty string.
func render(v reflect.Value) string {
	if d, ok := v.Interface().(time.Duration); ok {
		s := d.String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	}
	switch v.Kind() {
	case reflect.String:
		if v.String() == "" {
			return ""
		}
		return v.String()
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	}
	return fmt.Sprint(v.Interface())
}

// allPaths lists every key path of the configuration, lists and maps
// included.
func allPaths(v reflect.Value, path string) map[string]bool {
	out := map[string]bool{}
	if v.Kind() != reflect.Struct {
		return out
	}
	for name, f := range structFields(v) {
		p := join(path, name)
		out[p] = true
		for k := range allPaths(f, p) {
			out[k] = true
		}
	}
	return out
}

func hasPrefix(paths map[string]bool, prefix string) bool {
	for p := range paths {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{75 * time.Second, "1m15s"},
		{time.Minute, "1m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{10 * time.Minute, "10m"},
		{20 * time.Minute, "20m"},
		{250 * time.Millisecond, "250ms"},
		{time.Duration(0), "0s"},
		{"", ""},
		{0.1, "0.1"},
		{3.0, "3"},
		{true, "true"},
	} {
		if got := render(reflect.ValueOf(tc.in)); got != tc.want {
			t.Errorf("render(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
