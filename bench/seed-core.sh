#!/usr/bin/env bash
# Create and seed a tasker-core benchmark database with `sidecar simulate --engine core`.
#
#   bench/seed-core.sh SIZE [DBNAME]
#
# SIZE is 10k, 100k, 1m or a plain task count; DBNAME defaults to bench_core_<size>.
# The server comes from BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432,
# no database part). An existing database that already holds tasks is reused;
# FRESH=1 drops and reseeds it (48 hours of history ending at seed time). Not run
# in CI: 1m takes about a quarter of an hour on two cores (docs/benchmarks.md).
set -euo pipefail

usage() { echo "usage: FRESH=0|1 $0 10k|100k|1m|<tasks> [dbname]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage

size=$1
case "$size" in
  10k)  tasks=10000 ;;
  100k) tasks=100000 ;;
  1m)   tasks=1000000 ;;
  *[!0-9]*|'') usage ;;
  *)    tasks=$size ;;
esac
db=${2:-bench_core_$size}
server=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
url="$server/$db?sslmode=disable"

cd "$(dirname "$0")/.."
make -s build
if [ "${FRESH:-0}" = 1 ]; then
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
fi
bin/sidecar schema apply --engine core --create-database --database-url "$url" >/dev/null
have=$(psql "$url" -tAc "SELECT count(*) FROM tasker.tasks")
if [ "$have" -ge "$tasks" ]; then
  echo "seed-core.sh: $db already has $have tasks"
  exit 0
fi
if [ "$have" -gt 0 ]; then
  echo "seed-core.sh: $db has $have tasks, fewer than $tasks; rerun with FRESH=1" >&2
  exit 1
fi
start=$(date +%s)
bin/sidecar simulate --engine core --database-url "$url" --tasks "$tasks" --seed 1 --skip-fk-checks
psql "$url" -qc "VACUUM ANALYZE"
echo "seed-core.sh: $db seeded with $tasks tasks in $(( $(date +%s) - start ))s"
