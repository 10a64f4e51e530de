#!/usr/bin/env bash
# Issue 11 lab tests, emulated devices: the guest gets a vIOMMU (virtio-iommu described
# by ACPI VIOT) and its virtio devices do their DMA through it. Needs no host IOMMU.
source "$(dirname "$0")/lib.sh"
cd "$REPO"
# iommu.strict=1: the guest unmaps each DMA buffer as soon as it is done with it, so
# every request is a MAP and an UNMAP through the vIOMMU (no batching).
BASE="console=ttyS0 reboot=k panic=-1 quiet $LAB_GUEST_PARAMS iommu.strict=1"
MODS=$CACHE/guest/initramfs-modules.cpio.gz
work=$(mktemp -d /tmp/swiftvmm-viommu.XXXXXX)
truncate -s 64M "$work/disk.img"
write_config() { # FILE DISK-IOMMU
    cat >"$1" <<TOML
[machine]
vcpus = 2
memory = "512M"
[kernel]
path = "$CACHE/guest/vmlinuz"
initramfs = "$MODS"
cmdline = "$BASE"
[serial]
mode = "terminal"
[[disk]]
path = "$work/disk.img"
iommu = $2
[[net]]
tap = "swtap1"
mac = "52:54:00:aa:bb:11"
[rng]
enabled = true
[viommu]
TOML
}
write_config "$work/vm.toml" true
write_config "$work/vm-disk-outside.toml" false
ip tuntap add dev swtap1 mode tap && ip addr add 10.0.3.1/24 dev swtap1 && ip link set swtap1 up
CMD="$BASE swiftvmm.modules=virtio_iommu,virtio_blk,virtio_net swiftvmm.test=viommu swiftvmm.ip=10.0.3.2/24 swiftvmm.peer=10.0.3.1"

# The count after NAME on swiftvmm's exit line "viommu: N attach, N detach, N map, N unmap, ...".
count() { grep -E "swiftvmm: info: viommu: " "$LOG" | tail -n 1 | tr -d '\r' | grep -oE "[0-9]+ $1([,;]|$)" | head -n 1 | grep -oE "^[0-9]+"; }

# 1+2. The virtio-iommu driver binds, the kernel parses VIOT, each endpoint is in an IOMMU
# group of its own (DMA domains), and with iommu.strict=1 the disk writes and reads back a
# pattern and the NIC pings the lab host, every buffer mapped and unmapped by the guest.
# With two lab-host CPUs the device polls its request queue after each request
# ([viommu] poll_us): some requests must have come with no notification.
t_viommu() {
    vmm viommu 200 run "$work/vm.toml" --cmdline "$CMD swiftvmm.pattern=VIOMMU-$$"
    local groups maps unmaps attaches faults polled polling_ok=0
    groups=$(grep -cE "SWIFTVMM-IOMMU-GROUP: [0-9]+ type=DMA devices=0000:00:0[0-9a-f].0[[:space:]]*$" "$LOG")
    maps=$(count map); unmaps=$(count unmap); attaches=$(count attach); faults=$(count fault)
    polled=$(count "requests found by polling")
    if [ "$(nproc)" -gt 1 ]; then [ "${polled:-0}" -gt 0 ] && polling_ok=1
    else has "request polling off" && polling_ok=1; fi
    if [ "$STATUS" -eq 0 ] && guest_has "SWIFTVMM-VIRTIO: .* device=0x0017 driver=virtio_iommu" \
        && guest_has "SWIFTVMM-DMESG: .*(VIOT|viot)" \
        && [ "$groups" -ge 3 ] \
        && has "vda pattern ok" && has "ping 10.0.3.1 ok" \
        && [ "${maps:-0}" -gt 0 ] && [ "${unmaps:-0}" -gt 0 ] && [ "${attaches:-0}" -ge 3 ] && [ "${faults:-x}" = 0 ] \
        && [ "$polling_ok" = 1 ]; then
        pass viommu-emulated-devices "${SECS}s, $groups groups, $attaches attach, $maps map, $unmaps unmap, ${polled:-0} found by polling"
    else
        fail viommu-emulated-devices "status $STATUS, $groups single-device DMA groups, attach ${attaches:-?} map ${maps:-?} unmap ${unmaps:-?} faults ${faults:-?} polled ${polled:-?} ($(nproc) lab CPUs)" "$LOG"
    fi
}
lab_test viommu-emulated-devices 400 t_viommu

# 3. iommu = false leaves the disk outside the vIOMMU: no IOMMU group for it, and it
# still works (identity DMA) beside the NIC that is behind it.
t_outside() {
    vmm viommu-outside 200 run "$work/vm-disk-outside.toml" --cmdline "$CMD swiftvmm.pattern=OUTSIDE-$$"
    if [ "$STATUS" -eq 0 ] && has "vda pattern ok" && has "ping 10.0.3.1 ok" \
        && ! grep -q "SWIFTVMM-IOMMU-GROUP: .*devices=.*0000:00:01.0" "$LOG" \
        && guest_has "SWIFTVMM-IOMMU-GROUP: .*devices=0000:00:02.0"; then
        pass viommu-device-outside "${SECS}s"
    else
        fail viommu-device-outside "status $STATUS" "$LOG"
    fi
}
lab_test viommu-device-outside 400 t_outside

