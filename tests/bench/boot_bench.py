#!/usr/bin/env python3
"""Boot benchmark, run inside the lab host (scripts/bench): boots the same kernel and
initramfs N times with SwiftVMM and with QEMU (q35 and microvm, direct kernel boot) and
prints medians and ratios. A benchmark, not a test: it asserts nothing.

Per run it measures
  exec->init     wall time from exec to the guest's "SWIFTVMM-GUEST-INIT: up" line
  exec->KVM_RUN  VMM-side time from exec to the first KVM_RUN ioctl (strace, separate runs)
  VMM RSS        peak RssAnon+RssFile of the VMM process, sampled every 20 ms; guest RAM
                 is a memfd for both VMMs (RssShmem), so this excludes guest RAM
and, once, each VMM's binary size and the size of the shared libraries it loads.
"""
import os, re, statistics, subprocess, sys, threading, time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SWIFTVMM_CACHE", os.path.join(REPO, ".cache"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SWIFTVMM = os.environ.get("SWIFTVMM", os.path.join(REPO, ".build/release/swiftvmm"))
KERNEL = os.path.join(CACHE, "guest/vmlinuz")
VMLINUX = os.path.join(CACHE, "guest/vmlinux")
INITRD = os.path.join(CACHE, "guest/initramfs.cpio.gz")
CMDLINE = "console=ttyS0 reboot=k panic=-1 quiet swiftvmm.test=reboot"
MEM = "512M"
MARKER = b"SWIFTVMM-GUEST-INIT: up"
BOOT_LIMIT = float(os.environ.get("BENCH_BOOT_LIMIT", "180"))


def qemu(machine):
    return ["qemu-system-x86_64", "-accel", "kvm", "-M", machine + ",memory-backend=ram", "-cpu", "host",
            "-object", "memory-backend-memfd,id=ram,size=" + MEM, "-m", MEM, "-smp", "1",
            "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", KERNEL, "-initrd", INITRD, "-append", CMDLINE]


def swiftvmm(kernel):
    return [SWIFTVMM, "run", os.path.join(REPO, "configs/smoke.toml"), "--kernel", kernel,
            "--memory", MEM, "--vcpus", "1", "--cmdline", CMDLINE]


def with_kernel(cmd, kernel):
    """QEMU's command line booting another bzImage."""
    out = list(cmd)
    out[out.index("-kernel") + 1] = kernel
    return out


VMMS = [
    ("swiftvmm (bzImage)", swiftvmm(KERNEL)),
    ("swiftvmm (PVH vmlinux)", swiftvmm(VMLINUX)),
    ("qemu -M q35", qemu("q35")),
    ("qemu -M microvm", qemu("microvm")),
]
# Other kernel versions (scripts/bench: Debian 12's 6.1 as kernel 2; BENCH_KERNEL3, e.g. a
# current 7.x), each booted by swiftvmm and QEMU q35.
KERNEL2 = os.environ.get("BENCH_KERNEL2", "none")
KERNEL3 = os.environ.get("BENCH_KERNEL3", "none")
OTHER_KERNELS = [(f"kernel {n}", k) for n, k in ((2, KERNEL2), (3, KERNEL3)) if k != "none" and os.path.exists(k)]
for tag, k in OTHER_KERNELS:
    VMMS += [(f"swiftvmm ({tag})", swiftvmm(k)), (f"qemu -M q35 ({tag})", with_kernel(qemu("q35"), k))]


def rss_no_shmem(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = 0
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:")):
                    kb += int(line.split()[1])
            return kb * 1024
    except OSError:
        return 0


def one_boot(cmd):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_no_shmem(p.pid))
            time.sleep(0.02)
    threading.Thread(target=sample, daemon=True).start()
    # A boot that has not ended after BOOT_LIMIT seconds is killed and counted as failed.
    killer = threading.Timer(BOOT_LIMIT, p.kill)
    killer.start()
    t_init = None
    for line in p.stdout:
        if t_init is None and MARKER in line:
            t_init = time.monotonic() - t0
    p.wait()
    killer.cancel()
    done.set()
    return t_init, peak[0], p.returncode


def first_kvm_run(cmd, limit=120.0):
    """Seconds from exec to the first KVM_RUN ioctl, from strace -ttt. The VMM
    and strace are killed (process group) as soon as it is seen."""
    import signal, tempfile
    out = tempfile.NamedTemporaryFile(prefix="bench-strace-", delete=False).name
    t0 = time.time()
    p = subprocess.Popen(["strace", "-f", "-ttt", "-e", "trace=ioctl", "-o", out] + cmd,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    t = None
    try:
        while t is None and time.time() - t0 < limit and p.poll() is None:
            time.sleep(0.05)
            with open(out, "rb") as f:
                for line in f:
                    if b"KVM_RUN" in line:
                        m = re.match(rb"\s*(?:\d+\s+)?(\d+\.\d+)", line)
                        if m:
                            t = float(m.group(1)) - t0
                        break
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        os.unlink(out)
    return t


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit):
    if x is None:
        return "n/a"
    return f"{x:.2f} s" if unit == "s" else f"{x / 2**20:.1f} MiB"


