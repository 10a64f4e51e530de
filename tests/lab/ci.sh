#!/usr/bin/env bash
# CI smoke-boot lab tests: guest verdicts, timeouts, panics, expectations, reports.
source "$(dirname "$0")/lib.sh"
cd "$REPO"
SMOKE=configs/smoke.toml
BASE="console=ttyS0 reboot=k panic=-1 quiet $LAB_GUEST_PARAMS"
MODS=$CACHE/guest/initramfs-modules.cpio.gz

# 1. The guest writes status 3 to the verdict port: swiftvmm exits 3.
t_verdict() {
    vmm verdict 180 run "$SMOKE" --cmdline "$BASE swiftvmm.test=verdict swiftvmm.status=3"
    if [ "$STATUS" -eq 3 ] && has "guest reported exit status 3"; then pass verdict-status-3 "${SECS}s"; else fail verdict-status-3 "status $STATUS" "$LOG"; fi
}
lab_test verdict-status-3 240 t_verdict

# 2. A hung guest is stopped by --timeout with status 124, the run time and the console tail.
t_timeout() {
    vmm timeout 180 run "$SMOKE" --timeout 60s --cmdline "$BASE swiftvmm.test=hang"
    # ... and says where the vCPU was (the guest's init sleeps: 64-bit, most likely halted).
    local at='vCPU 0 was at RIP 0x[0-9a-f]+ \(64-bit, interrupts o(n|ff), (halted in HLT|running)\), RSP 0x[0-9a-f]+'
    if [ "$STATUS" -eq 124 ] && has "timeout: guest still running after 60" && has "last console lines" && has "hanging on purpose" && has "$at"; then
        pass timeout-stops-hung-guest "${SECS}s; $(grep -oE 'vCPU 0 was at RIP [^,]+' "$LOG")"; else fail timeout-stops-hung-guest "status $STATUS" "$LOG"; fi
}
lab_test timeout-stops-hung-guest 240 t_timeout

# 3. --expect finishes early, with success, as soon as the console matches.
t_expect() {
    vmm expect 180 run "$SMOKE" --expect "hanging on purpose" --cmdline "$BASE swiftvmm.test=hang"
    if [ "$STATUS" -eq 0 ] && has "matched expectation"; then pass expect-finishes-early "${SECS}s"; else fail expect-finishes-early "status $STATUS" "$LOG"; fi
}
lab_test expect-finishes-early 240 t_expect

# 4. --fail-on finishes with failure status 123.
t_fail_on() {
    vmm fail-on 180 run "$SMOKE" --fail-on "hanging on purpose" --cmdline "$BASE swiftvmm.test=hang"
    if [ "$STATUS" -eq 123 ] && has "matched failure pattern"; then pass fail-on-pattern "${SECS}s"; else fail fail-on-pattern "status $STATUS" "$LOG"; fi
}
lab_test fail-on-pattern 240 t_fail_on

# 5. A kernel panic is reported through pvpanic: status 121 and the panic message.
t_panic() {
    if [ -f "$MODS" ]; then
        vmm panic 180 run "$SMOKE" --initramfs "$MODS" --cmdline "$BASE swiftvmm.modules=pvpanic-mmio swiftvmm.test=panic"
        if [ "$STATUS" -eq 121 ] && has "guest kernel panicked \(reported through pvpanic\)" && has "sysrq: Trigger a crash|Kernel panic"; then pass panic-detected "${SECS}s"; else fail panic-detected "status $STATUS" "$LOG"; fi
    else
        fail panic-detected "missing $MODS (scripts/assets initramfs)"
    fi
}
lab_test panic-detected 240 t_panic

# 5b. Without the pvpanic driver, the panic is still recognised from the console.
t_panic_console() {
    vmm panic-console 180 run "$SMOKE" --cmdline "$BASE swiftvmm.test=panic"
    if [ "$STATUS" -eq 121 ] && has "seen on the console"; then pass panic-seen-on-console "${SECS}s"; else fail panic-seen-on-console "status $STATUS" "$LOG"; fi
}
lab_test panic-seen-on-console 240 t_panic_console

