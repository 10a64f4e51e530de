#!/usr/bin/env python3
"""Device benchmark, run inside the lab host (scripts/bench-devices): the same guest
kernel and initramfs (2 vCPUs for the disk, 1 for the network, see NET_VCPUS) under
SwiftVMM (2 disk queues, io_uring) and under QEMU
(q35, virtio-blk-pci with num-queues=2 and virtio-net-pci on a TAP with vhost=on); SwiftVMM's
NIC uses vhost-net too (its default). Each VMM with the disk
through the host page cache and with cache = "none" (QEMU: cache=none,aio=io_uring, its
fastest raw-file setup), measuring
  virtio-blk  sequential write and read of MIB MiB with O_DIRECT dd in the guest, then
              random 4 KiB O_DIRECT reads and writes at queue depth 32 (blkrand,
              BENCH_RAND_SECS seconds each, 0 to skip)
  virtio-net  TCP throughput of MIB MiB from the guest to the lab host, then from the
              lab host to the guest (BENCH_NET_RX=0 skips the second)
  CPU         the VMM process's user + system time per GiB the disk moved (all its
              threads, so the guest's own CPU time, which runs on the vCPU threads, too)
BENCH_VMMS picks variants (comma-separated names as printed; "swiftvmm vhost=off" and
"qemu q35 vhost=off" only run when named, and only the network part); BENCH_BLK=0 or BENCH_NET=0 skip a part; SWIFTVMM_BASE adds
"swiftvmm base", another swiftvmm binary (an older build), measured the same way.
Prints figures and ratios; asserts nothing."""
import importlib.util, os, re, resource, socket, statistics, subprocess, threading, time

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
# BENCH_BLK=0 skips the virtio-blk runs.
BLK = os.environ.get("BENCH_BLK", "1") != "0"
RAND_SECS = int(os.environ.get("BENCH_RAND_SECS", "10"))
# BENCH_NET_RX=0 skips the lab host -> guest transfer.
NET_RX = os.environ.get("BENCH_NET_RX", "1") != "0"
# The disk runs use 2 vCPUs (so 2 request queues); the network runs 1: in the nested lab
# (TCG below) a 2-vCPU guest's TCP stack loses most of its throughput to cross-CPU
# wake-ups, with either VMM and either data path (4-5 Mbit/s against 65).
BLK_VCPUS, NET_VCPUS = 2, 1
QD = 32
KERNEL = os.path.join(CACHE, "guest/vmlinuz")
INITRD = os.path.join(CACHE, "guest/initramfs-modules.cpio.gz")
BASE = "console=ttyS0 reboot=k panic=-1 quiet"
WORK = "/tmp/device-bench"
TAP = "benchtap0"


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


def swiftvmm_cmd(binary=SWIFTVMM, cache=None, vhost=True):
    def make(cmdline, disk, vcpus):
        cfg = os.path.join(WORK, "vm.toml")
        extra = f'cache = "{cache}"\n' if cache else ""
        net_extra = "" if vhost else "vhost = false\n"
        with open(cfg, "w") as f:
            f.write(f'[machine]\nvcpus = {vcpus}\nmemory = "512M"\n[kernel]\npath = "{KERNEL}"\ninitramfs = "{INITRD}"\n'
                    f'[serial]\nmode = "terminal"\n[[disk]]\npath = "{disk}"\n{extra}[[net]]\ntap = "{TAP}"\n{net_extra}')
        return [binary, "run", cfg, "--cmdline", cmdline]
    return make


def qemu_cmd(drive_opts="", vhost=True):
    def make(cmdline, disk, vcpus):
        return ["qemu-system-x86_64", "-accel", "kvm", "-M", "q35", "-cpu", "host", "-m", "512M", "-smp", str(vcpus),
                "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
                "-kernel", KERNEL, "-initrd", INITRD, "-append", cmdline,
                "-drive", f"file={disk},if=none,id=d0,format=raw{drive_opts}", "-device", "virtio-blk-pci,drive=d0,num-queues=2",
                "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost={'on' if vhost else 'off'}", "-device", "virtio-net-pci,netdev=n0"]
    return make


