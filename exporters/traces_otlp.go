package exporters

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/prometheus/common/version"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// NewSpanExporter builds the OTLP trace exporter cfg describes. The
// exporter packages read the OTEL_EXPORTER_OTLP_* variables (endpoint,
// headers, timeout, TLS, compression) themselves; explicit configuration
// wins over them. Nothing is dialled until the first export.
func NewSpanExporter(ctx context.Context, cfg TracingConfig) (sdktrace.SpanExporter, error) {
	hasScheme := strings.Contains(cfg.Endpoint, "://")
	switch p := cfg.protocol(); p {
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		switch {
		case hasScheme:
			opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		case cfg.Endpoint != "":
			opts = append(opts, otlptracegrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(mergedHeaders(cfg.Headers, os.Getenv)))
		}
		if cfg.Timeout > 0 {
			opts = append(opts, otlptracegrpc.WithTimeout(cfg.Timeout))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("OTLP gRPC trace exporter: %w", err)
		}
		return exp, nil
	case ProtocolHTTP, "http":
		var opts []otlptracehttp.Option
		switch {
		case hasScheme:
			opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(cfg.Endpoint, "/")+tracesPath(cfg.Endpoint)))
		case cfg.Endpoint != "":
			opts = append(opts, otlptracehttp.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(mergedHeaders(cfg.Headers, os.Getenv)))
		}
		if cfg.Timeout > 0 {
			opts = append(opts, otlptracehttp.WithTimeout(cfg.Timeout))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("OTLP HTTP trace exporter: %w", err)
		}
		return exp, nil
	default:
		return nil, fmt.Errorf("OTLP protocol %q is not supported (use grpc or http/protobuf)", p)
	}
}

// mergedHeaders adds the configured headers to those of the environment.
// The exporters' WithHeaders replaces what they read from
// OTEL_EXPORTER_OTLP_TRACES_HEADERS (or, unset, OTEL_EXPORTER_OTLP_HEADERS),
// so a token given to the pod that way would be lost once any header is
// configured. The format is the specification's: comma-separated
// key=value pairs with percent-encoded values; malformed pairs are skipped,
// as the exporters skip them.
func mergedHeaders(cfg map[string]string, getenv func(string) string) map[string]string {
	env := getenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
	if env == "" {
		env = getenv("OTEL_EXPORTER_OTLP_HEADERS")
	}
	out := map[string]string{}
	for _, pair := range strings.Split(env, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			continue
		}
		out[k] = val
	}
	// Header names are case-insensitive (gRPC metadata lowercases them), so
	// a configured Authorization replaces the environment's authorization.
	for k, v := range cfg {
		for ek := range out {
			if strings.EqualFold(ek, k) {
				delete(out, ek)
			}
		}
		out[k] = v
	}
	return out
}

// tracesPath completes a base URL such as http://jaeger:4318 with the
// signal path, as the OTLP specification does for
// OTEL_EXPORTER_OTLP_ENDPOINT; a URL that already has a path is kept.
func tracesPath(endpoint string) string {
	rest := endpoint[strings.Index(endpoint, "://")+3:]
	if i := strings.Index(rest, "/"); i >= 0 && strings.Trim(rest[i:], "/") != "" {
		return ""
	}
	return "/v1/traces"
}

// NewSidecarTracerProvider returns the provider for the sidecar's own spans
// (service cfg.SidecarServiceName), sampled at cfg.SidecarSamplingRatio and
// batched to exp. Pass it to the components (collector.WithTracerProvider,
// RefresherOptions.TracerProvider); it is never installed globally. The
// caller shuts it down, which also shuts exp down.
func NewSidecarTracerProvider(cfg TracingConfig, exp sdktrace.SpanExporter) *sdktrace.TracerProvider {
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
