package deploy_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/deploy"
)

// TestDashboardsConfigMapFitsKubectlApply: `kubectl apply` (client-side)
// keeps the whole object, as compact JSON, in its
// kubectl.kubernetes.io/last-applied-configuration annotation, and the API
// server refuses an object whose annotations exceed 256 KiB. The dashboards
// ConfigMap is the largest manifest; past the limit `kubectl apply -k`
// fails and operators would need server-side apply. A panel that grows it
// past the limit must be trimmed (descriptions are most of the JSON).
func TestDashboardsConfigMapFitsKubectlApply(t *testing.T) {
	const annotationLimit = 256 << 10
	var cm object
	for _, o := range manifests(t)[filepath.Base(deploy.DashboardsConfigFile)] {
		cm = o
	}
	if cm == nil {
		t.Fatalf("no object in %s", deploy.DashboardsConfigFile)
	}
	raw, err := json.Marshal(map[string]any(cm))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) >= annotationLimit {
		t.Errorf("%s is %d bytes as JSON, at or over kubectl apply's %d-byte annotation limit",
			deploy.DashboardsConfigFile, len(raw), annotationLimit)
	}
	t.Logf("%s: %d of %d bytes", deploy.DashboardsConfigFile, len(raw), annotationLimit)
}
