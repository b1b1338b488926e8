#!/usr/bin/env bash
# End-to-end check of the workflow traces against a real Jaeger v2.
#
#   scripts/e2e-jaeger.sh            (or: make e2e-jaeger)
#
# 1. Builds the Jaeger v2 binary from its Go module into .cache/jaeger/ once
#    (about 5 minutes on 2 cores). `go install module@version` refuses this
#    module because its go.mod has a replace directive, so the module source is
#    copied into the cache and built there.
# 2. Starts it with its built-in all-in-one configuration: in-memory storage,
#    OTLP on 4317 (gRPC) and 4318 (HTTP), the query API and UI on 16686.
# 3. Runs TestJaegerE2E (traces/e2e_test.go) once per OTLP protocol, on each
#    engine (a Rails and a tasker-core database; tasker.task_id is the task's
#    key, its UUID on tasker-core): a throwaway database, a simulated workload, the transition
#    stream and the trace exporter sending to Jaeger, then
#    /api/traces?service=tasker&tags={"tasker.task_id":"<id>"} for a completed
#    task, checked span by span: one trace with the derived trace id, one task
#    span, one step span per attempt.
#
# Needs PostgreSQL (as `make test` does) and free ports 4317, 4318, 16686.
# JAEGER_VERSION picks the module version: Jaeger tags its v2 releases as v1.x
# on the Go module (v1.76.0 is Jaeger v2.13.0). KEEP_JAEGER=1 leaves it running
# to look at the traces in the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${JAEGER_VERSION:-v1.76.0}
cache=$(pwd)/.cache/jaeger
bin=$(scripts/build-module-cmd.sh jaeger github.com/jaegertracing/jaeger "$version" ./cmd/jaeger)

for port in 4317 4318 16686; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "e2e-jaeger: port $port is taken; stop what listens there (a Jaeger left running?)" >&2
    exit 1
  fi
done

log=$cache/jaeger.log
"$bin" >"$log" 2>&1 &
pid=$!
if [ "${KEEP_JAEGER:-}" != 1 ]; then
  trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
fi
for _ in $(seq 1 60); do
  curl -fsS http://127.0.0.1:16686/api/services >/dev/null 2>&1 && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "e2e-jaeger: Jaeger exited:" >&2
    tail -30 "$log" >&2
    exit 1
  fi
  sleep 1
done
curl -fsS http://127.0.0.1:16686/api/services >/dev/null || {
  echo "e2e-jaeger: Jaeger did not come up" >&2
  tail -30 "$log" >&2
  exit 1
}
echo "e2e-jaeger: Jaeger $version up (pid $pid); log in $log" >&2

for protocol in http/protobuf grpc; do
  echo "e2e-jaeger: exporting over OTLP $protocol" >&2
  SIDECAR_E2E_JAEGER_QUERY=http://127.0.0.1:16686 \
  SIDECAR_E2E_JAEGER_OTLP_HTTP=http://127.0.0.1:4318 \
  SIDECAR_E2E_JAEGER_OTLP_GRPC=127.0.0.1:4317 \
  SIDECAR_E2E_JAEGER_PROTOCOL=$protocol \
    go test -tags e2e -race -count=1 -run '^TestJaegerE2E$' -v ./traces/ | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|e2e_test'
done
if [ "${KEEP_JAEGER:-}" = 1 ]; then
  echo "e2e-jaeger: Jaeger left running (pid $pid): http://127.0.0.1:16686" >&2
fi
