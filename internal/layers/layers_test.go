package layers

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/tasker-systems/tasker-sidecar/"

// TestBoundaries asks the go tool for each package's dependencies (go test
// puts its own go first on PATH) and refuses the ones the architecture rules
// out.
func TestBoundaries(t *testing.T) {
	cache := []string{module + "store", module + "coord", module + "detector", module + "ttl"}
	for _, tc := range []struct {
		pkg string
		// banned are import path prefixes: a module, or one of ours with
		// its subpackages.
		banned []string
		why    string
	}{
		{"internal/config", []string{"github.com/gin-gonic/", "google.golang.org/grpc", "go.opentelemetry.io/otel/exporters/otlp", module + "traces/otlp"},
			"loading configuration must not link the HTTP router, gRPC or OTLP"},
		{"server", []string{"github.com/gin-gonic/"}, "internal/config holds server.Config"},
		// The readers of the workflow database know nothing of the cache
		// store: they get what they need through small interfaces of their
		// own (collector.CheckpointStore, collector.Lease,
		// analytics.ShareFunc) that the wiring fills.
		{"collector", cache, "it reads the workflow database"},
		{"analytics", cache, "it reads the workflow database"},
		{"traces", cache, "it reads the workflow database"},
		// The detector reports what the store can do; coord acts on it.
		{"store", cache[1:], "the client layer is below coordination"},
	} {
		t.Run(tc.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", module+tc.pkg).Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v", tc.pkg, err)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, b := range tc.banned {
					if dep == b || strings.HasPrefix(dep, strings.TrimSuffix(b, "/")+"/") {
						t.Errorf("%s depends on %s (%s)", tc.pkg, dep, tc.why)
					}
				}
			}
		})
	}
}
