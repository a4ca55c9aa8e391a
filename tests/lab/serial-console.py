#!/usr/bin/env python3
"""A round trip through a server's serial console websocket (tests/lab/compute.sh).

    serial-console.py URL --cacert CA --send 'echo x-$((6*7))' --expect 'x-42' [--timeout S]

Connects to the ws:// or wss:// URL `openstack console url show --serial` gave (RFC 6455,
written here so the test needs no websocket package), presses Enter (activates a console
that asks for it and gives a fresh prompt otherwise), types the command and waits for the
regular expression in what the guest prints after that. Presses Enter and types again every
few seconds until the timeout, in case the first keys arrived before the shell was there.
Prints every byte seen (control characters escaped) and the first match group, if any, on
a line `match: ...`; exits 0 when the expression matched, 1 otherwise.
"""

import argparse
import base64
import os
import re
import socket
import ssl
import sys
import time
import urllib.parse


class Closed(Exception):
    pass


class WebSocket:
    def __init__(self, url, cacert):
        u = urllib.parse.urlsplit(url)
        port = u.port or (443 if u.scheme == "wss" else 80)
        sock = socket.create_connection((u.hostname, port), timeout=10)
        if u.scheme == "wss":
            ctx = ssl.create_default_context(cafile=cacert)
            sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
        self.sock = sock
        key = base64.b64encode(os.urandom(16)).decode()
        target = u.path + ("?" + u.query if u.query else "")
        sock.sendall(
            (
                "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: binary\r\n\r\n" % (target, u.netloc, key)
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise Closed("closed during the handshake: %r" % buf)
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        self.status = head.split(b"\r\n")[0].decode(errors="replace")
        if " 101 " not in self.status:
            raise Closed("handshake refused: " + self.status)

    def send(self, data, opcode=2):
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            hdr = bytes([0x80 | opcode, 0x80 | n])
        else:
            hdr = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        self.sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Closed("the server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv(self, timeout):
        """The payload of the next data frame, b"" on timeout."""
        self.sock.settimeout(max(timeout, 0.01))
        try:
            b0, b1 = self._need(2)
        except (socket.timeout, ssl.SSLError) as e:
            if isinstance(e, ssl.SSLError) and "timed out" not in str(e):
                raise
            return b""
        self.sock.settimeout(10)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._need(2), "big")
        elif n == 127:
            n = int.from_bytes(self._need(8), "big")
        mask = self._need(4) if b1 & 0x80 else None
        data = self._need(n)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        op = b0 & 0x0F
        if op == 8:
            raise Closed("closed by the server")
        if op == 9:
            self.send(data, 10)
            return b""
        return data if op in (0, 1, 2) else b""

    def close(self):
        try:
            self.send((1000).to_bytes(2, "big"), 8)
            self.sock.close()
        except OSError:
            pass


def login(ws, user, password, t0, limit):
    """Log in at a getty on the console; returns (what happened, the bytes seen)."""
    seen = b""

    def settled():
        # A prompt waits for input: nothing more arrives for a moment. Output that only paused
        # after a "$" or "#" (a frame can end anywhere; a Debian run on 2026-12-02 took such
        # output for a shell prompt and typed its command at the getty) goes on. A shell prompt
        # also ends in "$ " or "# " with nothing after it, not even a newline.
        nonlocal seen
        more = ws.recv(0.7)
        seen += more
        return not more

    def until(rx, secs):
        nonlocal seen
        end = time.monotonic() + secs
        start = len(seen)
        while time.monotonic() < end and time.monotonic() - t0 < limit:
            seen += ws.recv(min(0.5, end - time.monotonic()))
            m = re.search(rx, seen[start:])
            if m and settled():
                return m  # settled: nothing was added, so m still ends at the end
        return None

    # The console's backlog comes first on connect: the screen as it was, which may end in a
    # shell prompt from before the guest's reboot. Only what answers our Enter counts.
    drained = time.monotonic() + 5
    while time.monotonic() < drained and not settled():
        pass
    while time.monotonic() - t0 < limit:
        ws.send(b"\r")
        m = until(rb"(login: ?\Z)|([$#] \Z)", 3)
        if not m:
            continue
        if m.group(2):
            return "already logged in (a shell prompt)", seen
        ws.send(user.encode() + b"\r")
        if not until(rb"[Pp]assword: ?$", 15):
            continue
        ws.send(password.encode() + b"\r")
        m = until(rb"(Login incorrect)|([$#] \Z)", 30)
        if m and m.group(2):
            return "logged in as %s (%.2f s)" % (user, time.monotonic() - t0), seen
        if m:
            return None, seen
    return None, seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--cacert")
    ap.add_argument("--send", required=True)
    ap.add_argument("--expect", required=True)
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--retype", type=float, default=4, help="seconds between attempts")
    ap.add_argument("--login", help="USER:PASSWORD to give a getty's login prompt first")
    a = ap.parse_args()
    want = re.compile(a.expect.encode())
    t0 = time.monotonic()
    try:
        ws = WebSocket(a.url, a.cacert)
    except (OSError, Closed) as e:
        print("connect: %s" % e)
        return 1
    print("handshake: %s (%.2f s)" % (ws.status, time.monotonic() - t0))
    seen = b""
    if a.login:
        user, _, password = a.login.partition(":")
        try:
            what, seen = login(ws, user, password, t0, a.timeout)
        except (OSError, Closed) as e:
            what = None
            print("error: %s" % e)
        if not what:
            print("login: failed")
            print("seen: " + seen.decode(errors="replace").encode("unicode_escape").decode()[-1500:])
            ws.close()
            return 1
        print("login: " + what)
    mark = 0
    next_type = 0.0
    ok = False
    try:
        while True:
            now = time.monotonic() - t0
            if now >= a.timeout:
                break
            if now >= next_type:
                ws.send(b"\r")
                # let the shell print its prompt before the command arrives
                end = time.monotonic() + 0.5
                while time.monotonic() < end:
                    seen += ws.recv(end - time.monotonic())
                mark = len(seen)
                ws.send(a.send.encode() + b"\r")
                next_type = time.monotonic() - t0 + a.retype
            seen += ws.recv(min(0.5, a.timeout - now))
            m = want.search(seen, mark)
            if m:
                ok = True
                print("match: %s (%.2f s)" % (m.group(1 if m.groups() else 0).decode(errors="replace"),
                                              time.monotonic() - t0))
                break
    except (OSError, Closed) as e:
        print("error: %s" % e)
    ws.close()
    text = seen.decode(errors="replace")
    print("seen: " + text.encode("unicode_escape").decode()[-1500:])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
