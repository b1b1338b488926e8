// Command generate writes the generated files: the Grafana dashboards under
// grafana/dashboards/ and, from them and the Prometheus rule file, the
// Kubernetes objects that carry them (deploy/kubernetes/). Run it from the
// repository root (make dashboards); tests fail while the committed files
// differ from what it writes.
package main

import (
	"flag"
	"fmt"
	"os"

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
		if err := os.WriteFile(f.Path, f.Content, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "generate:", err)
			return 1
		}
		fmt.Println("wrote", f.Path)
	}
	return 0
}
