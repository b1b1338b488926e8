package deploy_test

import (
	"encoding/json"
	"testing"
)

// TestObjectsFitKubectlApply: `kubectl apply` (client-side) keeps the whole
// object, as compact JSON, in its
// kubectl.kubernetes.io/last-applied-configuration annotation, and the API
// server refuses an object whose annotations exceed 256 KiB; past it
// `kubectl apply -k` fails and operators would need server-side apply. The
// dashboards once shared one ConfigMap at 86 % of the limit; now each has
// its own, and each must stay under half the limit so that a dashboard can
// grow for a while. A dashboard that outgrows that must be trimmed
// (descriptions are most of the JSON) or split. Every other object must fit
// under the limit itself.
func TestObjectsFitKubectlApply(t *testing.T) {
	const annotationLimit = 256 << 10
	forEach(t, func(t *testing.T, r rendering) {
		dashboards := map[string]bool{}
		for _, cm := range r.dashboardConfigMaps() {
			dashboards[cm.str("metadata", "name")] = true
		}
		largest, largestName := 0, ""
		for file, docs := range r.files {
			for _, o := range docs {
				raw, err := json.Marshal(map[string]any(o))
				if err != nil {
					t.Fatal(err)
				}
				name := o.str("kind") + " " + o.str("metadata", "name")
				limit := annotationLimit
				if dashboards[o.str("metadata", "name")] && o.str("kind") == "ConfigMap" {
					limit = annotationLimit / 2
				}
				if len(raw) >= limit {
					t.Errorf("%s %s is %d bytes as JSON, at or over %d (kubectl apply's annotation limit is %d)",
						file, name, len(raw), limit, annotationLimit)
				}
				if len(raw) > largest {
					largest, largestName = len(raw), name
				}
			}
		}
		t.Logf("largest object: %s, %d of %d bytes", largestName, largest, annotationLimit)
	})
}
