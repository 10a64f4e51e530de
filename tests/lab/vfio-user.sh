#!/usr/bin/env bash
# Issue 15 lab tests: a PCI device served by another process over vfio-user, in a real
# guest. The server is libvfio-user's sample `server` (../shared/vfio-user/, prebuilt,
# static; its README says what it does), run in the lab host beside swiftvmm.
source "$(dirname "$0")/lib.sh"
cd "$REPO"
BASE="console=ttyS0 reboot=k panic=-1 quiet $LAB_GUEST_PARAMS"
SERVER=${SWIFTVMM_SHARED:-$REPO/../shared}/vfio-user/server
work=$(mktemp -d /tmp/swiftvmm-vfu.XXXXXX)

# The sample serves one client and exits when it goes, so every boot (a retried one
# too: lost_mark runs before each) gets a fresh server, killed by the guest's signal.
start_server() { # MODE
    [ -z "${spid:-}" ] || kill -9 "$spid" 2>/dev/null
    rm -f "$work/vfu.sock"
    "$SERVER" -v "$work/vfu.sock" >>"$work/server-$1.log" 2>&1 &
    spid=$!
    disown "$spid" 2>/dev/null
    local i
    for i in $(seq 1 100); do [ -S "$work/vfu.sock" ] && return 0; sleep 0.1; done
    echo "lab-test: the vfio-user server did not listen at $work/vfu.sock: $(tail -n 3 "$work/server-$1.log")"
    return 1
}

write_config() { # MODE
    cat >"$work/vm-$1.toml" <<TOML
[machine]
vcpus = 1
memory = "512M"
[kernel]
path = "$CACHE/guest/vmlinuz"
initramfs = "$CACHE/guest/initramfs.cpio.gz"
cmdline = "$BASE swiftvmm.test=vfiouser swiftvmm.vfu_wait=60"
[serial]
mode = "terminal"
[[vfio_user]]
socket = "$work/vfu.sock"
dma = "$1"
TOML
}

# The guest sees the server's device with its IDs and BARs, a BAR1 write comes back through
# the server, and when the server is killed the guest keeps running, reading all ones.
t_vfio_user() { # MODE
    local mode=$1
    write_config "$mode"
    # The server dies once the guest says it is ready (its first console lines are in the log).
    (
        for _ in $(seq 1 1800); do
            if grep -q '^VFU-READY' "$LOGDIR/vfu-$mode.log" 2>/dev/null; then
                sleep 0.5; kill -9 "$(cat "$work/spid")" 2>/dev/null; break
            fi
            sleep 0.2
        done
    ) &
    local killer=$!
    lost_mark() { start_server "$mode" && echo "$spid" >"$work/spid"; }
    vmm "vfu-$mode" 240 run "$work/vm-$mode.toml"
    kill "$killer" 2>/dev/null
    kill -9 "$(cat "$work/spid" 2>/dev/null)" 2>/dev/null
    if [ "$STATUS" -eq 0 ] \
        && guest_has "^VFU-DEVICE: 0000:00:01.0 0xdead 0xbeef 0xcafe 0xbabe 0x000000" \
        && guest_has "^VFU-BAR0: io size 0x8 " && guest_has "^VFU-BAR1: io size 0x4000 " \
        && guest_has "^VFU-BAR1: wrote 0dd0feca read 0dd0feca" \
        && guest_has "^VFU-GONE: config=ffff bar1=ffffffff" && guest_has "^VFU-ALIVE: " \
        && has "vfio-user $work/vfu.sock: device \[dead:beef\].*DMA by $mode" \
        && has "vfio-user $work/vfu.sock: the server is gone"; then
        pass "vfio-user-device-$mode" "${SECS}s"
        grep -E '^VFU-(BAR1: wrote|GONE)' "$LOG" | sed 's/^/lab-test:   /'
        grep -E 'vfio-user .*: [0-9]+ requests' "$LOG" | sed 's/^swiftvmm: info: /lab-test:   /' 
    else
        fail "vfio-user-device-$mode" "status $STATUS" "$LOG"
        echo "lab-test: server log:"; tail -n 20 "$work/server-$mode.log" | sed 's/^/lab-test:   /'
    fi
}

if [ ! -x "$SERVER" ]; then
    fail vfio-user-device-fd "libvfio-user's sample server is not at $SERVER (../shared/vfio-user beside the repository, or SWIFTVMM_SHARED)"
    fail vfio-user-device-message "no server"
else
    lab_test vfio-user-device-fd 300 t_vfio_user fd
    lab_test vfio-user-device-message 300 t_vfio_user message
fi

rm -rf "$work"
summary
