package traces

import (
	"github.com/prometheus/common/version"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// NewSidecarTracerProvider returns the provider for the sidecar's own spans
// (service cfg.SidecarServiceName), sampled at cfg.SidecarSamplingRatio and
// batched to exp (otlp.NewSpanExporter). Pass it to the components
// (collector.WithTracerProvider, RefresherOptions.TracerProvider); it is
// never installed globally. The caller shuts it down, which also shuts exp
// down.
func NewSidecarTracerProvider(cfg Config, exp sdktrace.SpanExporter) *sdktrace.TracerProvider {
	return sdktrace.NewTracerProvider(
		sdktrace.WithResource(cfg.Resource(cfg.SidecarServiceName, version.Version)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SidecarSamplingRatio))),
		sdktrace.WithBatcher(exp),
	)
}