# 4-6. Nested assignment: the guest binds its second disk (behind the vIOMMU, 0000:00:02.0)
# to vfio-pci and firmware/nested/nested-vfio drives it from guest user space through a
# VFIO type1 container: every DMA of the device goes through the guest's VFIO domain.
# One boot; tests 5 and 6 read the log of test 4's.
SECTOR=8
NESTED_LOG=$LOGDIR/viommu-nested.log
python3 - "$work/nested.img" "$SECTOR" "NESTED-$$" <<'PY'
import sys
path, sector, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "wb") as f:
    f.truncate(16 << 20)
    f.seek(sector * 512)
    f.write(bytes((f"SWIFTVMM-{tag}-SECTOR-{sector};" * 32).encode()[:512]))
PY
NESTED_SUM=$(dd if="$work/nested.img" bs=512 skip="$SECTOR" count=1 2>/dev/null | cksum | cut -d' ' -f1)
cat >"$work/vm-nested.toml" <<TOML
[machine]
vcpus = 2
memory = "512M"
[kernel]
path = "$CACHE/guest/vmlinuz"
initramfs = "$MODS"
cmdline = "$BASE"
[serial]
mode = "terminal"
[[disk]]
path = "$work/disk.img"
[[disk]]
path = "$work/nested.img"
read_only = true
[viommu]
TOML
NESTED_CMD="$BASE swiftvmm.modules=virtio_iommu,virtio_blk,vfio_iommu_type1,vfio-pci swiftvmm.test=nested swiftvmm.nesteddev=0000:00:02.0 swiftvmm.sector=$SECTOR swiftvmm.cycles=3"

# 4. A sector the lab host wrote into the second image, read by the guest's user-space
# driver: VFIO_IOMMU_MAP_DMA of its rings and buffers, the device's DMA through the vIOMMU.
t_nested_read() {
    vmm viommu-nested 300 run "$work/vm-nested.toml" --cmdline "$NESTED_CMD"
    if [ "$STATUS" -eq 0 ] && guest_has "SWIFTVMM-GUEST-INIT: nested: 0000:00:02.0 driver=vfio-pci" \
        && guest_has "NESTED: pci 1af4:1042" && guest_has "NESTED: features .*VERSION_1 ACCESS_PLATFORM" \
        && guest_has "NESTED: blk read ok sector=$SECTOR sum=$NESTED_SUM head=\"SWIFTVMM-NESTED-$$-SECTOR"; then
        pass viommu-nested-read "${SECS}s, sector $SECTOR cksum $NESTED_SUM"
    else
        fail viommu-nested-read "status $STATUS, want sector $SECTOR cksum $NESTED_SUM" "$LOG"
    fi
}
lab_test viommu-nested-read 500 t_nested_read

# 5. Isolation: a request whose data buffer is at an IOVA the guest never mapped fails
# with VIRTIO_BLK_S_IOERR, the VMM counts the fault and reports it on the event queue
# (the guest kernel logs it), guest and VMM keep running, and the next request works.
t_nested_isolation() {
    LOG=$NESTED_LOG
    [ -f "$LOG" ] || { fail viommu-nested-isolation "no log of the nested boot" ""; return; }
    local faults reported
    faults=$(count fault); reported=$(count "fault events reported")
    if guest_has "NESTED: blk unmapped iova 0x20000000 -> status 1 \(IOERR\) ok" \
        && guest_has "SWIFTVMM-DMESG: .*fault from EP [0-9]+ at 0x20000000 " \
        && has "swiftvmm: warning: viommu: fault: 0000:00:02.0 .* 0x20000000" \
        && guest_has "NESTED: blk read after fault ok sector=$SECTOR sum=$NESTED_SUM " \
        && guest_has "SWIFTVMM-GUEST-INIT: nested: vda still reads" && guest_has "SWIFTVMM-GUEST-STATUS=" \
        && [ "${faults:-0}" -gt 0 ] && [ "${reported:-0}" -gt 0 ]; then
        pass viommu-nested-isolation "$faults fault, $reported fault events reported"
    else
        fail viommu-nested-isolation "fault ${faults:-?}, reported ${reported:-?}" "$LOG"
    fi
}
lab_test viommu-nested-isolation 30 t_nested_isolation

# 6. Three more times: container and group closed (the guest's virtio-iommu driver moves
# the device back to its default domain) and set up again (to a new VFIO domain), with a
# good read after each. The VMM saw the attachments: 2 disks at boot, then at least two
# per VFIO setup (4 setups).
t_nested_cycles() {
    LOG=$NESTED_LOG
    [ -f "$LOG" ] || { fail viommu-nested-cycles "no log of the nested boot" ""; return; }
    local attaches detaches
    attaches=$(count attach); detaches=$(count detach)
    if guest_has "NESTED: cycle 1 ok" && guest_has "NESTED: cycle 2 ok" && guest_has "NESTED: cycle 3 ok" \
        && guest_has "NESTED: result ok" && guest_has "SWIFTVMM-GUEST-STATUS=0" \
        && [ "${attaches:-0}" -ge 10 ]; then
        pass viommu-nested-cycles "3 cycles, $attaches attach, ${detaches:-?} detach"
    else
        fail viommu-nested-cycles "attach ${attaches:-?}, detach ${detaches:-?}" "$LOG"
    fi
}
lab_test viommu-nested-cycles 30 t_nested_cycles

ip link del swtap1 2>/dev/null
rm -rf "$work"
summary
