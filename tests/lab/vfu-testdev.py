#!/usr/bin/env python3
"""A vfio-user test device a guest can drive: vfu-testdev.py [-v] [-q] [-a] SOCKET

libvfio-user's sample server (../shared/vfio-user/) arms its DMA only through an
8-byte access to an I/O BAR, which no x86 guest can make. This server is a second,
independent peer (written from QEMU's docs/devel/vfio-user.rst, version 0.2, sharing
no code with SwiftVMM's client) whose device a guest's user space can drive:

- PCI 0xdead:0xf00d, subsystem 0xcafe:0xf00d, class 0xff0000, Interrupt Pin A, no
  capabilities; the Command register keeps what is written (Interrupt Disable and Bus
  Master included: uio_pci_generic checks the first), Status bit 3 is the pending INTx.
- BAR0: 4 KiB of 32-bit memory, trapped (REGION_READ/REGION_WRITE), 4-byte registers:
    0x00 ID        reads 0x54554656 ("VFUT")
    0x04 ADDR_LO   DMA address, low half        0x08 ADDR_HI  high half
    0x0c LEN       DMA length, 1..1 MiB         0x10 SEED     pattern seed
    0x14 CMD       1 = FILL: write byte i = (SEED + i) & 0xff to ADDR..ADDR+LEN
                   2 = SUM: read ADDR..ADDR+LEN, RESULT = the sum of its bytes (mod 2^32)
                   3 = READ: read ADDR..ADDR+LEN and drop it (for the benchmark)
                   done after the write's reply; then COUNT += 1, Status bit 3 set, and
                   the INTx eventfd signalled unless Command's Interrupt Disable is set
    0x18 RESULT    the last SUM, or 0xffffffff when the DMA failed
    0x1c IRQ       reads 1 while an INTx is pending; writing 1 clears it
    0x20 COUNT     commands done               0x24 ERRORS  commands whose DMA failed
    0x28 CHUNK     bytes per DMA message, 0 (4 KiB) .. 1 MiB
- -a: the INTx is AUTOMASKED (IRQ_INFO flags EVENTFD|MASKABLE|AUTOMASKED), as kernel
  VFIO's: after each signal the line stays masked until the client's unmask eventfd
  (SET_IRQS ACTION_UNMASK|DATA_EVENTFD) is signalled; an interrupt raised meanwhile is
  signalled at the unmask (unless Interrupt Disable is set by then).
- DMA: straight into a DMA_MAP's mmap-ed fd when it came with one, else by
  DMA_WRITE/DMA_READ messages of at most CHUNK bytes. A command with Bus Master off, or a
  range no mapping covers, does no DMA and counts an error.

One client; exits 0 when it disconnects, 1 on a protocol error. Says on stdout what each
command did ("fill 4096 bytes at 0x10000000 by fd"), for the lab test to check.
"""
import array
import json
import mmap
import os
import select
import socket
import struct
import sys

VERBOSE = "-v" in sys.argv[1:]
QUIET = "-q" in sys.argv[1:]  # no line per command that succeeded (the benchmark)
AUTOMASK = "-a" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a not in ("-v", "-q", "-a")]

# Commands (spec 0.2).
VERSION, DMA_MAP, DMA_UNMAP, GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS, GET_IRQ_INFO, \
    SET_IRQS, REGION_READ, REGION_WRITE, DMA_READ, DMA_WRITE, DEVICE_RESET = range(1, 14)
