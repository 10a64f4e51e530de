#!/usr/bin/env bash
# Issue 15 lab tests: a PCI device served by another process over vfio-user, in a real
# guest. The server is libvfio-user's sample `server` (../shared/vfio-user/, prebuilt,
# static; its README says what it does), run in the lab host beside swiftvmm.
source "$(dirname "$0")/lib.sh"
cd "$REPO"
BASE="console=ttyS0 reboot=k panic=-1 quiet $LAB_GUEST_PARAMS"
SERVER=${SWIFTVMM_SHARED:-$REPO/../shared}/vfio-user/server
work=$(mktemp -d /tmp/swiftvmm-vfu.XXXXXX)

# start_peer VAR SOCKET LOG COMMAND...: a vfio-user server in the background, its pid in
# VAR, its output appended to LOG; waits up to 10 s for it to listen at SOCKET.
start_peer() {
    local var=$1 sock=$2 log=$3 p i
    shift 3
    rm -f "$sock"
    "$@" >>"$log" 2>&1 &
    p=$!
    disown "$p" 2>/dev/null
    printf -v "$var" '%s' "$p"
    for i in $(seq 1 100); do [ -S "$sock" ] && return 0; sleep 0.1; done
    echo "lab-test: the vfio-user server did not listen at $sock: $(tail -n 3 "$log")"
    return 1
}

# The sample serves one client and exits when it goes, so every boot (a retried one
# too: lost_mark runs before each) gets a fresh server, killed by the guest's signal.
start_server() { # MODE
    [ -z "${spid:-}" ] || kill -9 "$spid" 2>/dev/null
    start_peer spid "$work/vfu.sock" "$work/server-$1.log" "$SERVER" -v "$work/vfu.sock"
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

# The test device (vfu-testdev.py: a second, independent server, written from the spec) driven
# from the guest's user space: uio_pci_generic takes its INTx, BAR0 commands it to DMA into
# RAM the guest kept from its kernel (memmap=), a FILL the guest checks byte by byte and a
# SUM of random bytes it wrote, each with an interrupt, by fd and by message.
TESTDEV=$REPO/tests/lab/vfu-testdev.py
start_testdev() { # NAME [OPTION]
    [ -z "${tpid:-}" ] || kill -9 "$tpid" 2>/dev/null
    start_peer tpid "$work/testdev.sock" "$work/testdev-$1.log" python3 "$TESTDEV" ${2:+"$2"} "$work/testdev.sock"
}
t_guest_dma() { # MODE [automasked]
    local mode=$1 buf=0x10000000 name=vfio-user-guest-dma-$1${2:+-$2} opt=""
    [ "${2:-}" != automasked ] || opt=-a
    cat >"$work/dma-$mode.toml" <<TOML
[machine]
vcpus = 1
memory = "512M"
[kernel]
path = "$CACHE/guest/vmlinuz"
initramfs = "$CACHE/guest/initramfs-modules.cpio.gz"
cmdline = "$BASE memmap=64K\$$buf swiftvmm.modules=uio_pci_generic swiftvmm.test=vfudma swiftvmm.vfu_buf=$buf"
[serial]
mode = "terminal"
[[vfio_user]]
socket = "$work/testdev.sock"
dma = "$mode"
TOML
    lost_mark() { start_testdev "$name" $opt; }
    vmm "$name" 240 run "$work/dma-$mode.toml"
    sleep 1
    local dlog=$work/testdev-$name.log
    # In message mode every byte crossed the VMM: 5000 written (2 messages), 4096 read (1).
    local counters="0 reads, 0 writes, 0 bytes, 0 refused"
    [ "$mode" = fd ] || counters="1 reads, 2 writes, 9096 bytes, 0 refused"
    if [ "$STATUS" -eq 0 ] \
        && guest_has "^VFUDMA-DEVICE: 0000:00:01.0 0xdead 0xf00d BAR0 0x[0-9a-f]+ buffer $buf" \
        && guest_has "^VFUDMA-FILL: event 1; 8192 bytes, 0 wrong, 0 nonzero past the end; device count 1 errors 0" \
        && guest_has "^VFUDMA-SUM: event 2; device ([0-9]+) guest \1; device count 2 errors 0" \
        && guest_has "^VFUDMA-IRQS: 2 " \
        && grep -q "^fill 5000 bytes at $buf by $mode" "$dlog" && grep -q "^sum 4096 bytes at 0x10002000 by $mode" "$dlog" \
        && grep -q "^client gone after 2 commands, 0 failed" "$dlog" \
        && has "vfio-user $work/testdev.sock: [0-9]+ requests; the server's DMA messages: $counters" \
        && { [ -z "$opt" ] || { has "vfio-user $work/testdev.sock: device .*interrupts INTx \(automasked" && grep -qE "^client gone after 2 commands, 0 failed, [1-9][0-9]* unmasks" "$dlog"; }; }; then
        pass "$name" "${SECS}s${opt:+; $(grep -oE '[0-9]+ unmasks' "$dlog")}"
        grep -E '^VFUDMA-(FILL|SUM|IRQS)' "$LOG" | sed 's/^/lab-test:   /'
    else
        fail "$name" "status $STATUS" "$LOG"
        echo "lab-test: test device log:"; tail -n 20 "$dlog" | sed 's/^/lab-test:   /'
    fi
    kill -9 "$tpid" 2>/dev/null
}
lab_test vfio-user-guest-dma-fd 300 t_guest_dma fd
lab_test vfio-user-guest-dma-message 300 t_guest_dma message
# The same with the device's INTx AUTOMASKED (vfu-testdev.py -a): the second interrupt comes
# only if the guest's EOI of the first (KVM's resample eventfd) reached the server as its
# unmask eventfd.
lab_test vfio-user-guest-dma-fd-automasked 300 t_guest_dma fd automasked

if [ ! -x "$SERVER" ]; then
    fail vfio-user-device-fd "libvfio-user's sample server is not at $SERVER (../shared/vfio-user beside the repository, or SWIFTVMM_SHARED)"
    fail vfio-user-device-message "no server"
else
    lab_test vfio-user-device-fd 300 t_vfio_user fd
    lab_test vfio-user-device-message 300 t_vfio_user message
fi

rm -rf "$work"
summary
