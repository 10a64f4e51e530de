#!/usr/bin/env python3
"""Writes a tiny ELF64 "kernel" with a PVH entry note whose entry executes UD2 with an
empty IDT: #UD -> #GP -> #DF -> triple fault. Used to check that swiftvmm reports a
guest crash (status 122, "triple fault", RIP) instead of hanging."""
import struct, sys

ENTRY = 0x200000
note = struct.pack("<III4sI", 4, 4, 18, b"Xen\0", ENTRY)  # XEN_ELFNOTE_PHYS32_ENTRY = 18
code = b"\x0f\x0b"  # ud2
ehdr = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,
                   2, 62, 1, ENTRY, 64, 0, 0, 64, 56, 2, 64, 0, 0)
load = struct.pack("<IIQQQQQQ", 1, 5, 0x1000, ENTRY, ENTRY, len(code), 0x1000, 0x1000)
pnote = struct.pack("<IIQQQQQQ", 4, 4, 0x200, 0, 0, len(note), len(note), 4)
img = bytearray(0x1000 + len(code))
img[0:64] = ehdr
img[64:64 + 56] = load
img[120:120 + 56] = pnote
img[0x200:0x200 + len(note)] = note
img[0x1000:] = code
open(sys.argv[1], "wb").write(img)
