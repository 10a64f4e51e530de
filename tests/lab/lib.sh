# Helpers for lab tests: each test runs real commands inside the lab host and
# asserts on what the guest printed. Sourced by the suite scripts.
#
# Every test runs under a watchdog: lab_test NAME LIMIT FUNCTION [ARGS...] runs FUNCTION
# in a child process and, if it is still running after LIMIT seconds, records what the lab
# host was doing (blocked tasks through sysrq w, ps with wait channels, the kernel stack of
# every task in D state, the newest test log's tail), kills the test's processes, fails
# the test and returns, without ever waiting on a process stuck in the kernel. Nothing a
# test does (a sysfs unbind that waits for a device, a VMM in uninterruptible sleep, a
# ping) can hold up the suite for longer than its LIMIT.
set -u
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
SWIFTVMM=${SWIFTVMM:-$REPO/.build/debug/swiftvmm}
# The debug build, for what only it has (the sandbox's test-only trigger); scripts/test runs
# everything else on the installed release binary (SWIFTVMM).
SWIFTVMM_DEBUG=${SWIFTVMM_DEBUG:-$REPO/.build/debug/swiftvmm}
CACHE=${SWIFTVMM_CACHE:-$REPO/.cache}
LOGDIR=${LAB_LOGDIR:-/tmp/swiftvmm-lab-logs}
mkdir -p "$LOGDIR"
# Kernel parameters for every lab guest: skip the IO-APIC timer check (no_timer_check)
# and the TSC stability watchdog (tsc=reliable). Nested on TCG, time runs unevenly, and
# both are where guests were lost under load: 7 of 30 soak boots without them, 2 of 54
# with them (and kvm.halt_poll_ns=0 in the lab host; tests/lab/README.md).
LAB_GUEST_PARAMS=${LAB_GUEST_PARAMS-"no_timer_check tsc=reliable"}
# shellcheck source=procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/procs.sh"
# Results go to a file, so tests running in a child process count too.
LAB_RESULTS=$(mktemp "$LOGDIR/results.XXXXXX")

pass() { echo "PASS $1" >>"$LAB_RESULTS"; echo "lab-test: PASS $1${2:+ ($2)}"; }
fail() {
    echo "FAIL $1" >>"$LAB_RESULTS"
    echo "lab-test: FAIL $1: $2"
    if [ -n "${3:-}" ] && [ -f "$3" ]; then echo "---- last lines of $3 ----"; tail -n 40 "$3"; echo "----"; fi
}
# A test that cannot run in this lab says why on its own line and is counted.
skip() { echo "SKIP $1" >>"$LAB_RESULTS"; echo "lab-test: SKIP $1: $2"; }

# vmm NAME TIMEOUT ARGS...: runs swiftvmm with ARGS, output to $LOGDIR/NAME.log,
# sets STATUS and SECS. The outer timeout guards against a hung VMM. A guest the lab
# lost (see lost_guest) is booted again, up to LAB_RETRIES (2) times, each retry counted,
# unless LAB_RETRY_LOST=0 (tests that expect a crash) or the suite's lost_veto says the
# run did something else wrong (the passthrough suites: a DMA fault of the assigned
# device). The test's watchdog grows by the time each lost boot took (retried).
vmm() {
    local name=$1 limit=$2; shift 2
    local t0 tb a n=0
    t0=$(date +%s.%N)
    # swiftvmm's own --timeout ends a hung run first, 10 s before the outer one, so that
    # the log says where each vCPU was (what lost_guest reads), unless the test set one.
    if [ "${1:-}" = run ] && [ "$limit" -gt 30 ]; then
        for a in "$@"; do [ "$a" != --timeout ] || break; done
        [ "$a" = --timeout ] || set -- "$@" --timeout "$((limit - 10))s"
    fi
    LOG=$LOGDIR/$name.log
    while :; do
        tb=$(date +%s)
        lost_mark
        timeout -k 5 "$limit" "$SWIFTVMM" "$@" </dev/null >"$LOG" 2>&1
        STATUS=$?
        retry_lost "$name" $n "$STATUS" "$LOG" "$tb" || break
        n=$((n + 1))
    done
    SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
}

# retry_lost NAME RETRIES STATUS LOG T0: whether to boot once more a boot that ended with
# STATUS (its log LOG, started at T0, RETRIES retries made so far): retries are on
# (LAB_RETRY_LOST), fewer than LAB_RETRIES (2) were made, the lab lost the guest
# (lost_guest) and the suite does not veto it (lost_veto). If so, says and counts it
# (retried). The one retry rule of every lab boot.
retry_lost() {
    [ "${LAB_RETRY_LOST:-1}" = 1 ] && [ "$2" -lt "${LAB_RETRIES:-2}" ] && lost_guest "$3" "$4" && ! lost_veto || return 1
    retried "$1" "$3" "$4" "$(($(date +%s) - $5))"
}

