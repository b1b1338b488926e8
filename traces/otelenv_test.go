// The OpenTelemetry conventions end to end: configuration loaded as `run`
// loads it, with no tracing setting, from a process environment holding
// only OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_ENDPOINT, exports a
// task's trace to a real OTLP receiver. An external test of traces because
// internal/config imports traces.

package traces_test

import (
	"context"
	"flag"
	"os"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
	"github.com/tasker-systems/tasker-sidecar/traces"
	"github.com/tasker-systems/tasker-sidecar/traces/otlp"
)

// Not parallel: Setenv.
func TestOTelEnvironmentAloneExportsTraces(t *testing.T) {
	for _, tc := range []struct {
		name     string
		exporter string
		spans    int
	}{
		{"otlp", "otlp", 4},
		{"endpoint alone", "", 4},
		{"none", "none", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recv, url := traces.StartHTTPReceiver(t)
			t.Setenv("OTEL_TRACES_EXPORTER", tc.exporter)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
			t.Setenv("OTEL_SERVICE_NAME", "billing")
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod%20eu,service.namespace=tasker")
			t.Setenv("SIDECAR_DATABASE_URL", "postgres://localhost/tasker")

			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			var f config.Flags
			f.Register(fs)
			if err := fs.Parse(nil); err != nil {
				t.Fatal(err)
			}
			cfg, warnings, err := config.Load(fs, &f, os.Environ())
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range warnings {
				t.Log("warning:", w)
			}
			if cfg.Tracing.Enabled != (tc.spans > 0) {
				t.Fatalf("tracing.enabled = %v", cfg.Tracing.Enabled)
			}
			if cfg.Tracing.ServiceName != "billing" {
				t.Errorf("service name %q, want OTEL_SERVICE_NAME's", cfg.Tracing.ServiceName)
			}
			if !cfg.Tracing.Enabled {
				return // what run does: no exporter is built
			}
			exp, err := otlp.NewSpanExporter(context.Background(), cfg.Tracing)
			if err != nil {
				t.Fatal(err)
			}
			w, _ := traces.NewTestWorkflows(t, cfg.Tracing, exp, traces.RetriedTaskHistories())
			if err := w.Consume(context.Background(), []collector.Transition{traces.Ended(42, "complete", 20)}); err != nil {
				t.Fatal(err)
			}
			if n := len(recv.All()); n != tc.spans {
				t.Errorf("receiver got %d spans, want %d", n, tc.spans)
			}
			for _, sp := range recv.All() {
				if got := sp.ResourceAttr("deployment.environment"); got != "prod eu" {
					t.Fatalf("span resource deployment.environment = %q, want OTEL_RESOURCE_ATTRIBUTES' (decoded)", got)
				}
			}
		})
	}
}
