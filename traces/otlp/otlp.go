// Package otlp builds the OTLP trace exporter, gRPC or HTTP, that
// traces.Config describes. It is apart from package traces so that loading
// configuration (internal/config imports traces) links no gRPC or OTLP
// package; see docs/traces.md.
package otlp

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tasker-systems/tasker-sidecar/traces"
)

// NewSpanExporter builds the OTLP trace exporter cfg describes. The
// exporter packages read the OTEL_EXPORTER_OTLP_* variables (endpoint,
// headers, TLS, compression) themselves; explicit configuration wins over
// them. The timeout variables are resolved into cfg.Timeout when the
// configuration is loaded (traces.Config.ApplyOTelEnv), so cfg.Timeout is
// what counts. Nothing is dialled until the first export.
func NewSpanExporter(ctx context.Context, cfg traces.Config) (sdktrace.SpanExporter, error) {
	hasScheme := strings.Contains(cfg.Endpoint, "://")
	switch p := cfg.ResolvedProtocol(); p {
	case traces.ProtocolGRPC:
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
	case traces.ProtocolHTTP, "http":
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
