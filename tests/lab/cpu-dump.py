#!/usr/bin/env python3
"""Where a stuck lab host's CPUs are (tests/lab/lab, when the lab host failed).

    cpu-dump.py MONITOR_SOCKET [KALLSYMS] [--samples N]

Asks QEMU's human monitor (a unix socket) for every lab CPU's registers N times, 0.5 s
apart, and prints one line per CPU and sample: its instruction pointer, the lab kernel's
symbol there (from a copy of the lab's /proc/kallsyms, when given: tests/lab/lab makes
one when it builds the lab), its privilege level and whether the CPU is halted. A CPU in
an SVM guest shows the guest's registers (QEMU keeps the host's in the VM save area), so
a guest's addresses get the lab's names too: read them with that in mind. Read-only:
`info` commands change nothing in the lab. Never fails the caller: prints what it could
get.
"""

import argparse
import bisect
import re
import socket
import sys
import time


def read_until_prompt(sock, deadline):
    buf = b""
    while not buf.endswith(b"(qemu) ") and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")


def command(sock, text):
    sock.sendall(text.encode() + b"\n")
    return read_until_prompt(sock, time.monotonic() + 10)


def load_symbols(path):
    """(addresses, (name, " [module]" or "")) of the text symbols, by address."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    module = " " + parts[3] if len(parts) > 3 else ""
                    rows.append((int(parts[0], 16), (parts[2], module)))
    except OSError:
        pass
    rows.sort()
    return [r[0] for r in rows], [r[1] for r in rows]


def symbol(addrs, names, rip):
    i = bisect.bisect_right(addrs, rip) - 1
    if i < 0 or rip - addrs[i] > 0x10000:
        return "?"
    return "%s+0x%x%s" % (names[i][0], rip - addrs[i], names[i][1])


def main():
    ap = argparse.ArgumentParser(description="where a stuck lab host's CPUs are")
    ap.add_argument("monitor")
    ap.add_argument("kallsyms", nargs="?")
    ap.add_argument("--samples", type=int, default=3)
    args = ap.parse_args()
    addrs, names = load_symbols(args.kallsyms) if args.kallsyms else ([], [])
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(args.monitor)
        read_until_prompt(sock, time.monotonic() + 5)
    except OSError as e:
        print("# lab CPUs: no monitor (%s)" % e)
        return 0
    for n in range(args.samples):
        regs = command(sock, "info registers -a")
        for block in re.split(r"\r?\n(?=CPU#\d+)", regs):
            cpu = re.match(r"CPU#(\d+)", block.strip())
            rip = re.search(r"RIP=([0-9a-f]+)", block)
            if not cpu or not rip:
                continue
            value = int(rip.group(1), 16)
            cpl = re.search(r"CPL=(\d)", block)
            halted = re.search(r"HLT=1", block)
            where = symbol(addrs, names, value) if value >= 0xFFFF800000000000 else "user or guest"
            print(
                "# lab CPU %s sample %d: RIP %016x %s, CPL %s%s"
                % (
                    cpu.group(1),
                    n + 1,
                    value,
                    where,
                    cpl.group(1) if cpl else "?",
                    ", halted" if halted else "",
                )
            )
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