def verdict_bench():
    """CI smoke boot: exec to the guest's verdict (status 3 on port 0x501) and the
    VMM's exit. QEMU gets isa-debug-exit on the same port, so the same guest ends
    both (QEMU exits (3 << 1) | 1 = 7)."""
    cmdline = "console=ttyS0 reboot=k panic=-1 quiet swiftvmm.test=verdict swiftvmm.status=3"
    vmms = [
        ("swiftvmm", [SWIFTVMM, "run", os.path.join(REPO, "configs/smoke.toml"), "--memory", MEM, "--vcpus", "1",
                      "--cmdline", cmdline], 3),
        ("qemu q35 + isa-debug-exit", qemu("q35")[:-1] + [cmdline, "-device", "isa-debug-exit,iobase=0x501,iosize=1"], 7),
        ("qemu microvm + isa-debug-exit", qemu("microvm")[:-1] + [cmdline, "-device", "isa-debug-exit,iobase=0x501,iosize=1"], 7),
    ]
    times = {n: [] for n, _, _ in vmms}
    for i in range(RUNS):
        for name, cmd, want in vmms:
            t0 = time.monotonic()
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=BOOT_LIMIT)
            t = time.monotonic() - t0
            ok = p.returncode == want
            if ok:
                times[name].append(t)
            print(f"bench: verdict round {i + 1} {name}: exec->exit {t:.2f} s, status {p.returncode}"
                  f"{'' if ok else f' (expected {want})'}", flush=True)
    print()
    print(f"bench: smoke boot exec->verdict exit, medians over {RUNS} runs")
    base = med(times["qemu q35 + isa-debug-exit"])
    for name, _, _ in vmms:
        m = med(times[name])
        ratio = f" ({m / base:.2f}x qemu q35)" if m and base else ""
        print(f"{name:30} {fmt(m, 's'):>8}{ratio}")


def binary_size(path):
    """The file's size and its shared libraries' (what ldd resolves), in bytes."""
    libs = []
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S+)", line)
        if m and os.path.exists(m.group(1)):
            libs.append(os.path.realpath(m.group(1)))
    return os.path.getsize(path), len(set(libs)), sum(os.path.getsize(l) for l in set(libs))


def print_sizes():
    qemu_path = subprocess.run(["which", "qemu-system-x86_64"], capture_output=True, text=True).stdout.strip()
    print()
    for name, path in (("swiftvmm", SWIFTVMM), ("qemu-system-x86_64", qemu_path)):
        if not path or not os.path.exists(path):
            print(f"bench: binary {name}: not found")
            continue
        size, n, libs = binary_size(path)
        print(f"bench: binary {name}: {size / 2**20:.1f} MiB, {n} shared libraries ({libs / 2**20:.1f} MiB)")


def main():
    if os.environ.get("BENCH_PART") == "verdict":
        return verdict_bench()
    have_strace = subprocess.run(["which", "strace"], capture_output=True).returncode == 0
    # Runs are interleaved (one boot of each VMM per round) so that load on the
    # machine during the benchmark spreads over all VMMs alike.
    inits = {n: [] for n, _ in VMMS}
    rsss = {n: [] for n, _ in VMMS}
    for i in range(RUNS):
        for name, cmd in VMMS:
            t, rss, st = one_boot(cmd)
            inits[name].append(t); rsss[name].append(rss)
            print(f"bench: round {i + 1} {name}: exec->init {fmt(t, 's')}, VMM RSS {fmt(rss, 'b')}, status {st}", flush=True)
    kvm = {n: [] for n, _ in VMMS}
    if have_strace:
        for _ in range(min(RUNS, 3)):
            for name, cmd in VMMS:
                kvm[name].append(first_kvm_run(cmd))
    results = {n: (med(inits[n]), med(kvm[n]), med(rsss[n])) for n, _ in VMMS}
    print()
    print(f"bench: medians over {RUNS} boots (first KVM_RUN over {min(RUNS, 3)} straced runs), kernel {os.path.basename(os.path.realpath(KERNEL))}, {MEM}, 1 vCPU, cmdline \"{CMDLINE}\"")
    print(f"{'VMM':26} {'exec->init':>11} {'exec->KVM_RUN':>14} {'VMM RSS':>10}")
    for name, (i, k, r) in results.items():
        print(f"{name:26} {fmt(i, 's'):>11} {fmt(k, 's'):>14} {fmt(r, 'b'):>10}")
    for tag, k in OTHER_KERNELS:
        print(f"{tag}: {os.path.basename(k)}")
    print()
    for name, (i, k, r) in results.items():
        tag = next((t for t, _ in OTHER_KERNELS if name.endswith(f"({t})")), None)
        q = results.get(f"qemu -M q35 ({tag})" if tag else "qemu -M q35")
        if name.startswith("swiftvmm") and q:
            parts = []
            for label, a, b in (("exec->init", i, q[0]), ("exec->KVM_RUN", k, q[1]), ("VMM RSS", r, q[2])):
                parts.append(f"{label} {a / b:.2f}x" if a and b else f"{label} n/a")
            print(f"bench: {name} vs qemu q35: " + ", ".join(parts))
    m = results.get("qemu -M microvm")
    for name, (i, k, r) in results.items():
        if name.startswith("swiftvmm") and "(kernel " not in name and m and i and m[0]:
            print(f"bench: {name} vs qemu microvm: exec->init {i / m[0]:.2f}x")
    print_sizes()
    if os.environ.get("BENCH_PART") != "boot":
        print()
        verdict_bench()


if __name__ == "__main__":
    sys.exit(main())
