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
root=$(pwd)
version=${PROMETHEUS_VERSION:-v0.309.1}
cache=$root/.cache/promtool
bin=$cache/bin/promtool-$version

if [ ! -x "$bin" ]; then
  echo "promtool3: building promtool $version (first run only)" >&2
  src=$(go mod download -json "github.com/prometheus/prometheus@$version" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$cache/src-$version"
  mkdir -p "$cache/bin"
  cp -r "$src" "$cache/src-$version"
  chmod -R u+w "$cache/src-$version"
  start=$(date +%s)
  (cd "$cache/src-$version" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -o "$bin" ./cmd/promtool)
  echo "promtool3: built in $(( $(date +%s) - start ))s: $bin" >&2
fi

# A plain `go build` stamps no version into the binary, so name the module's.
echo "promtool3: promtool from github.com/prometheus/prometheus@$version" >&2
"$bin" check rules deploy/prometheus/*.rules.yaml
"$bin" test rules deploy/prometheus/tests/*.test.yaml
