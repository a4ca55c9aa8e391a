#!/usr/bin/env bash
# Nova servers' CLI acceptance: the real `openstack` CLI (and curl for exact status codes)
# against a freshly started `yunhe serve`, booting the built-in echo guest
# (`yunhe vm guest echo`) as servers on /dev/kvm.
#   tests/openstack/compute-cli.sh
# Prints one line per check (state changes with how long they took) and ends with
# `compute-cli: N passed, M failed`; exits non-zero on failure. Skips (exit 0) without
# a usable /dev/kvm.
# Env: YUNHE_BIN (server binary), YUNHE_VENV (venv path), YUNHE_CLI_LOG (append each
# command's output there), YUNHE_SERVER_LOG (copy the server's log there on exit).
# Every server it makes is deleted; on exit the server is stopped and any `yunhe vmm`
# whose spec lies in this run's temp dir is killed (by pid), even after a failure.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
started=$(date +%s.%N)
if ! { : <>/dev/kvm; } 2>/dev/null; then
    echo "SKIPPED: /dev/kvm is missing or not accessible"
    echo "compute-cli: 0 passed, 0 failed"
    exit 0
fi
venv="$("$here/venv.sh" | tail -n1)" || { echo "venv setup failed"; echo "compute-cli: 0 passed, 1 failed"; exit 1; }
export PATH="$venv/bin:$PATH"
py="$venv/bin/python"

. "$here/start-server.sh"
. "$here/lib.sh"
bin="${YUNHE_BIN:-$_yunhe_repo/target/release/yunhe}"

passed=0 failed=0
out="$(mktemp "${TMPDIR:-/tmp}/yunhe-compute-cli.XXXXXX")"
yunhe_on_exit "rm -f '$out' '$out.h' '$out.b'"
log="${YUNHE_CLI_LOG:-}"

pass() { passed=$((passed+1)); echo "PASS $1"; }
fail() {
    failed=$((failed+1)); echo "FAIL $1"
    if [ -s "$out" ]; then { cat "$out"; echo; } | sed -e '/^\r\?$/d' -e 's/^/    | /' | tail -n 15; fi
}
keep_log() { [ -n "$log" ] && { echo "== $1"; cat "$out"; echo; } >>"$log"; return 0; }
now() { date +%s.%N; }
# dt T0 T1: seconds between two `now` readings, two decimals.
dt() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# check NAME CMD...: the command must exit 0. Its output is kept in $out.
check() {
    local name="$1"; shift
    local t0; t0=$(now)
    if "$@" >"$out" 2>&1; then pass "$name ($(dt "$t0" "$(now)") s)"; else fail "$name"; fi
    keep_log "$name: $*"
    return 0
}
# refuse NAME PATTERN CMD...: the command must fail and its output match PATTERN (grep -E).
refuse() {
    local name="$1" pattern="$2"; shift 2
    if ! "$@" >"$out" 2>&1 && grep -Eq "$pattern" "$out"; then pass "$name"; else fail "$name"; fi
    keep_log "$name: $*"
    return 0
}
# json EXPR: evaluate a Python expression on the JSON in $out (bound to `d`).
json() { "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$out" "$1"; }
# is_true NAME EXPR: a check that the JSON in $out makes EXPR True.
is_true() {
    if json "$2" 2>/dev/null | grep -qx True; then pass "$1"; else fail "$1"; fi
}
# http METHOD PATH TOKEN [curl args...]: prints the status; headers in $out.h, body in $out.b.
# PATH is below the compute endpoint ($NOVA).
http() {
    local m="$1" p="$2" t="$3"; shift 3
    curl -s -o "$out.b" -D "$out.h" -w '%{http_code}' --max-time 20 -X "$m" \
        -H 'Content-Type: application/json' -H "X-Auth-Token: $t" "$@" "$NOVA$p"
}
# expect_status NAME WANT METHOD PATH TOKEN [curl args...]
expect_status() {
    local name="$1" want="$2"; shift 2
    local got; got="$(http "$@")"
    { echo "HTTP $got (want $want): $1 $2"; cat "$out.h" "$out.b" 2>/dev/null; } >"$out"
    if [ "$got" = "$want" ]; then pass "$name"; else fail "$name"; fi
    keep_log "$name"
    return 0
}

