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
	// make check-helm renders the chart with several value sets into this
	// directory (one `helm template` output per *.yaml) and runs these tests
	// on each rendering as well as on the Kustomize manifests.
	chartRenderingsEnv = "TASKER_SIDECAR_CHART_RENDERINGS"
	snippetComponent   = "container-snippet"
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
	stale, err := deploy.Stale(root, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range stale {
		t.Errorf("%s is no longer generated: run make dashboards", f)
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

// mapping returns a nested mapping, nil if there is none.
func (o object) mapping(path ...string) map[string]any {
	m, _ := o.get(path...).(map[string]any)
	return m
}

// decodeFile decodes every document of a YAML file.
func decodeFile(t *testing.T, f string) []object {
	t.Helper()
	raw, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []object
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
		out = append(out, o)
	}
	return out
}

// manifests decodes every document of every Kustomize manifest, by file.
func manifests(t *testing.T) map[string][]object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestsDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifestsDir, err)
	}
	out := map[string][]object{}
	for _, f := range files {
		out[filepath.Base(f)] = decodeFile(t, f)
	}
	return out
}

// rendering is one set of objects the properties below must hold for: the
// Kustomize manifests, or one rendering of the Helm chart.
type rendering struct {
	name      string
	kustomize bool
	files     map[string][]object
}

// renderings returns the Kustomize manifests and, under make check-helm,
// the chart's renderings. The Kustomize manifests are themselves the chart
// rendered with deploy/helm/kustomize.values.yaml.
func renderings(t *testing.T) []rendering {
	t.Helper()
	out := []rendering{{name: "kustomize", kustomize: true, files: manifests(t)}}
	dir := os.Getenv(chartRenderingsEnv)
	if dir == "" {
		t.Logf("%s unset: the Kustomize manifests only (make check-helm checks the chart's renderings)", chartRenderingsEnv)
		return out
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s=%s: no renderings (*.yaml): %v", chartRenderingsEnv, dir, err)
	}
	for _, f := range files {
		out = append(out, rendering{name: filepath.Base(f), files: map[string][]object{filepath.Base(f): decodeFile(t, f)}})
	}
	return out
}

// forEach runs check on every rendering as a subtest.
func forEach(t *testing.T, check func(t *testing.T, r rendering)) {
	for _, r := range renderings(t) {
		t.Run(r.name, func(t *testing.T) { check(t, r) })
	}
}

// all returns the objects of a kind; the example Secret counts only as a Secret.
func (r rendering) all(kind string) []object {
	var found []object
	for _, file := range slices.Sorted(maps.Keys(r.files)) {
		if file == secretExample && kind != "Secret" {
			continue
		}
		for _, d := range r.files[file] {
			if d.str("kind") == kind {
				found = append(found, d)
			}
		}
	}
	return found
}

func (r rendering) one(t *testing.T, kind string) object {
	t.Helper()
	found := r.all(kind)
	if len(found) != 1 {
		t.Fatalf("want one %s, found %d", kind, len(found))
	}
	return found[0]
}

// optional returns the one object of a kind a value set may turn off; the
// Kustomize manifests must have it.
func (r rendering) optional(t *testing.T, kind string) (object, bool) {
	t.Helper()
	found := r.all(kind)
	switch {
	case len(found) == 0 && !r.kustomize:
		t.Logf("no %s in this rendering (turned off by its values)", kind)
		return nil, false
	case len(found) != 1:
		t.Fatalf("want one %s, found %d", kind, len(found))
	}
	return found[0], true
}

// pod is where the sidecar runs: a Deployment's pod template (the chart's
// deployment mode and the Kustomize manifests), or the container snippet of
// the chart's container mode, to be added to Tasker's pod.
type pod struct {
	spec    object            // containers, volumes, securityContext
	labels  map[string]string // nil for the snippet: the pod is Tasker's
	snippet bool
}

func (p pod) containers(t *testing.T) map[string]object {
	t.Helper()
	out := map[string]object{}
	for _, c := range p.spec.list("containers") {
		out[c.str("name")] = c
	}
	if out[sidecarContainer] == nil {
		t.Fatalf("no %s container, got %v", sidecarContainer, slices.Collect(maps.Keys(out)))
	}
	return out
}

