#!/usr/bin/env python3
"""Watch the lab's QEMU from outside: say why a lab host stopped, where its CPUs were.

Usage: lab-watch.py QMP_SOCKET HEARTBEAT_FILE STALL_SECONDS CPUS VERDICT_FILE

Run by scripts/lab beside QEMU. It connects to QEMU's QMP socket and asks QEMU to pause
instead of exiting when the lab host shuts down or resets (set-action shutdown=pause),
so the CPUs still hold their state when it looks:

- The lab host powered off (SHUTDOWN, reason guest-shutdown): the normal end; QEMU is
  told to quit.
- The lab host reset itself (SHUTDOWN, reason guest-reset: a triple fault, or a reboot
  after a panic): what QEMU says of its CPUs is printed (registers, local APICs), then
  QEMU is told to quit, and "reset" goes to VERDICT_FILE.
- The lab host stopped writing its heartbeat (its init writes its uptime to the second
  serial port every 5 s) for STALL_SECONDS, once it had begun: the same report, and
  "stalled N" goes to VERDICT_FILE.

Everything it prints goes to stderr, each line prefixed "lab-watch: ". If it cannot reach
QEMU within 30 s it says so and exits; QEMU then behaves as without it.
"""
import json
import os
import select
import socket
import sys
import time


def say(msg):
    for line in str(msg).rstrip("\n").split("\n"):
        sys.stderr.write(f"lab-watch: {line}\n")
    sys.stderr.flush()


class QMP:
    def __init__(self, path):
        deadline = time.monotonic() + 30
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buf = b""
        self.events = []
        self.read_message(10)  # the greeting
        self.execute("qmp_capabilities")

    def read_message(self, timeout):
        """One JSON message, or None after timeout seconds."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.s], [], [], left)[0]:
                return None
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("QEMU closed its QMP socket")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd, **args):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            m = self.read_message(10)
            if m is None:
                raise TimeoutError(f"no answer to {cmd}")
            if "event" in m:
                self.events.append(m)
            elif "return" in m or "error" in m:
                return m

    def hmp(self, line):
        r = self.execute("human-monitor-command", **{"command-line": line})
        return r.get("return", json.dumps(r.get("error")))


def report(qmp, cpus):
    for c in ["info cpus", "info registers -a"] + [f"info lapic {i}" for i in range(cpus)]:
        try:
            text = qmp.hmp(c)
            # The FPU and vector registers and the debug registers say nothing here.
            text = "\n".join(l for l in text.split("\n") if not l.startswith(("FPR", "YMM", "XMM", "ZMM", "FCW", "DR", "Opmask")))
            say(f"---- {c} ----\n{text}")
        except (OSError, EOFError, TimeoutError, ValueError) as e:
            say(f"---- {c}: no answer ({e}) ----")


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    path, heartbeat, stall, cpus, verdict = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    try:
        qmp = QMP(path)
        qmp.execute("set-action", shutdown="pause")
    except (OSError, EOFError, TimeoutError, ValueError) as e:
        say(f"cannot watch the lab's QEMU through {path}: {e}")
        return
    def record(what, message):
        """The verdict for scripts/lab, then the report of the lab's CPUs."""
        with open(verdict, "w") as f:
            f.write(f"{what}\n")
        say(message)
        report(qmp, cpus)

    size, changed = 0, time.monotonic()
    try:
        while True:
            m = qmp.events.pop(0) if qmp.events else qmp.read_message(5)
            if m is not None and m.get("event") == "SHUTDOWN":
                reason = m.get("data", {}).get("reason", "?")
                if reason.startswith("host-"):
                    return  # QEMU stopped from outside (a signal, --timeout): not the lab's doing
                if reason != "guest-shutdown":
                    record(f"reset {reason}", f"the lab host reset itself (QEMU: {reason}: a triple fault, or a reboot after a panic); its CPUs as they were:")
                qmp.execute("quit")
                return
            try:
                now_size = os.stat(heartbeat).st_size
            except OSError:
                now_size = 0
            now = time.monotonic()
            if now_size != size:
                size, changed = now_size, now
            elif size > 0 and now - changed >= stall:
                record(f"stalled {int(now - changed)}", f"the lab host stopped: no heartbeat for {int(now - changed)} s; its CPUs:")
                qmp.execute("quit")
                return
    except (OSError, EOFError, TimeoutError, ValueError):
        return  # QEMU went away: nothing left to watch


if __name__ == "__main__":
    main()
