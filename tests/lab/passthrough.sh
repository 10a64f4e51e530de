#!/usr/bin/env bash
# Passthrough lab tests: host PCI devices assigned to a real guest through iommufd and
# their VFIO cdevs, on a lab host with the emulated VT-d (snoop control on). Asserts on
# what the guest printed (driver, interrupts, ping, BAR contents) and on swiftvmm's log.
# Run by scripts/test as:
#   scripts/lab run --iommu intel-snoop --nics 2 --igb 1 --ivshmem 8G --ivshmem 128G --mem 6G \
#       -- bash tests/lab/run-all.sh iommu.sh passthrough.sh
# The "must really flush" verdict and the IOVA limit need another lab:
# tests/lab/passthrough-nosnoop.sh.
# Adapting: PT_BIG_BAR_TOML (extra TOML for the BAR-too-big test, e.g. a key that
# shrinks the guest's 64-bit PCI window) and PT_BIG_BAR_DEVICE (default: the 128 GiB ivshmem).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/passthrough-lib.sh"
# A lost guest (lib.sh) is retried only when the assigned NIC made no DMA fault during
# the lost run (lost_veto in passthrough-lib.sh). A guest that died before printing a line
# had not loaded a driver for the NIC, which swiftvmm had reset with Bus Master off, so
# the NIC cannot have caused it; every other failure of passthrough fails the test.
cd "$REPO" || exit 1
summary_pt() {
    local g; g=$(dmar_other)
    [ -z "$g" ] || printf 'lab: note: DMA faults of devices other than the assigned NIC (not counted):\n%s\n' "$g"
    summary
}

BASE="console=ttyS0 reboot=k panic=-1 quiet $LAB_GUEST_PARAMS"
NET="swiftvmm.test=net swiftvmm.ip=10.0.0.2/24 swiftvmm.peer=10.0.0.1"
work=$(mktemp -d /tmp/swiftvmm-passthrough.XXXXXX)

# config NAME [TOML LINES...]: $work/NAME.toml, a 512 MiB one-vCPU guest with the modules
# initramfs; MACHINE_EXTRA (one TOML line) goes into [machine].
config() {
    local name=$1; shift
    {
        printf '[machine]\nvcpus = 1\nmemory = "512M"\n'
        [ -z "${MACHINE_EXTRA:-}" ] || printf '%s\n' "$MACHINE_EXTRA"
        printf '[kernel]\npath = "%s"\ninitramfs = "%s"\ncmdline = "%s"\n' "$CACHE/guest/vmlinuz" "$CACHE/guest/initramfs-modules.cpio.gz" "$BASE"
        printf '[serial]\nmode = "terminal"\n'
        local line
        for line in "$@"; do printf '%s\n' "$line"; done
    } >"$work/$name.toml"
    echo "$work/$name.toml"
}

# irqs KIND: the summed counts of the guest's SWIFTVMM-IRQ lines whose chip is KIND
# (PCI-MSIX, PCI-MSI, IO-APIC); empty when there is no such line.
irqs() {
    awk -v kind="$1" '/SWIFTVMM-IRQ:/ && index($0, kind) {
        seen = 1
        for (i = 3; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i
    } END { if (seen) print n + 0 }' "$LOG"
}

# expect_setup_error TEST MESSAGE...: the last vmm run exited 69 and said every MESSAGE.
expect_setup_error() {
    local name=$1 m missing=""; shift
    for m in "$@"; do has "$m" || missing="$missing '$m'"; done
    if [ "$STATUS" -eq 69 ] && [ -z "$missing" ]; then pass "$name" "$(grep -m1 -E -- "$1" "$LOG" | cut -c1-200)"
    else fail "$name" "status $STATUS (want 69)${missing:+, missing:$missing}" "$LOG"; fi
}

