#!/usr/bin/env bash
# Coordinated-cache cluster benchmark (docs/benchmarks.md, "Coordinated cache").
# Needs Redis on 127.0.0.1:6379 and Memcached on 127.0.0.1:11211 (make services),
# or SIDECAR_TEST_REDIS_URL / SIDECAR_TEST_MEMCACHED_URL. About 4 minutes.
# Keys are written under SIDECAR_BENCH_KEY_PREFIX (default sidecar-bench:).
#
#   bench/cache/run.sh            # the full matrix
#   bench/cache/run.sh -stores redis -replicas 16 -clients 64   # one row
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/sidecar-bench-cache ./bench/cache
if [ $# -gt 0 ]; then
  exec /tmp/sidecar-bench-cache "$@"
fi
# Main matrix: both shared stores with N = 1, 4, 16 and R = 16, 64; in-process
# (local_only) and no caching at R = 64.
/tmp/sidecar-bench-cache -stores redis,memcached -replicas 1,4,16 -clients 16,64
/tmp/sidecar-bench-cache -stores local,disabled -replicas 1,4,16 -clients 64 | tail -n +5
# The fallback mechanisms, at the largest size.
/tmp/sidecar-bench-cache -stores redis:checked_release,redis:set_nx,memcached:add -replicas 16 -clients 64 | tail -n +5
