#!/usr/bin/env bash
# Issue 3 lab tests: PCI, virtio devices, ACPI power-off, inside the lab host.
source "$(dirname "$0")/lib.sh"
cd "$REPO"
BASE="console=ttyS0 reboot=k panic=-1 quiet $LAB_GUEST_PARAMS"
MODS=$CACHE/guest/initramfs-modules.cpio.gz
work=$(mktemp -d /tmp/swiftvmm-devices.XXXXXX)

# A config with every device kind; images live in $work.
truncate -s 64M "$work/disk.img"
printf 'READONLY-DISK-CONTENT' | dd of="$work/ro.img" bs=1M count=0 seek=16 2>/dev/null
printf 'READONLY-DISK-CONTENT' | dd of="$work/ro.img" conv=notrunc 2>/dev/null
cat >"$work/vm.toml" <<TOML
[machine]
vcpus = 1
memory = "512M"
[kernel]
path = "$CACHE/guest/vmlinuz"
initramfs = "$MODS"
cmdline = "$BASE"
[serial]
mode = "terminal"
[[disk]]
path = "disk.img"
cache = "none"
[[disk]]
path = "ro.img"
read_only = true
[[net]]
tap = "swtap0"
mac = "52:54:00:aa:bb:01"
[console]
mode = "file"
path = "hvc0.log"
[rng]
enabled = true
TOML
ip tuntap add dev swtap0 mode tap && ip addr add 10.0.2.1/24 dev swtap0 && ip link set swtap0 up

# 1. The guest sees the host bridge and each virtio device with its IDs, bound to virtio-pci, with MSI-X.
t_pci() {
    vmm pci 180 run "$work/vm.toml" --cmdline "$BASE swiftvmm.modules=virtio_blk,virtio_net,virtio-rng swiftvmm.test=pci"
    if has "SWIFTVMM-PCI: 0000:00:00.0 0x8086 0x0d57 0x060000" \
        && has "SWIFTVMM-PCI: 0000:00:01.0 0x1af4 0x1042 0x010000 .*driver=virtio-pci" \
        && has "SWIFTVMM-PCI: 0000:00:02.0 0x1af4 0x1042 0x010000 .*driver=virtio-pci" \
        && has "SWIFTVMM-PCI: 0000:00:03.0 0x1af4 0x1041 0x020000 .*driver=virtio-pci" \
        && has "SWIFTVMM-PCI: 0000:00:04.0 0x1af4 0x1043 0x078000 .*driver=virtio-pci" \
        && has "SWIFTVMM-PCI: 0000:00:05.0 0x1af4 0x1044 0xff0000 .*driver=virtio-pci" \
        && has "SWIFTVMM-IRQ: .*PCI-MSI"; then pass pci-devices-listed "${SECS}s"; else fail pci-devices-listed "status $STATUS" "$LOG"; fi
}
lab_test pci-devices-listed 300 t_pci

# 2. virtio-rng feeds /dev/hwrng.
t_rng() {
    vmm rng 180 run "$work/vm.toml" --cmdline "$BASE swiftvmm.modules=virtio-rng swiftvmm.test=rng"
    if has "rng_current=virtio_rng.0 bytes=256"; then pass virtio-rng "${SECS}s"; else fail virtio-rng "status $STATUS" "$LOG"; fi
}
lab_test virtio-rng 300 t_rng

# 2b. With MSI off in the guest, the same device works over INTx (IOAPIC GSI 16-19, level).
t_rng_intx() {
    vmm rng-intx 180 run "$work/vm.toml" --cmdline "$BASE pci=nomsi swiftvmm.modules=virtio-rng swiftvmm.test=rng"
    if has "rng_current=virtio_rng.0 bytes=256"; then pass virtio-over-intx "${SECS}s"; else fail virtio-over-intx "status $STATUS" "$LOG"; fi
}
lab_test virtio-over-intx 300 t_rng_intx

