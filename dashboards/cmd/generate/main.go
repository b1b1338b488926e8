// Command generate writes the generated files: the Grafana dashboards under
// grafana/dashboards/, and the Helm chart's copies of the dashboards and of
// the Prometheus rule file (deploy/helm/tasker-sidecar/files/), from which
// the chart renders its ConfigMaps and PrometheusRule and make manifests the
// Kustomize objects. It removes dashboards it no longer writes. Run it from
// the repository root (make dashboards); tests fail while the committed
// files differ from what it writes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tasker-systems/tasker-sidecar/deploy"
)

func main() {
	os.Exit(run())
}

func run() int {
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	files, err := deploy.Generated(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		return 1
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "generate:", err)
			return 1
		}
		if err := os.WriteFile(f.Path, f.Content, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "generate:", err)
			return 1
		}
		fmt.Println("wrote", f.Path)
	}
	stale, err := deploy.Stale(*root, files)
	if err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		return 1
	}
	for _, f := range stale {
		if err := os.Remove(f); err != nil {
			fmt.Fprintln(os.Stderr, "generate:", err)
			return 1
		}
		fmt.Println("removed", f)
	}
	return 0
}
