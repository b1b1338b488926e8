package traces

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if errs := DefaultConfig().Validate(); len(errs) != 0 {
		t.Fatalf("defaults invalid: %v", errs)
	}
	c := DefaultConfig()
	c.Protocol = "http/json"
	c.Endpoint = "jaeger"
	c.Timeout = 0
	c.ServiceName = ""
	c.SamplingRatio = 1.5
	c.MaxSpansPerSecond = -1
	c.MaxSpansPerTrace = 0
	var got []string
	for _, err := range c.Validate() {
		got = append(got, err.Error())
	}
	for _, want := range []string{"protocol:", "endpoint:", "timeout:", "service_name:", "sampling_ratio:", "max_spans_per_second:", "max_spans_per_trace:"} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("no error for %s in %v", want, got)
		}
	}
	c = DefaultConfig()
	c.Endpoint = "ftp://x:1"
	if len(c.Validate()) != 1 {
		t.Error("ftp endpoint accepted")
	}
}

// Every combination of an explicit tracing.enabled and the OpenTelemetry
// variables, with the rule of ApplyOTelEnv that decides it.
func TestApplyOTelEnvEnabled(t *testing.T) {
	t.Parallel()
	type explicitly int
	const (
		unset explicitly = iota
		setTrue
		setFalse
	)
	for _, tc := range []struct {
		name     string
		cfg      explicitly
		env      map[string]string
		want     bool
		warnings int
	}{
		{"nothing", unset, nil, false, 0},
		{"exporter otlp", unset, map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, 0},
		{"exporter OTLP, any case", unset, map[string]string{"OTEL_TRACES_EXPORTER": " OTLP "}, true, 0},
		{"generic endpoint", unset, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, true, 0},
		{"traces endpoint", unset, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, true, 0},
		{"blank endpoint is unset", unset, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, false, 0},
		{"none beats the endpoint", unset, map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318"}, false, 0},
		{"none with others is none", unset, map[string]string{"OTEL_TRACES_EXPORTER": "none,zipkin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318"}, false, 1},
		{"sdk disabled beats the endpoint", unset, map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318"}, false, 0},
		{"sdk disabled beats otlp", unset, map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, false, 0},
		{"sdk disabled false", unset, map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, true, 0},
		{"sdk disabled 1 is false, warned", unset, map[string]string{"OTEL_SDK_DISABLED": "1", "OTEL_TRACES_EXPORTER": "otlp"}, true, 1},
		{"unsupported exporter alone is ignored", unset, map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, 1},
		{"unsupported exporter ignored, endpoint decides", unset, map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318"}, true, 1},
		{"otlp among others", unset, map[string]string{"OTEL_TRACES_EXPORTER": "console,otlp"}, true, 1},

		{"explicit false beats otlp", setFalse, map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, false, 0},
		{"explicit false beats the endpoint", setFalse, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318"}, false, 0},
		{"explicit true alone", setTrue, nil, true, 0},
		{"explicit true beats none, warned", setTrue, map[string]string{"OTEL_TRACES_EXPORTER": "none"}, true, 1},
		{"sdk disabled beats explicit true, warned", setTrue, map[string]string{"OTEL_SDK_DISABLED": "true"}, false, 1},
		{"explicit false, sdk disabled", setFalse, map[string]string{"OTEL_SDK_DISABLED": "true"}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Enabled = tc.cfg == setTrue
			warnings := c.ApplyOTelEnv(func(k string) string { return tc.env[k] },
				func(key string) bool { return key == "enabled" && tc.cfg != unset })
			if c.Enabled != tc.want {
				t.Errorf("enabled = %v, want %v", c.Enabled, tc.want)
			}
			if len(warnings) != tc.warnings {
				t.Errorf("warnings %q, want %d", warnings, tc.warnings)
			}
			for _, w := range warnings {
				if !strings.Contains(w, "OTEL_") {
					t.Errorf("warning %q does not name the variable", w)
				}
			}
		})
	}
}

// Service name, resource attributes and timeout come from the environment
// only when the configuration leaves them unset.
func TestApplyOTelEnvSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		explicit  []string
		cfg       func(*Config)
		env       map[string]string
		service   string
		version   string
		attrs     map[string]string
		timeout   time.Duration
		nWarnings int
	}{
		{name: "defaults", service: "tasker", timeout: 10 * time.Second},
		{name: "OTEL_SERVICE_NAME", env: map[string]string{"OTEL_SERVICE_NAME": "billing"}, service: "billing", timeout: 10 * time.Second},
		{name: "configured service name wins", explicit: []string{"service_name"}, cfg: func(c *Config) { c.ServiceName = "mine" },
			env: map[string]string{"OTEL_SERVICE_NAME": "billing"}, service: "mine", timeout: 10 * time.Second},
		{name: "configured to the default still wins", explicit: []string{"service_name"},
			env: map[string]string{"OTEL_SERVICE_NAME": "billing"}, service: "tasker", timeout: 10 * time.Second},
		{name: "service.name from the attributes",
			env:     map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=orders,service.version=1.2,deployment.environment=prod"},
			service: "orders", version: "1.2", attrs: map[string]string{"deployment.environment": "prod"}, timeout: 10 * time.Second},
		{name: "OTEL_SERVICE_NAME beats service.name",
			env:     map[string]string{"OTEL_SERVICE_NAME": "billing", "OTEL_RESOURCE_ATTRIBUTES": "service.name=orders"},
			service: "billing", timeout: 10 * time.Second},
		{name: "percent-decoded, configured attributes win",
			cfg:     func(c *Config) { c.ResourceAttributes = map[string]string{"team": "core"} },
			env:     map[string]string{"OTEL_RESOURCE_ATTRIBUTES": " team = ops , region=eu%2Cwest%20a ,"},
			service: "tasker", attrs: map[string]string{"team": "core", "region": "eu,west a"}, timeout: 10 * time.Second},
		{name: "malformed attributes are discarded whole",
			env:     map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "region=eu,oops", "OTEL_SERVICE_NAME": "billing"},
			service: "billing", timeout: 10 * time.Second, nWarnings: 1},
		{name: "bad percent-encoding", env: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "a=%zz"}, service: "tasker", timeout: 10 * time.Second, nWarnings: 1},
		{name: "generic timeout", env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}, service: "tasker", timeout: 2500 * time.Millisecond},
		{name: "traces timeout first", env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "700"},
			service: "tasker", timeout: 700 * time.Millisecond},
		{name: "bad traces timeout falls back to the generic one", env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "5s"},
			service: "tasker", timeout: 2500 * time.Millisecond, nWarnings: 1},
		{name: "zero timeout ignored", env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, service: "tasker", timeout: 10 * time.Second, nWarnings: 1},
		{name: "configured timeout wins", explicit: []string{"timeout"}, cfg: func(c *Config) { c.Timeout = 3 * time.Second },
			env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}, service: "tasker", timeout: 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			warnings := c.ApplyOTelEnv(func(k string) string { return tc.env[k] },
				func(key string) bool { return slices.Contains(tc.explicit, key) })
			if c.ServiceName != tc.service || c.ServiceVersion != tc.version || c.Timeout != tc.timeout {
				t.Errorf("service %q version %q timeout %s, want %q %q %s", c.ServiceName, c.ServiceVersion, c.Timeout, tc.service, tc.version, tc.timeout)
			}
			if len(c.ResourceAttributes) != len(tc.attrs) {
				t.Errorf("attributes %v, want %v", c.ResourceAttributes, tc.attrs)
			}
			for k, v := range tc.attrs {
				if c.ResourceAttributes[k] != v {
					t.Errorf("attributes %v, want %v", c.ResourceAttributes, tc.attrs)
				}
			}
			if len(warnings) != tc.nWarnings {
				t.Errorf("warnings %q, want %d", warnings, tc.nWarnings)
			}
			if errs := c.Validate(); len(errs) != 0 {
				t.Errorf("result invalid: %v", errs)
			}
		})
	}
}

func TestResource(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.ResourceAttributes = map[string]string{"deployment.environment": "prod", "service.name": "ignored"}
	got := map[string]string{}
	for _, kv := range c.Resource("tasker", "1.0").Attributes() {
		got[string(kv.Key)] = kv.Value.AsString()
	}
	want := map[string]string{"deployment.environment": "prod", "service.name": "tasker", "service.version": "1.0"}
	if len(got) != len(want) || got["service.name"] != "tasker" || got["deployment.environment"] != "prod" || got["service.version"] != "1.0" {
		t.Errorf("resource %v, want %v", got, want)
	}
}
