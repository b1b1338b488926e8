#!/usr/bin/env bash
# Prints the path of a helm binary built from Helm's Go module into .cache/helm/
# (once; later runs only print it), so that CI needs nothing beyond the Go
# module proxy. Used by scripts/check-helm.sh and scripts/manifests.sh.
#
#   scripts/helm.sh            (HELM_VERSION picks the module version)
#
# The build takes minutes on 2 cores the first time (measured in
# deploy/helm/tasker-sidecar/README.md); build-module-cmd.sh copies the module
# source into the cache and builds there, as for promtool and Jaeger.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/build-module-cmd.sh helm helm.sh/helm/v4 "${HELM_VERSION:-v4.3.2}" ./cmd/helm
