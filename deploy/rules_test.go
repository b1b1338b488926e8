package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tasker-systems/tasker-sidecar/deploy"
)

const root = ".."

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, deploy.RulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatal(err)
	}
	return rf
}

// promtool is the tool Prometheus itself uses to load rules, so a rule it
// accepts here is one Prometheus accepts. Missing promtool is a failure:
// `make services` installs it.
func promtool(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is required (make services installs Debian's prometheus package): %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool(t, "check", "rules", deploy.RulesFile)
}

func TestPromtoolTestRules(t *testing.T) {
	tests, err := filepath.Glob(filepath.Join(root, "deploy/prometheus/tests/*.test.yaml"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no rule unit tests: %v", err)
	}
	args := []string{"test", "rules"}
	for _, f := range tests {
		rel, _ := filepath.Rel(root, f)
		args = append(args, rel)
	}
	promtool(t, args...)
}

type ruleTests struct {
	Tests []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestEveryAlertIsTestedFiringAndNotFiring holds the rule file to the
// promise in docs/alerts.md: no alert without a unit test showing when it
// fires and when it does not.
func TestEveryAlertIsTestedFiringAndNotFiring(t *testing.T) {
	firing, quiet := map[string]bool{}, map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(root, "deploy/prometheus/tests/*.test.yaml"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rt ruleTests
		if err := yaml.Unmarshal(raw, &rt); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, tc := range rt.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					firing[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
	}
	for _, a := range alerts(t) {
		if !firing[a] {
			t.Errorf("%s: no promtool test where it fires", a)
		}
		if !quiet[a] {
			t.Errorf("%s: no promtool test where it does not fire", a)
		}
	}
}

func alerts(t *testing.T) []string {
	var out []string
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r.Alert)
			}
		}
	}
	return out
}

func TestAlertsHaveSeverityAnnotationsAndRunbooks(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(root, "docs/alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)\s*$`).FindAllStringSubmatch(string(doc), -1) {
		headings[m[1]] = true
	}
	const runbooks = "https://github.com/tasker-systems/tasker-sidecar/blob/main/docs/alerts.md#"
	seen := map[string]bool{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				if !strings.Contains(r.Record, ":") {
					t.Errorf("recording rule %q: name it level:metric:operations", r.Record)
				}
				continue
			}
			if seen[r.Alert] {
				t.Errorf("%s: defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
			}
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[k]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, k)
				}
			}
			if want := runbooks + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !headings[r.Alert] {
				t.Errorf("%s: no runbook section \"## %s\" in docs/alerts.md", r.Alert, r.Alert)
			}
		}
	}
	for h := range headings {
		if !seen[h] && strings.HasPrefix(h, "Tasker") {
			t.Errorf("docs/alerts.md has a runbook for %s, which is not in %s", h, deploy.RulesFile)
		}
	}
}
