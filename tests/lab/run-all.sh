#!/usr/bin/env bash
# Runs every lab suite inside the lab host and prints one summary line.
cd "$(dirname "$0")"
total_p=0; total_f=0
for suite in boot.sh ci.sh devices.sh; do
    [ -f "$suite" ] || continue
    echo "== lab suite $suite"
    out=$(bash "$suite" 2>&1); echo "$out"
    p=$(echo "$out" | sed -nE 's/^lab: ([0-9]+) passed, ([0-9]+) failed$/\1/p' | tail -n 1)
    f=$(echo "$out" | sed -nE 's/^lab: ([0-9]+) passed, ([0-9]+) failed$/\2/p' | tail -n 1)
    [ -n "$p" ] || { p=0; f=1; echo "lab suite $suite printed no summary"; }
    total_p=$((total_p + p)); total_f=$((total_f + f))
done
echo "lab: $total_p passed, $total_f failed"
[ "$total_f" -eq 0 ]
