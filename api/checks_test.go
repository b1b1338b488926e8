package api

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/readiness"
)

func TestSaturationCheck(t *testing.T) {
	for _, tc := range []struct {
		name       string
		saturated  bool
		msg        string
		wantStatus string
		wantMsg    string
	}{
		{"saturated", true, "analytics queue full (16 waiting)", readiness.StatusDegraded, "analytics queue full (16 waiting)"},
		{"not saturated", false, "", readiness.StatusHealthy, "Not saturated"},
		{"not saturated with a message", false, "3 of 16 waiting", readiness.StatusHealthy, "3 of 16 waiting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := readiness.NewSaturationCheck("analytics_queue", func() (bool, string) { return tc.saturated, tc.msg })
			if c.Name() != "analytics_queue" {
				t.Errorf("name = %q", c.Name())
			}
			res := c.Check(context.Background())
			if res.Status != tc.wantStatus || res.Message != tc.wantMsg {
				t.Errorf("got %s %q, want %s %q", res.Status, res.Message, tc.wantStatus, tc.wantMsg)
			}

			// Saturated or not, the sidecar stays ready: it may share
			// Tasker's pod, whose Service a failing probe would leave.
			opts := baseOptions(&fakeSource{})
			opts.Checks = []readiness.Checker{c}
			s := newServer(t, opts)
			r := do(t, s, http.MethodGet, PathReady)
			m := r.json(t)
			if r.code != http.StatusOK || m["ready"] != true {
				t.Fatalf("ready = %d %s", r.code, r.body)
			}
			check := m["checks"].(map[string]any)["analytics_queue"].(map[string]any)
			if check["status"] != tc.wantStatus {
				t.Errorf("readiness shows %v, want %s", check["status"], tc.wantStatus)
			}
			metrics := string(do(t, s, http.MethodGet, PathMetrics).body)
			want := `tasker_sidecar_readiness_check{check="analytics_queue",status="` + tc.wantStatus + `"} 1`
			if !strings.Contains(metrics, want) || !strings.Contains(metrics, "\ntasker_sidecar_ready 1\n") {
				t.Errorf("metrics lack %s or ready 1:\n%s", want, grepLines(metrics, "tasker_sidecar_ready"))
			}
		})
	}
}
