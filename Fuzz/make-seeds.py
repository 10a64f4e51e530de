#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into Fuzz/corpus/<target>/ (run by
scripts/fuzz --seeds; the files are committed). Each seed is a valid input, so a run
starts deep in its target: a bzImage header and an ELF/PVH kernel, newc cpio archives,
the repository's configs, rings with chains for the virtio targets, PCI config cycles."""
import os, struct, subprocess, sys, glob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "Fuzz", "corpus")


def put(name, target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def bzimage():
    setup_sects = 4
    b = bytearray((setup_sects + 1) * 512)
    b[0:2] = b"MZ"
    b[0x1F1] = setup_sects
    payload = bytes((i * 7 + 1) & 0xFF for i in range(4096))
    struct.pack_into("<I", b, 0x1F4, len(payload) // 16)
    struct.pack_into("<H", b, 0x1FA, 0xFFFF)
    struct.pack_into("<H", b, 0x1FE, 0xAA55)
    b[0x200], b[0x201] = 0xEB, 0x6A
    b[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", b, 0x206, 0x020F)
    b[0x211] = 0x01
    struct.pack_into("<I", b, 0x214, 0x100000)
    struct.pack_into("<I", b, 0x22C, 0x7FFFFFFF)
    struct.pack_into("<I", b, 0x230, 0x200000)
    b[0x234], b[0x235] = 1, 21
    struct.pack_into("<H", b, 0x236, 0x03)
    struct.pack_into("<I", b, 0x238, 0x7FF)
    struct.pack_into("<Q", b, 0x258, 0x200000)
    struct.pack_into("<I", b, 0x260, 0x100000)
    return bytes(b) + payload


def newc(entries):
    out = bytearray()
    for name, data in entries + [("TRAILER!!!", b"")]:
        n = name.encode() + b"\0"
        fields = [1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(n), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + n
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def desc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)


def virtio_seed(chains, features=(1 << 28) | (1 << 29), size_shift=3, ops=b"\x00\x08\x10", queue=0):
    """Header (features u64, size shift, disabled-queue mask, ops length u16), the ops,
    then guest memory: queue `queue`'s rings at 0x1000 * (queue + 1), buffers at 0x4000+."""
    mem = bytearray(0x8000)
    base = 0x1000 * (queue + 1)
    table = bytearray()
    heads = []
    i = 0
    for chain in chains:
        heads.append(i)
        for j, (addr, length, write) in enumerate(chain):
            last = j == len(chain) - 1
            flags = (0 if last else 1) | (2 if write else 0)
            table += desc(addr, length, flags, 0 if last else i + 1)
            i += 1
    mem[base:base + len(table)] = table
    struct.pack_into("<HH", mem, base + 0x400, 0, len(heads))
    for k, h in enumerate(heads):
        struct.pack_into("<H", mem, base + 0x404 + 2 * k, h)
    header = struct.pack("<QBBH", features, size_shift, 0, len(ops))
    return header + ops + bytes(mem)


def main():
    put("bzimage-2.15", "kernel", bzimage())
    elf = os.path.join(CORPUS, "kernel", "pvh-ud2.elf")
    os.makedirs(os.path.dirname(elf), exist_ok=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "tests/lab/make-crash-kernel.py"), elf], check=True,
                   stdout=subprocess.DEVNULL)
    init = newc([("init", b"#!/bin/sh\nexec sh\n"), ("bin", b""), ("dev/console", b"")])
    put("newc", "initramfs", init)
    put("newc-then-gzip", "initramfs", init + b"\0" * 8 + bytes([0x1F, 0x8B, 8, 0]) + b"\0" * 12)
    put("zstd", "initramfs", bytes([0x28, 0xB5, 0x2F, 0xFD]) + b"\0" * 8)
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.toml"))):
        with open(path, "rb") as f:
            put(os.path.basename(path), "config", f.read())
    # virtio-blk: a read (type 0) and a write (type 1) of sector 1, and a flush (type 4).
    for name, t in (("read", 0), ("write", 1), ("flush", 4), ("get-id", 8)):
        hdr = struct.pack("<IIQ", t, 0, 1)
        chains = [[(0x4000, 16, False), (0x5000, 512, t != 1), (0x6000, 1, True)]]
        seed = bytearray(virtio_seed(chains))
        mem_start = 12 + 3
        seed[mem_start + 0x4000:mem_start + 0x4010] = hdr
        put(name, "virtio-blk", bytes(seed))
    # virtio-net: a frame to send on the TX queue (1), receive buffers on RX (0).
    tx = bytearray(virtio_seed([[(0x4000, 12 + 60, False)]], queue=1, ops=b"\x08\x06\x10"))
    put("tx", "virtio-net", bytes(tx))
    put("rx", "virtio-net", virtio_seed([[(0x4000, 1526, True)]], ops=b"\x06\x40\x00" + b"\x00"))
    put("rx-tx", "virtio-console", virtio_seed([[(0x4000, 64, True)]], ops=b"\x06\x3e\x00"))
    put("read", "virtio-rng", virtio_seed([[(0x4000, 64, True)], [(0x5000, 8, True)]]))
    put("ring", "virtqueue", struct.pack("<BBHI", 3, 3, 2, 0) + bytes(
        virtio_seed([[(0x4000, 16, False), (0x5000, 32, True)], [(0x6000, 8, True)]])[15:]))
    # virtio-iommu: ATTACH domain 1 endpoint 0, then MAP [0, 0xfff] -> 0x4000.
    attach = struct.pack("<BBBBIIII", 1, 0, 0, 0, 1, 0, 0, 0) + b"\0" * 4
    seed = bytearray(virtio_seed([[(0x4000, len(attach), False), (0x5000, 4, True)]]))
    seed[15 + 0x4000:15 + 0x4000 + len(attach)] = attach
    put("attach", "virtio-iommu", bytes(seed))
    # pci-bus: no host config (0 bytes), ops: a mechanism-#1 read of device 1's ID,
    # an ECAM write to its command register, and a BAR access.
    ops = bytes([1, 4, 1, 0, 0]) + bytes([2, 2, 1, 4, 0]) + b"\x07\x00" + bytes([4, 4, 0, 0, 0, 0, 0x10])
    put("config-cycles", "pci-bus", struct.pack("<H", 0) + struct.pack("<H", len(ops)) + ops)
    # legacy-ports: COM1 transmit, LSR read, CMOS read, i8042 status read.
    put("ports", "legacy-ports", bytes([0x00, 0, ord("h"), 0x45, 0, 0x2a, 0, 0x2b, 0, 0x49, 0]))
    # vfio-user: windows (count, then address, high-half flag, size - 1, R/W flags each),
    # the transfer limit - 1, then messages (16-byte header, u16 length, payload).
    def vfu_msg(cmd, payload, flags=0, msg_id=1):
        return struct.pack("<HHIII", msg_id, cmd, 16 + len(payload), flags, 0) + struct.pack("<H", len(payload)) + payload
    windows = bytes([2]) + struct.pack("<QBHB", 0x100000, 0, 0x0FFF, 3) + struct.pack("<QBHB", 0x200000, 0, 0x0FFF, 1)
    limit = struct.pack("<H", 0x0FFF)
    dma = (vfu_msg(12, struct.pack("<QQ", 0x100000, 4) + b"ABCD") + vfu_msg(11, struct.pack("<QQ", 0x100000, 4))
           + vfu_msg(12, struct.pack("<QQ", 0x200ffe, 4) + b"WXYZ") + vfu_msg(11, struct.pack("<QQ", 0x1ffffe, 8)))
    put("dma", "vfio-user", windows + limit + dma)
    caps = b'{"capabilities":{"max_msg_fds":8,"twin_socket":{"supported":true,"fd_index":0}}}\0'
    region = (struct.pack("<IIIIQQ", 80, 0xF, 1, 32, 0x4000, 0) + struct.pack("<HHIII", 1, 1, 0, 2, 0)
              + struct.pack("<QQQQ", 0, 0x1000, 0x2000, 0x1000))
    put("replies", "vfio-user", bytes([0]) + limit + vfu_msg(1, struct.pack("<HH", 0, 2) + caps, flags=1)
        + vfu_msg(4, struct.pack("<IIII", 16, 3, 9, 5), flags=1) + vfu_msg(5, region, flags=1)
        + vfu_msg(2, struct.pack("<IIQQQ", 32, 3, 0, 0x300000, 0x1000)) + vfu_msg(12, struct.pack("<QQ", 0x300800, 2) + b"hi")
        + vfu_msg(3, struct.pack("<IIQQ", 24, 0, 0x300000, 0x1000)))
    print(f"seeds written to {CORPUS}")


if __name__ == "__main__":
    main()
