#!/usr/bin/env bash
# The Helm chart with the real Helm (make check-helm):
# 1. builds helm from its Go module into .cache/helm/ once (scripts/helm.sh);
# 2. helm lint --strict with each value set;
# 3. helm template with each value set into .cache/helm-rendered/ and checks what only a value
#    set can show (digest over tag, the Secret's key names, objects turned off);
# 4. values the chart must refuse (values.schema.json or the templates), each with its message;
# 5. validates every rendered object and the Kustomize manifests against the API types
#    (deploy/validate, a module of its own: k8s.io/api and the Prometheus Operator's types);
# 6. runs deploy/'s property tests (probes, locked-down containers, GOMEMLIMIT, secrets,
#    configuration valid for the sidecar, ServiceMonitor, rules, dashboards, object sizes) on
#    every rendering;
# 7. renders the Kustomize manifests again and fails when deploy/kubernetes/ differs.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=deploy/helm/tasker-sidecar
helm=$(scripts/helm.sh)
out=.cache/helm-rendered
rm -rf "$out"
mkdir -p "$out"

# name and values files (none: the defaults).
sets=(
  "default:"
  "sidecar-container:$chart/examples/sidecar-container.values.yaml"
  "digest-secret:$chart/ci/digest-secret-values.yaml"
  "tuned:$chart/ci/tuned-values.yaml"
  "kustomize:deploy/helm/kustomize.values.yaml"
)
for s in "${sets[@]}"; do
  name=${s%%:*} file=${s#*:}
  args=()
  [ -n "$file" ] && args=(-f "$file")
  "$helm" lint --strict "$chart" "${args[@]}"
  "$helm" template tasker-sidecar "$chart" "${args[@]}" > "$out/$name.yaml"
  echo "check-helm: rendered $name ($(grep -c '^kind:' "$out/$name.yaml") objects)"
done

fail() { echo "check-helm: $*" >&2; exit 1; }
# Digest wins over the tag; the Secret's own key names; objects turned off.
grep -q 'image: registry.example.com/platform/tasker-sidecar@sha256:0123456789abcdef' "$out/digest-secret.yaml" ||
  fail "digest-secret: the image is not repository@digest"
! grep -q 'ignored-when-a-digest-is-set' "$out/digest-secret.yaml" || fail "digest-secret: the tag is used beside the digest"
grep -q 'key: readonly-url' "$out/digest-secret.yaml" || fail "digest-secret: secret.databaseUrlKey not used"
! grep -Eq '^kind: (ServiceMonitor|PrometheusRule)$' "$out/digest-secret.yaml" || fail "digest-secret: ServiceMonitor or PrometheusRule rendered while off"
! grep -q '^kind: Deployment$' "$out/sidecar-container.yaml" || fail "sidecar-container: a Deployment in container mode"
grep -q 'image: tasker-sidecar:0.1.0$' "$out/default.yaml" || fail "default: the image tag is not the chart's appVersion"

# Values the chart must refuse, with a message naming the problem.
refuse() {
  local want=$1; shift
  local msg
  if msg=$("$helm" template tasker-sidecar "$chart" "$@" 2>&1 >/dev/null); then
    fail "helm template $* succeeded, want an error with: $want"
  fi
  grep -qF -- "$want" <<<"$msg" || fail "helm template $*: want an error with \"$want\", got: $msg"
  echo "check-helm: refused $* ($want)"
}
# values.schema.json:
refuse "additional properties 'imag' not allowed" --set imag.tag=1
refuse "value must be one of 'deployment', 'container'" --set mode=sidecar
refuse "'/image/digest': 'sha256:abc' does not match pattern" --set image.digest=sha256:abc
refuse "at '/secret/databaseUrlKey'" --set secret.databaseUrlKey=
refuse "at '/goMemLimit'" --set goMemLimit=110Mi
# the templates:
refuse 'set selectorLabels to the labels of Tasker' --set mode=container
refuse 'serviceMonitor.enabled needs service.enabled' --set service.enabled=false

# Every object against the API types, the chart's renderings and the Kustomize manifests.
root=$(pwd)
(cd deploy/validate && go test -count=1 ./... && go run . "$root/$out"/*.yaml "$root"/deploy/kubernetes/*.yaml)

# The properties deploy/kubernetes_test.go checks on the Kustomize manifests, on every rendering.
TASKER_SIDECAR_CHART_RENDERINGS="$root/$out" go test -count=1 \
  -run 'TestSidecar|TestContainers|TestSecrets|TestServiceMonitor|TestPrometheusRule|TestDashboard|TestObjects' ./deploy/

scripts/manifests.sh --check
echo "check-helm: ok"
