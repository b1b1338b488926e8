package traces

import (
	"slices"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if errs := DefaultConfig().Validate(); len(errs) != 0 {
		t.Fatalf("defaults invalid: %v", errs)
	}
	c := DefaultConfig()
	c.Protocol = "http/json"
	c.Endpoint = "jaeger"
	c.Timeout = 0
	c.ServiceName = ""
	c.SamplingRatio = 1.5
	c.MaxSpansPerSecond = -1
	c.MaxSpansPerTrace = 0
	var got []string
	for _, err := range c.Validate() {
		got = append(got, err.Error())
	}
	for _, want := range []string{"protocol:", "endpoint:", "timeout:", "service_name:", "sampling_ratio:", "max_spans_per_second:", "max_spans_per_trace:"} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("no error for %s in %v", want, got)
		}
	}
	c = DefaultConfig()
	c.Endpoint = "ftp://x:1"
	if len(c.Validate()) != 1 {
		t.Error("ftp endpoint accepted")
	}
}
