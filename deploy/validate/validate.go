package main

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"slices"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// kinds maps apiVersion/kind to a constructor of the API type and the
// checks the API server would make beyond decoding.
var kinds = map[string]func() object{
	"apps/v1/Deployment": func() object { return &deployment{} },
	"v1/Service":         func() object { return &service{} },
	"v1/ConfigMap":       func() object { return &configMap{} },
	"v1/Secret":          func() object { return &secret{} },
	"monitoring.coreos.com/v1/ServiceMonitor":       func() object { return &serviceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule":       func() object { return &prometheusRule{} },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() object { return &kustomization{} },
}

type object interface {
	check() []error
}

// Validate decodes one document strictly and returns its kind and name and
// every problem found.
func Validate(doc []byte) (string, []error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return "?", []error{err}
	}
	id := head.Kind + " " + head.Metadata.Name
	newObject, ok := kinds[head.APIVersion+"/"+head.Kind]
	if !ok {
		return id, []error{fmt.Errorf("apiVersion %q kind %q: not a type this validator knows (%v)",
			head.APIVersion, head.Kind, slices.Sorted(maps.Keys(kinds)))}
	}
	o := newObject()
	if err := yaml.UnmarshalStrict(doc, o); err != nil {
		return id, []error{err}
	}
	return id, o.check()
}

func checkMeta(name string, labels map[string]string, dns1123Label bool) []error {
	var errs []error
	msgs := validation.IsDNS1123Subdomain(name)
	if dns1123Label {
		msgs = validation.IsDNS1123Label(name)
	}
	for _, m := range msgs {
		errs = append(errs, fmt.Errorf("metadata.name %q: %s", name, m))
	}
	errs = append(errs, checkLabels("metadata.labels", labels)...)
	return errs
}

func checkLabels(path string, labels map[string]string) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		for _, m := range validation.IsQualifiedName(k) {
			errs = append(errs, fmt.Errorf("%s key %q: %s", path, k, m))
		}
		for _, m := range validation.IsValidLabelValue(labels[k]) {
			errs = append(errs, fmt.Errorf("%s %s=%q: %s", path, k, labels[k], m))
		}
	}
	return errs
}

type deployment struct{ appsv1.Deployment }

func (d *deployment) check() []error {
	errs := checkMeta(d.Name, d.Labels, false)
	sel := d.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 {
		errs = append(errs, fmt.Errorf("spec.selector.matchLabels is empty"))
	} else {
		for k, v := range sel.MatchLabels {
			if d.Spec.Template.Labels[k] != v {
				errs = append(errs, fmt.Errorf("spec.selector %s=%s does not match the pod template's labels", k, v))
			}
		}
	}
	errs = append(errs, checkLabels("spec.template.metadata.labels", d.Spec.Template.Labels)...)
	return append(errs, checkPod(d.Spec.Template.Spec.Containers, d.Spec.Template.Spec.Volumes)...)
}

// checkPod makes the API server's checks on containers and volumes that
// decoding does not: unique names, port names, probe ports, mounts of
// volumes that exist.
func checkPod(containers []corev1.Container, volumes []corev1.Volume) []error {
	var errs []error
	if len(containers) == 0 {
		errs = append(errs, fmt.Errorf("no containers"))
	}
	vols := map[string]bool{}
	for _, v := range volumes {
		if vols[v.Name] {
			errs = append(errs, fmt.Errorf("volume %q twice", v.Name))
		}
		vols[v.Name] = true
		for _, m := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, fmt.Errorf("volume %q: %s", v.Name, m))
		}
	}
	names := map[string]bool{}
	for _, c := range containers {
		if names[c.Name] {
			errs = append(errs, fmt.Errorf("container %q twice", c.Name))
		}
		names[c.Name] = true
		if c.Image == "" {
			errs = append(errs, fmt.Errorf("container %q: no image", c.Name))
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			if p.Name != "" {
				for _, m := range validation.IsValidPortName(p.Name) {
					errs = append(errs, fmt.Errorf("container %q port %q: %s", c.Name, p.Name, m))
				}
				ports[p.Name] = true
			}
			if validation.IsValidPortNum(int(p.ContainerPort)) != nil {
				errs = append(errs, fmt.Errorf("container %q port %d out of range", c.Name, p.ContainerPort))
			}
		}
		for name, probe := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
			if probe == nil || probe.HTTPGet == nil {
				continue
			}
			if port := probe.HTTPGet.Port; port.StrVal != "" && !ports[port.StrVal] {
				errs = append(errs, fmt.Errorf("container %q %s port %q is not a named port of the container", c.Name, name, port.StrVal))
			}
		}
		for _, e := range c.Env {
			for _, m := range validation.IsEnvVarName(e.Name) {
				errs = append(errs, fmt.Errorf("container %q env %q: %s", c.Name, e.Name, m))
			}
			if e.Value != "" && e.ValueFrom != nil {
				errs = append(errs, fmt.Errorf("container %q env %q: both value and valueFrom", c.Name, e.Name))
			}
		}
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] {
				errs = append(errs, fmt.Errorf("container %q mounts volume %q, which the pod does not have", c.Name, m.Name))
			}
		}
	}
	return errs
}

