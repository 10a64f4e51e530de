# shellcheck shell=bash
# Lab-host helpers for the passthrough suites and scripts/bench-passthrough: find PCI
# devices, bind them to vfio-pci (LAB.md), give the lab host its end of the hub network,
# make an igb VF. Sourced; plain sh-compatible bash, no set -e. Every sysfs write that can
# block (an unbind waits for whoever holds the device) is bounded: see procs.sh.
# shellcheck source=procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/procs.sh"

# BDFs of the devices bound to DRIVER, in address order.
pt_by_driver() {
    local d
    for d in /sys/bus/pci/devices/*; do
        [ "$(basename "$(readlink "$d/driver" 2>/dev/null)")" = "$1" ] && basename "$d"
    done
    return 0
}

# BDFs of the devices with VENDOR:DEVICE (hex without 0x, e.g. 1af4:1110), in address order.
pt_by_id() {
    local d
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor"):$(cat "$d/device")" = "0x${1%%:*}:0x${1#*:}" ] && basename "$d"
    done
    return 0
}

pt_driver() { basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null; }

# pt_bind_vfio BDF: driver_override=vfio-pci, unbind from the current driver, reprobe;
# waits for the VFIO cdev. Prints nothing; fails if the device did not end up on vfio-pci.
pt_bind_vfio() {
    local dev=/sys/bus/pci/devices/$1
    sysfs_write vfio-pci "$dev/driver_override" || return 1
    [ ! -e "$dev/driver" ] || sysfs_write "$1" "$dev/driver/unbind" || return 1
    sysfs_write "$1" /sys/bus/pci/drivers_probe
    for _ in $(seq 1 50); do
        [ "$(pt_driver "$1")" = vfio-pci ] && [ -n "$(ls "$dev/vfio-dev" 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    echo "pt_bind_vfio: $1 is on '$(pt_driver "$1")', not vfio-pci" >&2
    return 1
}

# pt_bind_host BDF: back to its own driver (driver_override cleared).
pt_bind_host() {
    local dev=/sys/bus/pci/devices/$1
    sysfs_write "" "$dev/driver_override" || return 1
    [ ! -e "$dev/driver" ] || sysfs_write "$1" "$dev/driver/unbind" || return 1
    sysfs_write "$1" /sys/bus/pci/drivers_probe
}

# The VFIO cdev of a vfio-pci bound device: /dev/vfio/devices/vfioN.
pt_cdev() { echo "/dev/vfio/devices/$(ls "/sys/bus/pci/devices/$1/vfio-dev" 2>/dev/null | head -n 1)"; }

# The network interface of a NIC bound to its host driver.
pt_netdev() { ls "/sys/bus/pci/devices/$1/net" 2>/dev/null | head -n 1; }

# pt_peer_up BDF ADDR: the lab host's end of QEMU hub 0 (an e1000e), e.g. 10.0.0.1/24;
# waits up to 10 s for carrier.
pt_peer_up() {
    local ifc
    ifc=$(pt_netdev "$1")
    [ -n "$ifc" ] || { echo "pt_peer_up: $1 has no network interface" >&2; return 1; }
    ip addr flush dev "$ifc"
    ip addr add "$2" dev "$ifc" && ip link set "$ifc" up || return 1
    for _ in $(seq 1 100); do
        [ "$(cat "/sys/class/net/$ifc/carrier" 2>/dev/null)" = 1 ] && return 0
        sleep 0.1
    done
    echo "pt_peer_up: $ifc has no carrier" >&2
    return 1
}

# pt_make_vf PF_BDF MAC: one VF on an igb PF (link up, no address), its MAC set through
# the PF (the VF driver cannot set it itself: igb rejects it unless trusted). Prints
# the VF's BDF.
pt_make_vf() {
    local pf=$1 mac=$2 ifc vf
    ifc=$(pt_netdev "$pf")
    [ -n "$ifc" ] || { echo "pt_make_vf: $pf has no network interface" >&2; return 1; }
    ip link set "$ifc" up
    # VFs stay without a host driver until we bind them (the lab kernel has no igbvf anyway).
    sysfs_write 0 "/sys/bus/pci/devices/$pf/sriov_drivers_autoprobe" 2>/dev/null
    sysfs_write 0 "/sys/bus/pci/devices/$pf/sriov_numvfs"
    sysfs_write 1 "/sys/bus/pci/devices/$pf/sriov_numvfs" || return 1
    ip link set "$ifc" vf 0 mac "$mac" || return 1
    for _ in $(seq 1 50); do
        vf=$(basename "$(readlink "/sys/bus/pci/devices/$pf/virtfn0" 2>/dev/null)")
        [ -n "$vf" ] && { echo "$vf"; return 0; }
        sleep 0.1
    done
    echo "pt_make_vf: $pf has no virtfn0" >&2
    return 1
}

# pt_group BDF: "group N: BDF BDF ..." (the devices in its IOMMU group).
pt_group() {
    local g
    g=$(readlink "/sys/bus/pci/devices/$1/iommu_group") || return 1
    echo "group $(basename "$g"): $(ls "/sys/bus/pci/devices/$1/iommu_group/devices" | tr '\n' ' ')"
}

# pt_bar_check BDF BAR LOG: reads back, through the lab host's
# /sys/bus/pci/devices/BDF/resourceBAR (mmap), every "SWIFTVMM-BAR: offset=O ... wrote=V"
# line in LOG; prints "N offsets match" or what differs; status 0 when all match.
pt_bar_check() {
    python3 - "$1" "$2" "$3" <<'PY'
import mmap, os, re, struct, sys
bdf, bar, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dev = f"/sys/bus/pci/devices/{bdf}"
want = [(int(o, 16), int(v, 16)) for o, v in
        re.findall(r"SWIFTVMM-BAR: offset=(0x[0-9a-f]+) .*wrote=(0x[0-9a-f]+)", open(log, errors="replace").read())]
if not want:
    sys.exit("no SWIFTVMM-BAR lines in the log")
# Memory decoding may be off once the VMM has released the device: turn it on
# (PCI 3.0, 6.2.2: Command register at 0x04, bit 1 Memory Space).
with open(f"{dev}/config", "r+b") as f:
    f.seek(4)
    cmd = struct.unpack("<H", f.read(2))[0]
    if not cmd & 2:
        f.seek(4)
        f.write(struct.pack("<H", cmd | 2))
fd = os.open(f"{dev}/resource{bar}", os.O_RDWR | os.O_SYNC)
size = os.fstat(fd).st_size
bad = []
for off, val in want:
    page = off & ~(mmap.PAGESIZE - 1)
    m = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    got = struct.unpack("<I", m[off - page:off - page + 4])[0]
    m.close()
    if got != val:
        bad.append(f"offset 0x{off:x}: guest wrote 0x{val:08x}, lab host reads 0x{got:08x}")
os.close(fd)
if bad:
    sys.exit("; ".join(bad))
print(f"{len(want)} offsets match through resource{bar} ({size >> 30} GiB)")
PY
}

# pt_vf_status VF_BDF: the VF's STATUS register (igb VF BAR0 + 0x8, 82576 datasheet 8.27)
# as the lab host reads it through resource0, e.g. 0x00000083; bit 1 is link up.
pt_vf_status() {
    python3 - "/sys/bus/pci/devices/$1/resource0" <<'PY'
import mmap, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_SYNC)
m = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
print("0x%08x" % struct.unpack("<I", m[8:12])[0])
PY
}

# DMA faults the lab host's VT-d reported for device BDF (default: the assigned NIC), at
# any address. A wrong or missing guest-RAM map faults at guest addresses; DMA a previous
# user left running (a receive ring that survived a reset the device ignored) faults at
# whatever its stale descriptors hold, e.g. kernel pointers. Both are counted: swiftvmm
# resets the NIC through its bus before guest RAM enters the IOAS, and again at exit.
# Faults of other devices are printed at the end, not counted.
dmar_faults() {
    local dev=${1:-$NIC}
    dmesg | grep -E 'DMAR: \[DMA (Read|Write)' | grep -cF "Request device [${dev#0000:}]"
}
dmar_other() {
    dmesg | grep -E 'DMAR: \[DMA (Read|Write)' | grep -vF "Request device [${NIC#0000:}]" || true
}

# A lost guest is retried here only when it printed nothing (so its NIC driver never ran)
# and the assigned NIC made no DMA fault while it ran: a guest that dies later, after its
# driver started the NIC, may have been hit by DMA into its memory, which is ours to find.
lost_mark() { LOST_F0=$(dmar_faults); }
lost_veto() { [ "$(dmar_faults)" -ne "${LOST_F0:-0}" ] || [ "$LOST_SILENT" != 1 ]; }
