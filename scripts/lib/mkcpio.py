#!/usr/bin/env python3
"""Write a reproducible initramfs (cpio "newc") from a spec on stdin, like the kernel's
usr/gen_init_cpio. No root needed (device nodes are only entries), every entry gets the
same mtime, owner root, and the entries are written in sorted path order.

Spec lines (paths are inside the archive, absolute; # starts a comment):
    dir   /path MODE
    file  /path MODE SOURCE
    slink /path TARGET
    nod   /path MODE c|b MAJOR MINOR

Usage: mkcpio.py OUTPUT.cpio < spec     (mtime = $SOURCE_DATE_EPOCH, default 0)
"""
import os
import stat
import sys

MTIME = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def header(ino, mode, nlink, size, rmajor, rminor, name):
    # newc: magic + 13 eight-digit hex fields, then the NUL-terminated name padded to 4.
    fields = (ino, mode, 0, 0, nlink, MTIME, size, 0, 0, rmajor, rminor, len(name) + 1, 0)
    hdr = b"070701" + b"".join(b"%08x" % f for f in fields) + name + b"\0"
    return hdr + b"\0" * (-len(hdr) % 4)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    entries = {}
    for lineno, line in enumerate(sys.stdin, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        kind, path = words[0], words[1] if len(words) > 1 else ""
        if not path.startswith("/") or path in entries:
            sys.exit(f"mkcpio: line {lineno}: bad or duplicate path {path!r}")
        try:
            if kind == "dir" and len(words) == 3:
                entries[path] = (stat.S_IFDIR | int(words[2], 8), 2, b"", 0, 0)
            elif kind == "file" and len(words) == 4:
                with open(words[3], "rb") as f:
                    data = f.read()
                entries[path] = (stat.S_IFREG | int(words[2], 8), 1, data, 0, 0)
            elif kind == "slink" and len(words) == 3:
                entries[path] = (stat.S_IFLNK | 0o777, 1, words[2].encode(), 0, 0)
            elif kind == "nod" and len(words) == 6 and words[3] in ("c", "b"):
                fmt = stat.S_IFCHR if words[3] == "c" else stat.S_IFBLK
                entries[path] = (fmt | int(words[2], 8), 1, b"", int(words[4]), int(words[5]))
            else:
                raise ValueError("unknown entry")
        except (ValueError, OSError) as e:
            sys.exit(f"mkcpio: line {lineno}: {line.strip()!r}: {e}")

    out = bytearray()
    # Sorted paths put every directory before what it holds.
    for ino, path in enumerate(sorted(entries), 1):
        mode, nlink, data, rmajor, rminor = entries[path]
        out += header(ino, mode, nlink, len(data), rmajor, rminor, path[1:].encode())
        out += data + b"\0" * (-len(data) % 4)
    out += header(0, 0, 1, 0, 0, 0, b"TRAILER!!!")
    with open(sys.argv[1], "wb") as f:
        f.write(out)


if __name__ == "__main__":
    main()