# wait_server ID WANT [TIMEOUT]: polls GET /servers/ID every 0.2 s until its status is
# WANT with no task state (WANT=GONE: until 404). Fails at once on an unexpected ERROR.
# Prints each state seen, with the time since the start of the wait.
waiter='
import json, sys, time, urllib.error, urllib.request
base, token, sid, want, limit = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
t0, last = time.monotonic(), None
while True:
    req = urllib.request.Request(base + "/servers/" + sid, headers={
        "X-Auth-Token": token, "OpenStack-API-Version": "compute 2.73"})
    code, srv = None, None
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            code, srv = r.status, json.load(r)["server"]
    except urllib.error.HTTPError as e:
        code = e.code
    except OSError as e:
        code = type(e).__name__
    el = time.monotonic() - t0
    state = (srv["status"], srv.get("OS-EXT-STS:task_state")) if srv else ("HTTP", code)
    if state != last:
        print("%6.2f s: %s" % (el, " ".join(map(str, state))))
        last = state
    if want == "GONE" and code == 404:
        sys.exit(0)
    if srv and state == (want, None):
        sys.exit(0)
    if srv and srv["status"] == "ERROR" and want != "ERROR" and state[1] is None:
        print("fault:", json.dumps(srv.get("fault")))
        sys.exit(1)
    if el > limit:
        print("timed out after %.0f s waiting for %s" % (limit, want))
        sys.exit(1)
    time.sleep(0.2)
'
wait_server() { "$py" -c "$waiter" "$NOVA" "$TOKEN" "$1" "$2" "${3:-30}"; }

# step NAME ID WANT CMD...: runs the CLI command (must exit 0), then waits for WANT.
# One PASS/FAIL line with the command's time and the wait's time.
step() {
    local name="$1" id="$2" want="$3"; shift 3
    local t0 t1 t2
    t0=$(now)
    if ! "$@" >"$out" 2>&1; then fail "$name: the command failed"; keep_log "$name: $*"; return 0; fi
    t1=$(now)
    if wait_server "$id" "$want" >>"$out" 2>&1; then
        t2=$(now)
        pass "$name -> $want (command $(dt "$t0" "$t1") s, then $(dt "$t1" "$t2") s)"
    else
        fail "$name -> $want"
    fi
    keep_log "$name: $*"
    return 0
}
# vmm_pids ID: the pids of the `yunhe vmm` processes of server ID.
vmm_pids() {
    [ -n "$1" ] || return 0
    pgrep -f -- "vmm --spec $YUNHE_STATE/instances/$1/" | tr '\n' ' ' | sed 's/ $//'
}
# ready_lines NAME: how many times the server's console log has the echo guest's ready line.
ready_lines() { openstack console log show "$1" 2>/dev/null | grep -c 'yunhe echo guest: ready'; }
wait_healthz() {
    local n=0
    until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$YUNHE_URL/healthz")" = 200 ]; do
        n=$((n+1)); [ $n -gt 300 ] && return 1
        kill -0 "$YUNHE_PID" 2>/dev/null || return 1
        sleep 0.05
    done
}

# On exit (before start-server.sh stops the server and removes the temp dir): stop
# the server, then kill by pid every VMM whose spec lies in this run's temp dir.
vmm_cleanup() {
    local tmp="$_yunhe_tmp" p n=0
    [ -n "$tmp" ] || return 0
    if [ "$failed" -gt 0 ] && [ -f "$tmp/server.log" ]; then
        echo "# the server's log (last 30 lines):"; tail -n 30 "$tmp/server.log" | sed 's/^/    | /'
    fi
    if [ -n "${YUNHE_PID:-}" ] && kill -0 "$YUNHE_PID" 2>/dev/null; then
        kill -TERM "$YUNHE_PID" 2>/dev/null
        while kill -0 "$YUNHE_PID" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
        kill -KILL "$YUNHE_PID" 2>/dev/null
        wait "$YUNHE_PID" 2>/dev/null
        YUNHE_PID=""
    fi
    for p in $(pgrep -f -- "vmm --spec $tmp/"); do
        echo "# killing leftover VMM $p: $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null)"
        kill -KILL "$p" 2>/dev/null
    done
    n=0
    while pgrep -f -- "vmm --spec $tmp/" >/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
}
yunhe_on_exit vmm_cleanup

