package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tasker-systems/tasker-sidecar/deploy"
	"github.com/tasker-systems/tasker-sidecar/internal/cli"
	"github.com/tasker-systems/tasker-sidecar/internal/config"
)

const (
	manifestsDir     = "../deploy/kubernetes"
	sidecarContainer = "tasker-sidecar"
	secretExample    = "secret.example.yaml"
)

func TestGeneratedManifestsAreCurrent(t *testing.T) {
	files, err := deploy.Generated(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		committed, err := os.ReadFile(f.Path)
		if err != nil {
			t.Errorf("%v (run make dashboards)", err)
			continue
		}
		if !bytes.Equal(committed, f.Content) {
			t.Errorf("%s differs from what the generator writes: run make dashboards", f.Path)
		}
	}
}

// object is a decoded manifest; get walks it.
type object map[string]any

func (o object) get(path ...string) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func (o object) str(path ...string) string { s, _ := o.get(path...).(string); return s }

func (o object) list(path ...string) []object {
	items, _ := o.get(path...).([]any)
	var out []object
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			out = append(out, object(m))
		}
	}
	return out
}

func (o object) labels(path ...string) map[string]string {
	out := map[string]string{}
	m, _ := o.get(path...).(map[string]any)
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return out
}

// manifests decodes every document of every YAML file, by file.
func manifests(t *testing.T) map[string][]object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestsDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifestsDir, err)
	}
	out := map[string][]object{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if doc == nil {
				continue
			}
			o := object(doc)
			if o.str("apiVersion") == "" || o.str("kind") == "" {
				t.Errorf("%s: a document without apiVersion or kind", f)
			}
			out[filepath.Base(f)] = append(out[filepath.Base(f)], o)
		}
	}
	return out
}

