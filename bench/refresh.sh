#!/usr/bin/env bash
# Measures the cost of one health-count refresh and the sidecar's memory on the
# benchmark databases made by bench/seed.sh (which uses `sidecar simulate`).
#
#   bench/refresh.sh [10k 100k 1m]
#
# For each size it prints one markdown row:
#   - refresh wall time and Go allocations per refresh (BenchmarkRefresh, 5 runs)
#   - Tasker's own get_system_health_counts_v01() on the same data (our
#     transcription from collector/testdata, installed into the bench database),
#     median of 3, as the yardstick
#   - the sidecar's RSS peak (VmHWM) and Go heap in use after running
#     `sidecar run` on the database for 4 refreshes
set -euo pipefail
cd "$(dirname "$0")/.."
server=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10k 100k 1m)
make -s build

port=19394
echo "| database | tasks | steps | refresh (sidecar) | allocs per refresh | Tasker's function | sidecar RSS peak | Go heap in use |"
echo "|---|---|---|---|---|---|---|---|"
for size in "${sizes[@]}"; do
  db=bench_$size
  url="$server/$db?sslmode=disable"
  bench/seed.sh "$size" >&2

  out=$(SIDECAR_BENCH_DATABASE_URL="$url" go test -run '^$' -bench '^BenchmarkRefresh$' -benchtime 5x -benchmem ./collector)
  line=$(grep '^BenchmarkRefresh' <<<"$out")
  ns=$(awk '{for(i=1;i<=NF;i++) if($i=="ns/op") print $(i-1)}' <<<"$line")
  bytes=$(awk '{for(i=1;i<=NF;i++) if($i=="B/op") print $(i-1)}' <<<"$line")
  allocs=$(awk '{for(i=1;i<=NF;i++) if($i=="allocs/op") print $(i-1)}' <<<"$line")
  tasks=$(psql "$url" -tAc "SELECT count(*) FROM tasker_tasks")
  steps=$(psql "$url" -tAc "SELECT count(*) FROM tasker_workflow_steps")

  psql "$url" -q -f collector/testdata/get_system_health_counts_v01.sql
  tasker_ms=$(for _ in 1 2 3; do
    psql "$url" -tA -c "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM get_system_health_counts_v01()" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Execution Time"])'
  done | sort -n | sed -n 2p)

  bin/sidecar run --database-url "$url" --listen "127.0.0.1:$port" --log-level warn &
  pid=$!
  # The first refresh runs at start, then one every 15 s: 4 refreshes in 50 s.
  sleep 50
  metrics=$(curl -s "http://127.0.0.1:$port/metrics")
  hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  heap=$(awk '$1=="go_memstats_heap_inuse_bytes" {print $2}' <<<"$metrics")
  ok=$(awk '$1=="tasker_sidecar_refresh_duration_seconds_count" {print $2}' <<<"$metrics")

  printf '| %s | %s | %s | %.0f ms | %s B, %s allocs | %.0f ms | %.1f MiB | %.1f MiB (%s refreshes) |\n' \
    "$db" "$tasks" "$steps" "$(bc -l <<<"$ns/1000000")" "$bytes" "$allocs" "$tasker_ms" \
    "$(bc -l <<<"$hwm_kb/1024")" "$(bc -l <<<"$(printf '%.0f' "$heap")/1048576")" "$ok"
done