# vmm_until NAME SECONDS MARKER ARGS...: for a test that acts on a running VM (a signal, a
# host fault): starts swiftvmm ARGS in the background, its output in $LOGDIR/NAME.log (LOG),
# and waits up to SECONDS for MARKER (an extended regexp) in LOG or for the run to end.
# Sets VMM_PID, VMM_T0 (for retry_lost) and VMM_UP (1 when MARKER came). ARGS should give
# --timeout, so that a guest the lab lost ends with the report lost_guest reads. The
# caller then acts, waits for VMM_PID, and asks retry_lost whether to boot once more.
vmm_until() {
    local name=$1 secs=$2 marker=$3 i
    shift 3
    LOG=$LOGDIR/$name.log
    VMM_T0=$(date +%s) VMM_UP=0
    lost_mark
    "$SWIFTVMM" "$@" </dev/null >"$LOG" 2>&1 &
    VMM_PID=$!
    for i in $(seq 1 $((secs * 5))); do
        if grep -qE -- "$marker" "$LOG"; then VMM_UP=1; return 0; fi
        kill -0 "$VMM_PID" 2>/dev/null || break
        sleep 0.2
    done
    grep -qE -- "$marker" "$LOG" && VMM_UP=1
    return 0
}

# lost_guest STATUS LOG: the failures the lab causes by itself, in QEMU's guests as in
# ours (nested SVM on TCG, tests/lab/README.md), and only those; sets LOST_WHY:
# - a triple fault (122) at any point: QEMU's guests reset the same way in the soaks;
# - a hang (124/137: stopped by a timeout) before the guest printed a single line, every
#   line in LOG being swiftvmm's own;
# - a hang with a vCPU running at RIP == CR2 in swiftvmm's timeout report: the guest
#   taking a page fault, over and over, on fetching the instruction it is at.
# LOST_SILENT=1 when the guest printed nothing at all. Anything else, an assertion or
# another status, is never retried.
lost_guest() {
    LOST_WHY="" LOST_SILENT=0
    grep -qv '^swiftvmm: ' "$2" || LOST_SILENT=1
    case $1 in
        122) LOST_WHY="a guest triple fault" ;;
        124 | 137)
            if [ $LOST_SILENT = 1 ]; then
                LOST_WHY="a hang before the guest printed anything"
            elif rip_is_cr2 "$2"; then
                LOST_WHY="a hang with a vCPU faulting at its own RIP (RIP == CR2)"
            fi ;;
    esac
    [ -n "$LOST_WHY" ]
}

# rip_is_cr2 LOG: swiftvmm's timeout report has a running vCPU whose RIP equals its CR2.
rip_is_cr2() {
    sed -nE 's/^swiftvmm: info: vCPU [0-9]+ was at RIP (0x[0-9a-f]+) \([^)]*running\),.* CR2 (0x[0-9a-f]+),.*/\1 \2/p' "$1" |
        awk '$1 == $2 { found = 1 } END { exit !found }'
}

# lost_mark runs before each boot, lost_veto after a lost one: a suite that can see
# more than the guest's log (the passthrough suites count DMA faults) redefines both,
# and a lost guest is retried only when lost_veto fails.
lost_mark() { :; }
lost_veto() { return 1; }

# retried NAME STATUS LOG SECONDS: says so, keeps the lost run's log, counts the retry,
# and gives the test's watchdog (lab_test) the SECONDS the lost boot took, so that the
# boot once more has the time the test was given for it.
retried() {
    echo "RETRY $1" >>"$LAB_RESULTS"
    [ -z "${LAB_EXTEND:-}" ] || echo "$4" >>"$LAB_EXTEND"
    cp "$3" "${3%.log}.lost.log"
    echo "lab-test: RETRY $1: the lab lost the guest: $LOST_WHY (status $2: $(grep -m1 -E 'error:|SIGTERM' "$3" | cut -c1-220)); booting it once more"
    # Where the lost guest's vCPUs were, when swiftvmm's timeout report says.
    grep -E '^swiftvmm: info: vCPU [0-9]+ was at' "$3" | cut -c1-260 | sed 's/^/lab-test:   lost /'
}

has() { grep -qE -- "$1" "$LOG"; }

