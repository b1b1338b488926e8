// Tests of traces/otlp with the workflow pipeline and the OTLP receiver of
// this package's tests. They are an external test of traces because an
// internal one cannot import traces/otlp (it imports traces);
// export_test.go lends them the internal test helpers.

package traces_test

import (
	"context"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/collector"
	"github.com/tasker-systems/tasker-sidecar/traces"
	"github.com/tasker-systems/tasker-sidecar/traces/otlp"
)

func TestWorkflowTracesOverHTTP(t *testing.T) {
	t.Parallel()
	recv, url := traces.StartHTTPReceiver(t)
	cfg := traces.TestingConfig()
	cfg.Protocol, cfg.Endpoint = traces.ProtocolHTTP, url
	cfg.Headers = map[string]string{"X-Tenant": "acme"}
	exp, err := otlp.NewSpanExporter(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := traces.NewTestWorkflows(t, cfg, exp, traces.RetriedTaskHistories())
	if err := w.Consume(context.Background(), []collector.Transition{traces.Ended(42, "complete", 20)}); err != nil {
		t.Fatal(err)
	}
	if n := len(recv.All()); n != 4 {
		t.Errorf("received %d spans over HTTP, want 4", n)
	}
	if h := recv.LastHeaders(); h["X-Tenant"] != "acme" {
		t.Errorf("headers %v lack the configured header", h)
	}
}

// The standard environment variables choose the protocol, endpoint and
// headers when the configuration leaves them empty. Not parallel: Setenv.
func TestExporterHonoursOTLPEnvironment(t *testing.T) {
	httpRecv, url := traces.StartHTTPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cr3t,x-scope=tasker")
	exportOne(t, traces.TestingConfig())
	if n := len(httpRecv.All()); n != 4 {
		t.Fatalf("HTTP receiver from the environment got %d spans", n)
	}
	if h := httpRecv.LastHeaders(); h["Authorization"] != "Bearer s3cr3t" || h["X-Scope"] != "tasker" {
		t.Errorf("headers from OTEL_EXPORTER_OTLP_HEADERS missing: %v", h)
	}

	grpcRecv, addr := traces.StartGRPCReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+addr)
	exportOne(t, traces.TestingConfig())
	if n := len(grpcRecv.All()); n != 4 {
		t.Fatalf("gRPC receiver from the traces-specific variables got %d spans", n)
	}
	if h := grpcRecv.LastHeaders(); h["x-scope"] != "tasker" {
		t.Errorf("gRPC metadata lacks the environment headers: %v", h)
	}
}

func exportOne(t *testing.T, cfg traces.Config) {
	t.Helper()
	exp, err := otlp.NewSpanExporter(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := traces.NewTestWorkflows(t, cfg, exp, traces.RetriedTaskHistories())
	if err := w.Consume(context.Background(), []collector.Transition{traces.Ended(42, "complete", 20)}); err != nil {
		t.Fatal(err)
	}
}

// Configured headers are added to the environment's, and win on a
// conflict: a token the pod gets through OTEL_EXPORTER_OTLP_HEADERS is not
// lost when the config adds a tenant header. Not parallel: Setenv.
func TestConfiguredHeadersAddToTheEnvironment(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cr3t,x-tenant=from-env")
	cfg := traces.TestingConfig()
	cfg.Headers = map[string]string{"X-Tenant": "acme", "x-config": "c"}

	httpRecv, url := traces.StartHTTPReceiver(t)
	cfg.Protocol, cfg.Endpoint = traces.ProtocolHTTP, url
	exportOne(t, cfg)
	if h := httpRecv.LastHeaders(); h["Authorization"] != "Bearer s3cr3t" || h["X-Tenant"] != "acme" || h["X-Config"] != "c" {
		t.Errorf("HTTP headers = %v, want the environment's authorization and the configured x-tenant and x-config", h)
	}

	grpcRecv, addr := traces.StartGRPCReceiver(t)
	cfg.Protocol, cfg.Endpoint, cfg.Insecure = traces.ProtocolGRPC, addr, true
	exportOne(t, cfg)
	if h := grpcRecv.LastHeaders(); h["authorization"] != "Bearer s3cr3t" || h["x-tenant"] != "acme" || h["x-config"] != "c" {
		t.Errorf("gRPC metadata = %v, want the environment's authorization and the configured x-tenant and x-config", h)
	}
}
