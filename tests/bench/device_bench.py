#!/usr/bin/env python3
"""Device benchmark, run inside the lab host (scripts/bench-devices): the same guest
kernel and initramfs under SwiftVMM and under QEMU (q35, virtio-blk-pci and
virtio-net-pci on a TAP), each with the disk through the host page cache and with
cache = "none" (QEMU: cache=none,aio=io_uring, its fastest raw-file setup), measuring
  virtio-blk  sequential write and read of MIB MiB with O_DIRECT dd in the guest
  virtio-net  TCP throughput of MIB MiB from the guest to the lab host
BENCH_VMMS picks variants (comma-separated names as printed); SWIFTVMM_BASE adds
"swiftvmm base", another swiftvmm binary (an older build), measured the same way.
Prints figures and ratios; asserts nothing."""
import os, re, socket, statistics, subprocess, threading, time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SWIFTVMM_CACHE", os.path.join(REPO, ".cache"))
SWIFTVMM = os.environ.get("SWIFTVMM", os.path.join(REPO, ".build/release/swiftvmm"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
BLK_MIB = int(os.environ.get("BENCH_BLK_MIB", "256"))
NET_MIB = int(os.environ.get("BENCH_NET_MIB", "64"))
BASE_BIN = os.environ.get("SWIFTVMM_BASE", "")
ONLY = [n for n in os.environ.get("BENCH_VMMS", "").split(",") if n]
# BENCH_NET=0 skips the virtio-net runs.
NET = os.environ.get("BENCH_NET", "1") != "0"
KERNEL = os.path.join(CACHE, "guest/vmlinuz")
INITRD = os.path.join(CACHE, "guest/initramfs-modules.cpio.gz")
BASE = "console=ttyS0 reboot=k panic=-1 quiet"
WORK = "/tmp/device-bench"
TAP = "benchtap0"


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


def swiftvmm_cmd(binary=SWIFTVMM, cache=None):
    def make(cmdline, disk):
        cfg = os.path.join(WORK, "vm.toml")
        extra = f'cache = "{cache}"\n' if cache else ""
        with open(cfg, "w") as f:
            f.write(f'[machine]\nvcpus = 1\nmemory = "512M"\n[kernel]\npath = "{KERNEL}"\ninitramfs = "{INITRD}"\n'
                    f'[serial]\nmode = "terminal"\n[[disk]]\npath = "{disk}"\n{extra}[[net]]\ntap = "{TAP}"\n')
        return [binary, "run", cfg, "--cmdline", cmdline]
    return make


def qemu_cmd(drive_opts=""):
    def make(cmdline, disk):
        return ["qemu-system-x86_64", "-accel", "kvm", "-M", "q35", "-cpu", "host", "-m", "512M", "-smp", "1",
                "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
                "-kernel", KERNEL, "-initrd", INITRD, "-append", cmdline,
                "-drive", f"file={disk},if=none,id=d0,format=raw{drive_opts}", "-device", "virtio-blk-pci,drive=d0",
                "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0"]
    return make


def run(cmd, limit=300):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=limit)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def receiver(result, want=None, accept_timeout=60):
    """Receives up to `want` bytes (default NET_MIB MiB) from one TCP connection to
    10.0.2.1:5001 and appends (bytes, seconds from the first byte) to `result`."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("10.0.2.1", 5001))
    srv.listen(1)
    srv.settimeout(accept_timeout)
    try:
        conn, _ = srv.accept()
    except OSError:
        return
    want = NET_MIB << 20 if want is None else want
    got, t0 = 0, None
    while got < want:
        b = conn.recv(1 << 16)
        if not b:
            break
        if t0 is None:
            t0 = time.monotonic()
        got += len(b)
    t1 = time.monotonic()
    conn.close()
    srv.close()
    if t0 is not None and got:
        result.append((got, t1 - t0))


def main():
    os.makedirs(WORK, exist_ok=True)
    disk = os.path.join(WORK, "bench.img")
    sh(f"truncate -s {BLK_MIB + 16}M {disk}")
    sh(f"ip tuntap add dev {TAP} mode tap 2>/dev/null || true; ip addr add 10.0.2.1/24 dev {TAP} 2>/dev/null || true; ip link set {TAP} up")
    vmms = [("swiftvmm", swiftvmm_cmd()), ("swiftvmm cache=none", swiftvmm_cmd(cache="none")),
            ("qemu q35", qemu_cmd()), ("qemu q35 cache=none", qemu_cmd(",cache=none,aio=io_uring"))]
    if BASE_BIN:
        vmms.insert(0, ("swiftvmm base", swiftvmm_cmd(BASE_BIN)))
    if ONLY:
        unknown = set(ONLY) - {n for n, _ in vmms}
        if unknown:
            raise SystemExit(f"bench: BENCH_VMMS names {sorted(unknown)}; known: {[n for n, _ in vmms]}")
        vmms = [v for v in vmms if v[0] in ONLY]
    blk = {n: ([], []) for n, _ in vmms}
    net = {n: [] for n, _ in vmms}
    for r in range(RUNS):
        for name, make in vmms:
            out = run(make(f"{BASE} swiftvmm.modules=virtio_blk swiftvmm.test=blkbench swiftvmm.mib={BLK_MIB}", disk))
            m = re.search(r"blkbench mib=(\d+) write_s=([\d.]+) read_s=([\d.]+)", out)
            if m and float(m.group(2)) > 0 and float(m.group(3)) > 0:
                w, rd = BLK_MIB / float(m.group(2)), BLK_MIB / float(m.group(3))
                blk[name][0].append(w); blk[name][1].append(rd)
                print(f"bench: round {r + 1} {name}: virtio-blk write {w:.1f} MiB/s, read {rd:.1f} MiB/s", flush=True)
            else:
                print(f"bench: round {r + 1} {name}: virtio-blk run failed:\n{out[-1500:]}", flush=True)
            if not NET:
                continue
            result = []
            t = threading.Thread(target=receiver, args=(result,))
            t.start()
            time.sleep(0.5)
            out = run(make(f"{BASE} swiftvmm.modules=virtio_net swiftvmm.test=netbench swiftvmm.mib={NET_MIB}", disk))
            t.join(timeout=90)
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
    print(f"bench: medians over {RUNS} runs; blk {BLK_MIB} MiB O_DIRECT dd, net {NET_MIB} MiB TCP guest->lab host")
    rows = {n: (med(blk[n][0]), med(blk[n][1]), med(net[n])) for n, _ in vmms}
    for n, (w, rd, nt) in rows.items():
        f = lambda x, u: f"{x:.1f} {u}" if x else "n/a"
        print(f"{n:20} blk write {f(w, 'MiB/s'):>14}  blk read {f(rd, 'MiB/s'):>14}  net {f(nt, 'Mbit/s'):>14}")
    ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "n/a"
    none = (None, None, None)
    best_q = tuple(max((rows.get(n, none)[i] for n in ("qemu q35", "qemu q35 cache=none") if rows.get(n, none)[i]), default=None)
                   for i in range(3))
    for n in [v[0] for v in vmms if v[0].startswith("swiftvmm")]:
        s = rows[n]
        for qn in ("qemu q35", "qemu q35 cache=none"):
            q = rows.get(qn, none)
            print(f"bench: {n} vs {qn}: blk write {ratio(s[0], q[0])}, blk read {ratio(s[1], q[1])}, net {ratio(s[2], q[2])}")
        print(f"bench: {n} vs QEMU's best row by row: blk write {ratio(s[0], best_q[0])}, blk read {ratio(s[1], best_q[1])}, net {ratio(s[2], best_q[2])}")


if __name__ == "__main__":
    main()
