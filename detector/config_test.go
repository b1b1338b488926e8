package detector

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestValidate(t *testing.T) {
	valid := Config{
		Capabilities: map[string]bool{Scripting: false, Distributed: true},
		Detectors: []RuleConfig{
			{Name: "managed", Product: "redis", Version: ">=7.0 <8", Address: "*.cache.amazonaws.com:*", Set: map[string]bool{Scripting: false}},
			{Name: "internal", Address: `/^10\.0\./`, Set: map[string]bool{Persistence: true}},
		},
		ProbeTimeout:  100 * time.Millisecond,
		DetectTimeout: time.Second,
		SkipProbes:    []string{ProbeScripting, ProbeClientTracking},
	}
	if errs := valid.Validate(); len(errs) > 0 {
		t.Fatalf("valid config rejected: %v", errs)
	}
	if errs := (Config{}).Validate(); len(errs) > 0 {
		t.Fatalf("zero config rejected: %v", errs)
	}
	if errs := DefaultConfig().Validate(); len(errs) > 0 {
		t.Fatalf("default config rejected: %v", errs)
	}

	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown capability", Config{Capabilities: map[string]bool{"fooo": true}}, "capabilities.fooo: unknown capability"},
		{"string capability declared", Config{Capabilities: map[string]bool{EvictionPolicy: true}}, "capabilities.eviction_policy: observed only"},
		{"rule without name", Config{Detectors: []RuleConfig{{Set: map[string]bool{Scripting: true}}}}, "detectors[0].name: required"},
		{"duplicate rule", Config{Detectors: []RuleConfig{{Name: "a", Set: map[string]bool{Scripting: true}}, {Name: "a", Set: map[string]bool{Scripting: true}}}}, "detectors[1].name: duplicate of detectors[0]"},
		{"unknown product", Config{Detectors: []RuleConfig{{Name: "a", Product: "redsi", Set: map[string]bool{Scripting: true}}}}, `detectors[0].product: unknown product "redsi"`},
		{"bad version", Config{Detectors: []RuleConfig{{Name: "a", Version: ">=seven", Set: map[string]bool{Scripting: true}}}}, "detectors[0].version: bad version"},
		{"bad glob", Config{Detectors: []RuleConfig{{Name: "a", Address: "[", Set: map[string]bool{Scripting: true}}}}, "detectors[0].address: bad glob"},
		{"bad regexp", Config{Detectors: []RuleConfig{{Name: "a", Address: "/(/", Set: map[string]bool{Scripting: true}}}}, "detectors[0].address: bad regular expression"},
		{"empty set", Config{Detectors: []RuleConfig{{Name: "a"}}}, "detectors[0].set: required"},
		{"unknown set capability", Config{Detectors: []RuleConfig{{Name: "a", Set: map[string]bool{"nope": true}}}}, "detectors[0].set.nope: unknown capability"},
		{"negative probe timeout", Config{ProbeTimeout: -1}, "probe_timeout: must not be negative"},
		{"detect shorter than probe", Config{ProbeTimeout: time.Second, DetectTimeout: time.Millisecond}, "detect_timeout: shorter than probe_timeout"},
		{"prefix with space", Config{ProbePrefix: "a b"}, "probe_prefix: at most 64 bytes"},
		{"negative recheck", Config{RecheckInterval: -time.Second}, "recheck_interval: must not be negative"},
		{"negative refresh", Config{RefreshInterval: -time.Second}, "refresh_interval: must not be negative"},
		{"mandatory probe skipped", Config{SkipProbes: []string{ProbePing}}, `skip_probes[0]: unknown or mandatory probe "ping"`},
		{"read_write skipped", Config{SkipProbes: []string{ProbeScripting, ProbeReadWrite}},
			"skip_probes[1]: read_write cannot be skipped: every coordination strategy depends on it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.cfg.Validate()
			var msgs []string
			for _, e := range errs {
				msgs = append(msgs, e.Error())
			}
			if !strings.Contains(strings.Join(msgs, "\n"), tt.want) {
				t.Errorf("errors %q do not contain %q", msgs, tt.want)
			}
		})
	}
}

func TestValidateCollectsEveryError(t *testing.T) {
	cfg := Config{Capabilities: map[string]bool{"a": true, "b": true}, ProbeTimeout: -1}
	if n := len(cfg.Validate()); n != 3 {
		t.Errorf("got %d errors, want 3", n)
	}
}

func TestDecodeYAML(t *testing.T) {
	src := `
capabilities:
  scripting: false
detectors:
  - name: managed-redis
    product: redis
    version: ">=7.0 <8"
    address: "*.cache.amazonaws.com:*"
    set:
      client_side_caching: false
probe_timeout: 150ms
detect_timeout: 2s
probe_prefix: "sidecar:probe:"
recheck_interval: 10s
refresh_interval: 15m
skip_probes: [client_tracking]
`
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewBufferString(src))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if cfg.ProbeTimeout != 150*time.Millisecond || cfg.DetectTimeout != 2*time.Second || cfg.RefreshInterval != 15*time.Minute ||
		cfg.ProbePrefix != "sidecar:probe:" || cfg.Capabilities[Scripting] || len(cfg.Detectors) != 1 ||
		cfg.Detectors[0].Set[ClientSideCaching] || cfg.SkipProbes[0] != ProbeClientTracking {
		t.Errorf("decoded %+v", cfg)
	}
	bad := yaml.NewDecoder(bytes.NewBufferString("probe_timeot: 1s\n"))
	bad.KnownFields(true)
	c2 := DefaultConfig()
	if err := bad.Decode(&c2); err == nil {
		t.Error("unknown key accepted")
	}
}