func (p pod) sidecar(t *testing.T) object { return p.containers(t)[sidecarContainer] }

func (r rendering) pod(t *testing.T) pod {
	t.Helper()
	var found []pod
	for _, d := range r.all("Deployment") {
		spec := object(d.mapping("spec", "template", "spec"))
		for _, c := range spec.list("containers") {
			if c.str("name") == sidecarContainer {
				found = append(found, pod{spec: spec, labels: d.labels("spec", "template", "metadata", "labels")})
			}
		}
	}
	for _, cm := range r.all("ConfigMap") {
		if cm.labels("metadata", "labels")["app.kubernetes.io/component"] != snippetComponent {
			continue
		}
		var containers, volumes []any
		if err := yaml.Unmarshal([]byte(cm.str("data", "container.yaml")), &containers); err != nil {
			t.Fatalf("ConfigMap %s container.yaml: %v", cm.str("metadata", "name"), err)
		}
		if err := yaml.Unmarshal([]byte(cm.str("data", "volumes.yaml")), &volumes); err != nil {
			t.Fatalf("ConfigMap %s volumes.yaml: %v", cm.str("metadata", "name"), err)
		}
		found = append(found, pod{spec: object{"containers": containers, "volumes": volumes}, snippet: true})
	}
	if len(found) != 1 {
		t.Fatalf("want the sidecar in one Deployment or container snippet, found %d", len(found))
	}
	p := found[0]
	if r.kustomize && len(p.containers(t)) < 2 {
		t.Fatalf("the Kustomize manifests put the application and %s in one pod (docs/operations.md), got %v",
			sidecarContainer, slices.Collect(maps.Keys(p.containers(t))))
	}
	return p
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	all := manifests(t)
	k := rendering{kustomize: true, files: all}.one(t, "Kustomization")
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
	// tasker-sidecar:latest is published nowhere: the images: block is where
	// users set theirs (kustomize edit set image), so it must name the image.
	found := false
	for _, im := range k.list("images") {
		found = found || im.str("name") == "tasker-sidecar"
	}
	if !found {
		t.Error("kustomization.yaml has no images: entry for tasker-sidecar")
	}
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
	forEach(t, func(t *testing.T, r rendering) {
		sc := r.pod(t).sidecar(t)
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
	})
}

