package detector

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
)

// Config is the detection part of the cache configuration. Zero values mean
// the defaults, so a Config{} literal works and YAML may leave keys out.
type Config struct {
	// Capabilities are declared capabilities; they beat every other
	// source. Only boolean capabilities can be declared.
	Capabilities map[string]bool `yaml:"capabilities"`
	// Detectors are custom rules that set capabilities for servers that
	// match them.
	Detectors []RuleConfig `yaml:"detectors"`
	// ProbeTimeout bounds each runtime probe (default 250ms).
	ProbeTimeout time.Duration `yaml:"probe_timeout"`
	// DetectTimeout bounds a whole detection run (default 1s).
	DetectTimeout time.Duration `yaml:"detect_timeout"`
	// ProbePrefix starts every key a probe writes, after the store's own
	// key prefix (default "tasker_sidecar:probe:").
	ProbePrefix string `yaml:"probe_prefix"`
	// RecheckInterval is how often an unreachable store is pinged to
	// notice it is back (default 5s).
	RecheckInterval time.Duration `yaml:"recheck_interval"`
	// RefreshInterval re-runs detection periodically even when nothing
	// failed, to notice ACL or configuration changes (default 0: off).
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// SkipProbes names runtime probes not to run, e.g. "scripting" where
	// an audit log should never see EVAL. A skipped probe answers false.
	// read_write cannot be skipped.
	SkipProbes []string `yaml:"skip_probes"`
}

// RuleConfig is one custom detector rule. Every field that is set must match
// the detected server for the rule to apply.
type RuleConfig struct {
	Name string `yaml:"name"`
	// Product is one of redis, valkey, keydb, dragonfly, memcached,
	// memory, none.
	Product string `yaml:"product"`
	// Version is a constraint such as ">=7.0 <8", "7.2" or "1.6 || >=2".
	Version string `yaml:"version"`
	// Address matches any one server address (host:port): a glob
	// (path.Match syntax, e.g. "*.cache.amazonaws.com:*"), or a regular
	// expression between slashes ("/^10\.0\./").
	Address string `yaml:"address"`
	// Set gives the capabilities the rule declares for matching servers.
	Set map[string]bool `yaml:"set"`
}

// Defaults.
const (
	DefaultProbeTimeout    = 250 * time.Millisecond
	DefaultDetectTimeout   = time.Second
	DefaultProbePrefix     = "tasker_sidecar:probe:"
	DefaultRecheckInterval = 5 * time.Second
)

// Probe names, as used in skip_probes and the probe-duration metric.
const (
	ProbePing              = "ping"
	ProbeIdentity          = "identity"
	ProbeReadWrite         = "read_write"
	ProbeAtomicIncrement   = "atomic_increment"
	ProbeLocking           = "locking"
	ProbeTTL               = "ttl"
	ProbeScripting         = "scripting"
	ProbeConditionalSet    = "conditional_set"
	ProbeConditionalDelete = "conditional_delete"
	ProbeClientTracking    = "client_tracking"
	ProbeMeta              = "meta"
	ProbeLease             = "lease"
	ProbeSettings          = "settings"
	ProbeCleanup           = "cleanup"
)

// skippableProbes are the probes skip_probes may name; ping, identity,
// read_write and cleanup always run.
var skippableProbes = []string{ProbeAtomicIncrement, ProbeLocking, ProbeTTL, ProbeScripting,
	ProbeConditionalSet, ProbeConditionalDelete, ProbeClientTracking, ProbeMeta, ProbeLease, ProbeSettings}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		ProbeTimeout:    DefaultProbeTimeout,
		DetectTimeout:   DefaultDetectTimeout,
		ProbePrefix:     DefaultProbePrefix,
		RecheckInterval: DefaultRecheckInterval,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = d.ProbeTimeout
	}
	if c.DetectTimeout == 0 {
		c.DetectTimeout = d.DetectTimeout
	}
	if c.ProbePrefix == "" {
		c.ProbePrefix = d.ProbePrefix
	}
	if c.RecheckInterval == 0 {
		c.RecheckInterval = d.RecheckInterval
	}
	return c
}

