#!/usr/bin/env python3
"""A privileged launcher for swiftvmm (README, "Running without root"), for the lab tests.

As root: opens each file at the descriptor number given, attaches a TAP queue where asked,
then execs COMMAND through setpriv as USER (no capabilities, no supplementary groups), with
exactly those descriptors inherited.

  launch-with-fds.py USER [--rw N PATH] [--ro N PATH] [--tap N IFNAME] -- COMMAND...

--rw / --ro: open PATH read-write / read-only at descriptor N.
--tap: open /dev/net/tun at N and attach it (TUNSETIFF) to TAP interface IFNAME with
       IFF_TAP | IFF_NO_PI (bare frames, what swiftvmm takes from a passed TAP).
"""
import fcntl
import os
import pwd
import struct
import sys

TUNSETIFF = 0x400454CA  # _IOW('T', 202, int), linux/if_tun.h
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def place(fd, n):
    """Moves fd to number n, inheritable."""
    if fd != n:
        os.dup2(fd, n, inheritable=True)
        os.close(fd)
    else:
        os.set_inheritable(n, True)


def main(argv):
    if len(argv) < 3 or "--" not in argv:
        sys.exit(__doc__)
    user = argv[1]
    split = argv.index("--")
    opts, command = argv[2:split], argv[split + 1:]
    i = 0
    while i < len(opts):
        kind, n, what = opts[i], int(opts[i + 1]), opts[i + 2]
        if n < 3:
            sys.exit(f"launch-with-fds: descriptor {n} is a standard stream")
        if kind == "--rw":
            place(os.open(what, os.O_RDWR), n)
        elif kind == "--ro":
            place(os.open(what, os.O_RDONLY), n)
        elif kind == "--tap":
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", what.encode(), IFF_TAP | IFF_NO_PI))
            place(fd, n)
        else:
            sys.exit(f"launch-with-fds: unknown option {kind}")
        i += 3
    entry = pwd.getpwnam(user)  # its own group, by number: Debian's nobody is in nogroup
    os.execvp("setpriv", ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
                          "--inh-caps=-all", "--bounding-set=-all"] + command)


if __name__ == "__main__":
    main(sys.argv)