# 3. The guest writes a pattern to the virtio disk (cache = "none": O_DIRECT), flushes,
#    powers off; the image holds it.
t_disk() {
    vmm disk 180 run "$work/vm.toml" --cmdline "$BASE swiftvmm.modules=virtio_blk swiftvmm.test=disk swiftvmm.pattern=LAB-$$"
    if [ "$STATUS" -eq 0 ] && has "vda write ok" && python3 - "$work/disk.img" "LAB-$$" <<'PY'
import sys
img, pat = sys.argv[1], sys.argv[2]
want = "".join(f"{pat}-{i};" for i in range(64)).encode()
with open(img, "rb") as f:
    f.seek(1 << 20)
    got = f.read(len(want))
sys.exit(0 if got == want else 1)
PY
    then pass disk-write-reaches-image "${SECS}s"; else fail disk-write-reaches-image "status $STATUS" "$LOG"; fi

    # 3b. cache = "none": swiftvmm opened the image with O_DIRECT, and the guest's 4 KiB
    #     writes went past the lab host's page cache (its exit line counts them).
    if has 'disk\[0\] .*disk.img: cache = "none": O_DIRECT' \
        && has 'disk\[0\] .*disk.img: .* [1-9][0-9]* writes .*host transfers: [1-9][0-9]* O_DIRECT'; then pass disk-cache-none-direct
    else fail disk-cache-none-direct "no O_DIRECT open or no O_DIRECT transfer in swiftvmm's log" "$LOG"; fi

    # 3c. DISCARD: the guest discarded 64 KiB at 2 MiB and read zeros back; the image
    #     has zeros there and its size, and at least one discard was served.
    if has "vda discard_max_bytes=[1-9]" && has "vda discard ok" && has 'disk\[0\] .* [1-9][0-9]* discards' \
        && python3 - "$work/disk.img" <<'PY'
import os, sys
img = sys.argv[1]
with open(img, "rb") as f:
    f.seek(2 << 20)
    got = f.read(64 << 10)
sys.exit(0 if got == bytes(64 << 10) and os.path.getsize(img) == 64 << 20 else 1)
PY
    then pass disk-discard-reads-zeros; else fail disk-discard-reads-zeros "see log" "$LOG"; fi

    # 4. The read-only disk is read-only in the guest and refuses writes.
    if has "vdb ro=1" && has "vdb write refused" && has "head=READONLY-DISK-CO" ; then pass read-only-disk; else fail read-only-disk "see log" "$LOG"; fi
}
lab_test disk-write-reaches-image 300 t_disk

# 4b. Multiqueue and io_uring: two vCPUs, so two request queues by default; the guest
# writes and verifies random data from a writer pinned to each CPU, with O_DIRECT, on a
# cache = "none" disk. Every queue must have carried requests through io_uring. How many
# were in flight at once is reported, not asserted: two writers on a slow lab may take
# turns (the unit tests check the batching itself).
truncate -s 64M "$work/mq.img"
sed -e 's/^vcpus = 1$/vcpus = 2/' -e 's|^path = "disk.img"$|path = "mq.img"|' "$work/vm.toml" >"$work/mq.toml"
t_diskmq() {
    vmm diskmq 240 run "$work/mq.toml" --cmdline "$BASE swiftvmm.modules=virtio_blk swiftvmm.test=diskmq"
    if [ "$STATUS" -eq 0 ] && has "vda queues=2 cpus=2" && has "diskmq cpu 0 ok" && has "diskmq cpu 1 ok" \
        && has 'virtio-blk .*mq.img 64 MiB, 2 queues, io_uring' \
        && has 'disk\[0\] .*mq.img: .*requests per queue [1-9][0-9]*/[1-9][0-9]*, io_uring, at most [1-9][0-9]* in flight'; then
        pass disk-multiqueue-io-uring "${SECS}s, $(grep -oE 'requests per queue [0-9/]+, io_uring, at most [0-9]+ in flight' "$LOG" | head -n 1)"
    else fail disk-multiqueue-io-uring "status $STATUS" "$LOG"; fi
}
lab_test disk-multiqueue-io-uring 300 t_diskmq

