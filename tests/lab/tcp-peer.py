#!/usr/bin/env python3
"""The lab host's end of a guest's netbench (firmware/initramfs/init, swiftvmm.test=netbench
swiftvmm.recv=1): receives one TCP connection on ADDR:5001 until the guest closes it, then
connects to GUEST:5002 and sends MIB MiB; then waits for the next boot's, until killed (a
boot the lab lost is run again). Prints one line per direction and boot:
  tcp-peer: received BYTES bytes in SECONDS s
  tcp-peer: sent BYTES bytes in SECONDS s
or what went wrong. Every wait is bounded (a guest that died mid-transfer sends no FIN),
so a lost boot does not hold the peer.

usage: tcp-peer.py ADDR GUEST MIB"""
import socket
import sys
import time


def receive(srv):
    """One connection's bytes, or None when none came within the listener's timeout."""
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        return None
    with conn:
        conn.settimeout(30)
        got, t0 = 0, time.monotonic()
        try:
            while True:
                b = conn.recv(1 << 16)
                if not b:
                    break
                got += len(b)
        except OSError as e:
            print(f"tcp-peer: receiving: {e} after {got} bytes", flush=True)
            return got
        secs = time.monotonic() - t0
    print(f"tcp-peer: received {got} bytes in {secs:.2f} s", flush=True)
    return got


def send(guest, want, timeout):
    """Connects to GUEST:5002 (retrying until it listens, up to `timeout` s), sends `want`
    bytes and closes its side. Returns (bytes sent, monotonic time of the connection), or
    None when it never connected or the transfer failed; says which. tests/bench/
    device_bench.py times the lab host -> guest row with it too."""
    deadline = time.monotonic() + timeout
    chunk = bytes(1 << 16)
    while True:
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((guest, 5002))
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                print(f"tcp-peer: {guest}:5002 never listened", flush=True)
                return None
            time.sleep(0.3)
    with s:
        s.settimeout(30)
        sent, t0 = 0, time.monotonic()
        try:
            while sent < want:
                s.sendall(chunk)
                sent += len(chunk)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            print(f"tcp-peer: sending: {e} after {sent} bytes", flush=True)
            return None
        secs = time.monotonic() - t0
    print(f"tcp-peer: sent {sent} bytes in {secs:.2f} s", flush=True)
    return sent, t0


def main():
    addr, guest, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
    want = mib << 20
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((addr, 5001))
        srv.listen(1)
        srv.settimeout(5)
        while True:
            if receive(srv) is not None:
                send(guest, want, 120)


if __name__ == "__main__":
    main()
