#!/usr/bin/env bash
# Builds a command of a Go module into .cache/NAME/bin/ once and prints the
# binary's path; later runs only print it.
#
#   scripts/build-module-cmd.sh NAME MODULE VERSION ./cmd/PATH
#
# `go install module@version` refuses modules whose go.mod has replace
# directives (Jaeger's, Prometheus'), so the module source is copied into the
# cache and built there. Used by scripts/e2e-jaeger.sh and scripts/promtool3.sh.
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 NAME MODULE VERSION ./cmd/PATH" >&2; exit 2; }
name=$1 module=$2 version=$3 pkg=$4
cd "$(dirname "$0")/.."
cache=$(pwd)/.cache/$name
bin=$cache/bin/$name-$version
if [ ! -x "$bin" ]; then
  echo "$name: building $module@$version (first run only)" >&2
  src=$(go mod download -json "$module@$version" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$cache/src-$version"
  mkdir -p "$cache/bin"
  cp -r "$src" "$cache/src-$version"
  chmod -R u+w "$cache/src-$version"
  start=$(date +%s)
  (cd "$cache/src-$version" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -o "$bin" "$pkg")
  echo "$name: built in $(( $(date +%s) - start ))s: $bin" >&2
fi
echo "$bin"