# 6. Two runs at once do not collide; each gets its own verdict.
t_parallel() {
    local t0 tb pa pb sa sb round=0
    t0=$(date +%s)
    while :; do
        tb=$(date +%s)
        timeout 200 "$SWIFTVMM" run "$SMOKE" --timeout 190s --cmdline "$BASE swiftvmm.test=verdict swiftvmm.status=5" </dev/null >"$LOGDIR/par-a.log" 2>&1 & pa=$!
        timeout 200 "$SWIFTVMM" run "$SMOKE" --timeout 190s --cmdline "$BASE swiftvmm.test=verdict swiftvmm.status=6" </dev/null >"$LOGDIR/par-b.log" 2>&1 & pb=$!
        wait $pa; sa=$?; wait $pb; sb=$?
        # A guest the lab lost (lib.sh): both once more, together, counted.
        retry_lost two-runs-in-parallel $round $sa "$LOGDIR/par-a.log" $tb ||
            retry_lost two-runs-in-parallel $round $sb "$LOGDIR/par-b.log" $tb || break
        round=$((round + 1))
    done
    if [ $sa -eq 5 ] && [ $sb -eq 6 ]; then pass two-runs-in-parallel "$(( $(date +%s) - t0 ))s"; else LOG=$LOGDIR/par-a.log; fail two-runs-in-parallel "statuses $sa and $sb" "$LOG"; tail -n 20 "$LOGDIR/par-b.log"; fi
}
lab_test two-runs-in-parallel 260 t_parallel

# 7. --report writes JSON with the documented fields; --console-log keeps the whole console.
t_report() {
    local rep con
    rep=$LOGDIR/report.json; con=$LOGDIR/console.log
    rm -f "$rep" "$con"
    vmm report 180 run "$SMOKE" --report "$rep" --console-log "$con" --cmdline "$BASE swiftvmm.test=verdict swiftvmm.status=7"
    if [ "$STATUS" -eq 7 ] && python3 - "$rep" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["exitStatus"] == 7 and r["exitReasonKind"] == "guest-verdict", r
assert r["bootCompleteSeconds"] and r["bootCompleteSeconds"] < r["wallSeconds"], r
for k in ("vmmPeakRSSBytes", "kernel", "config", "cmdline", "initramfs", "wallSeconds"):
    assert r.get(k), k
PY
    then
        if grep -q "SWIFTVMM-GUEST-INIT: up" "$con"; then pass report-and-console-log; else LOG=$con; fail report-and-console-log "console log lacks the init marker" "$con"; fi
    else
        fail report-and-console-log "status $STATUS or bad JSON" "$LOG"; cat "$rep" 2>/dev/null
    fi
}
lab_test report-and-console-log 240 t_report

# 8. The seccomp sandbox (on by default, --seccomp kill): a vCPU thread and a device's I/O
# thread that make a system call outside their allowlists (socket(2), through the debug
# build's test-only SWIFTVMM_TEST_FORBIDDEN_SYSCALL: SWIFTVMM_DEBUG) stop the VMM with SIGSYS (status 159)
# and a line naming the thread and the call; the same guest without the trigger gives its
# verdict, with the sandbox reported on.
t_seccomp() {
    local cfg=$LOGDIR/seccomp.toml kind ok=1 detail=""
    sed -e "s|\.\./\.cache|$CACHE|" -e 's|^\[serial\]|[rng]\nenabled = true\n&|' "$SMOKE" >"$cfg"
    vmm seccomp-none 180 run "$cfg" --cmdline "$BASE swiftvmm.test=verdict swiftvmm.status=3"
    if [ "$STATUS" -eq 3 ] && has "seccomp: kill: every thread filtered"; then detail="no trigger: verdict 3"; else ok=0; detail="no trigger: status $STATUS"; fi
    for kind in vcpu io; do
        SWIFTVMM=$SWIFTVMM_DEBUG SWIFTVMM_TEST_FORBIDDEN_SYSCALL=$kind vmm seccomp-$kind 180 run "$cfg" --cmdline "$BASE swiftvmm.test=verdict swiftvmm.status=3"
        if [ "$STATUS" -eq 159 ] && has "seccomp: the $kind thread made a system call outside its allowlist: number 41 "; then
            detail="$detail; $kind: SIGSYS"
        else
            ok=0; detail="$detail; $kind: status $STATUS"
        fi
    done
    if [ $ok -eq 1 ]; then pass seccomp-forbidden-call-stops-vmm "$detail"; else fail seccomp-forbidden-call-stops-vmm "$detail" "$LOG"; fi
}
lab_test seccomp-forbidden-call-stops-vmm 600 t_seccomp

summary
