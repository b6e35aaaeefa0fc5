#!/usr/bin/env bash
# The test command: installs what the tests need (npm packages; with apt the registry, clients, BitTorrent baseline,
# chromium: see install.sh --test), builds, runs every test file with tap, and ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
rm -rf .test-dist  # compiled tests of deleted sources must not linger
bash scripts/install.sh --test || { echo "0 passed, 1 failed"; exit 1; }

log=$(mktemp)
npx tap --reporter=tap --disable-coverage "$@" .test-dist/*.test.js 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(grep -E '^# \{ total' "$log" | tail -n 1)
pass=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary")
fail=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
# Repeat the failures at the end, where a CI log cut to its tail still shows them: the first failing assertion with
# its diagnostics, then every failing line (assertion, subtest, file).
if grep -qE '^\s*not ok' "$log"; then
  echo "# first failure:"
  awk '/^[[:space:]]*not ok/ && !started { started = 1; show = 30 } show > 0 { print; if (--show == 0) exit }' "$log" | grep -v '"level":'
  echo "# every failure:"
  grep -E '^[[:space:]]*not ok' "$log" | head -n 40
fi
rm -f "$log"
pass=${pass:-0}
fail=${fail:-0}
if [[ $rc -ne 0 && $fail -eq 0 ]]; then fail=1; fi
echo "${pass} passed, ${fail} failed"
exit $rc
