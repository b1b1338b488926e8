// Command validate decodes Kubernetes manifests strictly into the API types
// they name: k8s.io/api for the built-in kinds and the Prometheus Operator's
// monitoring/v1 for ServiceMonitor and PrometheusRule. An unknown or
// misspelt field, a value of the wrong type or a malformed quantity is an
// error, as it would be for the API server (kubectl apply --validate=strict),
// and so are a few of the API server's own checks that decoding does not
// make (names, labels, a Deployment's selector, volume mounts, probe ports).
// The container snippet of the chart's container mode is decoded as a list
// of containers and volumes.
//
//	go run . FILE...     (make check-helm runs it on every rendering)
//
// It prints one line per object and exits 1 naming every problem, 2 on bad
// usage. A module of its own (deploy/validate/go.mod), so that the sidecar's
// module does not carry k8s.io/api and the Prometheus Operator's types.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: validate FILE...")
		return 2
	}
	failed := 0
	objects := 0
	for _, file := range args {
		raw, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintln(stderr, "validate:", err)
			return 2
		}
		docs, err := split(raw)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", file, err)
			failed++
			continue
		}
		for _, doc := range docs {
			objects++
			id, problems := Validate(doc)
			if len(problems) == 0 {
				fmt.Fprintf(stdout, "ok   %s: %s\n", file, id)
				continue
			}
			failed++
			for _, p := range problems {
				fmt.Fprintf(stderr, "FAIL %s: %s: %v\n", file, id, p)
			}
		}
	}
	if objects == 0 {
		fmt.Fprintln(stderr, "validate: no object in", strings.Join(args, " "))
		return 1
	}
	fmt.Fprintf(stdout, "%d objects, %d failed\n", objects, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

// split returns the YAML documents of a stream that hold something.
func split(raw []byte) ([][]byte, error) {
	r := yamlutil.NewYAMLReader(bufioReader(raw))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var probe any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return nil, err
		}
		if probe != nil {
			docs = append(docs, bytes.Clone(doc))
		}
	}
}