# 4c. The host's file system fills up under a guest write (an 8 MiB tmpfs holding a
# 64 MiB sparse image): the guest gets an I/O error, the disk still answers, the VMM
# keeps running and exits 0 when the guest powers off.
mkdir -p "$work/full" && mount -t tmpfs -o size=8m swiftvmm-full "$work/full" && truncate -s 64M "$work/full/full.img"
sed -e "s|^path = \"disk.img\"$|path = \"$work/full/full.img\"|" -e 's/^cache = "none"$/cache = "writeback"/' "$work/vm.toml" >"$work/full.toml"
t_diskfull() {
    vmm diskfull 240 run "$work/full.toml" --cmdline "$BASE swiftvmm.modules=virtio_blk swiftvmm.test=diskfull"
    if [ "$STATUS" -eq 0 ] && has "diskfull write failed: .*(I/O error|Input/output error)" && has "diskfull read after ok" \
        && has 'disk\[0\] .*full.img: .* [1-9][0-9]* failed'; then
        pass disk-host-enospc-is-guest-ioerror "${SECS}s"
    else fail disk-host-enospc-is-guest-ioerror "status $STATUS" "$LOG"; fi
}
lab_test disk-host-enospc-is-guest-ioerror 300 t_diskfull
umount "$work/full" 2>/dev/null || true

# 5. virtio-net: the guest pings the lab host through the TAP.
# The guest's negotiated virtio feature bits (its "eth0 virtio features" line, bit 0
# first): true when every bit number given is set.
guest_feature_bits() {
    local f b
    f=$(sed -n 's/.*eth0 virtio features \([01]*\).*/\1/p' "$LOG" | head -n 1)
    [ -n "$f" ] || return 1
    for b in "$@"; do [ "${f:$b:1}" = 1 ] || return 1; done
}
t_net() {
    vmm net 180 run "$work/vm.toml" --cmdline "$BASE swiftvmm.modules=virtio_net swiftvmm.test=net"
    if has "ping 10.0.2.1 ok" && has "eth0 52:54:00:aa:bb:01 driver=virtio_net" && has "virtio: [1-9][0-9]* queue notifications arrived through ioeventfds" \
        && has "net\[0\] tap swtap0: vhost-net kernel data path" && has "virtio-net tap swtap0 mac 52:54:00:aa:bb:01, vhost-net" \
        && has "net\[0\]: vhost-net running 1 queue pair, 2 of 2 queues interrupting through KVM irqfds; the guest took CSUM GUEST_CSUM HOST_TSO4 HOST_TSO6 GUEST_TSO4 GUEST_TSO6 MRG_RXBUF" \
        && guest_feature_bits 0 1 7 8 11 12 15; then
        pass virtio-net-ping "${SECS}s, vhost-net, the guest sees its offloads"
    else fail virtio-net-ping "status $STATUS" "$LOG"; fi
}
lab_test virtio-net-ping 300 t_net

# 5a. vhost-net with the guest's MSI off: its interrupts go through the NIC's I/O thread
# to INTx and the ISR.
t_net_intx() {
    vmm net-intx 180 run "$work/vm.toml" --cmdline "$BASE pci=nomsi swiftvmm.modules=virtio_net swiftvmm.test=net"
    if has "ping 10.0.2.1 ok" && has "net\[0\]: vhost-net running 1 queue pair, 0 of 2 queues interrupting through KVM irqfds"; then
        pass virtio-net-vhost-over-intx "${SECS}s"
    else fail virtio-net-vhost-over-intx "status $STATUS" "$LOG"; fi
}
lab_test virtio-net-vhost-over-intx 300 t_net_intx

# 5b. The same NIC on the VMM's own data path (vhost = false).
sed -e 's/^mac = "52:54:00:aa:bb:01"$/mac = "52:54:00:aa:bb:01"\nvhost = false/' "$work/vm.toml" >"$work/novhost.toml"
t_net_userspace() {
    vmm net-userspace 180 run "$work/novhost.toml" --cmdline "$BASE swiftvmm.modules=virtio_net swiftvmm.test=net"
    if has "ping 10.0.2.1 ok" && has "net\[0\] tap swtap0: userspace data path \(vhost = false\)"; then pass virtio-net-userspace-ping "${SECS}s"
    else fail virtio-net-userspace-ping "status $STATUS" "$LOG"; fi
}
lab_test virtio-net-userspace-ping 300 t_net_userspace

