package otlp

import (
	"context"
	"reflect"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/traces"
)

func TestNewSpanExporterRejectsUnknownProtocol(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, err := NewSpanExporter(context.Background(), traces.DefaultConfig()); err == nil {
		t.Error("http/json accepted")
	}
}

func TestTracesPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://jaeger:4318":            "/v1/traces",
		"http://jaeger:4318/":           "/v1/traces",
		"https://otlp.example/api/v1/x": "",
	} {
		if got := tracesPath(in); got != want {
			t.Errorf("tracesPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMergedHeaders(t *testing.T) {
	for _, tc := range []struct {
		name           string
		generic, trace string
		cfg            map[string]string
		want           map[string]string
	}{
		{"config only", "", "", map[string]string{"a": "1"}, map[string]string{"a": "1"}},
		{"generic and config", "b=2, a=0", "", map[string]string{"a": "1"}, map[string]string{"a": "1", "b": "2"}},
		{"the traces variable replaces the generic one", "b=2", "c=3", map[string]string{"a": "1"}, map[string]string{"a": "1", "c": "3"}},
		{"percent-encoded values", "auth=Basic%20eDp5", "", nil, map[string]string{"auth": "Basic eDp5"}},
		{"malformed pairs are skipped", "novalue,=x,bad=%zz,ok=1", "", nil, map[string]string{"ok": "1"}},
		{"names match whatever their case", "authorization=env,b=2", "", map[string]string{"Authorization": "cfg"},
			map[string]string{"Authorization": "cfg", "b": "2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": tc.generic, "OTEL_EXPORTER_OTLP_TRACES_HEADERS": tc.trace}
			got := mergedHeaders(tc.cfg, func(k string) string { return env[k] })
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
