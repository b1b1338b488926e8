package config

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/tasker-systems/tasker-sidecar/internal/hostport"
	"github.com/tasker-systems/tasker-sidecar/internal/secret"
)

// EnvPrefix starts every environment variable the sidecar reads.
const EnvPrefix = "SIDECAR_"

// Error is an invalid configuration: every problem found, each with its key path.
type Error struct{ Problems []error }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = "  " + p.Error()
	}
	return fmt.Sprintf("invalid configuration (%d problem(s)):\n%s", len(e.Problems), strings.Join(lines, "\n"))
}

// Flags are the command-line flags that override configuration keys. Register
// adds them to a FlagSet; after parsing, Apply copies the ones the user set.
type Flags struct {
	ConfigFile string
	values     map[string]*string // key path -> flag value
	names      map[string]string  // flag name -> key path
}

// flagKeys maps each flag to the key it overrides.
var flagKeys = []struct{ name, key, usage string }{
	{"database-url", "database.url", "Tasker PostgreSQL URL (env SIDECAR_DATABASE_URL)"},
	{"cache-url", "cache.url", "cache store URL: memory://, none://, redis://, rediss://, memcached:// (env SIDECAR_CACHE_URL)"},
	{"listen", "server.listen", "HTTP listen address (env SIDECAR_LISTEN)"},
	{"log-level", "log.level", "debug, info, warn or error (env SIDECAR_LOG_LEVEL)"},
	{"log-format", "log.format", "text or json (env SIDECAR_LOG_FORMAT)"},
	{"refresh-interval", "collector.refresh_interval", "how often the health counts are refreshed (env SIDECAR_COLLECTOR_REFRESH_INTERVAL)"},
}

// Register adds --config and the override flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.ConfigFile, "config", os.Getenv(EnvPrefix+"CONFIG"), "YAML configuration file (env SIDECAR_CONFIG)")
	f.values = map[string]*string{}
	f.names = map[string]string{}
	for _, k := range flagKeys {
		f.values[k.key] = fs.String(k.name, "", k.usage)
		f.names[k.name] = k.key
	}
}

// Load builds the configuration: defaults, then the file, then SIDECAR_*
// environment variables, then the flags the user set. It returns an *Error
// listing every problem when anything is invalid, and warnings that do not stop
// the sidecar (such as unknown SIDECAR_ variables, which Kubernetes may inject
// for a Service that happens to be called "sidecar").
func Load(fs *flag.FlagSet, f *Flags, environ []string) (Config, []string, error) {
	cfg := Default()
	var problems []error
	// set holds the key paths the user gave, in any source: the
	// OpenTelemetry variables fill in only what is left unset.
	set := map[string]bool{}
	if f != nil && f.ConfigFile != "" {
		data, err := os.ReadFile(f.ConfigFile)
		if err != nil {
			return cfg, nil, &Error{Problems: []error{fmt.Errorf("config file: %w", err)}}
		}
		problems = append(problems, decodeYAML(data, &cfg)...)
		fileKeys(data, set)
	}
	warnings, envProblems := applyEnv(&cfg, environ, set)
	problems = append(problems, envProblems...)
	if f != nil && fs != nil {
		fs.Visit(func(fl *flag.Flag) {
			key, ok := f.names[fl.Name]
			if !ok {
				return
			}
			set[key] = true
			if err := setPath(&cfg, key, *f.values[key]); err != nil {
				problems = append(problems, fmt.Errorf("%s (flag --%s): %w", key, fl.Name, err))
			}
		})
	}
	osEnv := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			osEnv[k] = v
		}
	}
	warnings = append(warnings, cfg.Tracing.ApplyOTelEnv(
		func(k string) string { return osEnv[k] },
		func(key string) bool { return set["tracing."+key] })...)
	problems = append(problems, cfg.Validate()...)
	if len(problems) > 0 {
		return cfg, warnings, &Error{Problems: problems}
	}
	return cfg, warnings, nil
}

// Parse decodes a YAML document on top of the defaults and validates it.
func Parse(data []byte) (Config, error) {
	cfg := Default()
	problems := decodeYAML(data, &cfg)
	problems = append(problems, cfg.Validate()...)
	if len(problems) > 0 {
		return cfg, &Error{Problems: problems}
	}
	return cfg, nil
}

