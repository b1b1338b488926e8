package config

import (
	"os/exec"
	"strings"
	"testing"
)

// Loading configuration must not link the HTTP server or the OTLP exporter:
// each component's section is imported from a package that does not pull
// gin, gRPC or OTLP (the tracing section comes from traces, the exporter
// from traces/otlp). The test asks the go tool for the import graph; go
// test puts its own go first on PATH.
func TestNoHeavyDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/gin-gonic/", "google.golang.org/grpc", "/otlp"} {
			if strings.Contains(pkg, banned) {
				t.Errorf("internal/config depends on %s", pkg)
			}
		}
	}
}
