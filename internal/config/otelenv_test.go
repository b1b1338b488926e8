package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasker-systems/tasker-sidecar/traces"
)

// The OpenTelemetry variables fill in the tracing keys that no source set:
// an explicit key in the file, a SIDECAR_ variable or a flag wins, except
// over OTEL_SDK_DISABLED=true (traces.Config.ApplyOTelEnv has the rules).
func TestOTelEnvironment(t *testing.T) {
	const endpoint = "OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318"
	cases := []struct {
		name    string
		file    string // tracing section; "" for no file
		env     []string
		enabled bool
		service string
		timeout time.Duration
		warning string // a warning that must be there
	}{
		{"no file, endpoint", "", []string{endpoint}, true, "tasker", 10 * time.Second, ""},
		{"no file, exporter otlp", "", []string{"OTEL_TRACES_EXPORTER=otlp"}, true, "tasker", 10 * time.Second, ""},
		{"no tracing section, otlp", "log: {level: info}\n", []string{"OTEL_TRACES_EXPORTER=otlp", endpoint}, true, "tasker", 10 * time.Second, ""},
		{"tracing section without enabled", "tracing: {sampling_ratio: 0.5}\n", []string{endpoint}, true, "tasker", 10 * time.Second, ""},
		{"enabled written empty counts as unset", "tracing:\n  enabled:\n", []string{endpoint}, true, "tasker", 10 * time.Second, ""},
		{"file false wins over otlp", "tracing: {enabled: false}\n", []string{"OTEL_TRACES_EXPORTER=otlp", endpoint}, false, "tasker", 10 * time.Second, ""},
		{"SIDECAR env false wins", "", []string{"SIDECAR_TRACING_ENABLED=false", "OTEL_TRACES_EXPORTER=otlp"}, false, "tasker", 10 * time.Second, ""},
		{"SIDECAR env true beats file false", "tracing: {enabled: false}\n", []string{"SIDECAR_TRACING_ENABLED=true"}, true, "tasker", 10 * time.Second, ""},
		{"none turns the endpoint off", "", []string{"OTEL_TRACES_EXPORTER=none", endpoint}, false, "tasker", 10 * time.Second, ""},
		{"file true beats none", "tracing: {enabled: true}\n", []string{"OTEL_TRACES_EXPORTER=none"}, true, "tasker", 10 * time.Second, "OTEL_TRACES_EXPORTER=none is ignored"},
		{"sdk disabled beats file true", "tracing: {enabled: true}\n", []string{"OTEL_SDK_DISABLED=true", endpoint}, false, "tasker", 10 * time.Second, "OTEL_SDK_DISABLED=true turns trace export off"},
		{"unsupported exporter is a warning", "", []string{"OTEL_TRACES_EXPORTER=zipkin"}, false, "tasker", 10 * time.Second, "OTEL_TRACES_EXPORTER=\"zipkin\""},
		{"service name and timeout from the environment", "", []string{"OTEL_SERVICE_NAME=billing", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=1500"}, false, "billing", 1500 * time.Millisecond, ""},
		{"file service name and timeout win", "tracing: {service_name: orders, timeout: 3s}\n", []string{"OTEL_SERVICE_NAME=billing", "OTEL_EXPORTER_OTLP_TIMEOUT=1500"}, false, "orders", 3 * time.Second, ""},
		{"SIDECAR service name wins", "", []string{"SIDECAR_TRACING_SERVICE_NAME=mine", "OTEL_SERVICE_NAME=billing"}, false, "mine", 10 * time.Second, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := ""
			if c.file != "" {
				file = filepath.Join(t.TempDir(), "sidecar.yaml")
				if err := os.WriteFile(file, []byte("database: {url: postgres://localhost/db}\n"+c.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			env := append([]string{"SIDECAR_DATABASE_URL=postgres://localhost/db"}, c.env...)
			cfg, warnings, err := loadFile(t, file, env)
			if err != nil {
				t.Fatal(err)
			}
			tr := cfg.Tracing
			if tr.Enabled != c.enabled || tr.ServiceName != c.service || tr.Timeout != c.timeout {
				t.Errorf("enabled=%v service=%q timeout=%s, want %v %q %s", tr.Enabled, tr.ServiceName, tr.Timeout, c.enabled, c.service, c.timeout)
			}
			if c.warning != "" && !strings.Contains(strings.Join(warnings, "\n"), c.warning) {
				t.Errorf("warnings %q lack %q", warnings, c.warning)
			}
			if c.warning == "" && len(warnings) > 0 {
				t.Errorf("unexpected warnings %q", warnings)
			}
		})
	}
}

// Parse reads no environment: a file alone is what it says.
func TestParseIgnoresOTelEnvironment(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	cfg, err := Parse([]byte("database: {url: postgres://localhost/db}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tracing.Enabled {
		t.Error("Parse turned tracing on from the process environment")
	}
}

// The README's table of OpenTelemetry variables names every one the
// configuration reads.
func TestReadmeNamesOTelVariables(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(data), "\n### OpenTelemetry environment variables\n")
	if !ok {
		t.Fatal("README has no OpenTelemetry environment variables table")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	for _, v := range []string{traces.EnvSDKDisabled, traces.EnvTracesExporter, traces.EnvServiceName, traces.EnvResourceAttributes,
		traces.EnvTracesEndpoint, traces.EnvEndpoint, traces.EnvTracesTimeout, traces.EnvTimeout} {
		if !strings.Contains(table, "| "+v) && !strings.Contains(table, ", "+v) {
			t.Errorf("README's OpenTelemetry table has no row for %s", v)
		}
	}
}
