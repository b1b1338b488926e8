#!/usr/bin/env bash
# Runs every Go native fuzz test of the module for FUZZTIME each (default 5s),
# starting from its committed corpus (testdata/fuzz/<FuzzName>/). A failure
# leaves the crashing input in that folder: commit it with the fix.
#
#   scripts/fuzz.sh                 # all of them, 5 s each
#   FUZZTIME=2m scripts/fuzz.sh     # a longer local run
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
fuzztime=${FUZZTIME:-5s}
found=0
while IFS=: read -r file name; do
  pkg=$(dirname "$file")
  echo "fuzz: $pkg $name ($fuzztime)"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
  found=$((found + 1))
done < <(find . -name '*_test.go' -not -path './.cache/*' -print0 | xargs -0 grep -oE '^func Fuzz[A-Za-z0-9_]+' | sed 's/^\(.*\):func /\1:/' | sort -u)
if [ "$found" -eq 0 ]; then
  echo "fuzz: no fuzz tests found" >&2
  exit 1
fi
echo "fuzz: $found fuzz tests ran"