func one(t *testing.T, all map[string][]object, kind string) object {
	t.Helper()
	var found []object
	for file, docs := range all {
		if file == secretExample && kind != "Secret" {
			continue
		}
		for _, d := range docs {
			if d.str("kind") == kind {
				found = append(found, d)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s, found %d", kind, len(found))
	}
	return found[0]
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	all := manifests(t)
	k := one(t, all, "Kustomization")
	var listed []string
	for _, r := range k.get("resources").([]any) {
		listed = append(listed, r.(string))
	}
	var want []string
	for f := range all {
		if f != "kustomization.yaml" && f != secretExample {
			want = append(want, f)
		}
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("kustomization.yaml resources %v, want %v", listed, want)
	}
}

func containers(t *testing.T, d object) map[string]object {
	out := map[string]object{}
	for _, c := range d.list("spec", "template", "spec", "containers") {
		out[c.str("name")] = c
	}
	if len(out) < 2 || out[sidecarContainer] == nil {
		t.Fatalf("want the application and %s in one pod, got %v", sidecarContainer, slices.Collect(maps.Keys(out)))
	}
	return out
}

func portNames(c object) map[string]int {
	out := map[string]int{}
	for _, p := range c.list("ports") {
		n, _ := p.get("containerPort").(int)
		out[p.str("name")] = n
	}
	return out
}

func TestSidecarProbes(t *testing.T) {
	all := manifests(t)
	sc := containers(t, one(t, all, "Deployment"))[sidecarContainer]
	ports := portNames(sc)
	for probe, path := range map[string]string{
		"livenessProbe":  "/tasker/health/live",
		"readinessProbe": "/tasker/health/ready",
	} {
		if got := sc.str(probe, "httpGet", "path"); got != path {
			t.Errorf("sidecar %s path %q, want %q", probe, got, path)
		}
		port := fmt.Sprint(sc.get(probe, "httpGet", "port"))
		if _, ok := ports[port]; !ok {
			t.Errorf("sidecar %s port %q is not one of the container's ports %v", probe, port, ports)
		}
	}
}

func TestContainersAreLockedDown(t *testing.T) {
	all := manifests(t)
	d := one(t, all, "Deployment")
	podNonRoot, _ := d.get("spec", "template", "spec", "securityContext", "runAsNonRoot").(bool)
	for name, c := range containers(t, d) {
		sc := object(c.mapping("securityContext"))
		nonRoot, set := sc.get("runAsNonRoot").(bool)
		if !(nonRoot || (!set && podNonRoot)) {
			t.Errorf("%s: not runAsNonRoot", name)
		}
		if ro, _ := sc.get("readOnlyRootFilesystem").(bool); !ro {
			t.Errorf("%s: root file system is writable", name)
		}
		if esc, ok := sc.get("allowPrivilegeEscalation").(bool); !ok || esc {
			t.Errorf("%s: allowPrivilegeEscalation must be false", name)
		}
		if drop, _ := sc.get("capabilities", "drop").([]any); !slices.Contains(drop, any("ALL")) {
			t.Errorf("%s: capabilities not dropped", name)
		}
		for _, r := range []string{"cpu", "memory"} {
			if c.get("resources", "requests", r) == nil {
				t.Errorf("%s: no %s request", name, r)
			}
		}
		if c.get("resources", "limits", "memory") == nil {
			t.Errorf("%s: no memory limit", name)
		}
	}
}

// TestSidecarGoMemLimit: GOMEMLIMIT is a fixed share of the sidecar's
// memory limit, below it (the runtime does not count the executable's pages
// or the page cache the container is charged for) but close enough to make
// the runtime collect harder before the kernel kills the container.
func TestSidecarGoMemLimit(t *testing.T) {
	sc := containers(t, one(t, manifests(t), "Deployment"))[sidecarContainer]
	limit, err := quantityBytes(fmt.Sprint(sc.get("resources", "limits", "memory")))
	if err != nil {
		t.Fatalf("limits.memory: %v", err)
	}
	var value string
	for _, e := range sc.list("env") {
		if e.str("name") == "GOMEMLIMIT" {
			value = e.str("value")
		}
	}
	if value == "" {
		t.Fatal("the sidecar has no GOMEMLIMIT with a value")
	}
	soft, err := goMemLimitBytes(value)
	if err != nil {
		t.Fatalf("GOMEMLIMIT: %v", err)
	}
	if ratio := float64(soft) / float64(limit); ratio < 0.80 || ratio > 0.92 {
		t.Errorf("GOMEMLIMIT %s is %.0f%% of limits.memory %d bytes, want 80-92%%", value, 100*ratio, limit)
	}
}

// quantityBytes reads a Kubernetes memory quantity with a binary or
// decimal suffix, or none.
func quantityBytes(q string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(q, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("quantity %q: %w", q, err)
			}
			return v * u.mult, nil
		}
	}
	return 0, fmt.Errorf("quantity %q", q)
}

// goMemLimitBytes reads GOMEMLIMIT as the runtime does: a number of bytes
// with an optional B, KiB, MiB, GiB or TiB suffix.
func goMemLimitBytes(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}, {"", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%q: %w", s, err)
			}
			return v * u.mult, nil
		}
	}
	return 0, fmt.Errorf("%q", s)
}

// mapping returns a nested mapping, nil if there is none.
func (o object) mapping(path ...string) map[string]any {
	m, _ := o.get(path...).(map[string]any)
	return m
}

