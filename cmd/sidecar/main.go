// Command sidecar observes a Tasker workflow engine's database and cache store.
package main

import (
	"os"

	"github.com/tasker-systems/tasker-sidecar/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