# guest_has PATTERN: like has, on the guest's console lines. swiftvmm's own log goes to
# stderr, into the same file, and a line it logs while the guest is in the middle of a
# console line (a vIOMMU fault warning, say) splits that line in two: this joins it again.
# So does a message of the guest's own kernel ("[    9.530214] virtio_iommu virtio0: page
# fault ...") printed while a guest program was in the middle of a line (a brand-new-machine
# run of 2026-12-07 split "NESTED: blk unmapped ..." so): right after a character that is
# not a blank, so that "SWIFTVMM-DMESG: [    9.53] ..." (the guest's dmesg, prefixed) stays.
guest_has() {
    python3 -c 'import re, sys; sys.stdout.write(re.sub(r"(?:(?<=[^\n])swiftvmm: (?:debug|info|notice|warning|error): |(?<=[^\s])\[ *[0-9]+\.[0-9]{6}\] )[^\n]*\n", "", open(sys.argv[1], errors="replace").read()))' "$LOG" | grep -qE -- "$1"
}

# watchdog_report NAME LIMIT PID T0: what the lab host is doing, for a test that overran.
watchdog_report() {
    local name=$1 limit=$2 pid=$3 t0=$4 p st newest
    echo "lab-watchdog: $name still running after ${limit}s; the lab host now:"
    echo "---- ps -eo stat,pid,ppid,wchan:32,cmd (kernel threads only in D state) ----"
    ps -eo stat,pid,ppid,wchan:32,cmd 2>&1 |
        awk 'NR == 1 || (($3 != 2 && $2 != 2) || $1 ~ /^D/) && $5 != "ps" && $5 != "awk"' | head -n 80
    for p in $(proc_list | awk '$3 == "D" { print $1 }'); do
        echo "---- task $p in D state: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-160) ----"
        cat "/proc/$p/stack" 2>/dev/null || echo "(no /proc/$p/stack)"
    done
    # Blocked tasks with their stacks, into the kernel log (sysrq w works for root
    # whatever kernel.sysrq says), then the log's tail.
    echo w >/proc/sysrq-trigger 2>/dev/null
    sleep 1
    echo "---- dmesg (tail, after sysrq w) ----"
    dmesg 2>/dev/null | tail -n 120
    newest=$(find "$LOGDIR" -maxdepth 1 -name '*.log' -newermt "@$t0" -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-)
    if [ -n "$newest" ]; then echo "---- last lines of $newest ----"; tail -n 40 "$newest"; fi
    echo "----"
}

# lab_test NAME LIMIT FUNCTION [ARGS...]: FUNCTION under the watchdog (see the top).
# Its status is FUNCTION's, or 124 when the watchdog fired. Variables FUNCTION sets do
# not reach the suite: tests share only what the suite computed before them.
lab_test() {
    local name=$1 limit=$2 pid t0 extra=0 why
    shift 2
    # LAB_ONLY (comma-separated test names, for working on a few by hand): the others do
    # not run, and say so.
    if [ -n "${LAB_ONLY:-}" ] && [[ ",$LAB_ONLY," != *",$name,"* ]]; then
        echo "lab-test: not run: $name (LAB_ONLY=$LAB_ONLY)"
        return 0
    fi
    t0=$(date +%s)
    LAB_EXTEND=$(mktemp "$LOGDIR/extend.XXXXXX")
    ("$@") &
    pid=$!
    # The limit, plus what the test's lost boots took (retried writes them to LAB_EXTEND).
    while ! await_exit "$pid" $((limit + extra - ($(date +%s) - t0))); do
        extra=$(awk '{ s += $1 } END { print s + 0 }' "$LAB_EXTEND")
        [ $(($(date +%s) - t0)) -ge $((limit + extra)) ] || continue
        watchdog_report "$name" "$((limit + extra))" "$pid" "$t0"
        # shellcheck disable=SC2046 # a list of pids
        kill -KILL $(proc_tree "$pid") 2>/dev/null
        why="$((limit + extra))s"
        [ "$extra" = 0 ] || why="$why ($limit s, and $extra s that lost boots took)"
        fail "$name" "watchdog: still running after $why (stopped; what was blocked is above)"
        rm -f "$LAB_EXTEND"
        return 124
    done
    rm -f "$LAB_EXTEND"
    wait "$pid"
}

summary() {
    local p f s r
    p=$(grep -c '^PASS ' "$LAB_RESULTS")
    f=$(grep -c '^FAIL ' "$LAB_RESULTS")
    s=$(grep -c '^SKIP ' "$LAB_RESULTS")
    r=$(grep -c '^RETRY ' "$LAB_RESULTS")
    echo "lab: $p passed, $f failed, $s skipped, $r retried"
    [ "$f" -eq 0 ]
}
