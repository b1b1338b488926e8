#!/usr/bin/env bash
# Hostile-load benchmark (docs/benchmarks.md, "Hostile load"): the request
# patterns that any client on the network can send, against a real sidecar
# with Redis as the shared store, on a 20,000-task database made by
# bench/seed.sh. Each scenario gets a freshly started sidecar (peak RSS is the
# process's VmHWM) and an empty Redis database (SIDECAR_BENCH_REDIS_DB, default
# 5; its memory growth is read from the whole server's used_memory, so run it
# while nothing else writes to that Redis).
#
#   bench/hostile.sh                 # after (this checkout) and before (BEFORE=<commit>)
#   BEFORE= bench/hostile.sh         # this checkout only
#   SCENARIOS="params lock" bench/hostile.sh
#   KEEP=1 BEFORE= SCENARIOS=lock bench/hostile.sh   # keep the logs
#
# About 4 minutes per build. Prints one markdown row per build and scenario
# (bench/hostile/main.go says what each scenario sends).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

before=${BEFORE-335e4a5}   # the last commit before the hardening issue (#10)
scenarios=${SCENARIOS:-batch params lock}
server=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
db=bench_20k
url="$server/$db?sslmode=disable"
rdb=${SIDECAR_BENCH_REDIS_DB:-5}
redis_url="redis://127.0.0.1:6379/$rdb"
listen=127.0.0.1:9395
work=$(mktemp -d /tmp/hostile.XXXXXX)
# KEEP=1 keeps the sidecars' logs (and the builds) in $work.
trap 'kill $(jobs -p) 2>/dev/null || true; if [ -n "${KEEP:-}" ]; then echo "logs in $work" >&2; else rm -rf "$work"; fi' EXIT

bench/seed.sh 20000 "$db" >&2
make -s build
cp bin/sidecar "$work/after"
go build -o "$work/hostile" ./bench/hostile
builds=(after)
if [ -n "$before" ]; then
  mkdir "$work/src"
  git archive "$before" | tar -x -C "$work/src"
  (cd "$work/src" && CGO_ENABLED=0 go build -o "$work/before" ./cmd/sidecar)
  builds=(before after)
fi

run() { # $1 = build, $2 = scenario
  redis-cli -n "$rdb" flushdb >/dev/null
  # GOMEMLIMIT as the shipped manifest sets it for its 128Mi limit
  # (deploy/kubernetes/deployment.yaml); MEMLIMIT= runs without one.
  GOMEMLIMIT="${MEMLIMIT-110MiB}" \
  SIDECAR_DATABASE_URL="$url" SIDECAR_CACHE_URL="$redis_url" SIDECAR_LISTEN="$listen" \
    SIDECAR_CACHE_KEY_PREFIX="hostile:" SIDECAR_STREAM_CHECKPOINT_FILE="$work/checkpoint-$1.json" \
    "$work/$1" run >"$work/$1-$2.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    curl -fs "http://$listen/tasker/health/ready" >/dev/null && break
    sleep 0.2
  done
  # The lock scenario floods for as long as the table stays locked.
  "$work/hostile" -scenario "$2" -label "$1" -pid "$pid" -url "http://$listen" -duration "$([ "$2" = lock ] && echo 30s || echo 20s)" \
    -database-url "$url" -redis-url "$redis_url" || echo "| $1 | $2 | failed (see the log) |"
  kill -TERM "$pid"
  wait "$pid" || true
}

echo "| build | scenario | peak RSS | peak goroutines | Redis growth | single-task lookups | how requests ended | notes |"
echo "|---|---|---|---|---|---|---|---|"
for s in $scenarios; do
  for b in "${builds[@]}"; do
    run "$b" "$s"
  done
done
