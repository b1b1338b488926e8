package traces

import (
	"github.com/prometheus/common/version"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
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
		sdktrace.WithResource(serviceResource(cfg.SidecarServiceName, version.Version)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SidecarSamplingRatio))),
		sdktrace.WithBatcher(exp),
	)
}

func serviceResource(name, ver string) *resource.Resource {
	attrs := []attribute.KeyValue{attribute.String("service.name", name)}
	if ver != "" {
		attrs = append(attrs, attribute.String("service.version", ver))
	}
	return resource.NewSchemaless(attrs...)
}