if ! yunhe_start_server; then
    echo "FAIL server start"
    echo "compute-cli: 0 passed, 1 failed"
    exit 1
fi
NOVA="$YUNHE_URL/compute/v2.1"
work="$_yunhe_tmp/work"
mkdir -p "$work"
echo "# yunhe at $YUNHE_URL, state $YUNHE_STATE"

# --- images, flavors, keypair ---------------------------------------------------------
check "yunhe vm guest echo -o echo.elf" "$bin" vm guest echo -o "$work/echo.elf"
check "a 1 MiB raw disk" truncate -s 1M "$work/disk.raw"
check "ssh-keygen -t ed25519" ssh-keygen -q -t ed25519 -N '' -C compute-cli -f "$work/id_ed25519"
check "openstack token issue" openstack token issue -f json
TOKEN="$(json 'd["id"]' 2>/dev/null)"
check "openstack image create --disk-format aki --container-format aki --file echo.elf k" \
    openstack image create --disk-format aki --container-format aki --file "$work/echo.elf" k -f json
kernel_id="$(json 'd["id"]' 2>/dev/null)"
check "openstack image create --disk-format raw --property kernel_id=<k> --file disk.raw img" \
    openstack image create --disk-format raw --container-format bare --property "kernel_id=$kernel_id" \
    --file "$work/disk.raw" img -f json
is_true "img is active with kernel_id" "d['status']=='active' and '$kernel_id' in json.dumps(d)"
check "openstack flavor list" openstack flavor list -f json
is_true "flavor list has m1.nano and m1.micro" '{"m1.nano","m1.micro"} <= {f["Name"] for f in d}'
check "openstack keypair create --public-key id_ed25519.pub k1" \
    openstack keypair create --public-key "$work/id_ed25519.pub" k1 -f json
is_true "keypair k1 has an MD5 fingerprint" 'd["name"]=="k1" and d["fingerprint"].count(":")==15'

# --- vm1: boot, console, the lifecycle --------------------------------------------------
check "openstack server create --image img --flavor m1.nano --key-name k1 --nic none --wait vm1" \
    openstack server create --image img --flavor m1.nano --key-name k1 --nic none --wait vm1 -f json
vm1="$(json 'd["id"]' 2>/dev/null)"
is_true "vm1 is ACTIVE after --wait" 'd["status"]=="ACTIVE" and d["key_name"]=="k1"'
if [ -n "$vm1" ]; then
    # The CLI's --wait polls every 5 s; launched_at - created shows the boot itself.
    check "server show vm1" openstack server show vm1 -f json
    json '"# vm1 created %s, launched %s" % (d.get("created_at", d.get("created")), d["OS-SRV-USG:launched_at"])' 2>/dev/null
fi
check "openstack console log show vm1" openstack console log show vm1
if grep -qx 'yunhe echo guest: ready' "$out"; then pass "console log shows the guest's ready line"
else fail "console log shows the guest's ready line"; fi

step "server stop vm1" "$vm1" SHUTOFF openstack server stop vm1
step "server start vm1" "$vm1" ACTIVE openstack server start vm1
step "server reboot vm1" "$vm1" ACTIVE openstack server reboot vm1
step "server reboot --hard vm1" "$vm1" ACTIVE openstack server reboot --hard vm1
step "server pause vm1" "$vm1" PAUSED openstack server pause vm1
step "server unpause vm1" "$vm1" ACTIVE openstack server unpause vm1
step "server suspend vm1" "$vm1" SUSPENDED openstack server suspend vm1
step "server resume vm1" "$vm1" ACTIVE openstack server resume vm1
# boot, start, soft reboot, hard reboot: four boots; resume restores, it does not boot.
n="$(ready_lines vm1)"
echo "console: $n ready lines" >"$out"
if [ "$n" = 4 ]; then pass "vm1 booted 4 times (create, start, reboot, reboot --hard), resume restored"
else fail "vm1 booted 4 times (create, start, reboot, reboot --hard), resume restored"; fi

