// Package deploy holds what operators deploy next to the sidecar: the
// Prometheus rules (prometheus/), the Helm chart (helm/tasker-sidecar/) and
// the Kustomize manifests (kubernetes/).
//
// One source for each thing: the dashboards come from the dashboard
// generator (package dashboards), the rules from prometheus/, the shapes of
// the Kubernetes objects from the chart's templates. Generated writes the
// dashboards' JSON and the chart's copies of the dashboards and the rule file
// (Helm reads files only from inside the chart); the Kustomize manifests are
// the chart rendered by the real helm binary with helm/kustomize.values.yaml
// (make manifests, scripts/manifests.sh). The tests here check the first
// part; make check-helm renders the chart again and fails when
// deploy/kubernetes/ differs. Rendering in-process with Helm's Go packages
// would have put Helm and the Kubernetes client libraries into this module,
// which the sidecar does not need; see helm/tasker-sidecar/README.md.
package deploy

import (
	"os"
	"path/filepath"

	"github.com/tasker-systems/tasker-sidecar/dashboards"
)

// Paths relative to the repository root.
const (
	RulesFile     = "deploy/prometheus/tasker-sidecar.rules.yaml"
	DashboardsDir = "grafana/dashboards"

	ChartDir           = "deploy/helm/tasker-sidecar"
	ChartRulesFile     = ChartDir + "/files/tasker-sidecar.rules.yaml"
	ChartDashboardsDir = ChartDir + "/files/dashboards"

	// The Kustomize manifests rendered from the chart by make manifests.
	ManifestsDir         = "deploy/kubernetes"
	PrometheusRuleFile   = ManifestsDir + "/prometheusrule.yaml"
	DashboardsConfigFile = ManifestsDir + "/grafana-dashboards.yaml"
)

// File is one generated file.
type File struct {
	Path    string // under the root given to Generated
	Content []byte
}

// Generated returns every file the generator writes: each dashboard's JSON
// under grafana/dashboards/ and under the chart's files/dashboards/, and the
// chart's copy of the rule file.
func Generated(root string) ([]File, error) {
	var files []File
	for _, d := range dashboards.All() {
		content, err := d.JSON()
		if err != nil {
			return nil, err
		}
		files = append(files,
			File{Path: filepath.Join(root, DashboardsDir, d.File), Content: content},
			File{Path: filepath.Join(root, ChartDashboardsDir, d.File), Content: content},
		)
	}
	rules, err := os.ReadFile(filepath.Join(root, RulesFile))
	if err != nil {
		return nil, err
	}
	files = append(files, File{Path: filepath.Join(root, ChartRulesFile), Content: rules})
	return files, nil
}

// Stale returns the files in the generator's output directories that it no
// longer writes (a dashboard renamed or removed), which would otherwise
// still be provisioned or rendered into the chart.
func Stale(root string, files []File) ([]string, error) {
	written := map[string]bool{}
	for _, f := range files {
		written[filepath.Clean(f.Path)] = true
	}
	var stale []string
	for _, dir := range []string{DashboardsDir, ChartDashboardsDir} {
		found, err := filepath.Glob(filepath.Join(root, dir, "*.json"))
		if err != nil {
			return nil, err
		}
		for _, f := range found {
			if !written[filepath.Clean(f)] {
				stale = append(stale, f)
			}
		}
	}
	return stale, nil
}