# The lab host KVM's counters (all VMs; the bench runs one at a time), read when the guest
# prints a phase's line: what each 4 KiB request costs in exits and injected interrupts.
KVM_STATS = ("exits", "io_exits", "mmio_exits", "irq_exits", "halt_exits", "halt_wakeup",
             "irq_injections", "request_irq_exits", "irq_window_exits", "insn_emulation")


def kvm_stats():
    got = {}
    for name in KVM_STATS:
        try:
            with open(f"/sys/kernel/debug/kvm/{name}") as f:
                got[name] = int(f.read())
        except (OSError, ValueError):
            pass
    return got


def run(cmd, limit=300, marks=()):
    """The command's output, the CPU seconds (user + system) it used, and the KVM
    counters when each line matching a pattern of `marks` first appeared ({pattern: stats})."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out, seen = [], {}
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    timer = threading.Timer(limit, p.kill)
    timer.start()
    for raw in p.stdout:
        line = raw.decode(errors="replace")
        out.append(line)
        for mark in marks:
            if mark not in seen and re.search(mark, line):
                seen[mark] = kvm_stats()
                seen[mark]["t"] = time.monotonic()
    p.wait()
    timer.cancel()
    out.append(f"\n(killed after {limit} s)" if p.returncode == -9 else f"\n(exit status {p.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return "".join(out), cpu, seen


def receiver(result, want=None, accept_timeout=60, idle_timeout=30):
    """Receives up to `want` bytes (default NET_MIB MiB) from one TCP connection to
    10.0.2.1:5001 and appends (bytes, seconds from the first byte) to `result`. Gives up
    after `accept_timeout` s without a connection or `idle_timeout` s without data (a
    guest that died mid-transfer sends no FIN), so the port is free for the next run."""
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("10.0.2.1", 5001))
        srv.listen(1)
        srv.settimeout(accept_timeout)
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(idle_timeout)
            want = NET_MIB << 20 if want is None else want
            got, t0 = 0, None
            while got < want:
                try:
                    b = conn.recv(1 << 16)
                except OSError:
                    return
                if not b:
                    break
                if t0 is None:
                    t0 = time.monotonic()
                got += len(b)
            t1 = time.monotonic()
    if t0 is not None and got:
        result.append((got, t1 - t0))


# The lab host's end of the guest's netbench, shared with the lab test (its send()).
_spec = importlib.util.spec_from_file_location("tcp_peer", os.path.join(REPO, "tests/lab/tcp-peer.py"))
tcp_peer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tcp_peer)


def sender(result):
    """Sends NET_MIB MiB to the guest's 10.0.2.15:5002 once it listens (up to 240 s);
    appends (bytes, monotonic time of the connection) to `result`. The guest's
    "netbench received" line ends the timing."""
    sent = tcp_peer.send("10.0.2.15", NET_MIB << 20, 240)
    if sent:
        result.append(sent)


def main():
    os.makedirs(WORK, exist_ok=True)
    if not os.path.exists("/sys/kernel/debug/kvm"):
        subprocess.run("mount -t debugfs none /sys/kernel/debug", shell=True)
    disk = os.path.join(WORK, "bench.img")
    sh(f"truncate -s {BLK_MIB + 16}M {disk}")
    sh(f"ip tuntap add dev {TAP} mode tap 2>/dev/null || true; ip addr add 10.0.2.1/24 dev {TAP} 2>/dev/null || true; ip link set {TAP} up")
    vmms = [("swiftvmm", swiftvmm_cmd()), ("swiftvmm cache=none", swiftvmm_cmd(cache="none")),
            ("qemu q35", qemu_cmd()), ("qemu q35 cache=none", qemu_cmd(",cache=none,aio=io_uring"))]
    # Only when asked for by name (BENCH_VMMS): the NICs without vhost-net.
    extra = [("swiftvmm vhost=off", swiftvmm_cmd(vhost=False)), ("qemu q35 vhost=off", qemu_cmd(vhost=False))]
    vmms += [v for v in extra if v[0] in ONLY]
    if BASE_BIN:
        vmms.insert(0, ("swiftvmm base", swiftvmm_cmd(BASE_BIN)))
    if ONLY:
        unknown = set(ONLY) - {n for n, _ in vmms}
        if unknown:
            raise SystemExit(f"bench: BENCH_VMMS names {sorted(unknown)}; known: {[n for n, _ in vmms]}")
        vmms = [v for v in vmms if v[0] in ONLY]
    # Per variant: seq write MiB/s, seq read MiB/s, rand read IOPS, rand write IOPS,
    # CPU s/GiB, net Mbit/s.
    cols = ("write", "read", "rread", "rwrite", "cpu", "net", "netrx")
    res = {n: {c: [] for c in cols} for n, _ in vmms}
    def blk_round(r, name, make):
        marks = ("blkbench mib=", "blkrand mode=read", "blkrand mode=write")
        out, cpu, seen = run(make(f"{BASE} swiftvmm.modules=virtio_blk swiftvmm.test=blkbench swiftvmm.mib={BLK_MIB} "
                                  f"swiftvmm.randsec={RAND_SECS} swiftvmm.qd={QD}", disk, BLK_VCPUS),
                             limit=300 + 4 * RAND_SECS, marks=marks)
        m = re.search(r"blkbench mib=(\d+) write_s=([\d.]+) read_s=([\d.]+)", out)
        rand = {mm.group(1): (int(mm.group(2)), float(mm.group(3)))
                for mm in re.finditer(r"blkrand mode=(\w+) threads=\d+ ops=(\d+) seconds=[\d.]+ iops=([\d.]+)", out)}
        if not (m and float(m.group(2)) > 0 and float(m.group(3)) > 0 and (RAND_SECS == 0 or len(rand) == 2)):
            print(f"bench: round {r + 1} {name}: virtio-blk run failed:\n{out[-1500:]}", flush=True)
            return
        w, rd = BLK_MIB / float(m.group(2)), BLK_MIB / float(m.group(3))
        res[name]["write"].append(w); res[name]["read"].append(rd)
        moved = 2 * BLK_MIB / 1024 + sum(ops for ops, _ in rand.values()) * 4096 / (1 << 30)
        res[name]["cpu"].append(cpu / moved)
        line = f"virtio-blk write {w:.1f} MiB/s, read {rd:.1f} MiB/s"
        if rand:
            res[name]["rread"].append(rand["read"][1]); res[name]["rwrite"].append(rand["write"][1])
            line += f", 4K QD{QD} read {rand['read'][1]:.0f} IOPS, write {rand['write'][1]:.0f} IOPS"
        line += f", VMM CPU {cpu:.1f} s ({cpu / moved:.1f} s/GiB)"
        print(f"bench: round {r + 1} {name}: {line}", flush=True)
        # Per random request: the counters' growth over each random phase, divided by its ops.
        for mode, start, end in (("read", marks[0], marks[1]), ("write", marks[1], marks[2])):
            if mode in rand and start in seen and end in seen and rand[mode][0]:
                ops = rand[mode][0]
                per = ", ".join(f"{k} {(seen[end][k] - seen[start][k]) / ops:.2f}"
                                for k in KVM_STATS if k in seen[start] and k in seen[end])
                print(f"bench: round {r + 1} {name}: KVM per random {mode}: {per}", flush=True)

    def net_round(r, name, make):
        result = []
        t = threading.Thread(target=receiver, args=(result,))
        t.start()
        time.sleep(0.5)
        sent = []
        tx = threading.Thread(target=sender, args=(sent,)) if NET_RX else None
        if tx:
            tx.start()
        out, _, seen = run(make(f"{BASE} swiftvmm.modules=virtio_net swiftvmm.test=netbench swiftvmm.mib={NET_MIB}"
                                f"{' swiftvmm.recv=1' if NET_RX else ''}", disk, NET_VCPUS), marks=("netbench received",))
        t.join(timeout=90)
        if tx:
            tx.join(timeout=90)
        if not result:
            print(f"bench: round {r + 1} {name}: virtio-net run failed (guest to lab host):\n{out[-1500:]}", flush=True)
            return
        got, secs = result[0]
        mbps = got * 8 / secs / 1e6
        res[name]["net"].append(mbps)
        print(f"bench: round {r + 1} {name}: virtio-net guest to lab host {got >> 20} MiB in {secs:.2f} s = {mbps:.0f} Mbit/s", flush=True)
        if not NET_RX:
            return
        if not sent or "netbench received" not in seen:
            print(f"bench: round {r + 1} {name}: virtio-net run failed (lab host to guest):\n{out[-1500:]}", flush=True)
            return
        (bytes_sent, t0), secs = sent[0], seen["netbench received"]["t"] - sent[0][1]
        mbps = bytes_sent * 8 / secs / 1e6
        res[name]["netrx"].append(mbps)
        print(f"bench: round {r + 1} {name}: virtio-net lab host to guest {bytes_sent >> 20} MiB in {secs:.2f} s = {mbps:.0f} Mbit/s", flush=True)

    for r in range(RUNS):
        for name, make in vmms:
            # The vhost=off variants differ only in the NIC: no disk rounds.
            if BLK and not name.endswith("vhost=off"):
                blk_round(r, name, make)
            if NET:
                net_round(r, name, make)

    def med(xs):
        return statistics.median(xs) if xs else None
    print()
    print(f"bench: medians over {RUNS} runs; blk {BLK_MIB} MiB O_DIRECT dd, 4K random O_DIRECT at QD{QD} for "
          f"{RAND_SECS} s, net {NET_MIB} MiB TCP guest->lab host and lab host->guest; CPU: VMM user+system s per GiB the disk moved")
    rows = {n: {c: med(res[n][c]) for c in cols} for n, _ in vmms}
    f = lambda x, fmt: format(x, fmt) if x else "n/a"
    for n, v in rows.items():
        print(f"{n:20} seq write {f(v['write'], '.1f'):>7} MiB/s  seq read {f(v['read'], '.1f'):>7} MiB/s  "
              f"rand read {f(v['rread'], '.0f'):>6} IOPS  rand write {f(v['rwrite'], '.0f'):>6} IOPS  "
              f"CPU {f(v['cpu'], '.1f'):>5} s/GiB  net tx {f(v['net'], '.0f'):>5} Mbit/s  net rx {f(v['netrx'], '.0f'):>5} Mbit/s")
    ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "n/a"
    qemus = ("qemu q35", "qemu q35 cache=none", "qemu q35 vhost=off")
    # QEMU's best per row: the highest rate, the lowest CPU per GiB.
    best = {}
    for c in cols:
        xs = [rows[q][c] for q in qemus if q in rows and rows[q][c]]
        best[c] = (min(xs) if c == "cpu" else max(xs)) if xs else None
    for n in [v[0] for v in vmms if v[0].startswith("swiftvmm")]:
        s = rows[n]
        # For CPU, QEMU's over ours: above 1.0x means SwiftVMM spends less.
        cells = [f"{c} {ratio(best['cpu'], s['cpu']) if c == 'cpu' else ratio(s[c], best[c])}" for c in cols]
        print(f"bench: {n} vs QEMU's best row by row (CPU: QEMU's s/GiB over ours): " + ", ".join(cells))


if __name__ == "__main__":
    main()