// Validate returns every problem, each prefixed with its key path relative
// to this section (e.g. "capabilities.fooo: unknown capability").
func (c Config) Validate() []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	for _, name := range sortedKeys(c.Capabilities) {
		switch {
		case !knownCapability(name):
			add("capabilities."+name, "unknown capability (known: %s)", strings.Join(Capabilities(), ", "))
		case !Declarable(name):
			add("capabilities."+name, "observed only, cannot be declared")
		}
	}
	names := map[string]int{}
	for i, r := range c.Detectors {
		key := fmt.Sprintf("detectors[%d]", i)
		if r.Name == "" {
			add(key+".name", "required")
		} else if j, dup := names[r.Name]; dup {
			add(key+".name", "duplicate of detectors[%d]", j)
		} else {
			names[r.Name] = i
		}
		if r.Product != "" && !knownProduct(strings.ToLower(r.Product)) {
			add(key+".product", "unknown product %q (known: %s)", r.Product, strings.Join(products, ", "))
		}
		if r.Version != "" {
			if _, err := ParseConstraint(r.Version); err != nil {
				add(key+".version", "%v", err)
			}
		}
		if r.Address != "" {
			if _, err := compileAddress(r.Address); err != nil {
				add(key+".address", "%v", err)
			}
		}
		if len(r.Set) == 0 {
			add(key+".set", "required: the capabilities this rule declares")
		}
		for _, name := range sortedKeys(r.Set) {
			switch {
			case !knownCapability(name):
				add(key+".set."+name, "unknown capability")
			case !Declarable(name):
				add(key+".set."+name, "observed only, cannot be declared")
			}
		}
	}
	if c.ProbeTimeout < 0 {
		add("probe_timeout", "must not be negative")
	}
	if c.DetectTimeout < 0 {
		add("detect_timeout", "must not be negative")
	}
	if c.ProbeTimeout > 0 && c.DetectTimeout > 0 && c.DetectTimeout < c.ProbeTimeout {
		add("detect_timeout", "shorter than probe_timeout (%s < %s)", c.DetectTimeout, c.ProbeTimeout)
	}
	if c.ProbePrefix != "" {
		if len(c.ProbePrefix) > 64 || strings.ContainsFunc(c.ProbePrefix, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			add("probe_prefix", "at most 64 bytes, no spaces or control characters (memcached keys)")
		}
	}
	if c.RecheckInterval < 0 {
		add("recheck_interval", "must not be negative")
	}
	if c.RefreshInterval < 0 {
		add("refresh_interval", "must not be negative")
	}
	for i, p := range c.SkipProbes {
		key := fmt.Sprintf("skip_probes[%d]", i)
		switch {
		case p == ProbeReadWrite:
			// A skipped probe answers false, and read_write false is
			// local_only whatever else the store can do.
			add(key, "read_write cannot be skipped: every coordination strategy depends on it")
		case !contains(skippableProbes, p):
			add(key, "unknown or mandatory probe %q (skippable: %s)", p, strings.Join(skippableProbes, ", "))
		}
	}
	return errs
}

// addressMatcher matches one host:port.
type addressMatcher func(string) bool

func compileAddress(pattern string) (addressMatcher, error) {
	if len(pattern) >= 2 && strings.HasPrefix(pattern, "/") && strings.HasSuffix(pattern, "/") {
		re, err := regexp.Compile(pattern[1 : len(pattern)-1])
		if err != nil {
			return nil, fmt.Errorf("bad regular expression: %w", err)
		}
		return re.MatchString, nil
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("bad glob %q: %w", pattern, err)
	}
	return func(addr string) bool {
		ok, _ := path.Match(pattern, addr)
		return ok
	}, nil
}