// decodeYAML walks the document next to the struct so that unknown keys and
// type errors are all reported, each with its key path, rather than stopping at
// the first one as yaml.v3 does for unmarshaler errors.
func decodeYAML(data []byte, cfg *Config) []error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []error{fmt.Errorf("config file: %w", err)}
	}
	if len(doc.Content) == 0 {
		return nil // an empty file means all defaults
	}
	var errs []error
	decodeNode(doc.Content[0], reflect.ValueOf(cfg).Elem(), "", &errs)
	return errs
}

var durationType = reflect.TypeOf(time.Duration(0))

func decodeNode(n *yaml.Node, v reflect.Value, path string, errs *[]error) {
	fail := func(format string, args ...any) {
		where := path
		if where == "" {
			where = "(top level)"
		}
		*errs = append(*errs, fmt.Errorf("%s: %s (line %d)", where, fmt.Sprintf(format, args...), n.Line))
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.Kind() == reflect.Struct {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.MappingNode {
			fail("expected a mapping")
			return
		}
		fields := structFields(v)
		for _, i := range uniqueKeys(n, path, errs) {
			key, val := n.Content[i].Value, n.Content[i+1]
			child := join(path, key)
			fv, ok := fields[key]
			if !ok {
				*errs = append(*errs, fmt.Errorf("%s: unknown key (line %d)", child, n.Content[i].Line))
				continue
			}
			decodeNode(val, fv, child, errs)
		}
		return
	}
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct {
		if n.Kind != yaml.SequenceNode {
			fail("expected a list")
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			decodeNode(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		v.Set(out)
		return
	}
	if v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String && v.Type().Elem().Kind() == reflect.Struct {
		// Entries are structs too (e.g. ttl.policies.status): walk each one so
		// its unknown keys are reported, on top of any default entry.
		if n.Kind != yaml.MappingNode {
			fail("expected a mapping")
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for _, i := range uniqueKeys(n, path, errs) {
			key := n.Content[i].Value
			elem := reflect.New(v.Type().Elem()).Elem()
			if cur := v.MapIndex(reflect.ValueOf(key)); cur.IsValid() {
				elem.Set(cur)
			}
			decodeNode(n.Content[i+1], elem, join(path, key), errs)
			v.SetMapIndex(reflect.ValueOf(key), elem)
		}
		return
	}
	// A leaf may still be a mapping (tracing.headers): its repeated keys
	// are reported like the others rather than in yaml.v3's words.
	if dups := duplicateKeys(n, path); len(dups) > 0 {
		*errs = append(*errs, dups...)
		return
	}
	target := reflect.New(v.Type())
	target.Elem().Set(v)
	if err := n.Decode(target.Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			fail("%s", strings.TrimPrefix(stripLine(te.Errors[0]), "cannot unmarshal "))
		} else {
			fail("%s", err)
		}
		return
	}
	if bad := nonFinite(target.Elem(), path); len(bad) > 0 {
		for _, err := range bad {
			*errs = append(*errs, fmt.Errorf("%w (line %d)", err, n.Line))
		}
		return
	}
	v.Set(target.Elem())
}

// uniqueKeys returns the index in n.Content of each key of mapping n seen
// for the first time, and reports every repetition: yaml.v3 keeps the last
// value of a repeated key without a word when decoding into a Node, so a
// setting written twice would silently lose its first value.
func uniqueKeys(n *yaml.Node, path string, errs *[]error) []int {
	first := map[string]int{} // key -> line
	var out []int
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if line, seen := first[k.Value]; seen && k.Kind == yaml.ScalarNode {
			*errs = append(*errs, fmt.Errorf("%s: duplicate key (line %d; first at line %d)", join(path, k.Value), k.Line, line))
			continue
		}
		if k.Kind == yaml.ScalarNode {
			first[k.Value] = k.Line
		}
		out = append(out, i)
	}
	return out
}

// duplicateKeys reports the repeated keys of every mapping inside n. Aliases
// are not followed: the anchored node is checked where it is written.
func duplicateKeys(n *yaml.Node, path string) []error {
	var errs []error
	switch n.Kind {
	case yaml.MappingNode:
		for _, i := range uniqueKeys(n, path, &errs) {
			errs = append(errs, duplicateKeys(n.Content[i+1], join(path, n.Content[i].Value))...)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			errs = append(errs, duplicateKeys(item, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return errs
}

// fileKeys adds to set the key path of every mapping entry in the YAML
// document data, nested ones included: the keys the file sets. A document
// decodeYAML refused adds nothing.
func fileKeys(data []byte, set map[string]bool) {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return
	}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n == nil || n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := join(path, n.Content[i].Value)
			// A key written with no value (enabled:) leaves the default.
			if v := n.Content[i+1]; !(v.Kind == yaml.ScalarNode && v.Tag == "!!null") {
				set[p] = true
			}
			walk(n.Content[i+1], p)
		}
	}
	walk(doc.Content[0], "")
}

// stripLine drops yaml.v3's "line N: " prefix; decodeNode adds its own.
func stripLine(s string) string {
	if strings.HasPrefix(s, "line ") {
		if i := strings.Index(s, ": "); i > 0 {
			return s[i+2:]
		}
	}
	return s
}

// structFields indexes a struct's settable fields by yaml name, flattening
// `yaml:",inline"` fields.
func structFields(v reflect.Value) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, fv := range structFields(v.Field(i)) {
				out[k] = fv
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = v.Field(i)
	}
	return out
}

// leaf is a scalar setting that can come from the environment or a flag.
type leaf struct {
	path string
	env  []string
	v    reflect.Value
}

func leaves(v reflect.Value, path string) []leaf {
	var out []leaf
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		fv := v.Field(i)
		if strings.Contains(opts, "inline") {
			out = append(out, leaves(fv, path)...)
			continue
		}
		p := join(path, name)
		switch fv.Kind() {
		case reflect.Struct:
			out = append(out, leaves(fv, p)...)
		case reflect.String, reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64, reflect.Float64:
			envs := []string{EnvPrefix + strings.ToUpper(strings.ReplaceAll(p, ".", "_"))}
			if alias := f.Tag.Get("env"); alias != "" {
				envs = append(envs, alias)
			}
			out = append(out, leaf{path: p, env: envs, v: fv})
		}
	}
	return out
}

// EnvVars lists every environment variable the configuration reads, with its key.
func EnvVars() map[string]string {
	cfg := Default()
	out := map[string]string{}
	for _, l := range leaves(reflect.ValueOf(&cfg).Elem(), "") {
		for _, e := range l.env {
			out[e] = l.path
		}
	}
	return out
}

func applyEnv(cfg *Config, environ []string, set map[string]bool) (warnings []string, problems []error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = v
		}
	}
	known := map[string]bool{EnvPrefix + "CONFIG": true}
	for _, l := range leaves(reflect.ValueOf(cfg).Elem(), "") {
		for _, name := range l.env {
			known[name] = true
			val, ok := env[name]
			if !ok {
				continue
			}
			set[l.path] = true
			if err := setLeaf(l.v, val); err != nil {
				problems = append(problems, fmt.Errorf("%s (env %s): %w", l.path, name, err))
			}
		}
	}
	for _, name := range sortedKeys(env) {
		if !known[name] && !strings.HasPrefix(name, EnvPrefix+"TEST_") && !strings.HasPrefix(name, EnvPrefix+"BENCH_") {
			warnings = append(warnings, fmt.Sprintf("ignoring unknown environment variable %s", name))
		}
	}
	return warnings, problems
}