REPLY, NO_REPLY, ERROR = 1, 1 << 4, 1 << 5
CONFIG_REGION, NUM_REGIONS, NUM_IRQS = 7, 9, 5
BAR0_SIZE = 4096
MAX_LEN = 1 << 20
PATTERN = bytes(range(256)) * (MAX_LEN // 256 + 1)
EINVAL, EFAULT, ENOTSUP = 22, 14, 95


def log(*a):
    print(*a, flush=True)


def debug(*a):
    if VERBOSE:
        print("vfu-testdev:", *a, file=sys.stderr, flush=True)


class Device:
    def __init__(self, sock):
        self.sock = sock
        self.next_id = 0x8000
        cfg = bytearray(256)
        struct.pack_into("<HH", cfg, 0x00, 0xDEAD, 0xF00D)
        struct.pack_into("<I", cfg, 0x08, 0xFF000001)  # class ff0000, revision 1
        struct.pack_into("<HH", cfg, 0x2C, 0xCAFE, 0xF00D)
        cfg[0x3D] = 1  # INTA#
        self.cfg = cfg
        self.regs = {o: 0 for o in range(0, 0x2C, 4)}
        self.intx = None  # the INTx eventfd
        self.unmask = None  # the client's unmask eventfd (-a)
        self.masked = False  # -a: signalled, not unmasked yet
        self.unmasks = 0
        self.maps = []  # [address, size, mmap or None]
        self.pending = None  # what the last REGION_WRITE asked for, done after its reply
        self.done = self.failed = 0  # commands over the server's life (a reset clears COUNT, not these)

    # -- transport --
    def recv(self):
        """One message: (header fields, payload, fds), or None at EOF."""
        fds = array.array("i")
        data, anc, _, _ = self.sock.recvmsg(16, socket.CMSG_SPACE(8 * fds.itemsize))
        if not data:
            return None
        if len(data) < 16:
            raise IOError("short header (%d bytes)" % len(data))
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
        mid, cmd, size, flags, err = struct.unpack("<HHIII", data)
        if size < 16 or size > (1 << 20) + 64:
            raise IOError("message size %d" % size)
        body = b""
        while len(body) < size - 16:
            chunk = self.sock.recv(size - 16 - len(body))
            if not chunk:
                raise IOError("EOF inside a message")
            body += chunk
        return (mid, cmd, flags, err), body, list(fds)

    def send(self, mid, cmd, flags, payload=b"", err=0, fds=()):
        msg = struct.pack("<HHIII", mid, cmd, 16 + len(payload), flags, err) + payload
        if fds:
            self.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.sock.sendall(msg)

    def request(self, cmd, payload):
        """A request of ours (DMA_READ/DMA_WRITE); serves the client's requests meanwhile."""
        mid = self.next_id
        self.next_id = 0x8000 + (self.next_id + 1) % 0x8000
        self.send(mid, cmd, 0, payload)
        while True:
            m = self.recv()
            if m is None:
                raise EOFError
            (rid, rcmd, flags, err), body, fds = m
            if flags & 0xF == REPLY:
                if rid != mid or rcmd != cmd:
                    raise IOError("reply %d/%d to request %d/%d" % (rid, rcmd, mid, cmd))
                return (err if flags & ERROR else 0), body
            self.handle(m)

    # -- DMA --
    def find(self, addr, length):
        for a, size, mem in self.maps:
            if a <= addr and addr + length <= a + size:
                return a, mem
        return None, None

    def dma_write(self, addr, data):
        base, mem = self.find(addr, len(data))
        if base is None:
            return "no mapping"
        if mem is not None:
            mem[addr - base: addr - base + len(data)] = data
            return "fd"
        chunk = self.chunk()
        for o in range(0, len(data), chunk):
            part = data[o: o + chunk]
            err, _ = self.request(DMA_WRITE, struct.pack("<QQ", addr + o, len(part)) + part)
            if err:
                return "DMA_WRITE error %d" % err
        return "message"

    def dma_read(self, addr, length):
        base, mem = self.find(addr, length)
        if base is None:
            return "no mapping", None
        if mem is not None:
            return "fd", bytes(mem[addr - base: addr - base + length])
        out, chunk = b"", self.chunk()
        for o in range(0, length, chunk):
            n = min(chunk, length - o)
            err, body = self.request(DMA_READ, struct.pack("<QQ", addr + o, n))
            if err or len(body) != 16 + n:
                return "DMA_READ error %d (%d bytes)" % (err, len(body)), None
            out += body[16:]
        return "message", out

    def chunk(self):
        return min(self.regs[0x28], MAX_LEN) or 4096

    def command(self, cmd):
        addr = self.regs[0x04] | self.regs[0x08] << 32
        length, seed = self.regs[0x0C], self.regs[0x10]
        name = {1: "fill", 2: "sum", 3: "read"}.get(cmd)
        how = None
        if name is None:
            how = "unknown command %d" % cmd
        elif not 1 <= length <= MAX_LEN:
            how = "length %d" % length
        elif not struct.unpack_from("<H", self.cfg, 4)[0] & 0x4:
            how = "bus mastering off"
        elif cmd == 1:
            how = self.dma_write(addr, PATTERN[seed & 0xFF: (seed & 0xFF) + length])
        elif cmd == 3:
            how, _ = self.dma_read(addr, length)
        else:
            how, data = self.dma_read(addr, length)
            self.regs[0x18] = sum(data) & 0xFFFFFFFF if data is not None else 0xFFFFFFFF
        ok = how in ("fd", "message")
        self.done += 1
        if not ok:
            self.failed += 1
            self.regs[0x24] += 1
            if cmd == 2:
                self.regs[0x18] = 0xFFFFFFFF
        if not QUIET or not ok:
            log("%s %d bytes at %#x %s" % (name or "command", length, addr, ("by " + how) if ok else "failed: " + how))
        self.regs[0x20] += 1
        self.raise_intx()

    def raise_intx(self):
        self.regs[0x1C] = 1
        self.cfg[6] |= 0x08  # Status: Interrupt Status
        self.signal()

    def signal(self):
        """Signals a pending INTx unless Interrupt Disable is set or (-a) the line is masked."""
        if self.intx is None or self.cfg[5] & 0x04 or not self.regs[0x1C] or self.masked:
            return
        os.write(self.intx, struct.pack("<Q", 1))
        self.masked = AUTOMASK

    def unmasked(self):
        """The client's unmask eventfd fired (the guest's EOI): signal again if still pending."""
        os.read(self.unmask, 8)
        self.unmasks += 1
        self.masked = False
        self.signal()

    # -- the client's requests --
    def handle(self, m):
        (mid, cmd, flags, _), body, fds = m
        debug("request %d cmd %d, %d bytes, %d fds" % (mid, cmd, len(body), len(fds)))
        try:
            reply = self.serve(cmd, body, fds)
            err, out, out_fds = 0, reply, ()
            if isinstance(reply, tuple):
                out, out_fds = reply
        except OSError as e:  # a request we refuse: an error reply
            err, out, out_fds = e.errno or EINVAL, b"", ()
        if not flags & NO_REPLY:
            self.send(mid, cmd, REPLY | (ERROR if err else 0), out, err, out_fds)
        if cmd == REGION_WRITE and not err:
            self.after_write()

    def serve(self, cmd, body, fds):
        if cmd == VERSION:
            major, minor = struct.unpack_from("<HH", body)
            if major != 0:
                raise OSError(ENOTSUP, "version")
            caps = json.dumps({"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1 << 20}}).encode() + b"\0"
            return struct.pack("<HH", 0, min(minor, 2)) + caps
        if cmd == DMA_MAP:
            argsz, flags, offset, addr, size = struct.unpack_from("<IIQQQ", body)
            mem = None
            if fds:
                mem = mmap.mmap(fds[0], size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
                for f in fds:
                    os.close(f)
            self.maps.append([addr, size, mem])
            log("dma map %#x-%#x %s" % (addr, addr + size - 1, "with an fd" if mem is not None else "without an fd"))
            return b""
        if cmd == DMA_UNMAP:
            argsz, flags, addr, size = struct.unpack_from("<IIQQ", body)
            self.maps = [m for m in self.maps if not (m[0] == addr and m[1] == size) and not flags & 2]
            return struct.pack("<IIQQ", 24, flags, addr, size)
        if cmd == GET_INFO:
            return struct.pack("<IIII", 16, 0x3, NUM_REGIONS, NUM_IRQS)
        if cmd == GET_REGION_INFO:
            argsz, flags, index = struct.unpack_from("<III", body)
            size, rflags = {0: (BAR0_SIZE, 0x3), CONFIG_REGION: (256, 0x3)}.get(index, (0, 0))
            if index >= NUM_REGIONS:
                raise OSError(EINVAL, "region")
            return struct.pack("<IIIIQQ", 32, rflags, index, 0, size, 0)
        if cmd == GET_IRQ_INFO:
            argsz, flags, index = struct.unpack_from("<III", body)
            if index >= NUM_IRQS:
                raise OSError(EINVAL, "irq index")
            flags = 0x7 if index == 0 and AUTOMASK else 0x1
            return struct.pack("<IIII", 16, flags, index, 1 if index == 0 else 0)
        if cmd == SET_IRQS:
            argsz, flags, index, start, count = struct.unpack_from("<IIIII", body)
            if index == 0 and flags & 0x24 == 0x24 and count == 1 and fds:
                self.intx = fds[0]
                self.masked = False
                log("intx eventfd set")
            elif index == 0 and flags & 0x14 == 0x14 and count == 1 and fds and AUTOMASK:
                self.unmask = fds[0]
                log("intx unmask eventfd set")
            elif index == 0 and (count == 0 or flags & 0x1):
                for f in (self.intx, self.unmask):
                    if f is not None:
                        os.close(f)
                self.intx = self.unmask = None
                log("intx off")
            else:
                for f in fds:
                    os.close(f)
            return b""
        if cmd == REGION_READ:
            offset, region, count = struct.unpack_from("<QII", body)
            return struct.pack("<QII", offset, region, count) + self.read(region, offset, count)
        if cmd == REGION_WRITE:
            offset, region, count = struct.unpack_from("<QII", body)
            data = body[16: 16 + count]
            if len(data) != count:
                raise OSError(EINVAL, "short write")
            self.write(region, offset, data)
            return struct.pack("<QII", offset, region, count)
        if cmd == DEVICE_RESET:
            self.regs = {o: 0 for o in self.regs}
            self.cfg[4:8] = b"\0\0\0\0"
            return b""
        raise OSError(ENOTSUP, "command %d" % cmd)

    def read(self, region, offset, count):
        if region == CONFIG_REGION and offset + count <= 256:
            return bytes(self.cfg[offset: offset + count])
        if region == 0 and count == 4 and offset % 4 == 0 and offset < BAR0_SIZE:
            return struct.pack("<I", 0x54554656 if offset == 0 else self.regs.get(offset, 0))
        raise OSError(EINVAL, "read")

    def write(self, region, offset, data):
        self.pending = None
        if region == CONFIG_REGION and offset + len(data) <= 256:
            for i, b in enumerate(data):
                o = offset + i
                if o in (4, 5):  # Command
                    was_disabled = self.cfg[5] & 0x04
                    self.cfg[o] = b & (0x07 if o == 4 else 0x04)
                    if o == 5 and was_disabled and not b & 0x04:
                        self.pending = "reassert"  # signal() sends it if one is pending
                elif o == 0x3C:  # Interrupt Line
                    self.cfg[o] = b
            return
        if region == 0 and len(data) == 4 and offset % 4 == 0 and offset < BAR0_SIZE:
            v = struct.unpack("<I", data)[0]
            if offset in (0x04, 0x08, 0x0C, 0x10, 0x28):
                self.regs[offset] = v
            elif offset == 0x14:
                self.pending = v
            elif offset == 0x1C and v & 1:
                self.regs[0x1C] = 0
                self.cfg[6] &= ~0x08 & 0xFF
            return
        raise OSError(EINVAL, "write")

    def after_write(self):
        """A command runs after the write that asked for it has been answered, as a device's DMA would."""
        p, self.pending = self.pending, None
        if p == "reassert":
            self.signal()
        elif p is not None:
            self.command(p)


def main():
    if len(ARGS) != 1:
        print(__doc__.split("\n")[0], file=sys.stderr)
        return 2
    path = ARGS[0]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    conn, _ = server.accept()
    server.close()
    os.unlink(path)
    dev = Device(conn)
    try:
        while True:
            waiting = [conn] + ([dev.unmask] if dev.unmask is not None else [])
            ready, _, _ = select.select(waiting, [], [])
            if dev.unmask is not None and dev.unmask in ready:
                dev.unmasked()
            if conn not in ready:
                continue
            m = dev.recv()
            if m is None:
                break
            dev.handle(m)
    except EOFError:
        pass
    except (IOError, struct.error) as e:
        log("protocol error: %s" % e)
        return 1
    log("client gone after %d commands, %d failed%s" % (dev.done, dev.failed, ", %d unmasks" % dev.unmasks if AUTOMASK else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
