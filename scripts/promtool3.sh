#!/usr/bin/env bash
# The alert rules and their tests under Prometheus 3.x's promtool.
#
#   scripts/promtool3.sh             (or: make check-rules-3)
#
# CI (deploy/rules_test.go, make check-rules) runs Debian's promtool, a 2.x.
# Prometheus 3 changed range selection (left-open windows) and some
# extrapolation, so the rules must be checked on both lines. This script:
# 1. Builds promtool from Prometheus 3.x's Go module into .cache/promtool/ once
#    (a few minutes on 2 cores). Prometheus tags its 3.x releases as v0.3xx.y on
#    the Go module (v0.309.1 is Prometheus 3.9.1). `go install module@version`
#    refuses this module because its go.mod has replace directives, so the
#    module source is copied into the cache and built there.
# 2. Runs `promtool check rules` on deploy/prometheus/*.rules.yaml and
#    `promtool test rules` on deploy/prometheus/tests/*.test.yaml.
#
# PROMETHEUS_VERSION picks the module version.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${PROMETHEUS_VERSION:-v0.309.1}
bin=$(scripts/build-module-cmd.sh promtool github.com/prometheus/prometheus "$version" ./cmd/promtool)

# A plain `go build` stamps no version into the binary, so name the module's.
echo "promtool3: promtool from github.com/prometheus/prometheus@$version" >&2
"$bin" check rules deploy/prometheus/*.rules.yaml
"$bin" test rules deploy/prometheus/tests/*.test.yaml