// TestSecretsComeFromTheSecret: credentials reach the containers through
// secretKeyRef only, and every key referenced exists in the example Secret.
func TestSecretsComeFromTheSecret(t *testing.T) {
	all := manifests(t)
	secret := one(t, all, "Secret")
	keys := secret.labels("stringData")
	used := 0
	for name, c := range containers(t, one(t, all, "Deployment")) {
		for _, e := range c.list("env") {
			env := e.str("name")
			if v := e.str("value"); strings.Contains(v, "://") || strings.Contains(v, "@") {
				t.Errorf("%s: %s has a literal value that looks like a credential", name, env)
			}
			sensitive := strings.Contains(env, "URL") || strings.Contains(env, "PASSWORD") || strings.Contains(env, "TOKEN")
			ref := e.get("valueFrom", "secretKeyRef")
			if sensitive && ref == nil {
				t.Errorf("%s: %s does not come from a Secret", name, env)
			}
			if ref == nil {
				continue
			}
			used++
			r := object(ref.(map[string]any))
			if r.str("name") != secret.str("metadata", "name") {
				t.Errorf("%s: %s refers to Secret %q, not %q", name, env, r.str("name"), secret.str("metadata", "name"))
			}
			if _, ok := keys[r.str("key")]; !ok {
				t.Errorf("%s: %s refers to key %q, missing from %s", name, env, r.str("key"), secretExample)
			}
		}
	}
	if used == 0 {
		t.Error("no container reads the Secret")
	}
	for _, docs := range all {
		for _, d := range docs {
			if d.str("kind") == "ConfigMap" && strings.Contains(fmt.Sprint(d.get("data")), "change-me") {
				t.Errorf("ConfigMap %s holds a credential", d.str("metadata", "name"))
			}
		}
	}
}

// TestSidecarConfigIsValid loads the ConfigMap's configuration the way the
// sidecar does, with the environment the Deployment gives it.
func TestSidecarConfigIsValid(t *testing.T) {
	all := manifests(t)
	d := one(t, all, "Deployment")
	sc := containers(t, d)[sidecarContainer]
	args := fmt.Sprint(sc.get("args"))
	var configPath string
	for _, a := range sc.get("args").([]any) {
		if s := a.(string); strings.HasSuffix(s, ".yaml") {
			configPath = s
		}
	}
	if !strings.Contains(args, "run") || configPath == "" {
		t.Fatalf("sidecar args %s: want run --config FILE", args)
	}
	// The file comes from a ConfigMap volume mounted at its directory.
	var volume string
	for _, m := range sc.list("volumeMounts") {
		if m.str("mountPath") == filepath.Dir(configPath) {
			volume = m.str("name")
		}
	}
	var configMapName string
	for _, v := range d.list("spec", "template", "spec", "volumes") {
		if v.str("name") == volume {
			configMapName = v.str("configMap", "name")
		}
	}
	var content string
	for _, docs := range all {
		for _, o := range docs {
			if o.str("kind") == "ConfigMap" && o.str("metadata", "name") == configMapName {
				content = o.str("data", filepath.Base(configPath))
			}
		}
	}
	if content == "" {
		t.Fatalf("%s is not provided by a ConfigMap volume (volume %q, ConfigMap %q)", configPath, volume, configMapName)
	}
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := one(t, all, "Secret").labels("stringData")
	var environ []string
	for _, e := range sc.list("env") {
		if key := e.str("valueFrom", "secretKeyRef", "key"); key != "" {
			environ = append(environ, e.str("name")+"="+secret[key])
		}
	}
	cfg, _, err := config.Load(nil, &config.Flags{ConfigFile: file}, environ)
	if err != nil {
		t.Fatalf("the sidecar would refuse its configuration: %v", err)
	}
	// run's pre-flight too, so the pod does not exit 2 at start.
	if err := cli.Preflight(cfg); err != nil {
		t.Fatalf("the sidecar would refuse to start: %v", err)
	}
	// The trace panels, the exemplar links and the trace export alerts need it.
	if !cfg.Tracing.Enabled || cfg.Tracing.Endpoint == "" {
		t.Errorf("tracing is off (enabled %v, endpoint %q): the trace panels and alerts would have no data",
			cfg.Tracing.Enabled, cfg.Tracing.Endpoint)
	}
	_, port, _ := strings.Cut(cfg.Server.Listen, ":")
	if fmt.Sprint(portNames(sc)["metrics"]) != port {
		t.Errorf("server.listen %q does not match the metrics port %d", cfg.Server.Listen, portNames(sc)["metrics"])
	}
}