# 5e. 64 MiB over TCP each way (guest to lab host, then lab host to guest; tcp-peer.py is
# the lab host's end), on vhost-net and on the VMM's own data path; the guest's own view of
# the offloads it negotiated is checked by virtio-net-ping.
t_net_tcp() {
    local mode detail="" cfg peer rx tx
    for mode in vhost userspace; do
        cfg=$work/vm.toml
        [ $mode = vhost ] || cfg=$work/novhost.toml
        peer=$work/tcp-peer.$mode
        # The peer serves one boot after another (a boot the lab lost is run again by vmm);
        # its last lines are this boot's.
        python3 tests/lab/tcp-peer.py 10.0.2.1 10.0.2.15 64 >"$peer" 2>&1 &
        local ppid=$!
        vmm net-tcp-$mode 300 run "$cfg" --cmdline "$BASE swiftvmm.modules=virtio_net swiftvmm.test=netbench swiftvmm.mib=64 swiftvmm.recv=1"
        sleep 1; kill $ppid 2>/dev/null; wait $ppid 2>/dev/null
        cat "$peer" >>"$LOG"
        rx=$(grep "tcp-peer: received" "$peer" | tail -n 1); tx=$(grep "tcp-peer: sent" "$peer" | tail -n 1)
        if [ "$STATUS" -eq 0 ] && [[ $rx == "tcp-peer: received 67108864 bytes"* ]] && [[ $tx == "tcp-peer: sent 67108864 bytes"* ]] \
            && guest_has "netbench received bytes=67108864"; then
            detail="$detail $mode: to the lab host in ${rx##* in }, from it in ${tx##* in };"
        else
            fail virtio-net-tcp-64mib "$mode: status $STATUS, lab host: $(tail -n 4 "$peer" | tr '\n' ' ')" "$LOG"
            return
        fi
    done
    pass virtio-net-tcp-64mib "$detail"
}
lab_test virtio-net-tcp-64mib 700 t_net_tcp

