package cli

import (
	"strings"
	"testing"

	"github.com/tasker-systems/tasker-sidecar/internal/testtls"
)

// The start-up line gives the status URL with the scheme the server speaks.
func TestServingLogScheme(t *testing.T) {
	certFile, keyFile, _ := testtls.SelfSigned(t)
	// The database is down: the sidecar starts degraded, which is enough.
	const dbURL = "postgres://tasker@127.0.0.1:1/tasker?connect_timeout=1"
	for _, tc := range []struct {
		name    string
		environ []string
		want    string
	}{
		{"plain", nil, "status=http://127.0.0.1:"},
		{"tls", []string{"SIDECAR_SERVER_TLS_CERT_FILE=" + certFile, "SIDECAR_SERVER_TLS_KEY_FILE=" + keyFile}, "status=https://127.0.0.1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := startSidecar(t, tc.environ, "--database-url", dbURL)
			var line string
			for _, l := range strings.Split(sc.stderr.String(), "\n") {
				if strings.Contains(l, "msg=serving") {
					line = l
				}
			}
			if !strings.Contains(line, tc.want) {
				t.Errorf("serving line %q, want %s", line, tc.want)
			}
		})
	}
}
