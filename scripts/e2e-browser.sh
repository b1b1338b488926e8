#!/usr/bin/env bash
# The front page (GET /) in a real headless browser.
#
#   scripts/e2e-browser.sh            (or: make e2e-browser)
#
# 1. Installs Debian's chromium if it is missing (apt-get).
# 2. Builds bin/sidecar and starts `sidecar demo` (Rails schema, a small
#    seeded workload, live activity, in-process cache) on 127.0.0.1:$PORT.
# 3. Runs TestFrontPageInBrowser (api/front_e2e_test.go): chromium renders
#    the page; the test checks the version, engine and readiness lines and
#    that every link to the sidecar answers, and writes the screenshot kept
#    in docs/front-page.png.
#
# Needs PostgreSQL (as `make test` does) and a free port (PORT, default 19394).
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-19394}
db=${E2E_BROWSER_DB:-postgres://postgres@127.0.0.1:5432/tasker_e2e_browser?sslmode=disable}
shot=${SCREENSHOT:-$(pwd)/docs/front-page.png}

if ! command -v chromium >/dev/null; then
  echo "e2e-browser: installing Debian's chromium" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
./scripts/services.sh postgres
make build >/dev/null

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "e2e-browser: port $port is taken" >&2
  exit 1
fi
log=$(mktemp)
./bin/sidecar demo --engine rails --database-url "$db" --listen "127.0.0.1:$port" --tasks 200 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$port/tasker/health/live" >/dev/null 2>&1 && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "e2e-browser: the demo sidecar exited:" >&2
    tail -30 "$log" >&2
    exit 1
  fi
  sleep 1
done
# Give the first refresh and the cache detection a moment, so the page shows
# them rather than "unknown".
for _ in $(seq 1 30); do
  curl -fsS "http://127.0.0.1:$port/tasker/health/ready" >/dev/null 2>&1 && break
  sleep 1
done

FRONT_URL="http://127.0.0.1:$port/" CHROMIUM="$(command -v chromium)" SCREENSHOT="$shot" \
  go test -tags e2e -count=1 -run '^TestFrontPageInBrowser$' -v ./api/
echo "e2e-browser: screenshot in $shot" >&2
