#!/usr/bin/env python3
"""vIOMMU benchmark, run inside the lab host (scripts/bench-viommu): the same guest under
SwiftVMM and under QEMU (q35), each without a vIOMMU and with one (SwiftVMM --viommu;
QEMU -device virtio-iommu-pci and iommu_platform=on on its virtio devices), the guest
with iommu.strict=1 so that every buffer is mapped and unmapped through the vIOMMU, and
once more (the "-lazy" variants) with iommu.strict=0, the guest kernel's default (Debian's
CONFIG_IOMMU_DEFAULT_DMA_LAZY): unmaps are batched and their IOTLB flush deferred:
  virtio-blk  sequential write and read of MIB MiB with O_DIRECT dd
  virtio-net  TCP throughput of MIB MiB from the guest to the lab host
  MAP+UNMAP   per second of that traffic: the requests the VMM answered (SwiftVMM's exit
              line; QEMU's virtio_iommu_map/unmap trace events, counted in a separate
              traced run so tracing does not slow the timed one) over the traffic's time;
              for SwiftVMM also the time it spent serving them (its exit line)
Prints figures and ratios; asserts nothing."""
import os, re, statistics, subprocess, tempfile, threading, time

from device_bench import receiver

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SWIFTVMM_CACHE", os.path.join(REPO, ".cache"))
SWIFTVMM = os.environ.get("SWIFTVMM", os.path.join(REPO, ".build/release/swiftvmm"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
BLK_MIB = int(os.environ.get("BENCH_BLK_MIB", "128"))
NET_MIB = int(os.environ.get("BENCH_NET_MIB", "32"))
# BENCH_VMMS: a comma-separated subset of swiftvmm,swiftvmm+viommu,swiftvmm+viommu-lazy,qemu,
# qemu+viommu,qemu+viommu-lazy (default all).
ONLY = [n for n in os.environ.get("BENCH_VMMS", "").split(",") if n]
# BENCH_NET=0 skips the virtio-net runs.
NET = os.environ.get("BENCH_NET", "1") != "0"
KERNEL = os.path.join(CACHE, "guest/vmlinuz")
INITRD = os.path.join(CACHE, "guest/initramfs-modules.cpio.gz")
# transparent_hugepage=never: dd's 1 MiB buffer is then always 256 scattered 4 KiB pages,
# each mapped and unmapped on its own. With THP a buffer may or may not be one huge page,
# boot by boot, and the request count of the same run varied 7-fold (2,589 to 19,230).
BASE = "console=ttyS0 reboot=k panic=-1 quiet transparent_hugepage=never"
MODS = "swiftvmm.modules=virtio_iommu,virtio_blk,virtio_net"
WORK = "/tmp/viommu-bench"
TAP = "vbenchtap0"
TRACE = os.path.join(WORK, "qemu-trace.log")


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


def swiftvmm_cmd(cmdline, disk, viommu, trace=False):
    cfg = os.path.join(WORK, "vm.toml")
    with open(cfg, "w") as f:
        f.write(f'[machine]\nvcpus = 1\nmemory = "512M"\n[kernel]\npath = "{KERNEL}"\ninitramfs = "{INITRD}"\n'
                f'[serial]\nmode = "terminal"\n[[disk]]\npath = "{disk}"\n[[net]]\ntap = "{TAP}"\n')
    return [SWIFTVMM, "run", cfg, "--cmdline", cmdline] + (["--viommu"] if viommu else [])


def qemu_cmd(cmdline, disk, viommu, trace=False):
    # iommu_platform needs a modern-only device (a transitional one refuses it).
    plat = ",disable-legacy=on,iommu_platform=on" if viommu else ""
    cmd = ["qemu-system-x86_64", "-accel", "kvm", "-M", "q35", "-cpu", "host", "-m", "512M", "-smp", "1",
           "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
           "-kernel", KERNEL, "-initrd", INITRD, "-append", cmdline,
           "-drive", f"file={disk},if=none,id=d0,format=raw", "-device", f"virtio-blk-pci,drive=d0{plat}",
           "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no", "-device", f"virtio-net-pci,netdev=n0{plat}"]
    if viommu:
        cmd += ["-device", "virtio-iommu-pci"]
    if trace:
        cmd += ["-trace", "virtio_iommu_map", "-trace", "virtio_iommu_unmap", "-D", TRACE]
    return cmd


def run(cmd, limit=300):
    """The run's output; a run past `limit` is stopped and reported with what it printed
    so far (the output goes to a file, so a stopped run's console is not lost), and the
    bench goes on."""
    with tempfile.TemporaryFile() as f:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        try:
            p.wait(timeout=limit)
            stopped = ""
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            stopped = f"\nbench: stopped after {limit} s\n"
        f.seek(0)
        return f.read().decode(errors="replace") + stopped


def requests(name, out):
    """MAP and UNMAP requests the VMM answered in one run, or None."""
    if name.startswith("swiftvmm"):
        m = re.search(r"viommu: \d+ attach, \d+ detach, (\d+) map, (\d+) unmap", out)
        return int(m.group(1)) + int(m.group(2)) if m else None
    try:
        with open(TRACE) as f:
            return sum(1 for line in f if "virtio_iommu_map" in line or "virtio_iommu_unmap" in line)
    except OSError:
        return None


def main():
    os.makedirs(WORK, exist_ok=True)
    disk = os.path.join(WORK, "bench.img")
    sh(f"truncate -s {BLK_MIB + 16}M {disk}")
    sh(f"ip tuntap add dev {TAP} mode tap 2>/dev/null || true; ip addr add 10.0.2.1/24 dev {TAP} 2>/dev/null || true; ip link set {TAP} up")
    # (name, command maker, vIOMMU, guest iommu.strict)
    vmms = [("swiftvmm", swiftvmm_cmd, False, 1), ("swiftvmm+viommu", swiftvmm_cmd, True, 1),
            ("swiftvmm+viommu-lazy", swiftvmm_cmd, True, 0),
            ("qemu", qemu_cmd, False, 1), ("qemu+viommu", qemu_cmd, True, 1), ("qemu+viommu-lazy", qemu_cmd, True, 0)]
    if ONLY:
        unknown = set(ONLY) - {v[0] for v in vmms}
        if unknown:
            raise SystemExit(f"bench: BENCH_VMMS names {sorted(unknown)}; known: {[v[0] for v in vmms]}")
        vmms = [v for v in vmms if v[0] in ONLY]
    blk = {v[0]: ([], []) for v in vmms}
    net = {v[0]: [] for v in vmms}
    rate = {v[0]: [] for v in vmms}
    for r in range(RUNS):
        for name, make, viommu, strict in vmms:
            base = f"{BASE} iommu.strict={strict}"
            cmd = f"{base} {MODS} swiftvmm.test=blkbench swiftvmm.mib={BLK_MIB}"
            out = run(make(cmd, disk, viommu))
            m = re.search(r"blkbench mib=(\d+) write_s=([\d.]+) read_s=([\d.]+)", out)
            if not (m and float(m.group(2)) > 0 and float(m.group(3)) > 0):
                print(f"bench: round {r + 1} {name}: virtio-blk run failed:\n{out[-1500:]}", flush=True)
                continue
            ws, rs = float(m.group(2)), float(m.group(3))
            blk[name][0].append(BLK_MIB / ws); blk[name][1].append(BLK_MIB / rs)
            line = f"bench: round {r + 1} {name}: virtio-blk write {BLK_MIB / ws:.1f} MiB/s, read {BLK_MIB / rs:.1f} MiB/s"
            if viommu:
                n = requests(name, out)
                if name.startswith("qemu"):
                    # Counted in a traced run of the same work, timed by the untraced one.
                    if os.path.exists(TRACE):
                        os.unlink(TRACE)
                    run(make(cmd, disk, viommu, trace=True))
                    n = requests(name, "")
                if n:
                    rate[name].append(n / (ws + rs))
                    line += f"; {n} MAP+UNMAP = {n / (ws + rs):.0f}/s"
                # SwiftVMM's exit line: time spent serving vIOMMU requests (the whole run's,
                # boot included), against the traffic's time: the VMM's share of it.
                busy = re.search(r"([\d.]+) ms serving them \(([\d.]+) us per request\)", out)
                if busy:
                    line += f"; serving {busy.group(1)} ms ({busy.group(2)} us per request, {float(busy.group(1)) / 10 / (ws + rs):.0f}% of the traffic's time)"
            print(line, flush=True)
            if not NET:
                continue
            result = []
            t = threading.Thread(target=receiver, args=(result, NET_MIB << 20, 120))
            t.start()
            time.sleep(0.5)
            out = run(make(f"{base} {MODS} swiftvmm.test=netbench swiftvmm.mib={NET_MIB}", disk, viommu))
            t.join(timeout=150)
            if result:
                got, secs = result[0]
                mbps = got * 8 / secs / 1e6
                net[name].append(mbps)
                print(f"bench: round {r + 1} {name}: virtio-net {got >> 20} MiB in {secs:.2f} s = {mbps:.0f} Mbit/s", flush=True)
            else:
                print(f"bench: round {r + 1} {name}: virtio-net run failed:\n{out[-1500:]}", flush=True)

    def med(xs):
        return statistics.median(xs) if xs else None
    print()
    print(f"bench: medians over {RUNS} runs; guest iommu.strict=1 (\"-lazy\": 0); blk {BLK_MIB} MiB O_DIRECT dd, net {NET_MIB} MiB TCP guest->lab host")
    rows = {v[0]: (med(blk[v[0]][0]), med(blk[v[0]][1]), med(net[v[0]]), med(rate[v[0]])) for v in vmms}
    f = lambda x, u: f"{x:.1f} {u}" if x else "n/a"
    for n, (w, rd, nt, rt) in rows.items():
        print(f"{n:20} blk write {f(w, 'MiB/s'):>14}  blk read {f(rd, 'MiB/s'):>14}  net {f(nt, 'Mbit/s'):>14}  MAP+UNMAP {f(rt, '/s'):>10}")
    ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "n/a"
    none = (None, None, None, None)
    s, sv, sl, q, qv, ql = (rows.get(n, none) for n in ("swiftvmm", "swiftvmm+viommu", "swiftvmm+viommu-lazy",
                                                         "qemu", "qemu+viommu", "qemu+viommu-lazy"))
    print(f"bench: MAP+UNMAP rate swiftvmm vs qemu (both with a vIOMMU, blk traffic): strict {ratio(sv[3], qv[3])}, lazy {ratio(sl[3], ql[3])}")
    for who, off, on, lazy in (("swiftvmm", s, sv, sl), ("qemu", q, qv, ql)):
        print(f"bench: {who} with the vIOMMU vs without: strict: blk write {ratio(on[0], off[0])}, blk read {ratio(on[1], off[1])}, net {ratio(on[2], off[2])}; "
              f"lazy: blk write {ratio(lazy[0], off[0])}, blk read {ratio(lazy[1], off[1])}, net {ratio(lazy[2], off[2])}")


if __name__ == "__main__":
    main()