func TestContainersAreLockedDown(t *testing.T) {
	forEach(t, func(t *testing.T, r rendering) {
		p := r.pod(t)
		podNonRoot, _ := p.spec.get("securityContext", "runAsNonRoot").(bool)
		for name, c := range p.containers(t) {
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
		if !p.snippet {
			if auto, ok := p.spec.get("automountServiceAccountToken").(bool); !ok || auto {
				t.Error("the pod mounts a service account token; the sidecar does not talk to the Kubernetes API")
			}
		}
	})
}

// TestSidecarGoMemLimit: GOMEMLIMIT is a fixed share of the sidecar's
// memory limit, below it (the runtime does not count the executable's pages
// or the page cache the container is charged for) but close enough to make
// the runtime collect harder before the kernel kills the container.
func TestSidecarGoMemLimit(t *testing.T) {
	forEach(t, func(t *testing.T, r rendering) {
		sc := r.pod(t).sidecar(t)
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
	})
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

// secretRefs returns the Secret references of the containers' environment,
// by environment variable, checking on the way that nothing sensitive is a
// literal.
func secretRefs(t *testing.T, p pod) map[string]object {
	t.Helper()
	refs := map[string]object{}
	for name, c := range p.containers(t) {
		for _, e := range c.list("env") {
			env := e.str("name")
			if v := e.str("value"); strings.Contains(v, "://") || strings.Contains(v, "@") {
				t.Errorf("%s: %s has a literal value that looks like a credential", name, env)
			}
			sensitive := strings.Contains(env, "URL") || strings.Contains(env, "PASSWORD") || strings.Contains(env, "TOKEN")
			ref := e.mapping("valueFrom", "secretKeyRef")
			if sensitive && ref == nil {
				t.Errorf("%s: %s does not come from a Secret", name, env)
			}
			if ref != nil {
				refs[name+"/"+env] = object(ref)
			}
		}
	}
	return refs
}

// TestSecretsComeFromTheSecret: credentials reach the containers through
// secretKeyRef only, all from one Secret; in the Kustomize manifests every
// key referenced exists in the example Secret. A ServiceMonitor that sends
// a bearer token takes it from the key the sidecar reads it from.
func TestSecretsComeFromTheSecret(t *testing.T) {
	forEach(t, func(t *testing.T, r rendering) {
		p := r.pod(t)
		refs := secretRefs(t, p)
		if len(refs) == 0 {
			t.Fatal("no container reads a Secret")
		}
		names := map[string]bool{}
		for _, ref := range refs {
			names[ref.str("name")] = true
		}
		if len(names) != 1 {
			t.Errorf("the containers read %d Secrets %v, want one", len(names), slices.Collect(maps.Keys(names)))
		}
		if r.kustomize {
			secret := r.one(t, "Secret")
			keys := secret.labels("stringData")
			for env, ref := range refs {
				if ref.str("name") != secret.str("metadata", "name") {
					t.Errorf("%s refers to Secret %q, not %q", env, ref.str("name"), secret.str("metadata", "name"))
				}
				if _, ok := keys[ref.str("key")]; !ok {
					t.Errorf("%s refers to key %q, missing from %s", env, ref.str("key"), secretExample)
				}
			}
		}
		if len(r.all("Secret")) > 0 && !r.kustomize {
			t.Error("the chart renders a Secret: credentials must come from an existing one")
		}
		token := refs[sidecarContainer+"/SIDECAR_SERVER_AUTH_BEARER_TOKEN"]
		for _, sm := range r.all("ServiceMonitor") {
			for _, ep := range sm.list("spec", "endpoints") {
				cred := object(ep.mapping("authorization", "credentials"))
				switch {
				case token == nil && cred != nil:
					t.Error("the ServiceMonitor sends a token the sidecar does not check")
				case token != nil && cred == nil:
					t.Error("the sidecar requires a bearer token on /metrics, but the ServiceMonitor sends none")
				case token != nil && (cred.str("name") != token.str("name") || cred.str("key") != token.str("key")):
					t.Errorf("the ServiceMonitor's token %s/%s is not the sidecar's %s/%s",
						cred.str("name"), cred.str("key"), token.str("name"), token.str("key"))
				}
			}
		}
		for _, d := range r.all("ConfigMap") {
			if strings.Contains(fmt.Sprint(d.get("data")), "change-me") {
				t.Errorf("ConfigMap %s holds a credential", d.str("metadata", "name"))
			}
		}
	})
}

// secretValue is what the sidecar would find in the Secret: the example's
// value in the Kustomize manifests, a plausible one for the chart, whose
// Secret is the user's.
func secretValue(r rendering, t *testing.T, env string, ref object) string {
	if r.kustomize {
		return r.one(t, "Secret").labels("stringData")[ref.str("key")]
	}
	switch env {
	case "SIDECAR_DATABASE_URL":
		return "postgres://tasker_sidecar:secret@postgres.example.internal:5432/tasker?sslmode=require"
	case "SIDECAR_CACHE_URL":
		return "redis://:secret@redis.example.internal:6379/0"
	case "SIDECAR_PGMQ_DATABASE_URL":
		return "postgres://tasker_sidecar:secret@pgmq.example.internal:5432/pgmq?sslmode=require"
	}
	return "secret-value"
}

// TestSidecarConfigIsValid loads the ConfigMap's configuration the way the
// sidecar does, with the environment the pod gives it.
func TestSidecarConfigIsValid(t *testing.T) {
	forEach(t, func(t *testing.T, r rendering) {
		p := r.pod(t)
		sc := p.sidecar(t)
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
		for _, v := range p.spec.list("volumes") {
			if v.str("name") == volume {
				configMapName = v.str("configMap", "name")
			}
		}
		var content string
		for _, o := range r.all("ConfigMap") {
			if o.str("metadata", "name") == configMapName {
				content = o.str("data", filepath.Base(configPath))
			}
		}
		if content == "" {
			t.Fatalf("%s is not provided by a ConfigMap volume (volume %q, ConfigMap %q)", configPath, volume, configMapName)
		}
		file := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		var environ []string
		for _, e := range sc.list("env") {
			if ref := e.mapping("valueFrom", "secretKeyRef"); ref != nil {
				environ = append(environ, e.str("name")+"="+secretValue(r, t, e.str("name"), object(ref)))
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
		// The checkpoint directory must be the writable volume: the root file system is read-only.
		stateDir := cfg.Stream.Checkpoint.StateDir
		mounted := false
		for _, m := range sc.list("volumeMounts") {
			mounted = mounted || (m.str("mountPath") == stateDir && m.get("readOnly") != true)
		}
		if !mounted {
			t.Errorf("stream.checkpoint.state_dir %q is not a writable volume of the sidecar", stateDir)
		}
	})
}

func TestServiceMonitorScrapesTheSidecar(t *testing.T) {
	forEach(t, func(t *testing.T, r rendering) {
		p := r.pod(t)
		sc := p.sidecar(t)
		svc := r.one(t, "Service")
		selector := svc.labels("spec", "selector")
		if len(selector) == 0 {
			t.Error("the Service selects no pods")
		}
		if !p.snippet {
			for k, v := range selector {
				if p.labels[k] != v {
					t.Errorf("Service selector %s=%s does not match the pod's labels %v", k, v, p.labels)
				}
			}
		}
		if p, _ := svc.get("spec", "publishNotReadyAddresses").(bool); !p {
			t.Error("the metrics Service must publish not-ready pods, or Prometheus loses them when readiness fails")
		}
		sm, ok := r.optional(t, "ServiceMonitor")
		if !ok {
			return
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
	})
}

func TestPrometheusRuleIsTheRuleFile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, deploy.RulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	forEach(t, func(t *testing.T, r rendering) {
		pr, ok := r.optional(t, "PrometheusRule")
		if !ok {
			return
		}
		if !reflect.DeepEqual(pr.get("spec", "groups"), file["groups"]) {
			t.Errorf("the PrometheusRule's groups differ from %s: run make dashboards", deploy.RulesFile)
		}
	})
}

// dashboardConfigMaps returns the ConfigMaps for Grafana's dashboard sidecar.
func (r rendering) dashboardConfigMaps() []object {
	var out []object
	for _, cm := range r.all("ConfigMap") {
		if cm.labels("metadata", "labels")["grafana_dashboard"] == "1" {
			out = append(out, cm)
		}
	}
	return out
}

// TestDashboardConfigMapsCarryTheDashboards: one ConfigMap per dashboard
// (each stays small, see configmap_size_test.go), together every dashboard
// as the generator wrote it.
func TestDashboardConfigMapsCarryTheDashboards(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(root, deploy.DashboardsDir, "*.json"))
	if len(files) == 0 {
		t.Fatalf("no dashboards in %s", deploy.DashboardsDir)
	}
	forEach(t, func(t *testing.T, r rendering) {
		cms := r.dashboardConfigMaps()
		if len(cms) == 0 && !r.kustomize {
			t.Log("no dashboards in this rendering (turned off by its values)")
			return
		}
		data := map[string]string{}
		for _, cm := range cms {
			entries := cm.labels("data")
			if len(entries) != 1 {
				t.Errorf("ConfigMap %s carries %d dashboards, want one per ConfigMap", cm.str("metadata", "name"), len(entries))
			}
			maps.Copy(data, entries)
		}
		if len(data) != len(files) {
			t.Errorf("the ConfigMaps carry %d dashboards, %s has %d", len(data), deploy.DashboardsDir, len(files))
		}
		for _, f := range files {
			want, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if data[filepath.Base(f)] != string(want) {
				t.Errorf("dashboard %s differs from %s (or is missing): run make dashboards", filepath.Base(f), f)
			}
		}
	})
}
