#!/usr/bin/env bash
# The tasker-core queue figures against the real PGMQ.
#
#   PGMQ_SQL=path/to/pgmq.sql scripts/e2e-pgmq.sh      (or: make e2e-pgmq PGMQ_SQL=...)
#
# `make test` checks coreops against PGMQ's documented layout
# (coreops/testdata/pgmq_layout.sql), because neither Debian nor the registries
# CI reaches carry PGMQ. This runs the same tests with PGMQ's own SQL
# installed into a plain PostgreSQL database, as PGMQ supports without its
# extension packaging: pgmq-extension/sql/pgmq.sql of github.com/pgmq/pgmq
# (checked with 1.5.1), e.g.
#   curl -fsSLo /tmp/pgmq.sql https://raw.githubusercontent.com/pgmq/pgmq/v1.5.1/pgmq-extension/sql/pgmq.sql
# The tests send and delete messages with pgmq.send/pgmq.delete and compare
# the sidecar's figures with pgmq.metrics_all(), in the Tasker database and
# in a database of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PGMQ_SQL:?must name the pgmq.sql of PGMQ, see the top of this script}"
test -r "$PGMQ_SQL" || { echo "e2e-pgmq: cannot read $PGMQ_SQL" >&2; exit 1; }
./scripts/services.sh postgres
PGMQ_SQL=$(realpath "$PGMQ_SQL") go test -race -count=1 -run 'TestQueuesEqualMetricsAll|TestCollectorSeries' -v ./coreops/
