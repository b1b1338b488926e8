package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Every way a configuration value gets printed must hide the secret: fmt's
// verbs, slog's text and JSON handlers, YAML (check-config) and JSON.
func TestNeverPrinted(t *testing.T) {
	const password = "s3cr3t-pw"
	type holder struct {
		Token String `json:"token" yaml:"token"`
		URL   URL    `json:"url" yaml:"url"`
	}
	h := holder{Token: password, URL: "redis://user:" + password + "@cache:6379/0"}

	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("cfg", "token", h.Token, "url", h.URL)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("cfg", "token", h.Token, "url", h.URL)
	asJSON, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	asYAML, err := yaml.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"%v":        fmt.Sprintf("%v", h),
		"%+v":       fmt.Sprintf("%+v", h),
		"%#v":       fmt.Sprintf("%#v", h),
		"%s":        fmt.Sprintf("%s %s", h.Token, h.URL),
		"slog text": text.String(),
		"slog json": js.String(),
		"json":      string(asJSON),
		"yaml":      string(asYAML),
	} {
		if strings.Contains(out, password) {
			t.Errorf("%s prints the secret: %s", name, out)
		}
		if !strings.Contains(out, "cache:6379") {
			t.Errorf("%s lost the URL's host: %s", name, out)
		}
	}
	if h.Token.Value() != password || !strings.Contains(h.URL.Value(), password) {
		t.Error("Value must return the secret itself")
	}
}
