#!/usr/bin/env bash
# Passthrough lab tests on a lab host whose VT-d has no snoop control and a 39-bit
# address width: the WBINVD verdicts must say "must really flush", and guest RAM beyond
# the IOMMU's IOVA ranges must be refused. Run by scripts/test as:
#   scripts/lab run --iommu intel --iommu-aw 39 --nics 2 -- bash tests/lab/run-all.sh passthrough-nosnoop.sh
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/passthrough-lib.sh"
# A lost guest (lib.sh) is retried only when the assigned NIC made no DMA fault during
# the lost run (lost_veto in passthrough-lib.sh). A guest that died before printing a line
# had not loaded a driver for the NIC, which swiftvmm had reset with Bus Master off, so
# the NIC cannot have caused it; every other failure of passthrough fails the test.
cd "$REPO" || exit 1

BASE="console=ttyS0 reboot=k panic=-1 quiet $LAB_GUEST_PARAMS"
work=$(mktemp -d /tmp/swiftvmm-passthrough.XXXXXX)
cat >"$work/vm.toml" <<TOML
[machine]
vcpus = 1
memory = "512M"
[kernel]
path = "$CACHE/guest/vmlinuz"
initramfs = "$CACHE/guest/initramfs-modules.cpio.gz"
cmdline = "$BASE"
[serial]
mode = "terminal"
TOML

# shellcheck disable=SC2207 # BDFs have no spaces; the lab has no /dev/fd for < <()
E1000E=($(pt_by_id 8086:10d3))
ecap=$(cat /sys/class/iommu/dmar0/intel-iommu/ecap 2>/dev/null)
cap=$(cat /sys/class/iommu/dmar0/intel-iommu/cap 2>/dev/null)
# VT-d CAP.MGAW, bits 21:16, is the maximum guest address width minus one (VT-d spec 11.4.2).
mgaw=$(( ((0x${cap:-0} >> 16) & 0x3f) + 1 ))
echo "lab: e1000e ${E1000E[*]:-none}; VT-d ecap 0x${ecap:-none} cap 0x${cap:-none} (MGAW $mgaw bits); swiftvmm $SWIFTVMM"
if [ ${#E1000E[@]} -lt 2 ] || [ -z "$ecap" ] || [ ! -e /dev/iommu ]; then
    fail lab-setup "need 2 e1000e (--nics 2), VT-d (--iommu intel) and /dev/iommu"
    summary; exit
fi
if (( (0x$ecap >> 7) & 1 )); then
    fail lab-setup "ECAP.SC (bit 7) is set: this suite needs --iommu intel, not intel-snoop"
    summary; exit
fi
PEER=${E1000E[0]} NIC=${E1000E[1]}
t_setup() {
    if pt_peer_up "$PEER" 10.0.0.1/24 && pt_bind_vfio "$NIC"; then pass lab-setup "ecap 0x$ecap, MGAW $mgaw; NIC $NIC $(pt_cdev "$NIC")"
    else fail lab-setup "peer or vfio-pci binding failed"; return 1; fi
}
lab_test lab-setup 120 t_setup || { summary; exit; }

# 3b. No snoop control: a device that can do No Snoop DMA makes WBINVD a real flush.
t_nosnoop() {
    vmm nosnoop 240 run "$work/vm.toml" --passthrough "$NIC" \
        --cmdline "$BASE swiftvmm.modules=e1000e swiftvmm.test=net swiftvmm.ip=10.0.0.2/24 swiftvmm.peer=10.0.0.1"
    if [ "$STATUS" -eq 0 ] && has "ping 10.0.0.1 ok" && has "coherency $NIC: WBINVD must really flush" \
        && has "coherency VM: WBINVD must really flush" && ! has "WBINVD stays a no-op"; then
        pass coherency-no-snoop-control-flushes "ecap 0x$ecap: $(grep -oE 'coherency VM: .*' "$LOG" | head -n 1 | cut -c1-120)"
    else fail coherency-no-snoop-control-flushes "status $STATUS; want 'must really flush' for $NIC and VM, and a ping" "$LOG"; fi
}
lab_test coherency-no-snoop-control-flushes 300 t_nosnoop

# 7. Guest RAM beyond the IOVA ranges (2^MGAW): 600 GiB of sparse memfd with a 39-bit VT-d.
t_iova() {
    if [ "$mgaw" -ge 40 ]; then
        fail error-ram-outside-iova "the VT-d address width is $mgaw bits: run the lab with --iommu-aw 39"
    else
        vmm err-iova 120 run "$work/vm.toml" --passthrough "$NIC" --memory 600G --cmdline "$BASE swiftvmm.test=poweroff"
        if [ "$STATUS" -eq 69 ] && has "IOVA"; then pass error-ram-outside-iova "$(grep -m1 'IOVA' "$LOG" | cut -c1-160)"
        else fail error-ram-outside-iova "status $STATUS (want 69 and a message naming the IOVA ranges)" "$LOG"; fi
    fi
}
lab_test error-ram-outside-iova 180 t_iova

rm -rf "$work"
summary
