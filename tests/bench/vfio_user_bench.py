#!/usr/bin/env python3
"""The lab half of scripts/bench-vfio-user: a guest drives vfio-user devices, by fd and by
message, in one lab run.

For each DMA mode (fd, message), one boot of a guest with two vfio-user devices:
tests/lab/vfu-testdev.py (a device whose DMA a guest can command) and libvfio-user's
sample server (../shared/vfio-user/server, for its trapped I/O BAR). The guest's
/bin/vfubench (firmware/tools/vfubench.c) times, per transfer size from 1 KiB to 1 MiB,
FILL (the device writes guest RAM) and READ (it reads it) commands one at a time, each
ended by the device's INTx; then 4-byte reads of the test device's trapped memory BAR and
of the sample's I/O BAR (REGION_READ round trips) beside 1-byte reads of the 16550's
scratch register, which the VMM emulates. Prints the figures and the message/fd ratios;
asserts nothing about speed (a boot that fails is reported and ends the run with 1).

The test device is a Python program: its own time per command (about 0.1 ms) is in every
figure, in both modes; the host half (VFIOUserBenchmark) measures the client alone.
VFU_SECS (1): seconds per size and direction; VFU_COUNT (2000): register reads.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SWIFTVMM_CACHE", os.path.join(REPO, ".cache"))
SWIFTVMM = os.environ.get("SWIFTVMM", os.path.join(REPO, ".build/release/swiftvmm"))
SHARED = os.environ.get("SWIFTVMM_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
SAMPLE = os.path.join(SHARED, "vfio-user/server")
TESTDEV = os.path.join(REPO, "tests/lab/vfu-testdev.py")
SECS = os.environ.get("VFU_SECS", "1")
COUNT = os.environ.get("VFU_COUNT", "2000")
BUF = "0x10000000"


def wait_socket(path, proc, what):
    for _ in range(100):
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    sys.exit("vfio-user bench: %s did not listen at %s" % (what, path))


def boot(mode, work):
    tsock, ssock = os.path.join(work, "testdev.sock"), os.path.join(work, "sample.sock")
    for p in (tsock, ssock):
        if os.path.exists(p):
            os.unlink(p)
    logs = [open(os.path.join(work, n + "-" + mode + ".log"), "w") for n in ("testdev", "sample")]
    servers = [subprocess.Popen([sys.executable, TESTDEV, "-q", tsock], stdout=logs[0], stderr=subprocess.STDOUT),
               subprocess.Popen([SAMPLE, ssock], stdout=logs[1], stderr=subprocess.STDOUT)]
    wait_socket(tsock, servers[0], "the test device")
    wait_socket(ssock, servers[1], "the sample server")
    cmdline = ("console=ttyS0 reboot=k panic=-1 quiet no_timer_check tsc=reliable memmap=2M$%s "
               "swiftvmm.modules=uio_pci_generic swiftvmm.test=vfubench swiftvmm.vfu_buf=%s "
               "swiftvmm.vfu_secs=%s swiftvmm.vfu_count=%s" % (BUF, BUF, SECS, COUNT))
    cfg = os.path.join(work, "vm-%s.toml" % mode)
    with open(cfg, "w") as f:
        f.write('[machine]\nvcpus = 1\nmemory = "512M"\n[kernel]\npath = "%s/guest/vmlinuz"\n'
                'initramfs = "%s/guest/initramfs-modules.cpio.gz"\ncmdline = "%s"\n[serial]\nmode = "terminal"\n'
                '[[vfio_user]]\nsocket = "%s"\ndma = "%s"\n[[vfio_user]]\nsocket = "%s"\ndma = "%s"\n'
                % (CACHE, CACHE, cmdline, tsock, mode, ssock, mode))
    try:
        r = subprocess.run([SWIFTVMM, "run", cfg, "--timeout", "600s"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", timeout=660)
        out, status = r.stdout, r.returncode
    except subprocess.TimeoutExpired as e:
        out, status = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), 124
    for s in servers:
        try:
            s.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s.kill()
    for f in logs:
        f.close()
    with open(os.path.join(work, "vmm-%s.log" % mode), "w") as f:
        f.write(out)
    return status, out


def parse(out):
    dma, regs = {}, {}
    for m in re.finditer(r"VFUBENCH-DMA: dir=(\w+) size=(\d+) ops=(\d+) us_per_op=([\d.]+) mib_s=([\d.]+) errors=(\d+)", out):
        dma[(m.group(1), int(m.group(2)))] = (float(m.group(4)), float(m.group(5)), int(m.group(3)), int(m.group(6)))
    m = re.search(r"VFUBENCH-MMIO: us=([\d.]+)", out)
    if m:
        regs["mmio"] = float(m.group(1))
    m = re.search(r"VFUBENCH-PIO: vfio-user=\S+ us=([\d.]+) emulated=\S+ us=([\d.]+)", out)
    if m:
        regs["pio"], regs["emulated"] = float(m.group(1)), float(m.group(2))
    return dma, regs


def main():
    for path, what in ((SWIFTVMM, "swiftvmm"), (SAMPLE, "libvfio-user's sample server")):
        if not os.access(path, os.X_OK):
            sys.exit("vfio-user bench: %s is not at %s" % (what, path))
    work = tempfile.mkdtemp(prefix="vfu-bench.")
    results, bad = {}, 0
    for mode in ("fd", "message"):
        t0 = time.time()
        status, out = boot(mode, work)
        dma, regs = parse(out)
        print("vfio-user bench: %s mode: status %d, %.0f s, %d DMA rows" % (mode, status, time.time() - t0, len(dma)), flush=True)
        counters = re.findall(r"vfio-user \S+: (\d+ requests; the server's DMA messages: .*)", out)
        for c in counters:
            print("vfio-user bench:   %s" % c)
        if status != 0 or len(dma) != 12 or any(v[3] for v in dma.values()):
            bad += 1
            print("vfio-user bench: %s mode FAILED; the last lines:" % mode)
            print("\n".join(out.splitlines()[-30:]))
        results[mode] = (dma, regs)
    fd, msg = results["fd"][0], results["message"][0]
    print("\nDMA commanded by the guest, one at a time, each ended by an INTx (us per command, MiB/s):")
    print("| direction | size | fd us | fd MiB/s | message us | message MiB/s | message/fd throughput |")
    print("|---|---|---|---|---|---|---|")
    for d in ("fill", "read"):
        for size in (1024, 4096, 16384, 65536, 262144, 1048576):
            a, b = fd.get((d, size)), msg.get((d, size))
            if not a or not b:
                continue
            print("| %s | %s | %.0f | %.1f | %.0f | %.1f | %.2fx |" % (
                d, "%d KiB" % (size // 1024), a[0], a[1], b[0], b[1], b[1] / a[1] if a[1] else 0))
    print("\nTrapped register reads from the guest (us per read; VM exit included):")
    print("| access | fd boot | message boot |")
    print("|---|---|---|")
    names = (("mmio", "test device BAR 0 (memory, REGION_READ to the Python server)"),
             ("pio", "sample server BAR 1 (I/O, REGION_READ to libvfio-user)"),
             ("emulated", "16550 scratch register (emulated by the VMM)"))
    for key, name in names:
        a, b = results["fd"][1].get(key), results["message"][1].get(key)
        print("| %s | %s | %s |" % (name, "%.1f" % a if a else "-", "%.1f" % b if b else "-"))
    for mode in ("fd", "message"):
        r = results[mode][1]
        if r.get("pio") and r.get("emulated"):
            print("%s boot: a REGION_READ to libvfio-user costs %.0fx an emulated register read" % (mode, r["pio"] / r["emulated"]))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
