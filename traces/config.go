package traces

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"

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
	// ResourceAttributes are added to the resource of workflow traces and
	// of the sidecar's own spans, on top of OTEL_RESOURCE_ATTRIBUTES (these
	// win on a conflict). service.name and service.version are set by the
	// keys above, never here.
	ResourceAttributes map[string]string `yaml:"resource_attributes"`
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
	for k := range c.ResourceAttributes {
		if strings.TrimSpace(k) == "" {
			add("resource_attributes", "attribute names must not be empty")
		}
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

// The OpenTelemetry SDK environment variables that ApplyOTelEnv reads
// (docs/traces.md, "OpenTelemetry environment variables").
const (
	EnvSDKDisabled        = "OTEL_SDK_DISABLED"
	EnvTracesExporter     = "OTEL_TRACES_EXPORTER"
	EnvServiceName        = "OTEL_SERVICE_NAME"
	EnvResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"
	EnvTracesEndpoint     = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvEndpoint           = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesTimeout      = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
	EnvTimeout            = "OTEL_EXPORTER_OTLP_TIMEOUT"
)

// ApplyOTelEnv lets the OpenTelemetry SDK environment variables decide what
// the configuration leaves unset, so a pod given the usual OTEL_* variables
// exports traces without a sidecar-specific switch. explicit reports
// whether a key of this section (such as "enabled") was set by the file, a
// SIDECAR_ variable or a flag; getenv reads the environment.
//
// Whether traces are exported, first rule that applies:
//  1. OTEL_SDK_DISABLED=true: off, even over an explicit enabled: true.
//     The specification makes it the switch that disables the SDK for
//     every signal, so an operator can silence a pod without editing its
//     configuration.
//  2. An explicit enabled: the configuration's value. The sidecar's own
//     keys win over the generic variables, as for endpoint and protocol.
//  3. OTEL_TRACES_EXPORTER=none: off.
//  4. OTEL_TRACES_EXPORTER lists otlp: on.
//  5. OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT set
//     (and OTEL_TRACES_EXPORTER unset or holding only values the sidecar
//     does not support): on.
//  6. Otherwise the default, off.
//
// Values the specification says to warn about and ignore (an exporter
// other than otlp or none, a boolean other than true or false, a timeout
// that is not a positive number of milliseconds, malformed resource
// attributes) come back as warnings; they never stop the sidecar.
func (c *Config) ApplyOTelEnv(getenv func(string) string, explicit func(key string) bool) (warnings []string) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	warn := func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) }

	disabled := false
	switch v := env(EnvSDKDisabled); {
	case strings.EqualFold(v, "true"):
		disabled = true
	case v != "" && !strings.EqualFold(v, "false"):
		warn("%s=%q is neither true nor false; taken as false", EnvSDKDisabled, v)
	}
	exporter := ""
	if v := env(EnvTracesExporter); v != "" {
		var other []string
		for _, name := range strings.Split(v, ",") {
			switch name = strings.ToLower(strings.TrimSpace(name)); name {
			case "otlp":
				exporter = "otlp"
			case "none":
				if exporter == "" {
					exporter = "none"
				}
			case "":
			default:
				other = append(other, name)
			}
		}
		if exporter == "none" && len(other) > 0 {
			// The specification gives none alone; with others it means
			// nothing sensible, so the others are ignored like any
			// unsupported value and none still turns export off.
			warn("%s=%q: none with other exporters; taken as none", EnvTracesExporter, v)
		} else if len(other) > 0 {
			warn("%s=%q: the sidecar exports traces over OTLP only; ignoring %s", EnvTracesExporter, v, strings.Join(other, ", "))
		}
	}
	endpoint := env(EnvTracesEndpoint) != "" || env(EnvEndpoint) != ""

	switch {
	case disabled:
		if c.Enabled && explicit("enabled") {
			warn("%s=true turns trace export off although tracing.enabled is true", EnvSDKDisabled)
		}
		c.Enabled = false
	case explicit("enabled"):
		if c.Enabled && exporter == "none" {
			warn("tracing.enabled is true, so %s=none is ignored", EnvTracesExporter)
		}
	case exporter == "none":
		c.Enabled = false
	case exporter == "otlp", endpoint:
		c.Enabled = true
	}

	attrs, err := ParseResourceAttributes(env(EnvResourceAttributes))
	if err != nil {
		warn("%s ignored: %v", EnvResourceAttributes, err)
	}
	if !explicit("service_name") {
		if v := env(EnvServiceName); v != "" {
			c.ServiceName = v
		} else if v := attrs["service.name"]; v != "" {
			c.ServiceName = v
		}
	}
	if !explicit("service_version") {
		if v := attrs["service.version"]; v != "" {
			c.ServiceVersion = v
		}
	}
	delete(attrs, "service.name")
	delete(attrs, "service.version")
	if len(attrs) > 0 {
		for k, v := range c.ResourceAttributes {
			attrs[k] = v
		}
		c.ResourceAttributes = attrs
	}

	if !explicit("timeout") {
		for _, k := range []string{EnvTracesTimeout, EnvTimeout} {
			v := env(k)
			if v == "" {
				continue
			}
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ms <= 0 || ms > int64(24*time.Hour/time.Millisecond) {
				warn("%s=%q is not a positive number of milliseconds; ignored", k, v)
				continue
			}
			c.Timeout = time.Duration(ms) * time.Millisecond
			break
		}
	}
	return warnings
}

// ParseResourceAttributes reads OTEL_RESOURCE_ATTRIBUTES: comma-separated
// key=value pairs with percent-encoded values. As the specification asks,
// one malformed pair discards the whole value.
func ParseResourceAttributes(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, pair := range strings.Split(s, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return map[string]string{}, fmt.Errorf("%q is not key=value", pair)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return map[string]string{}, fmt.Errorf("value of %q is not percent-encoded correctly", k)
		}
		out[k] = val
	}
	return out, nil
}

// Resource is the resource of spans of service name at version ver (empty
// leaves service.version out), with the configured resource attributes.
// Workflow traces use it with ServiceName and ServiceVersion, the
// sidecar's own spans with SidecarServiceName.
func (c Config) Resource(name, ver string) *resource.Resource {
	attrs := make([]attribute.KeyValue, 0, len(c.ResourceAttributes)+2)
	for _, k := range sortedKeys(c.ResourceAttributes) {
		if k != "service.name" && k != "service.version" {
			attrs = append(attrs, attribute.String(k, c.ResourceAttributes[k]))
		}
	}
	attrs = append(attrs, attribute.String("service.name", name))
	if ver != "" {
		attrs = append(attrs, attribute.String("service.version", ver))
	}
	return resource.NewSchemaless(attrs...)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
