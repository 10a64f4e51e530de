# Helpers for lab tests: each test runs real commands inside the lab host and
# asserts on what the guest printed. Sourced by the suite scripts.
set -u
LAB_PASSED=0
LAB_FAILED=0
LAB_FAILED_NAMES=""
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
SWIFTVMM=${SWIFTVMM:-$REPO/.build/debug/swiftvmm}
CACHE=${SWIFTVMM_CACHE:-$REPO/.cache}
LOGDIR=${LAB_LOGDIR:-/tmp/swiftvmm-lab-logs}
mkdir -p "$LOGDIR"

pass() { LAB_PASSED=$((LAB_PASSED + 1)); echo "lab-test: PASS $1${2:+ ($2)}"; }
fail() {
    LAB_FAILED=$((LAB_FAILED + 1)); LAB_FAILED_NAMES="$LAB_FAILED_NAMES $1"
    echo "lab-test: FAIL $1: $2"
    if [ -n "${3:-}" ] && [ -f "$3" ]; then echo "---- last lines of $3 ----"; tail -n 40 "$3"; echo "----"; fi
}

# vmm NAME TIMEOUT ARGS...: runs swiftvmm with ARGS, output to $LOGDIR/NAME.log,
# sets STATUS and SECS. The outer timeout guards against a hung VMM.
vmm() {
    local name=$1 limit=$2; shift 2
    local t0 t1
    t0=$(date +%s.%N)
    timeout -k 5 "$limit" "$SWIFTVMM" "$@" </dev/null >"$LOGDIR/$name.log" 2>&1
    STATUS=$?
    t1=$(date +%s.%N)
    SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    LOG=$LOGDIR/$name.log
}

has() { grep -qE -- "$1" "$LOG"; }

summary() {
    echo "lab: $LAB_PASSED passed, $LAB_FAILED failed"
    [ "$LAB_FAILED" -eq 0 ]
}