# ------------------------------------------------------------------ the lab's devices
# shellcheck disable=SC2207 # BDFs have no spaces; the lab has no /dev/fd for < <()
E1000E=($(pt_by_id 8086:10d3))
# shellcheck disable=SC2207 # BDFs have no spaces; the lab has no /dev/fd for < <()
IGB=($(pt_by_id 8086:10c9))
# shellcheck disable=SC2207 # BDFs have no spaces; the lab has no /dev/fd for < <()
SHM=($(pt_by_id 1af4:1110))
echo "lab devices: e1000e ${E1000E[*]:-none}; igb ${IGB[*]:-none}; ivshmem ${SHM[*]:-none}; swiftvmm $SWIFTVMM"
if [ ${#E1000E[@]} -lt 2 ] || [ ! -e /dev/iommu ] || [ ! -d /sys/class/iommu/dmar0 ]; then
    fail lab-setup "need 2 e1000e (--nics 2), VT-d (--iommu intel-snoop) and /dev/iommu; have ${#E1000E[@]} e1000e"
    summary_pt; exit
fi
PEER=${E1000E[0]} NIC=${E1000E[1]}
NIC_MAC=$(printf '52:54:00:00:00:%02x' $((${#E1000E[@]})))
# iommu.sh (run before us in the same lab) binds the first e1000e to vfio-pci: undo that.
t_setup() {
    [ "$(pt_driver "$PEER")" = e1000e ] || pt_bind_host "$PEER"
    sleep 1
    if pt_peer_up "$PEER" 10.0.0.1/24 && pt_bind_vfio "$NIC"; then
        pass lab-setup "peer $PEER $(pt_netdev "$PEER") 10.0.0.1/24; assigned NIC $NIC $(pt_cdev "$NIC"); $(pt_group "$NIC")"
    else
        fail lab-setup "could not bring up the peer $PEER or bind $NIC to vfio-pci"; return 1
    fi
}
lab_test lab-setup 120 t_setup || { summary_pt; exit; }
VM=$(config vm)

# nic_run NAME [CMDLINE EXTRA] [SWIFTVMM ARGS...]: the assigned e1000e pings the peer.
nic_run() {
    local name=$1 extra=$2; shift 2
    local f0; f0=$(dmar_faults)
    vmm "$name" 240 run "$VM" --passthrough "$NIC" --cmdline "$BASE swiftvmm.modules=e1000e $NET $extra" "$@"
    FAULTS=$(($(dmar_faults) - f0))
}

# nic_checks TEST KIND: guest driver, interrupts of KIND with counts, ping, clean exit.
nic_checks() {
    local name=$1 kind=$2 n why=""
    n=$(irqs "$kind")
    [ "$STATUS" -eq 0 ] || why="$why status $STATUS;"
    has "eth0 $NIC_MAC driver=e1000e" || why="$why no e1000e bound to eth0;"
    has "ping 10.0.0.1 ok" || why="$why no ping;"
    [ -n "$n" ] && [ "$n" -gt 0 ] || why="$why no $kind interrupts counted (${n:-no line});"
    if [ "$kind" = IO-APIC ] && [ -n "$(irqs PCI-MSI)" ]; then why="$why MSI lines with pci=nomsi;"; fi
    [ "$FAULTS" -eq 0 ] || why="$why $FAULTS DMAR faults in the lab host's dmesg;"
    if [ -z "$why" ]; then pass "$name" "${SECS}s, $n $kind interrupts"; else fail "$name" "$why" "$LOG"; fi
}

# ------------------------------------------------------------------ 1. e1000e, MSI-X
# The guest's e1000e pings over MSI-X; swiftvmm's log says what it did; and the WBINVD
# verdicts with snoop control (3a), from the same run.
t_msix() {
    local missing ecap
    nic_run nic-msix ""
    nic_checks e1000e-msix-ping PCI-MSIX
    missing=""
    for re in "passthrough $NIC: cdev /dev/vfio/devices/vfio[0-9]+, iommufd device [0-9]+, IOAS [0-9]+, page table [0-9]+" \
        "IOAS [0-9]+: mapped 512 MiB of guest RAM in [0-9]+ ranges? in [0-9.]+ ms \(4 KiB pages; faulted in first by [0-9]+ threads? in [0-9.]+ ms; [0-9.]+ ms in all\)" \
        "passthrough $NIC: peer-to-peer DMA is off" \
        "pci (0000:)?00:[0-9a-f]{2}\.0: passthrough $NIC \[8086:10d3\]" \
        "passthrough $NIC: reset \\(bus reset\\)$" \
        "passthrough $NIC: reset \\(bus reset\\) and released"; do
        has "$re" || missing="$missing '$re'"
    done
    if [ -z "$missing" ]; then pass passthrough-log-lines "$(grep -oE 'IOAS [0-9]+: mapped .*' "$LOG" | head -n 1)"
    else fail passthrough-log-lines "missing:$missing" "$LOG"; fi

    # 3a. snoop control on: VT-d ECAP.SC (snoop-control=on) forces snooping: WBINVD need not flush, for the
    # device and so for the VM.
    ecap=$(cat /sys/class/iommu/dmar0/intel-iommu/ecap)
    if has "coherency $NIC: WBINVD stays a no-op" && has "coherency VM: WBINVD stays a no-op" \
        && ! has "WBINVD must really flush"; then
        pass coherency-snoop-control-no-op "ecap 0x$ecap: $(grep -oE 'coherency VM: .*' "$LOG" | head -n 1 | cut -c1-120)"
    else fail coherency-snoop-control-no-op "ecap 0x$ecap; want 'stays a no-op' for $NIC and VM" "$LOG"; fi
}
lab_test e1000e-msix-ping 300 t_msix

# ------------------------------------------------------------------ 1b. hugepages
# machine.hugepages: guest RAM in 2 MiB pages, mapped into the IOAS as such.
VMH=$(MACHINE_EXTRA="hugepages = true" config vm-huge)
t_huge() {
    local f0
    echo 300 >/proc/sys/vm/nr_hugepages
    f0=$(dmar_faults)
    vmm nic-huge 240 run "$VMH" --passthrough "$NIC" --cmdline "$BASE swiftvmm.modules=e1000e $NET"
    FAULTS=$(($(dmar_faults) - f0))
    if [ "$STATUS" -eq 0 ] && has "ping 10.0.0.1 ok" && has "IOAS [0-9]+: mapped 512 MiB of guest RAM in [0-9]+ ranges? in [0-9.]+ ms \(2 MiB pages; faulted in first by [0-9]+ threads? in [0-9.]+ ms; [0-9.]+ ms in all\)" && [ "$FAULTS" -eq 0 ]; then
        pass hugepages-passthrough-ping "$(grep -oE 'IOAS [0-9]+: mapped .*' "$LOG" | head -n 1)"
    else fail hugepages-passthrough-ping "status $STATUS, faults $FAULTS, HugePages_Free $(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" "$LOG"; fi
    echo 0 >/proc/sys/vm/nr_hugepages
}
lab_test hugepages-passthrough-ping 300 t_huge

# ------------------------------------------------------------------ 2. INTx (pci=nomsi)
t_intx() {
    nic_run nic-intx "pci=nomsi"
    nic_checks e1000e-intx-ping IO-APIC
}
lab_test e1000e-intx-ping 300 t_intx

# ------------------------------------------------------------------ 2b. behind the vIOMMU
# --viommu: the e1000e is an endpoint of the guest's virtio-iommu. The guest's own driver
# maps each buffer through its DMA domain (iommu.strict=1: unmapped as soon as it is
# done), which swiftvmm turns into an IOAS of that domain: the NIC is moved onto it
# (replace-attach) and every MAP/UNMAP is an IOMMU_IOAS_MAP/UNMAP at the guest's IOVA.
t_viommu() {
    local f0 maps why=""
    f0=$(dmar_faults)
    vmm nic-viommu 300 run "$VM" --viommu --passthrough "$NIC" \
        --cmdline "$BASE iommu.strict=1 swiftvmm.modules=virtio_iommu,e1000e $NET"
    FAULTS=$(($(dmar_faults) - f0))
    nic_checks e1000e-behind-viommu-ping PCI-MSIX
    maps=$(grep -oE "assigned devices: [0-9]+ attach, [0-9]+ IOAS map" "$LOG" | grep -oE "[0-9]+ IOAS map" | grep -oE "^[0-9]+")
    has "viommu: (0000:)?00:[0-9a-f]{2}\.0 \(passthrough $NIC\) \(host $NIC\) is in guest domain [0-9]+" || why="$why no 'is in guest domain' line;"
    has "allow_unsafe_interrupts=1" || why="$why no interrupt-remapping note;"
    [ "${maps:-0}" -gt 0 ] || why="$why no IOAS map from a guest domain (${maps:-no line});"
    if [ -z "$why" ]; then pass viommu-guest-domain-ioas "$(grep -oE 'assigned devices: .*' "$LOG" | tail -n 1)"
    else fail viommu-guest-domain-ioas "$why" "$LOG"; fi
}
lab_test e1000e-behind-viommu-ping 400 t_viommu

# ------------------------------------------------------------------ 2c. nested assignment
# The guest hands the e1000e (behind its vIOMMU) to its own user space: vfio-pci, and
# firmware/nested/nested-vfio drives it through a VFIO type1 container. It sends K
# broadcast frames (ethertype 0x88b5) from buffers it mapped with VFIO_IOMMU_MAP_DMA
# (guest MAP -> swiftvmm -> IOMMU_IOAS_MAP), one frame whose buffer is at an IOVA it never
# mapped (nothing there in the guest domain's IOAS: a DMAR fault in the lab host, and no
# frame), then resets the NIC and sends K more. The peer counts the 0x88b5 frames.
NESTED_FRAMES=8
t_nested_nic() {
    local ifc f0 counts good after other why=""
    ifc=$(pt_netdev "$PEER")
    # The peer's count of 0x88b5 frames by tag, for as long as the guest runs.
    timeout 330 python3 -c '
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind((sys.argv[1], 0x88b5))
s.settimeout(1)
counts = {}
while True:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    tag = f[14:60].split(b"\0")[0].decode(errors="replace").split(" ")
    key = tag[1] if len(tag) > 2 and tag[0] == "SWIFTVMM-NESTED-TX" else "other"
    counts[key] = counts.get(key, 0) + 1
    with open(sys.argv[2], "w") as out:
        out.write(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) + "\n")
' "$ifc" "$work/nested-frames" &
    local cap=$!
    f0=$(dmar_faults)
    vmm nic-nested 300 run "$VM" --viommu --passthrough "$NIC" \
        --cmdline "$BASE swiftvmm.modules=virtio_iommu,vfio_iommu_type1,vfio-pci swiftvmm.test=nested swiftvmm.nestedid=8086:10d3 swiftvmm.frames=$NESTED_FRAMES"
    FAULTS=$(($(dmar_faults) - f0))
    sleep 1
    kill "$cap" 2>/dev/null
    counts=$(cat "$work/nested-frames" 2>/dev/null)
    good=$(echo "$counts" | grep -oE "good=[0-9]+" | cut -d= -f2)
    after=$(echo "$counts" | grep -oE "after-reset=[0-9]+" | cut -d= -f2)
    [ "$STATUS" -eq 0 ] || why="$why status $STATUS;"
    guest_has "SWIFTVMM-GUEST-INIT: nested: [0-9a-f:.]+ driver=vfio-pci" || why="$why not bound to vfio-pci in the guest;"
    guest_has "NESTED: e1000e tx $NESTED_FRAMES frames ok" || why="$why no good transmit;"
    guest_has "NESTED: e1000e tx after reset $NESTED_FRAMES frames ok" || why="$why no transmit after the reset;"
    [ "${good:-0}" -eq "$NESTED_FRAMES" ] && [ "${after:-0}" -eq "$NESTED_FRAMES" ] || why="$why peer counted '${counts:-nothing}';"
    echo "$counts" | grep -q "unmapped=" && why="$why the frame from the unmapped IOVA arrived;"
    [ "$FAULTS" -gt 0 ] || why="$why no DMAR fault of $NIC in the lab host;"
    guest_has "SWIFTVMM-GUEST-STATUS=0" || why="$why guest verdict not 0;"
    if [ -z "$why" ]; then
        pass e1000e-nested-vfio-tx "${SECS}s, peer: $counts; $FAULTS DMAR fault(s): $(dmesg | grep -E 'DMAR: \[DMA Read' | grep -F "[${NIC#0000:}]" | tail -n 1 | grep -oE 'fault addr [0-9a-fx]+')"
    else
        fail e1000e-nested-vfio-tx "$why" "$LOG"
    fi
}
lab_test e1000e-nested-vfio-tx 400 t_nested_nic

# ------------------------------------------------------------------ 1c. named by its cdev
# [[passthrough]] device = "/dev/vfio/devices/vfioN" instead of the PCI address.
VMC=$(config vm-cdev "[[passthrough]]" "device = \"$(pt_cdev "$NIC")\"")
t_cdev() {
    local f0
    f0=$(dmar_faults)
    vmm nic-cdev 240 run "$VMC" --cmdline "$BASE swiftvmm.modules=e1000e $NET"
    FAULTS=$(($(dmar_faults) - f0))
    nic_checks e1000e-by-cdev-ping PCI-MSIX
}
lab_test e1000e-by-cdev-ping 300 t_cdev

# ------------------------------------------------------------------ 4. igb VF
t_igb_vf() {
    local PF VF vfst f0 n
    if [ ${#IGB[@]} -lt 1 ]; then
        fail igb-vf-ping "no igb in the lab (scripts/lab --igb 1)"; return
    fi
    PF=${IGB[0]}
    VF=$(pt_make_vf "$PF" 52:54:00:00:02:01)
    sleep 2 # PF link up
    vfst=$([ -n "$VF" ] && pt_vf_status "$VF")
    if [ -n "$VF" ] && [ "$(cat "/sys/class/net/$(pt_netdev "$PF")/carrier" 2>/dev/null)" = 1 ] && [ $((vfst & 2)) -eq 0 ]; then
        # QEMU 10.0.2's igb VFs read as zeros from the lab host (VF STATUS 0 with the PF's link
        # up) until the VF's own Command.Memory bit is set, which Linux leaves clear on VFs
        # (PCIe: hardwired 0). Even with it set (vfio-pci's enable does), igbvf in the guest
        # finds the PF "still in reset", gets a random MAC and no interrupt, under SwiftVMM
        # and under QEMU inside the lab alike; poking CTRL_EXT.PFRSTD from the lab host does
        # not help either. Not SwiftVMM's to fix: say so, and run for real once the lab's
        # VFs answer.
        skip igb-vf-ping "the lab's igb VF $VF does not work: its STATUS reads $vfst with the PF link up (${LAB_QEMU_VERSION:-$(qemu-system-x86_64 --version | head -n 1)})"
        sysfs_write 0 "/sys/bus/pci/devices/$PF/sriov_numvfs"
    elif [ -n "$VF" ] && pt_bind_vfio "$VF"; then
        f0=$(dmar_faults "$VF")
        vmm vf 240 run "$VM" --passthrough "$VF" --cmdline "$BASE swiftvmm.modules=igbvf swiftvmm.test=net swiftvmm.ip=10.0.0.3/24 swiftvmm.peer=10.0.0.1"
        FAULTS=$(($(dmar_faults "$VF") - f0))
        n=$(irqs PCI-MSIX)
        if [ "$STATUS" -eq 0 ] && has "eth0 52:54:00:00:02:01 driver=igbvf" && has "ping 10.0.0.1 ok" \
            && [ -n "$n" ] && [ "$n" -gt 0 ] && [ "$FAULTS" -eq 0 ]; then
            pass igb-vf-ping "VF $VF of $PF, ${SECS}s, $n MSI-X interrupts"
        else fail igb-vf-ping "VF $VF of $PF: status $STATUS, MSI-X ${n:-none}, faults $FAULTS" "$LOG"; fi
        pt_bind_host "$VF" 2>/dev/null
        sysfs_write 0 "/sys/bus/pci/devices/$PF/sriov_numvfs"
    else
        fail igb-vf-ping "could not make a VF on $PF and bind it to vfio-pci"
    fi
}
lab_test igb-vf-ping 300 t_igb_vf

# ------------------------------------------------------------------ 5. ivshmem, 8 GiB BAR2
SHM8="" SHMBIG=""
for d in "${SHM[@]}"; do
    read -r start end _ <<<"$(sed -n 3p "/sys/bus/pci/devices/$d/resource")"
    size=$(((end - start + 1) >> 30))
    [ "$size" = 8 ] && SHM8=$d
    [ "${size:-0}" -gt 64 ] && SHMBIG=$d
done
t_ivshmem() {
    local OFFS VMS VMP lines check
    if [ -z "$SHM8" ]; then
        fail ivshmem-bar-pattern "no 8 GiB ivshmem in the lab (scripts/lab --ivshmem 8G)"; return
    elif ! pt_bind_vfio "$SHM8"; then
        fail ivshmem-bar-pattern "could not bind $SHM8 to vfio-pci"; return
    fi
    OFFS=0,0x1000,0x40000000,0x100000000,0x1fffffffc
    VMS=$(config vm-shm "[[passthrough]]" "device = \"$SHM8\"")
    vmm shm 240 run "$VMS" --cmdline "$BASE swiftvmm.test=bar swiftvmm.bardev=1af4:1110 swiftvmm.bar=2 swiftvmm.pattern=0x5a17c0de swiftvmm.offsets=$OFFS"
    lines=$(grep -c 'SWIFTVMM-BAR: offset=' "$LOG")
    if [ "$STATUS" -eq 0 ] && has "^bar ok" && [ "$lines" -eq 5 ] && has "passthrough $SHM8: .*released" && check=$(pt_bar_check "$SHM8" 2 "$LOG" 2>&1); then
        pass ivshmem-bar-pattern "${SECS}s; $(grep -oE 'BAR2 at [^ ]+' "$LOG" | head -n 1); $check"
    else fail ivshmem-bar-pattern "status $STATUS, $lines BAR lines, lab host readback: ${check:-not done}" "$LOG"; fi

    # The same BAR at an address the config chooses (bars = { 2 = ... }): 32 GiB.
    check=""
    VMP=$(config vm-shm-pinned "[[passthrough]]" "device = \"$SHM8\"" "bars = { 2 = 0x800000000 }")
    vmm shm-pinned 240 run "$VMP" --cmdline "$BASE swiftvmm.test=bar swiftvmm.bardev=1af4:1110 swiftvmm.bar=2 swiftvmm.pattern=0x0badcafe swiftvmm.offsets=0x10,0x1fffffff0"
    if [ "$STATUS" -eq 0 ] && has "^bar ok" && has "BAR2 at 0x800000000 " && check=$(pt_bar_check "$SHM8" 2 "$LOG" 2>&1); then
        pass ivshmem-bar-pinned "BAR2 at 0x800000000; $check"
    else fail ivshmem-bar-pinned "status $STATUS, readback: ${check:-not done}" "$LOG"; fi
}
lab_test ivshmem-bar-pattern 540 t_ivshmem

# ------------------------------------------------------------------ 6 + 7. busy, then kill -9
# A first swiftvmm holds the NIC (guest hanging once up); a second one on the same
# device must be refused; then the first is killed with SIGKILL and the device must
# still work for a new run.
t_busy_kill9() {
    local HOLD=$LOGDIR/pt-hold.log hold attempt=0 st tb
    # A first guest the lab loses (lib.sh: lost_guest, with no DMA fault of the NIC) is
    # booted again and counted, as vmm does.
    while :; do
        tb=$(date +%s)
        lost_mark
        "$SWIFTVMM" run "$VM" --passthrough "$NIC" --cmdline "$BASE swiftvmm.modules=e1000e swiftvmm.test=hang" </dev/null >"$HOLD" 2>&1 &
        hold=$!
        for _ in $(seq 1 180); do grep -q "hanging on purpose" "$HOLD" && break; kill -0 $hold 2>/dev/null || break; sleep 1; done
        grep -q "hanging on purpose" "$HOLD" && break
        kill -0 $hold 2>/dev/null && { kill -9 $hold; st=137; await_exit $hold 60; }
        wait $hold 2>/dev/null; st=${st:-$?}
        retry_lost pt-hold $attempt "$st" "$HOLD" $tb || break
        attempt=$((attempt + 1))
        st=""
    done
    if grep -q "hanging on purpose" "$HOLD"; then
        vmm busy 60 run "$VM" --passthrough "$NIC" --cmdline "$BASE swiftvmm.test=poweroff"
        expect_setup_error error-device-busy "in use by another process"
        kill -9 $hold
        # The kernel tears the VMM down (device reset, IOAS unpin, VM destroy) before it
        # is gone: bounded, so a teardown stuck in the kernel fails here, with its stack.
        if ! await_exit $hold 60; then
            fail e1000e-after-kill-9 "swiftvmm did not go away within 60 s of SIGKILL: state $(proc_state $hold), stack: $(tr '\n' ' ' <"/proc/$hold/stack" 2>/dev/null)"
            return
        fi
        wait $hold 2>/dev/null
        sleep 1
        nic_run nic-after-kill9 ""
        nic_checks e1000e-after-kill-9 PCI-MSIX
    else
        kill -9 $hold 2>/dev/null
        LOG=$HOLD; fail error-device-busy "the first guest never reached 'hanging on purpose'" "$LOG"
        fail e1000e-after-kill-9 "no run to kill"
    fi
}
lab_test e1000e-after-kill-9 780 t_busy_kill9

# ------------------------------------------------------------------ 7. setup errors: status 69
# Not bound to vfio-pci: the peer NIC is on e1000e.
t_not_vfio() {
    vmm err-not-vfio 60 run "$VM" --passthrough "$PEER" --cmdline "$BASE swiftvmm.test=poweroff"
    expect_setup_error error-not-vfio-pci "not vfio-pci" "driver_override"
}
lab_test error-not-vfio-pci 120 t_not_vfio

# Group not viable: bind one function of a multi-device group to vfio-pci and leave
# another on its host driver (q35's 00:1f.x: LPC, AHCI, SMBus share a group).
t_not_viable() {
    local victim="" d b orig
    for d in /sys/bus/pci/devices/*; do
        b=$(basename "$d")
        [ "$(ls "$d/iommu_group/devices" 2>/dev/null | wc -l)" -gt 1 ] || continue
        case $(pt_driver "$b") in i801_smbus) victim=$b; break ;; esac
    done
    if [ -z "$victim" ]; then
        fail error-group-not-viable "no multi-device IOMMU group with an SMBus function to use"; return
    fi
    orig=$(pt_driver "$victim")
    pt_bind_vfio "$victim"
    vmm err-viable 60 run "$VM" --passthrough "$victim" --cmdline "$BASE swiftvmm.test=poweroff"
    expect_setup_error error-group-not-viable "is not viable"
    pt_bind_host "$victim"
    [ "$(pt_driver "$victim")" = "$orig" ] || echo "note: $victim is on '$(pt_driver "$victim")' again, was $orig"
}
lab_test error-group-not-viable 120 t_not_viable

# No iommufd: hide /dev/iommu for one run.
t_no_iommufd() {
    mv /dev/iommu /dev/iommu.hidden
    vmm err-no-iommufd 60 run "$VM" --passthrough "$NIC" --cmdline "$BASE swiftvmm.test=poweroff"
    mv /dev/iommu.hidden /dev/iommu
    expect_setup_error error-no-iommufd "/dev/iommu does not exist"
}
lab_test error-no-iommufd 120 t_no_iommufd
[ -e /dev/iommu ] || mv /dev/iommu.hidden /dev/iommu

# A BAR bigger than the guest's 64-bit PCI window (64 GiB): the 128 GiB ivshmem.
t_big_bar() {
    local big=${PT_BIG_BAR_DEVICE:-$SHMBIG} VMB
    if [ -z "$big" ]; then
        fail error-bar-does-not-fit "no ivshmem bigger than 64 GiB in the lab (scripts/lab --ivshmem 128G)"
    elif pt_bind_vfio "$big"; then
        VMB=$(config vm-big "${PT_BIG_BAR_TOML:-}" "[[passthrough]]" "device = \"$big\"")
        vmm err-big-bar 60 run "$VMB" --cmdline "$BASE swiftvmm.test=poweroff"
        expect_setup_error error-bar-does-not-fit "does not fit"
    else
        fail error-bar-does-not-fit "could not bind $big to vfio-pci"
    fi
}
lab_test error-bar-does-not-fit 120 t_big_bar

# ------------------------------------------------------------------ 8. without root
# README, "Running without root": root opens /dev/kvm, /dev/iommu and the NIC's VFIO cdev
# and sets RLIMIT_MEMLOCK (iommufd charges the guest RAM it pins to it, per user); swiftvmm
# runs as nobody, without a capability, on those descriptors alone (--kvm fd:3,
# --iommufd fd:4, device = "fd:5"). With a limit below the guest's RAM, setup stops
# with the reason. The binary and the boot files are copied where nobody may read them.
t_unprivileged() {
    local d=$work/nobody cdev f0 why=""
    cdev=$(pt_cdev "$NIC")
    mkdir -p "$d" && cp "$SWIFTVMM" "$CACHE/guest/vmlinuz" "$CACHE/guest/initramfs-modules.cpio.gz" "$d/" \
        || { fail e1000e-unprivileged "cannot copy swiftvmm and the guest files to $d"; return; }
    printf '[machine]\nvcpus = 1\nmemory = "512M"\n[kernel]\npath = "vmlinuz"\ninitramfs = "initramfs-modules.cpio.gz"\n[serial]\nmode = "terminal"\n[[passthrough]]\ndevice = "fd:5"\n' >"$d/vm.toml"
    {
        echo '#!/bin/bash'
        echo '# The launcher: opens what swiftvmm needs, then runs it as nobody, with no capability.'
        echo "cd '$d' || exit 70"
        echo 'ulimit -l "${MEMLOCK:-unlimited}" || exit 70'
        echo "exec 3<>/dev/kvm 4<>/dev/iommu 5<>'$cdev' || exit 70"
        echo 'exec setpriv --reuid 65534 --regid 65534 --clear-groups --inh-caps=-all --bounding-set=-all ./swiftvmm "$@" --kvm fd:3 --iommufd fd:4'
    } >"$d/as-nobody.sh"
    chmod 755 "$work" "$d" "$d/as-nobody.sh" && chmod a+r "$d"/*
    f0=$(dmar_faults)
    SWIFTVMM=$d/as-nobody.sh vmm unprivileged 240 run vm.toml --cmdline "$BASE swiftvmm.modules=e1000e $NET"
    FAULTS=$(($(dmar_faults) - f0))
    has "privileges: uid 65534 \(euid 65534\) held no capability" || why="$why no 'uid 65534 held no capability' line;"
    has "passthrough $NIC: cdev fd:5, iommufd device" || why="$why fd:5 not resolved to $NIC;"
    if [ -z "$why" ]; then nic_checks e1000e-unprivileged PCI-MSIX; else fail e1000e-unprivileged "$why" "$LOG"; fi

    MEMLOCK=65536 SWIFTVMM=$d/as-nobody.sh vmm unprivileged-memlock 60 run vm.toml --cmdline "$BASE swiftvmm.test=poweroff"
    if [ "$STATUS" -ne 0 ] && has "RLIMIT_MEMLOCK" && ! has "privileges:"; then
        pass unprivileged-memlock-too-small "status $STATUS: $(grep -m1 -oE 'error: .*' "$LOG" | cut -c1-200)"
    else
        fail unprivileged-memlock-too-small "status $STATUS, want a setup error naming RLIMIT_MEMLOCK" "$LOG"
    fi
}
lab_test e1000e-unprivileged 400 t_unprivileged

# A host fault: the assigned NIC removed on the lab host (sysfs remove) while the guest
# runs. vfio-pci asks swiftvmm for it back (its request notification), swiftvmm releases
# it and runs on, so the removal completes; the guest's driver reads all ones from then
# on; SIGTERM still ends the VM.
# The NIC stays removed: this is its last use in the suite, and nothing may follow it.
# A rescan would give it back to its host driver first (a PCI rescan probes whatever
# driver matches, drivers_autoprobe or not), with the guest's receive state still in
# it, since the host held its lock and it could not be reset; the driver enables MSI-X
# before it resets the NIC, and QEMU 10.0.2's e1000e then aborts the lab host when a
# receive interrupt delayed in legacy mode (RDTR) is still pending: the assertion
# "core->delayed_causes == 0" in e1000e_intmgr_collect_delayed_causes, which upstream
# QEMU removed in 2025. It ended a CI run on 2026-12-07 and, reproduced, the first
# remove and rescan in a loop of them.
t_hot_remove() {
    local pid st rm_st gone=0 alive f0 n=0
    f0=$(dmar_faults)
    # A guest the lab lost before its ping is booted again (the NIC is still there then).
    while :; do
        vmm_until hot-remove 200 "ping 10.0.0.1" run "$VM" --passthrough "$NIC" --timeout 250s --cmdline "$BASE swiftvmm.modules=e1000e $NET swiftvmm.end=shell"
        [ $VMM_UP = 0 ] || break
        wait $VMM_PID; st=$?
        retry_lost hot-remove-releases-device $n $st "$LOG" "$VMM_T0" || break
        n=$((n + 1))
    done
    pid=$VMM_PID
    timeout 60 sh -c "echo 1 > /sys/bus/pci/devices/$NIC/remove"; rm_st=$?
    [ -e "/sys/bus/pci/devices/$NIC" ] || gone=1
    sleep 3
    kill -0 $pid 2>/dev/null && alive=1 || alive=0
    kill -TERM $pid 2>/dev/null
    wait $pid; st=$?
    # DMAR faults are counted, not failed: the host holds the NIC's lock while it removes it,
    # so it cannot be reset then, and vfio-pci restores its Bus Master bit once closed; the
    # lab's e1000e, left receiving by the guest, then DMAs into the IOAS it has left and
    # the host IOMMU blocks it (a read of its ring, one fault in the runs of 2026-12-07).
    if [ $rm_st -eq 0 ] && [ $gone -eq 1 ] && [ $alive -eq 1 ] && has "ping 10.0.0.1 ok" \
        && has "passthrough $NIC: the host asked for the device back .*closed; the VM runs on" \
        && { [ $st -eq 0 ] || [ $st -eq 143 ]; }; then
        pass hot-remove-releases-device "removal done, VMM ran on, then status $st after SIGTERM; $(($(dmar_faults) - f0)) DMAR faults blocked after the release"
    else
        fail hot-remove-releases-device "remove status $rm_st, gone $gone, alive after $alive, exit status $st, $(($(dmar_faults) - f0)) DMAR faults" "$LOG"
        dmesg | grep -E 'DMAR' | tail -n 6
    fi
}
lab_test hot-remove-releases-device 400 t_hot_remove

# Nothing left behind: no swiftvmm process.
if pgrep -x swiftvmm >/dev/null; then fail no-leftover-vmm "$(pgrep -a -x swiftvmm)"; else pass no-leftover-vmm; fi

rm -rf "$work"
summary_pt