func setPath(cfg *Config, path, val string) error {
	for _, l := range leaves(reflect.ValueOf(cfg).Elem(), "") {
		if l.path == path {
			return setLeaf(l.v, val)
		}
	}
	return fmt.Errorf("unknown key")
}

func setLeaf(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q (use e.g. 500ms, 15s, 2m)", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		// ParseFloat accepts NaN and Inf, which no setting means.
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("must be a finite number (got %q)", s)
		}
		v.SetFloat(f)
	default:
		return fmt.Errorf("cannot be set from a string")
	}
	return nil
}

func join(path, key string) string {
	key = keyName(key)
	if path == "" {
		return key
	}
	return path + "." + key
}

// keyName is a key as it appears in a key path: quoted (and clipped) when
// it is empty or holds characters that would make the path ambiguous or
// unreadable, as a fuzzed or mistyped file can have.
func keyName(key string) string {
	odd := key == "" || strings.ContainsFunc(key, func(r rune) bool {
		return r == '.' || r == ':' || r == '"' || r == ' ' || !unicode.IsPrint(r)
	})
	if !odd && len(key) <= 64 {
		return key
	}
	return strconv.Quote(hostport.Clip(key))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Dump renders the effective configuration as YAML with secrets redacted.
func (c Config) Dump() string {
	// OTLP headers usually carry an API key.
	if len(c.Tracing.Headers) > 0 {
		headers := make(map[string]string, len(c.Tracing.Headers))
		for k := range c.Tracing.Headers {
			headers[k] = secret.Redacted
		}
		c.Tracing.Headers = headers
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Sprintf("# cannot render configuration: %v\n", err)
	}
	return string(out)
}
