#!/usr/bin/env bash
# Runs lab suites inside the lab host and prints one summary line.
#   bash tests/lab/run-all.sh [SUITE.sh...]   (default: boot.sh ci.sh devices.sh)
# Each suite ends with "lab: N passed, N failed[, N skipped]"; a suite that does not
# counts as a failure.
cd "$(dirname "$0")" || exit 1
total_p=0; total_f=0; total_s=0
[ $# -gt 0 ] || set -- boot.sh ci.sh devices.sh
for suite in "$@"; do
    if [ ! -f "$suite" ]; then
        echo "lab suite $suite: not found"; total_f=$((total_f + 1)); continue
    fi
    echo "== lab suite $suite"
    out=$(bash "$suite" 2>&1); echo "$out"
    p=$(echo "$out" | sed -nE 's/^lab: ([0-9]+) passed, ([0-9]+) failed.*$/\1/p' | tail -n 1)
    f=$(echo "$out" | sed -nE 's/^lab: ([0-9]+) passed, ([0-9]+) failed.*$/\2/p' | tail -n 1)
    s=$(echo "$out" | sed -nE 's/^lab: [0-9]+ passed, [0-9]+ failed, ([0-9]+) skipped$/\1/p' | tail -n 1)
    [ -n "$p" ] || { p=0; f=1; echo "lab suite $suite printed no summary"; }
    total_p=$((total_p + p)); total_f=$((total_f + f)); total_s=$((total_s + ${s:-0}))
done
echo "lab: $total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" -eq 0 ]
