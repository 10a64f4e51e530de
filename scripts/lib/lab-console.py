#!/usr/bin/env python3
"""Pass the lab host's console through, live and byte by byte, minus its exit marker.

Usage: lab-console.py STATUSFILE      (console on stdin, output on stdout)

The lab init ends with "SWIFTVMM-LAB-EXIT=<status>\\r\\n". Every such marker (with
digits and a line end) is removed from the stream; the status of the last one is written
to STATUSFILE. Bytes that might start a marker are held back until the marker is
complete or ruled out, or for at most HOLD seconds, so interactive prompts are not
delayed (the lab init writes the marker with a single write).
"""
import os
import re
import select
import sys

MARKER = b"SWIFTVMM-LAB-EXIT="
FULL = re.compile(rb"SWIFTVMM-LAB-EXIT=(\d{1,3})\r*\n")
HOLD = 0.2


def split(buf):
    """Return (bytes safe to print now, bytes to hold, status or None)."""
    out, status = bytearray(), None
    while True:
        i = buf.find(MARKER)
        if i < 0:
            break
        m = FULL.match(buf, i)
        if m:
            out += buf[:i]
            status = int(m.group(1))
            buf = buf[m.end():]
            continue
        if re.fullmatch(rb"SWIFTVMM-LAB-EXIT=\d{0,3}\r*", buf[i:]):
            return out + buf[:i], buf[i:], status  # may still complete
        out += buf[: i + len(MARKER)]
        buf = buf[i + len(MARKER):]
    # Hold the longest tail that is a proper prefix of the marker.
    for k in range(min(len(MARKER) - 1, len(buf)), 0, -1):
        if buf.endswith(MARKER[:k]):
            return out + buf[:-k], buf[-k:], status
    return out + buf, b"", status


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    status_file = sys.argv[1]
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    held = b""

    def emit(data):
        while data:
            data = data[os.write(fd_out, data):]

    while True:
        ready, _, _ = select.select([fd_in], [], [], HOLD if held else None)
        if not ready:  # nothing more came: what we held was not a marker
            emit(held)
            held = b""
            continue
        chunk = os.read(fd_in, 65536)
        if not chunk:
            break
        now, held, status = split(held + chunk)
        if status is not None:
            with open(status_file, "w") as f:
                f.write(f"{status}\n")
        emit(now)
    emit(held)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)