func TestServiceMonitorScrapesTheSidecar(t *testing.T) {
	all := manifests(t)
	d := one(t, all, "Deployment")
	svc := one(t, all, "Service")
	sm := one(t, all, "ServiceMonitor")
	sc := containers(t, d)[sidecarContainer]

	podLabels := d.labels("spec", "template", "metadata", "labels")
	for k, v := range svc.labels("spec", "selector") {
		if podLabels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pod's labels %v", k, v, podLabels)
		}
	}
	if p, _ := svc.get("spec", "publishNotReadyAddresses").(bool); !p {
		t.Error("the metrics Service must publish not-ready pods, or Prometheus loses them when readiness fails")
	}
	svcPorts := map[string]object{}
	for _, p := range svc.list("spec", "ports") {
		svcPorts[p.str("name")] = p
	}
	svcLabels := svc.labels("metadata", "labels")
	for k, v := range sm.labels("spec", "selector", "matchLabels") {
		if svcLabels[k] != v {
			t.Errorf("ServiceMonitor selector %s=%s does not match the Service's labels %v", k, v, svcLabels)
		}
	}
	endpoints := sm.list("spec", "endpoints")
	if len(endpoints) == 0 {
		t.Fatal("ServiceMonitor has no endpoints")
	}
	for _, ep := range endpoints {
		p, ok := svcPorts[ep.str("port")]
		if !ok {
			t.Errorf("ServiceMonitor port %q is not a port of the Service (%v)", ep.str("port"), slices.Collect(maps.Keys(svcPorts)))
			continue
		}
		if _, ok := portNames(sc)[fmt.Sprint(p.get("targetPort"))]; !ok {
			t.Errorf("Service port %s targets %v, not a port of the sidecar", ep.str("port"), p.get("targetPort"))
		}
		if ep.str("path") != "/metrics" {
			t.Errorf("ServiceMonitor path %q, want /metrics", ep.str("path"))
		}
		if h, _ := ep.get("honorLabels").(bool); !h {
			t.Error("ServiceMonitor needs honorLabels: the sidecar's namespace label would become exported_namespace")
		}
		// Two installations in different namespaces must not share a job.
		jobByNamespace := false
		for _, r := range ep.list("relabelings") {
			src := fmt.Sprint(r.get("sourceLabels"))
			if r.str("targetLabel") == "job" && strings.Contains(src, "__meta_kubernetes_namespace") &&
				strings.Contains(r.str("replacement"), "${1}") {
				jobByNamespace = true
			}
		}
		if !jobByNamespace {
			t.Error("ServiceMonitor must put the Kubernetes namespace into job: every installation's Service has the same name")
		}
	}
}

func TestPrometheusRuleIsTheRuleFile(t *testing.T) {
	all := manifests(t)
	pr := one(t, all, "PrometheusRule")
	raw, err := os.ReadFile(filepath.Join(root, deploy.RulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pr.get("spec", "groups"), file["groups"]) {
		t.Errorf("the PrometheusRule's groups differ from %s: run make dashboards", deploy.RulesFile)
	}
}

func TestDashboardsConfigMapCarriesTheDashboards(t *testing.T) {
	all := manifests(t)
	var cm object
	for _, o := range all[filepath.Base(deploy.DashboardsConfigFile)] {
		cm = o
	}
	if cm == nil || cm.labels("metadata", "labels")["grafana_dashboard"] != "1" {
		t.Fatal("no ConfigMap labelled grafana_dashboard=1")
	}
	files, _ := filepath.Glob(filepath.Join(root, deploy.DashboardsDir, "*.json"))
	data := cm.labels("data")
	if len(data) != len(files) {
		t.Errorf("ConfigMap carries %d dashboards, %s has %d", len(data), deploy.DashboardsDir, len(files))
	}
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if data[filepath.Base(f)] != string(want) {
			t.Errorf("ConfigMap entry %s differs from %s: run make dashboards", filepath.Base(f), f)
		}
	}
}