# 5d. Without root (README, "Running without root"): a launcher (launch-with-fds.py) opens
# /dev/kvm, the disk image and a TAP queue on swtap0, then runs swiftvmm as nobody with no
# capability and those descriptors only: the NIC pings on the VMM's own data path, the
# disk is there at its size.
t_unprivileged() {
    local d=$work/nobody
    mkdir -p "$d" && cp "$SWIFTVMM" "$CACHE/guest/vmlinuz" "$MODS" "$d/" \
        || { fail virtio-unprivileged "cannot copy swiftvmm and the guest files to $d"; return; }
    printf '[machine]\nvcpus = 1\nmemory = "512M"\n[kernel]\npath = "vmlinuz"\ninitramfs = "%s"\n[serial]\nmode = "terminal"\n[[disk]]\npath = "fd:4"\n[[net]]\ntap = "fd:5"\nmac = "52:54:00:aa:bb:01"\n' \
        "$(basename "$MODS")" >"$d/vm.toml"
    {
        echo '#!/bin/bash'
        echo "cd '$d' || exit 70"
        echo "exec python3 '$REPO/tests/lab/launch-with-fds.py' nobody --rw 3 /dev/kvm --rw 4 '$work/disk.img' --tap 5 swtap0 -- ./swiftvmm \"\$@\" --kvm fd:3"
    } >"$d/launch.sh"
    chmod 755 "$work" "$d" "$d/launch.sh" && chmod a+r "$d"/*
    SWIFTVMM=$d/launch.sh vmm unprivileged 180 run vm.toml --cmdline "$BASE swiftvmm.modules=virtio_blk,virtio_net swiftvmm.test=net"
    if [ "$STATUS" -eq 0 ] && has "ping 10.0.2.1 ok" && has "privileges: uid 65534 \(euid 65534\) held no capability" \
        && has "net\[0\] tap fd:5: userspace data path \(a passed TAP queue" && has "virtio-net tap swtap0 mac 52:54:00:aa:bb:01" \
        && has "virtio-blk fd:4 64 MiB"; then
        pass virtio-unprivileged "${SECS}s; $(grep -m1 -oE 'privileges: .*' "$LOG" | cut -c1-100)"
    else
        fail virtio-unprivileged "status $STATUS" "$LOG"
    fi
}
lab_test virtio-unprivileged 300 t_unprivileged

# 5c. Two vCPUs and a multi_queue TAP: two queue pairs on vhost-net, each with its own
# TAP queue; the guest sets both up (VQ_PAIRS_SET on the control queue) and pings.
ip tuntap add dev swtap2 mode tap multi_queue && ip addr add 10.0.4.1/24 dev swtap2 && ip link set swtap2 up
sed -e 's/^vcpus = 1$/vcpus = 2/' -e 's/^tap = "swtap0"$/tap = "swtap2"/' "$work/vm.toml" >"$work/netmq.toml"
t_net_mq() {
    vmm net-mq 180 run "$work/netmq.toml" --cmdline "$BASE swiftvmm.modules=virtio_net swiftvmm.test=net swiftvmm.ip=10.0.4.15/24 swiftvmm.peer=10.0.4.1"
    if has "ping 10.0.4.1 ok" && has "virtio-net tap swtap2 .*vhost-net, 2 queue pairs" && has "eth0 queues rx-0 rx-1 tx-0 tx-1" \
        && has "net\[0\]: vhost-net running 2 queue pairs, 4 of 4 queues interrupting through KVM irqfds; .*MQ"; then
        pass virtio-net-multiqueue-vhost "${SECS}s"
    else fail virtio-net-multiqueue-vhost "status $STATUS" "$LOG"; fi
}
lab_test virtio-net-multiqueue-vhost 300 t_net_mq
ip link del swtap2 2>/dev/null || true

# 6. virtio-console: hvc0 output reaches its file.
t_hvc() {
    if grep -q . "$work/hvc0.log" 2>/dev/null || true; then :; fi
    vmm hvc 180 run "$work/vm.toml" --cmdline "console=hvc0 reboot=k panic=-1 $LAB_GUEST_PARAMS swiftvmm.test=reboot"
    # The guest's init drains hvc0 (TCSETSW) before it reboots: a lost virtio-console
    # completion or interrupt shows as a run that never ends.
    if [ "$STATUS" -eq 0 ] && has "guest rebooted" && grep -q "SWIFTVMM-GUEST-INIT: up" "$work/hvc0.log"; then pass virtio-console-hvc0 "${SECS}s"
    elif [ "$STATUS" -ne 0 ]; then fail virtio-console-hvc0 "status $STATUS (want 0: the guest reboots after init); hvc0.log: $(tail -n 3 "$work/hvc0.log" | tr '\n' '|')" "$LOG"
    else LOG=$work/hvc0.log; fail virtio-console-hvc0 "no init marker in hvc0.log (status $STATUS)" "$LOG"; fi
}
lab_test virtio-console-hvc0 300 t_hvc

# 7. SIGTERM asks the guest to power off (ACPI power button) and swiftvmm exits 0 when it has.
# A boot the lab lost (lost_guest) is booted again under the one retry rule.
t_sigterm() {
    local t0 st n=0
    while :; do
        vmm_until sigterm 150 "SWIFTVMM-GUEST-INIT: up" run "$work/vm.toml" --timeout 200s --cmdline "$BASE swiftvmm.test=shell"
        if [ $VMM_UP = 1 ]; then sleep 2; kill -TERM $VMM_PID; fi
        t0=$(date +%s); wait $VMM_PID; st=$?
        retry_lost sigterm-powers-off $n $st "$LOG" "$VMM_T0" || break
        n=$((n + 1))
    done
    if [ $VMM_UP = 1 ] && [ $st -eq 0 ] && has "guest powered off" && has "pressed the ACPI power button" && has "power button pressed, powering off"; then pass sigterm-powers-off "$(( $(date +%s) - t0 ))s after SIGTERM"; else fail sigterm-powers-off "status $st, guest up $VMM_UP" "$LOG"; fi
}
lab_test sigterm-powers-off 300 t_sigterm

# 8. A host fault: the NIC's TAP deleted on the lab host while the guest runs, on vhost-net
# and on the VMM's own data path. The VMM says so, keeps running, and SIGTERM then
# powers the guest off as usual (status 0). A boot the lab lost (lost_guest: a triple
# fault, or a hang swiftvmm's --timeout reports) is booted again under the one retry rule.
tap_deleted_once() {
    local mode=$1 cfg=$work/tapdel-$1.toml src=$work/vm.toml st n=0
    [ "$mode" = vhost ] || src=$work/novhost.toml
    sed -e 's/^tap = "swtap0"$/tap = "swtap3"/' "$src" >"$cfg"
    while :; do
        ip link del swtap3 2>/dev/null
        ip tuntap add dev swtap3 mode tap && ip addr add 10.0.5.1/24 dev swtap3 && ip link set swtap3 up
        vmm_until "tapdel-$mode" 220 "SWIFTVMM-GUEST-INIT: up" run "$cfg" --timeout 200s --cmdline "$BASE swiftvmm.modules=virtio_net swiftvmm.test=shell"
        if [ $VMM_UP = 1 ]; then
            sleep 2
            ip link del swtap3
            for _ in $(seq 1 20); do has "tap swtap3: .*was the TAP deleted on the host" && break; sleep 1; done
            sleep 1
            kill -TERM $VMM_PID 2>/dev/null
        fi
        wait $VMM_PID; st=$?
        retry_lost "tap-deleted-$mode" $n $st "$LOG" "$VMM_T0" || break
        n=$((n + 1))
    done
    if [ $VMM_UP = 1 ] && [ $st -eq 0 ] && has "tap swtap3: .*was the TAP deleted on the host" && has "guest powered off"; then
        TAPDEL_DETAIL="$mode: logged, ran on, powered off;"
        return 0
    fi
    TAPDEL_DETAIL="$mode: status $st, guest up $VMM_UP, deletion logged $(has 'was the TAP deleted on the host' && echo 1 || echo 0);"
    return 1
}
t_tap_deleted() {
    local mode detail="" TAPDEL_DETAIL
    for mode in vhost userspace; do
        if ! tap_deleted_once $mode; then
            fail tap-deleted-vmm-runs-on "$detail $TAPDEL_DETAIL" "$LOG"
            return
        fi
        detail="$detail $TAPDEL_DETAIL"
    done
    pass tap-deleted-vmm-runs-on "$detail"
}
lab_test tap-deleted-vmm-runs-on 600 t_tap_deleted
ip link del swtap3 2>/dev/null

# 9. A host fault: the VMM killed (SIGKILL) as soon as the guest has flushed a write
# (dd conv=fsync, then sync): the write is in the image.
t_sigkill_after_flush() {
    local st n=0 pat=KILLED-$$
    while :; do
        dd if=/dev/zero of="$work/disk.img" bs=4096 seek=256 count=16 conv=notrunc 2>/dev/null
        vmm_until sigkill 220 "vda write ok" run "$work/vm.toml" --timeout 200s --cmdline "$BASE swiftvmm.modules=virtio_blk swiftvmm.test=disk swiftvmm.pattern=$pat"
        [ $VMM_UP = 0 ] || kill -KILL $VMM_PID 2>/dev/null
        wait $VMM_PID; st=$?
        # Killed on purpose (137) is not a lost guest; one that never wrote may be.
        [ $VMM_UP = 0 ] && retry_lost sigkill-after-flush-keeps-data $n $st "$LOG" "$VMM_T0" || break
        n=$((n + 1))
    done
    if [ $st -eq 137 ] && has "vda write ok" && python3 - "$work/disk.img" "$pat" <<'PY'
import sys
img, pat = sys.argv[1], sys.argv[2]
want = "".join(f"{pat}-{i};" for i in range(64)).encode()
with open(img, "rb") as f:
    f.seek(1 << 20)
    sys.exit(0 if f.read(len(want)) == want else 1)
PY
    then pass sigkill-after-flush-keeps-data "killed (status $st) after the guest's flush; the pattern is in the image"
    else fail sigkill-after-flush-keeps-data "status $st, write seen $VMM_UP" "$LOG"; fi
}
lab_test sigkill-after-flush-keeps-data 300 t_sigkill_after_flush

ip link del swtap0 2>/dev/null
rm -rf "$work"
summary
