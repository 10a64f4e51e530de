#!/usr/bin/env bash
# Lab tests on a lab host with the emulated Intel VT-d (snoop control on) and two e1000e NICs:
# `swiftvmm devices` reads the real sysfs, IOMMU groups and the IOMMU's coherency.
# Run by scripts/test as: scripts/lab run --iommu intel-snoop --nics 2 -- bash tests/lab/iommu.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

# `swiftvmm devices` and --json on the NICs still on their host driver.
t_devices() {
    vmm devices 60 devices
    if [ "$STATUS" -eq 0 ] && has "e1000e" && has "group" && ! has "no IOMMU groups"; then pass devices-lists-iommu-groups; else fail devices-lists-iommu-groups "status $STATUS" "$LOG"; fi

    vmm devices-json 60 devices --json
    if [ "$STATUS" -eq 0 ] && python3 - "$LOG" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
nics = [x for x in d["devices"] if x.get("driver") == "e1000e"]
assert len(nics) == 2, nics
for n in nics:
    assert n.get("iommuGroup") is not None, n
    assert n["viable"] is False, n          # bound to e1000e, not vfio-pci
    assert "vfio-pci" in n["viability"], n  # the message says how to bind it
PY
    then pass devices-json-shape; else fail devices-json-shape "status $STATUS" "$LOG"; fi
}
lab_test devices-lists-iommu-groups 120 t_devices

# Bind one NIC to vfio-pci as LAB.md does: it becomes viable, with a cdev.
bdf=$(for d in /sys/bus/pci/devices/*; do [ "$(basename "$(readlink "$d/driver" 2>/dev/null)")" = e1000e ] && basename "$d"; done | head -n 1)
sysfs_write vfio-pci "/sys/bus/pci/devices/$bdf/driver_override"
sysfs_write "$bdf" "/sys/bus/pci/devices/$bdf/driver/unbind"
sysfs_write "$bdf" /sys/bus/pci/drivers_probe
t_bound() {
    local block
    vmm devices-bound 60 devices
    block=$(grep -A8 "^$bdf " "$LOG")
    if [ "$STATUS" -eq 0 ] && grep -q "assignable: yes" <<<"$block" && grep -q "cdev: /dev/vfio/devices/vfio" <<<"$block" \
        && grep -q "forces snoop: yes" <<<"$block"; then
        pass devices-vfio-bound-viable "$bdf"; else fail devices-vfio-bound-viable "$bdf" "$LOG"; fi
}
lab_test devices-vfio-bound-viable 90 t_bound

# The real iommufd + VFIO cdev flow on that NIC, no VM: IOAS, IOVA ranges, a 64 MiB
# DMA map/unmap, bind, IOMMU_GET_HW_INFO, attach, region/IRQ info, reset, detach.
t_probe() {
    vmm probe-json 60 devices --probe "$bdf" --json
    if [ "$STATUS" -eq 0 ] && PROBE_OUT=$(python3 - "$LOG" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
hw = d["hardwareInfo"]
assert hw["type"] == "Intel VT-d", hw
assert hw["snoopControl"] is True and hw["ecapReg"] & (1 << 7), hw   # snoop-control=on
assert len(d["iovaRanges"]) >= 1 and len(d["iovaRangesAttached"]) >= 1, d["iovaRanges"]
m = d["dmaMap"]
assert m["ok"] and m["unmappedBytes"] == m["length"] == 64 << 20, m
bar0 = [r for r in d["regions"] if r["index"] == 0][0]
assert bar0["size"] == 131072 and bar0["mmap"], bar0
msix = [q for q in d["irqs"] if q["name"] == "MSI-X"]
assert msix and msix[0]["count"] >= 1, d["irqs"]
assert d["detached"] and d["reset"].startswith("done"), d
bad = {k: v for k, v in d["checks"].items() if not v.startswith("ok")}
assert not bad and len(d["checks"]) >= 6, d["checks"]   # HWPT, options, SET_IRQS, EMSGSIZE retry
print("map %d us, unmap %d us, ecap 0x%x, MSI-X %d vectors" % (m["mapMicroseconds"], m["unmapMicroseconds"], hw["ecapReg"], msix[0]["count"]))
PY
    ); then pass iommufd-probe-real-device "$PROBE_OUT"; else fail iommufd-probe-real-device "status $STATUS" "$LOG"; fi
}
lab_test iommufd-probe-real-device 120 t_probe

summary
