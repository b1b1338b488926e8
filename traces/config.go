package traces

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tasker-systems/tasker-sidecar/internal/hostport"
)

// Protocols the OTLP trace exporter (traces/otlp) speaks.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// Config configures OTLP trace export (the `tracing:` section):
// workflow traces built from the transition stream, and the sidecar's own
// spans. Start from DefaultConfig.
type Config struct {
	Enabled bool `yaml:"enabled"`
	// Endpoint of the OTLP receiver: a URL (http://jaeger:4318, or
	// http://jaeger:4317 for gRPC) or host:port. Empty takes
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT,
	// else the exporter's default (localhost:4318 for HTTP, localhost:4317
	// for gRPC).
	Endpoint string `yaml:"endpoint"`
	// Protocol is grpc or http/protobuf. Empty takes
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL, else
	// http/protobuf, the OpenTelemetry default and what Tasker's own
	// exporter used.
	Protocol string `yaml:"protocol"`
	// Insecure sends without TLS to a host:port endpoint; URL endpoints say
	// so with their scheme. OTEL_EXPORTER_OTLP_INSECURE also works.
	Insecure bool `yaml:"insecure"`
	// Headers are sent with every export, added to
	// OTEL_EXPORTER_OTLP_HEADERS (these win on a conflict).
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one export.
	Timeout time.Duration `yaml:"timeout"`

	// ServiceName of workflow traces: Tasker's telemetry.service_name.
	ServiceName string `yaml:"service_name"`
	// ServiceVersion of workflow traces; empty leaves it out.
	ServiceVersion string `yaml:"service_version"`
	// SamplingRatio of tasks traced, decided from the trace id, so every
	// replica and every re-export decides the same.
	SamplingRatio float64 `yaml:"sampling_ratio"`
	// MaxSpansPerSecond caps workflow spans exported per second; a task
	// that would exceed it is dropped whole (counted), never cut. 0 is no
	// limit.
	MaxSpansPerSecond float64 `yaml:"max_spans_per_second"`
	// MaxSpansPerTrace caps the step spans of one task run.
	MaxSpansPerTrace int `yaml:"max_spans_per_trace"`
	// MaxPendingTasks bounds the tasks kept for another try while the
	// receiver is failing; beyond it they are dropped (counted).
	MaxPendingTasks int `yaml:"max_pending_tasks"`
	// TraceIDSalt is mixed into the task → trace id derivation. Give each
	// Tasker database its own when several send to one tracing backend, so
	// their equal task ids do not share traces.
	TraceIDSalt string `yaml:"trace_id_salt"`

	// SidecarSpans turns on spans of the sidecar's own work (refreshes,
	// stream polls and queries, checkpoint and lease operations).
	SidecarSpans bool `yaml:"sidecar_spans"`
	// SidecarServiceName is the service name of those spans.
	SidecarServiceName string `yaml:"sidecar_service_name"`
	// SidecarSamplingRatio samples them: a poll a second is a lot of traces.
	SidecarSamplingRatio float64 `yaml:"sidecar_sampling_ratio"`
}

// DefaultConfig returns the defaults documented in docs/traces.md.
// Tracing is off until enabled.
func DefaultConfig() Config {
	return Config{
		Timeout:              10 * time.Second,
		ServiceName:          "tasker",
		SamplingRatio:        1,
		MaxSpansPerSecond:    2000,
		MaxSpansPerTrace:     1000,
		MaxPendingTasks:      10000,
		SidecarSpans:         true,
		SidecarServiceName:   "tasker-sidecar",
		SidecarSamplingRatio: 0.05,
	}
}

// Validate returns every problem, each prefixed with its key path relative
// to the tracing section.
func (c Config) Validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	switch c.Protocol {
	case "", ProtocolGRPC, ProtocolHTTP:
		// Empty takes the environment's, which otlp.NewSpanExporter refuses
		// when it is neither.
		if p := c.ResolvedProtocol(); c.Enabled && p != ProtocolGRPC && p != ProtocolHTTP && p != "http" {
			add("protocol", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf (got %q)", p)
		}
	default:
		add("protocol", "must be grpc or http/protobuf (got %q)", c.Protocol)
	}
	if c.Endpoint != "" {
		if strings.Contains(c.Endpoint, "://") {
			if u, err := url.Parse(c.Endpoint); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				add("endpoint", "must be an http(s) URL or host:port (got %q)", c.Endpoint)
			} else if p := u.Port(); p != "" && hostport.CheckPort(p, 1) != nil {
				add("endpoint", "port must be a number from 1 to 65535 (got %q)", p)
			}
		} else if !strings.Contains(c.Endpoint, ":") {
			add("endpoint", "host:port needs a port (got %q)", c.Endpoint)
		} else if _, p, err := net.SplitHostPort(c.Endpoint); err != nil || hostport.CheckPort(p, 1) != nil {
			add("endpoint", "must be host:port with a port from 1 to 65535 (got %q)", c.Endpoint)
		}
	}
	if c.Timeout <= 0 {
		add("timeout", "must be a positive duration such as 10s (got %s)", c.Timeout)
	}
	if c.ServiceName == "" {
		add("service_name", "required")
	}
	if c.SidecarServiceName == "" {
		add("sidecar_service_name", "required")
	}
	for path, r := range map[string]float64{"sampling_ratio": c.SamplingRatio, "sidecar_sampling_ratio": c.SidecarSamplingRatio} {
		if !(r >= 0 && r <= 1) { // written so that NaN fails too
			add(path, "must be between 0 and 1 (got %v)", r)
		}
	}
	if !(c.MaxSpansPerSecond >= 0) { // NaN too
		add("max_spans_per_second", "must not be negative (got %v)", c.MaxSpansPerSecond)
	}
	if c.MaxSpansPerTrace < 1 {
		add("max_spans_per_trace", "must be at least 1 (got %d)", c.MaxSpansPerTrace)
	}
	if c.MaxPendingTasks < 0 {
		add("max_pending_tasks", "must not be negative (got %d)", c.MaxPendingTasks)
	}
	return sortErrors(errs)
}

// ResolvedProtocol is the protocol the exporter speaks: configuration,
// then the signal-specific and the general OTLP environment variable, then
// http/protobuf. traces/otlp builds its exporter for it.
func (c Config) ResolvedProtocol() string {
	if c.Protocol != "" {
		return c.Protocol
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(os.Getenv(k)); v != "" {
			return v
		}
	}
	return ProtocolHTTP
}

// sortErrors orders errors by text, so the map iteration above does not
// make the output order random.
func sortErrors(errs []error) []error {
	for i := 1; i < len(errs); i++ {
		for j := i; j > 0 && errs[j].Error() < errs[j-1].Error(); j-- {
			errs[j], errs[j-1] = errs[j-1], errs[j]
		}
	}
	return errs
}
