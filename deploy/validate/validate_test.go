package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: sidecar
  labels: {app: sidecar}
spec:
  selector:
    matchLabels: {app: sidecar}
  template:
    metadata:
      labels: {app: sidecar}
    spec:
      containers:
        - name: sidecar
          image: tasker-sidecar:1
          ports: [{name: metrics, containerPort: 9394}]
          readinessProbe:
            httpGet: {path: /tasker/health/ready, port: metrics}
          resources:
            limits: {memory: 128Mi}
          volumeMounts: [{name: config, mountPath: /etc/tasker-sidecar}]
      volumes:
        - name: config
          configMap: {name: sidecar}
`

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // "" = valid, else a part of the first problem
	}{
		{"deployment", goodDeployment, ""},
		{"unknown field", strings.Replace(goodDeployment, "image: tasker-sidecar:1", "image: tasker-sidecar:1\n          imagePolicy: Always", 1), "unknown field"},
		{"wrong type", strings.Replace(goodDeployment, "containerPort: 9394", "containerPort: metrics", 1), "containerPort"},
		{"bad quantity", strings.Replace(goodDeployment, "128Mi", "128MB!", 1), "quantities must match"},
		{"selector not the pod's", strings.Replace(goodDeployment, "matchLabels: {app: sidecar}", "matchLabels: {app: other}", 1), "does not match the pod template"},
		{"probe port", strings.Replace(goodDeployment, "port: metrics}", "port: http}", 1), "not a named port"},
		{"mount without volume", strings.Replace(goodDeployment, "- name: config\n          configMap", "- name: cfg\n          configMap", 1), "which the pod does not have"},
		{"bad name", strings.Replace(goodDeployment, "name: sidecar\n  labels", "name: Sidecar_1\n  labels", 1), "metadata.name"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "not a type this validator knows"},
		{"service monitor", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: s}\nspec:\n  selector: {matchLabels: {a: b}}\n  endpoints: [{port: metrics, honorLabels: true}]\n", ""},
		{"service monitor unknown field", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: s}\nspec:\n  selector: {matchLabels: {a: b}}\n  endpoints: [{port: metrics, honourLabels: true}]\n", "unknown field"},
		{"rule without expr", "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: r}\nspec:\n  groups: [{name: g, rules: [{alert: A}]}]\n", "no expr"},
		{"snippet", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {app.kubernetes.io/component: container-snippet}}\ndata:\n  container.yaml: |\n    - name: s\n      image: i\n      volumeMounts: [{name: v, mountPath: /x}]\n  volumes.yaml: |\n    - name: v\n      emptyDir: {}\n", ""},
		{"snippet unknown field", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {app.kubernetes.io/component: container-snippet}}\ndata:\n  container.yaml: |\n    - name: s\n      image: i\n      imag: j\n  volumes.yaml: \"[]\"\n", "container.yaml"},
		{"kustomization misspelt", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\nimage: [{name: x}]\n", "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := Validate([]byte(tt.doc))
			switch {
			case tt.want == "" && len(problems) > 0:
				t.Errorf("want valid, got %v", problems)
			case tt.want != "" && len(problems) == 0:
				t.Errorf("want a problem with %q, got none", tt.want)
			case tt.want != "" && !strings.Contains(problems[0].Error(), tt.want):
				t.Errorf("want a problem with %q, got %v", tt.want, problems)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	empty := filepath.Join(dir, "empty.yaml")
	for f, content := range map[string]string{
		good:  "---\n# comment only\n---\n" + goodDeployment,
		bad:   goodDeployment + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999}]}\n",
		empty: "# nothing\n",
	} {
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		args []string
		code int
	}{{nil, 2}, {[]string{good}, 0}, {[]string{good, bad}, 1}, {[]string{empty}, 1}, {[]string{filepath.Join(dir, "missing.yaml")}, 2}} {
		var out, errOut bytes.Buffer
		if code := run(tt.args, &out, &errOut); code != tt.code {
			t.Errorf("run %v = %d, want %d (stderr %s)", tt.args, code, tt.code, errOut.String())
		}
	}
}