check "server lock vm1" openstack server lock vm1
check "server show --os-compute-api-version 2.73 vm1" openstack --os-compute-api-version 2.73 server show vm1 -f json
is_true "vm1 is locked" 'd["locked"] is True'
check "server unlock vm1" openstack server unlock vm1
check "server show --os-compute-api-version 2.73 vm1" openstack --os-compute-api-version 2.73 server show vm1 -f json
is_true "vm1 is unlocked" 'd["locked"] is False'

step "server resize --flavor m1.micro vm1" "$vm1" VERIFY_RESIZE openstack server resize --flavor m1.micro vm1
step "server resize confirm vm1" "$vm1" ACTIVE openstack server resize confirm vm1
check "server show vm1" openstack server show vm1 -f json
is_true "vm1's flavor is m1.micro" '"m1.micro" in json.dumps(d["flavor"])'
step "server shelve vm1" "$vm1" SHELVED_OFFLOADED openstack server shelve vm1
step "server unshelve vm1" "$vm1" ACTIVE openstack server unshelve vm1
step "server rebuild vm1" "$vm1" ACTIVE openstack server rebuild vm1

t0=$(now)
check "server image create --name snap --wait vm1" openstack server image create --name snap --wait vm1 -f json
is_true "snapshot snap is active ($(dt "$t0" "$(now)") s with the CLI's 5 s polling)" \
    'd["status"]=="active" and d["name"]=="snap"'
snap_id="$(json 'd["id"]' 2>/dev/null)"
if wait_server "$vm1" ACTIVE >"$out" 2>&1; then pass "vm1 is ACTIVE again after the snapshot"
else fail "vm1 is ACTIVE again after the snapshot"; fi
t0=$(now)
check "server create --image snap --flavor m1.nano --nic none vm2" \
    openstack server create --image snap --flavor m1.nano --nic none vm2 -f json
vm2="$(json 'd["id"]' 2>/dev/null)"
t1=$(now)
if [ -n "$vm2" ] && wait_server "$vm2" ACTIVE >"$out" 2>&1; then
    pass "vm2 (from the snapshot) -> ACTIVE (command $(dt "$t0" "$t1") s, then $(dt "$t1" "$(now)") s)"
else fail "vm2 (from the snapshot) -> ACTIVE"; fi

# --- the serial console over its websocket ------------------------------------------
check "openstack console url show --serial vm1" openstack console url show --serial vm1 -f json
ws_url="$(json 'd["url"]' 2>/dev/null)"
case "$ws_url" in ws://*/compute/serial-console\?token=*|wss://*/compute/serial-console\?token=*) pass "the serial console URL is ws(s)://.../compute/serial-console?token=...";;
    *) fail "the serial console URL is ws(s)://.../compute/serial-console?token=...";; esac
