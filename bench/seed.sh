#!/usr/bin/env bash
# Create and seed a benchmark database with `sidecar simulate`: the Rails
# engine's schema, or tasker-core's with ENGINE=core.
#
#   bench/seed.sh SIZE [DBNAME]
#
# SIZE is 10k, 100k, 1m or a plain task count; DBNAME defaults to bench_<size>
# (bench_core_<size> with ENGINE=core).
# The server comes from BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432,
# no database part). An existing database that already holds tasks is reused;
# FRESH=1 drops and reseeds it (the data is 48 hours of history ending at seed
# time, so reseed when time-windowed numbers should look current).
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
engine=${ENGINE:-rails}
case "$engine" in
  rails) prefix=bench_ tasks_table=tasker_tasks ;;
  core)  prefix=bench_core_ tasks_table=tasker.tasks ;;
  *) echo "seed.sh: ENGINE must be rails or core (got $engine)" >&2; exit 2 ;;
esac
db=${2:-$prefix$size}
server=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
url="$server/$db?sslmode=disable"

cd "$(dirname "$0")/.."
make -s build
if [ "${FRESH:-0}" = 1 ]; then
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
fi
bin/sidecar schema apply --engine "$engine" --create-database --database-url "$url" >/dev/null
have=$(psql "$url" -tAc "SELECT count(*) FROM $tasks_table")
if [ "$have" -ge "$tasks" ]; then
  echo "seed.sh: $db already has $have tasks"
  exit 0
fi
if [ "$have" -gt 0 ]; then
  echo "seed.sh: $db has $have tasks, fewer than $tasks; rerun with FRESH=1" >&2
  exit 1
fi
start=$(date +%s)
bin/sidecar simulate --engine "$engine" --database-url "$url" --tasks "$tasks" --seed 1 --skip-fk-checks
psql "$url" -qc "VACUUM ANALYZE"
echo "seed.sh: $db seeded with $tasks tasks in $(( $(date +%s) - start ))s"
