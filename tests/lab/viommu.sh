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
count() { grep -E "swiftvmm: info: viommu: " "$LOG" | tail -n 1 | grep -oE "[0-9]+ $1[,;]" | head -n 1 | grep -oE "^[0-9]+"; }

# 1+2. The virtio-iommu driver binds, the kernel parses VIOT, each endpoint is in an IOMMU
# group of its own (DMA domains), and with iommu.strict=1 the disk writes and reads back a
# pattern and the NIC pings the lab host, every buffer mapped and unmapped by the guest.
t_viommu() {
    vmm viommu 300 run "$work/vm.toml" --cmdline "$CMD swiftvmm.pattern=VIOMMU-$$"
    local groups maps unmaps attaches faults
    groups=$(grep -cE "SWIFTVMM-IOMMU-GROUP: [0-9]+ type=DMA devices=0000:00:0[0-9a-f].0[[:space:]]*$" "$LOG")
    maps=$(count map); unmaps=$(count unmap); attaches=$(count attach); faults=$(count fault)
    if [ "$STATUS" -eq 0 ] && has "SWIFTVMM-VIRTIO: .* device=0x0017 driver=virtio_iommu" \
        && has "SWIFTVMM-DMESG: .*(VIOT|viot)" \
        && [ "$groups" -ge 3 ] \
        && has "vda pattern ok" && has "ping 10.0.3.1 ok" \
        && [ "${maps:-0}" -gt 0 ] && [ "${unmaps:-0}" -gt 0 ] && [ "${attaches:-0}" -ge 3 ] && [ "${faults:-x}" = 0 ]; then
        pass viommu-emulated-devices "${SECS}s, $groups groups, $attaches attach, $maps map, $unmaps unmap"
    else
        fail viommu-emulated-devices "status $STATUS, $groups single-device DMA groups, attach ${attaches:-?} map ${maps:-?} unmap ${unmaps:-?} faults ${faults:-?}" "$LOG"
    fi
}
lab_test viommu-emulated-devices 400 t_viommu

# 3. iommu = false leaves the disk outside the vIOMMU: no IOMMU group for it, and it
# still works (identity DMA) beside the NIC that is behind it.
t_outside() {
    vmm viommu-outside 300 run "$work/vm-disk-outside.toml" --cmdline "$CMD swiftvmm.pattern=OUTSIDE-$$"
    if [ "$STATUS" -eq 0 ] && has "vda pattern ok" && has "ping 10.0.3.1 ok" \
        && ! grep -q "SWIFTVMM-IOMMU-GROUP: .*devices=.*0000:00:01.0" "$LOG" \
        && has "SWIFTVMM-IOMMU-GROUP: .*devices=0000:00:02.0"; then
        pass viommu-device-outside "${SECS}s"
    else
        fail viommu-device-outside "status $STATUS" "$LOG"
    fi
}
lab_test viommu-device-outside 400 t_outside

ip link del swtap1 2>/dev/null
rm -rf "$work"
summary
