#!/usr/bin/env python3
"""Polling helpers for tests/lab/compute.sh: Nova's API straight, every 0.2 s (the CLI's own
--wait polls every 5 s, which would hide how long a state change takes).

    nova.py wait ID STATUS LIMIT            until the server's status is STATUS with no task
                                            state (STATUS=GONE: until 404); prints each state
                                            seen with the seconds since the start; fails at once
                                            on an ERROR it was not waiting for
    nova.py console ID REGEX COUNT LIMIT    until the console log holds REGEX COUNT times;
                                            prints the seconds it took
    nova.py console-count ID REGEX          how many times the console log holds REGEX
    nova.py console-after ID MARK REGEX LIMIT
                                            until REGEX shows after MARK's last occurrence
                                            (the log keeps only its last 100 KiB, so counting
                                            a line over several long boots is not reliable);
                                            prints the seconds it took and the matched line

Env: NOVA (the compute endpoint, .../compute/v2.1), TOKEN; the CA through SSL_CERT_FILE;
LAB_PID (optional): the lab's process, whose end stops every wait at once (a lab host that
failed answers no more, and waiting out a long bound would only delay its rerun).
"""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

NOVA = os.environ["NOVA"]
TOKEN = os.environ["TOKEN"]


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        NOVA + path,
        data=data,
        method=method,
        headers={
            "X-Auth-Token": TOKEN,
            "OpenStack-API-Version": "compute 2.73",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError as e:
        return type(e).__name__, None


def lab_gone():
    """True when LAB_PID is set and that process has ended."""
    pid = os.environ.get("LAB_PID", "")
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def wait(sid, want, limit):
    t0, last = time.monotonic(), None
    while True:
        code, body = call("GET", "/servers/" + sid)
        srv = body["server"] if body else None
        el = time.monotonic() - t0
        state = (srv["status"], srv.get("OS-EXT-STS:task_state")) if srv else ("HTTP", code)
        if state != last:
            print("%6.2f s: %s" % (el, " ".join(map(str, state))))
            last = state
        if want == "GONE" and code == 404:
            return 0
        if srv and state == (want, None):
            return 0
        if srv and srv["status"] == "ERROR" and want != "ERROR" and state[1] is None:
            print("fault:", json.dumps(srv.get("fault")))
            return 1
        if el > limit or lab_gone():
            print("%s after %.0f s waiting for %s" % ("the lab ended" if lab_gone() else "timed out", el, want))
            return 1
        time.sleep(0.2)


def console_text(sid):
    code, body = call("POST", "/servers/%s/action" % sid, {"os-getConsoleOutput": {}})
    return body.get("output", "") if body else ""


def console(sid, pattern, count, limit):
    t0 = time.monotonic()
    rx = re.compile(pattern, re.M)
    while True:
        text = console_text(sid)
        n = len(rx.findall(text))
        el = time.monotonic() - t0
        if n >= count:
            print("%.2f" % el)
            return 0
        if el > limit or lab_gone():
            why = "the lab ended after %.0f s" % el if lab_gone() else "timed out after %.0f s" % limit
            print("%s: %d of %d; console tail:" % (why, n, count))
            print("\n".join(text.splitlines()[-25:]))
            return 1
        time.sleep(0.3)


def console_after(sid, mark, pattern, limit):
    t0 = time.monotonic()
    mrx, rx = re.compile(mark, re.M), re.compile(pattern, re.M)
    while True:
        text = console_text(sid)
        starts = [m.end() for m in mrx.finditer(text)]
        m = rx.search(text, starts[-1]) if starts else None
        el = time.monotonic() - t0
        if m:
            line = text[m.start():].splitlines()[0] if text[m.start():] else ""
            print("%.2f %s" % (el, line.strip()))
            return 0
        if el > limit or lab_gone():
            why = "the lab ended after %.0f s" % el if lab_gone() else "timed out after %.0f s" % limit
            print("%s (mark seen: %s); console tail:" % (why, bool(starts)))
            print("\n".join(text.splitlines()[-25:]))
            return 1
        time.sleep(1)


def main():
    cmd = sys.argv[1]
    if cmd == "wait":
        return wait(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    if cmd == "console":
        return console(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    if cmd == "console-after":
        return console_after(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    if cmd == "console-count":
        print(len(re.findall(sys.argv[3], console_text(sys.argv[2]), re.M)))
        return 0
    print("unknown command " + cmd)
    return 2


if __name__ == "__main__":
    sys.exit(main())