ws_client='
import base64, os, socket, ssl, sys, time, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
sock = socket.create_connection((u.hostname, u.port or 80), timeout=10)
if u.scheme == "wss":
    sock = ssl.create_default_context().wrap_socket(sock, server_hostname=u.hostname)
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall(("GET %s?%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
              % (u.path, u.query, u.netloc, key)).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = sock.recv(4096)
    if not chunk:
        sys.exit("closed during the handshake: %r" % buf)
    buf += chunk
head, buf = buf.split(b"\r\n\r\n", 1)
status = head.split(b"\r\n")[0].decode()
print("handshake:", status)
if " 101 " not in status:
    sys.exit(1)
def frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    hdr = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
def need(n):
    global buf
    while len(buf) < n:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("the server closed the websocket")
        buf += chunk
    data, buf = buf[:n], buf[n:]
    return data
def read_frame():
    b0, b1 = need(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(need(2), "big")
    elif n == 127:
        n = int.from_bytes(need(8), "big")
    mask = need(4) if b1 & 0x80 else None
    data = need(n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return b0 & 0x0F, data
seen = b""
def read_until(needle, start, limit):
    global seen
    deadline = time.time() + limit
    while needle not in seen[start:]:
        left = deadline - time.time()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            op, data = read_frame()
        except socket.timeout:
            return False
        if op == 8:
            print("closed by the server")
            return False
        if op == 9:
            sock.sendall(frame(10, data))
        elif op in (1, 2):
            seen += data
    return True
t0 = time.time()
ok_ready = read_until(b"yunhe echo guest: ready", 0, 5)
print("ready line in the console stream:", ok_ready)
mark = len(seen)
sock.sendall(frame(2, b"ping\r"))
ok_echo = read_until(b"ping", mark, 5)
print("after ping: %r (%.2f s)" % (seen[mark:], time.time() - t0))
sock.sendall(frame(8, (1000).to_bytes(2, "big")))
sock.close()
sys.exit(0 if ok_ready and ok_echo else 1)
'
if [ -n "$ws_url" ] && "$py" -c "$ws_client" "$ws_url" >"$out" 2>&1; then
    pass "websocket console: reads the ready line, ping echoed back ($(tail -n1 "$out" | sed 's/.*(//; s/)$//'))"
else fail "websocket console: reads the ready line, ping echoed back"; fi
keep_log "websocket console"

# --- a member of another project ----------------------------------------------------
check "openstack project create demo" openstack project create demo -f json
check "openstack user create --project demo --password s3cret-Alice alice" \
    openstack user create --project demo --password s3cret-Alice alice -f json
check "openstack role add --project demo --user alice member" \
    openstack role add --project demo --user alice member
check "openstack image set --public k (the demo project boots it too)" openstack image set --public k
check "openstack image set --public img" openstack image set --public img
as_alice() {
    env -u OS_CLOUD -u OS_CLIENT_CONFIG_FILE \
        OS_AUTH_URL="$YUNHE_URL/identity" OS_IDENTITY_API_VERSION=3 OS_USERNAME=alice \
        OS_PASSWORD=s3cret-Alice OS_PROJECT_NAME=demo OS_USER_DOMAIN_NAME=Default \
        OS_PROJECT_DOMAIN_NAME=Default "$@"
}
check "openstack token issue as alice" as_alice openstack token issue -f json
alice_token="$(json 'd["id"]' 2>/dev/null)"
expect_status "alice: GET the admin's vm1 -> 404" 404 GET "/servers/$vm1" "$alice_token"
refuse "alice: openstack server show <vm1 id> fails" "No Server found|404" as_alice openstack server show "$vm1"
check "alice: openstack server list" as_alice openstack server list -f json
is_true "alice's server list does not have vm1" "'$vm1' not in [s['ID'] for s in d]"
t0=$(now)
check "alice: server create --image img --flavor m1.nano --nic none alice-vm" \
    as_alice openstack server create --image img --flavor m1.nano --nic none alice-vm -f json
alice_vm="$(json 'd["id"]' 2>/dev/null)"
t1=$(now)
if [ -n "$alice_vm" ] && wait_server "$alice_vm" ACTIVE >"$out" 2>&1; then
    pass "alice-vm -> ACTIVE (command $(dt "$t0" "$t1") s, then $(dt "$t1" "$(now)") s)"
else fail "alice-vm -> ACTIVE"; fi
check "alice: server lock alice-vm" as_alice openstack server lock alice-vm
refuse "alice: server stop alice-vm while she locked it fails with 409" "409" \
    as_alice openstack server stop alice-vm
expect_status "alice: POST os-stop on her locked server -> 409" 409 POST "/servers/$alice_vm/action" \
    "$alice_token" -d '{"os-stop": null}'
check "alice: server unlock alice-vm" as_alice openstack server unlock alice-vm
check "admin: server lock alice-vm" openstack server lock "$alice_vm"
expect_status "alice: POST os-stop on her server locked by the admin -> 409" 409 POST \
    "/servers/$alice_vm/action" "$alice_token" -d '{"os-stop": null}'
expect_status "alice: unlock of the admin's lock -> 403" 403 POST "/servers/$alice_vm/action" \
    "$alice_token" -d '{"unlock": null}'
check "admin: server unlock alice-vm" openstack server unlock "$alice_vm"
step "alice: server delete alice-vm" "$alice_vm" GONE as_alice openstack server delete alice-vm

# --- events, delete ---------------------------------------------------------------------
check "openstack server event list vm1" openstack server event list vm1 -f json
is_true "vm1's events name its actions" '{"create","stop","start","reboot","pause","unpause","suspend","resume","lock","unlock","resize","confirmResize","shelve","unshelve","rebuild","createImage"} <= {e["Action"] for e in d}'
t0=$(now)
check "openstack server delete --wait vm1" openstack server delete --wait vm1
refuse "openstack server show vm1 fails after the delete" "No Server found|404" openstack server show vm1
expect_status "GET vm1 -> 404 after the delete" 404 GET "/servers/$vm1" "$TOKEN"
if [ -n "$vm1" ] && [ -z "$(vmm_pids "$vm1")" ]; then pass "vm1's VMM is gone"; else fail "vm1's VMM is gone"; fi

# --- kill -9 of the control plane with vm2 running ------------------------------------
pid_before="$(vmm_pids "$vm2")"
ready_before="$(ready_lines vm2)"
echo "# vm2's VMM: pid $pid_before, $ready_before ready line(s)"
kill -KILL "$YUNHE_PID" 2>/dev/null
wait "$YUNHE_PID" 2>/dev/null
t0=$(now)
"$bin" serve --state-dir "$YUNHE_STATE" --listen "127.0.0.1:$YUNHE_PORT" \
    >>"$_yunhe_tmp/server.log" 2>&1 </dev/null &
YUNHE_PID=$!
if wait_healthz; then pass "yunhe serve restarted on the same state dir and port ($(dt "$t0" "$(now)") s to /healthz)"
else echo "serve did not come back" >"$out"; fail "yunhe serve restarted on the same state dir and port"; fi
if wait_server "$vm2" ACTIVE >"$out" 2>&1 && [ "$(head -n1 "$out" | awk '{print $NF}')" = None ] \
    && head -n1 "$out" | grep -q ACTIVE; then
    pass "vm2 is ACTIVE right after the restart"
else fail "vm2 is ACTIVE right after the restart"; fi
pid_after="$(vmm_pids "$vm2")"
echo "VMM pid before $pid_before, after $pid_after" >"$out"
if [ -n "$pid_before" ] && [ "$pid_after" = "$pid_before" ]; then pass "vm2 kept its VMM (pid $pid_after)"
else fail "vm2 kept its VMM"; fi
n="$(ready_lines vm2)"
echo "ready lines: $n" >"$out"
if [ "$n" = 1 ]; then pass "vm2's console log has exactly one ready line (not rebooted)"
else fail "vm2's console log has exactly one ready line (not rebooted)"; fi

# --- kill -9 of a VMM: the server is SHUTOFF within 3 s ------------------------------
# (a) vm2's VMM, re-attached by the restarted control plane.
[ -n "$pid_after" ] && kill -KILL "$pid_after" 2>/dev/null
t0=$(now)
if [ -n "$pid_after" ] && wait_server "$vm2" SHUTOFF 3 >"$out" 2>&1; then
    pass "kill -9 of a re-attached VMM: vm2 is SHUTOFF ($(dt "$t0" "$(now)") s)"
else fail "kill -9 of a re-attached VMM: vm2 is SHUTOFF within 3 s"; fi
# (b) a VMM this control plane spawned itself.
step "server start vm2" "$vm2" ACTIVE openstack server start vm2
pid="$(vmm_pids "$vm2")"
[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
t0=$(now)
if [ -n "$pid" ] && wait_server "$vm2" SHUTOFF 3 >"$out" 2>&1; then
    pass "kill -9 of a VMM the running yunhe spawned: vm2 is SHUTOFF ($(dt "$t0" "$(now)") s)"
else fail "kill -9 of a VMM the running yunhe spawned: vm2 is SHUTOFF within 3 s"; fi

# --- clean up: no VMM of this run is left ---------------------------------------------
step "server delete vm2" "$vm2" GONE openstack server delete "$vm2"
check "image delete snap" openstack image delete "${snap_id:-snap}"
n=0
while [ -n "$(pgrep -f -- "vmm --spec $_yunhe_tmp/")" ] && [ $n -lt 25 ]; do sleep 0.2; n=$((n+1)); done
left="$(pgrep -af -- "vmm --spec $_yunhe_tmp/")"
echo "$left" >"$out"
if [ -z "$left" ]; then pass "no yunhe vmm of this run is left"; else fail "no yunhe vmm of this run is left"; fi

echo "# total $(dt "$started" "$(now)") s"
echo "compute-cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
