#!/usr/bin/env bash
# Runs lab suites inside the lab host and prints one summary line.
#   bash tests/lab/run-all.sh [SUITE.sh...]   (default: boot.sh ci.sh devices.sh)
# Each suite's lines stream as they come, each prefixed with the time of day and the
# seconds since the suite started ("12:03:07 +41s "), so a slow or stuck step shows where
# the time went. Each suite ends with "lab: N passed, N failed[, N skipped]"; a suite that
# does not counts as a failure. The last line sums them all, with no prefix.
cd "$(dirname "$0")" || exit 1
total_p=0; total_f=0; total_s=0; total_r=0
[ $# -gt 0 ] || set -- boot.sh ci.sh devices.sh

# stamp: prefix each line of stdin with the time and the seconds since START.
stamp() {
    local line start=$1
    while IFS= read -r line; do
        printf '%(%H:%M:%S)T +%ds %s\n' -1 $((SECONDS - start)) "${line%$'\r'}"
    done
}

for suite in "$@"; do
    if [ ! -f "$suite" ]; then
        echo "lab suite $suite: not found"; total_f=$((total_f + 1)); continue
    fi
    echo "== lab suite $suite"
    out=$(mktemp /tmp/lab-suite.XXXXXX)
    start=$SECONDS
    bash "$suite" 2>&1 | stamp "$start" | tee "$out"
    p=$(sed -nE 's/^.*lab: ([0-9]+) passed, ([0-9]+) failed.*$/\1/p' "$out" | tail -n 1)
    f=$(sed -nE 's/^.*lab: ([0-9]+) passed, ([0-9]+) failed.*$/\2/p' "$out" | tail -n 1)
    s=$(sed -nE 's/^.*lab: [0-9]+ passed, [0-9]+ failed, ([0-9]+) skipped.*$/\1/p' "$out" | tail -n 1)
    r=$(sed -nE 's/^.*lab: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped, ([0-9]+) retried$/\1/p' "$out" | tail -n 1)
    [ -n "$p" ] || { p=0; f=1; echo "lab suite $suite printed no summary"; }
    echo "== lab suite $suite: $p passed, $f failed, ${s:-0} skipped, ${r:-0} retried in $((SECONDS - start)) s"
    total_p=$((total_p + p)); total_f=$((total_f + f)); total_s=$((total_s + ${s:-0})); total_r=$((total_r + ${r:-0}))
    rm -f "$out"
done
echo "lab: $total_p passed, $total_f failed, $total_s skipped, $total_r retried"
[ "$total_f" -eq 0 ]
