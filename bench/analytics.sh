#!/usr/bin/env bash
# Cold and warm latency of every analytics route on a benchmark database made
# by bench/seed.sh (default bench_1m). Read-only: nothing is written to it.
#
#   bench/analytics.sh [1m|100k|10k]
#
# cold = the route's queries run for the request: the cache is emptied before
#        each of 3 requests (mean reported);
# warm = the cached JSON is served (2000 requests, mean reported).
# Requests go through the gin router in-process (no network, auth off), via
# BenchmarkAnalyticsEndpoints in api/analytics_test.go. A route whose
# queries fail (e.g. on the statement timeout) is reported as such.
# Prints one markdown row per route, after a line describing the database.
set -uo pipefail
cd "$(dirname "$0")/.."
server=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
size=${1:-1m}
url="$server/bench_$size?sslmode=disable"

tasks=$(psql "$url" -tAc "SELECT count(*) FROM tasker_tasks")
window=$(psql "$url" -tAc "SELECT count(*) FROM tasker_tasks WHERE created_at > (now() AT TIME ZONE 'UTC') - interval '24 hours'")
echo "bench_$size: $tasks tasks, $window created in the last 24 h; load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"

run() { # $1 = cold|warm, $2 = benchtime
  SIDECAR_BENCH_DATABASE_URL="$url" go test -run '^$' -bench "^BenchmarkAnalyticsEndpoints\$/^$1\$/" \
    -benchtime "$2" -timeout 60m ./api 2>&1 | awk -v kind="$1" '
      $1 ~ /^BenchmarkAnalyticsEndpoints\// {
        split($1, p, "/"); name = p[3]; sub(/-[0-9]+$/, "", name)
        for (i = 1; i <= NF; i++) if ($i == "ns/op") print name, kind, $(i-1)
      }
      $1 == "---" && $2 == "FAIL:" && split($3, p, "/") == 3 { print p[3], kind, "failed" }'
}
{ run cold 3x; run warm 2000x; } | awk '
  { v[$1, $2] = $3; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
  function fmt(ns) {
    if (ns == "failed" || ns == "") return "failed"
    return ns >= 1e9 ? sprintf("%.2f s", ns / 1e9) : ns >= 1e6 ? sprintf("%.1f ms", ns / 1e6) : sprintf("%.0f µs", ns / 1e3)
  }
  END {
    print "| route | cold | warm |"
    print "|---|---|---|"
    for (i = 1; i <= n; i++) printf "| %s | %s | %s |\n", order[i], fmt(v[order[i], "cold"]), fmt(v[order[i], "warm"])
  }'