type service struct{ corev1.Service }

func (s *service) check() []error {
	errs := checkMeta(s.Name, s.Labels, true)
	errs = append(errs, checkLabels("spec.selector", s.Spec.Selector)...)
	if len(s.Spec.Ports) == 0 {
		errs = append(errs, fmt.Errorf("no ports"))
	}
	for _, p := range s.Spec.Ports {
		if validation.IsValidPortNum(int(p.Port)) != nil {
			errs = append(errs, fmt.Errorf("port %q: %d out of range", p.Name, p.Port))
		}
	}
	return errs
}

// snippetKey is the label of the chart's container snippet (container mode).
const snippetKey = "app.kubernetes.io/component"

type configMap struct{ corev1.ConfigMap }

func (c *configMap) check() []error {
	errs := checkMeta(c.Name, c.Labels, false)
	for k := range c.Data {
		for _, m := range validation.IsConfigMapKey(k) {
			errs = append(errs, fmt.Errorf("data key %q: %s", k, m))
		}
	}
	if c.Labels[snippetKey] != "container-snippet" {
		return errs
	}
	// The snippet is what a user pastes into a pod: it must decode too.
	var containers []corev1.Container
	var volumes []corev1.Volume
	if err := yaml.UnmarshalStrict([]byte(c.Data["container.yaml"]), &containers); err != nil {
		return append(errs, fmt.Errorf("container.yaml: %w", err))
	}
	if err := yaml.UnmarshalStrict([]byte(c.Data["volumes.yaml"]), &volumes); err != nil {
		return append(errs, fmt.Errorf("volumes.yaml: %w", err))
	}
	return append(errs, checkPod(containers, volumes)...)
}

type secret struct{ corev1.Secret }

func (s *secret) check() []error { return checkMeta(s.Name, s.Labels, false) }

type serviceMonitor struct{ monitoringv1.ServiceMonitor }

func (s *serviceMonitor) check() []error {
	errs := checkMeta(s.Name, s.Labels, false)
	if len(s.Spec.Endpoints) == 0 {
		errs = append(errs, fmt.Errorf("no endpoints"))
	}
	return append(errs, checkLabels("spec.selector.matchLabels", s.Spec.Selector.MatchLabels)...)
}

type prometheusRule struct{ monitoringv1.PrometheusRule }

func (p *prometheusRule) check() []error {
	errs := checkMeta(p.Name, p.Labels, false)
	if len(p.Spec.Groups) == 0 {
		errs = append(errs, fmt.Errorf("no rule groups"))
	}
	for _, g := range p.Spec.Groups {
		for i, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") {
				errs = append(errs, fmt.Errorf("group %s rule %d: exactly one of alert and record", g.Name, i))
			}
			if r.Expr == (intstr.IntOrString{}) || (r.Expr.Type == intstr.String && r.Expr.StrVal == "") {
				errs = append(errs, fmt.Errorf("group %s rule %d: no expr", g.Name, i))
			}
		}
	}
	return errs
}

// kustomization: the fields deploy/kubernetes/kustomization.yaml uses, so
// that a misspelt one (image: for images:) is found; kustomize's own types
// would bring in kustomize.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images"`
}

func (k *kustomization) check() []error {
	var errs []error
	if len(k.Resources) == 0 {
		errs = append(errs, fmt.Errorf("no resources"))
	}
	for _, im := range k.Images {
		if im.Name == "" {
			errs = append(errs, fmt.Errorf("an images entry without name"))
		}
	}
	return errs
}
