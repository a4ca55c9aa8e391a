#!/usr/bin/env bash
# The compute flow with Linux guests, in the lab (docs/lab.md, "The compute flow"): one lab runs
# `yunhe serve` (tests/lab/compute-inside.sh), the real `openstack` CLI on this machine drives it
# through a forwarded port, and the servers are the micro kernel with tiny's initramfs.
#
#   tests/lab/compute.sh
#
# One PASS/FAIL line per check; each state change says how long it took and the bound it must
# converge within; ends with `lab-compute: N passed, M failed` and exits non-zero on failure.
# Env: YUNHE_BIN (default target/release/yunhe), OUT (recipe outputs, default out/; missing
# recipes are built), YUNHE_VENV, LAB_COMPUTE_DEBIAN=0 (skip the server on Debian's stock
# kernel), LAB_COMPUTE_KEEP=DIR (copy the lab's logs there), LAB_COMPUTE_JAIL=0 (serve --no-jail).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
started=$(date +%s.%N)
bin=${YUNHE_BIN:-$root/target/release/yunhe}
OUT=${OUT:-$root/out}

passed=0 failed=0
work=$(mktemp -d "${TMPDIR:-/tmp}/yunhe-lab-compute.XXXXXX")
share=$work/share
mkdir -p "$share/cmd"
out=$work/last
: >"$out"
lab_pid=""

now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() {
    failed=$((failed + 1)); echo "FAIL $1"
    if [ -s "$out" ]; then sed -e '/^\r\?$/d' -e 's/^/    | /' "$out" | tail -n 20; fi
}
# check NAME CMD...: the command must exit 0; its output is kept in $out.
check() {
    local name=$1; shift
    local t0; t0=$(now)
    if "$@" >"$out" 2>&1; then pass "$name ($(dt "$t0" "$(now)") s)"; else fail "$name"; fi
}
# json EXPR: a Python expression on the JSON in $out (bound to d).
json() { "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$out" "$1"; }
is_true() { if json "$2" 2>/dev/null | grep -qx True; then pass "$1"; else fail "$1"; fi; }
# console_has NAME REGEX: the console log of $cur (already in $work/console) matches REGEX.
console_has() {
    if grep -Eq -- "$2" "$work/console"; then pass "$1"
    else cp "$work/console" "$out"; fail "$1"; fi
}
# console_has_line NAME TEXT: a console line starts with TEXT (fixed string).
console_has_line() {
    if cut -c1-${#2} "$work/console" | grep -Fxq -- "$2"; then pass "$1"
    else cp "$work/console" "$out"; fail "$1"; fi
}

cleanup() {
    local rc=$? n=0
    : >"$share/done" 2>/dev/null
    if [ -n "$lab_pid" ]; then
        while kill -0 "$lab_pid" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
        if kill -0 "$lab_pid" 2>/dev/null; then
            echo "# the lab did not end 60 s after done; stopping it"
            kill -TERM "$lab_pid" 2>/dev/null
        fi
        wait "$lab_pid" 2>/dev/null
    fi
    if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
        echo "# the lab's output:"; sed 's/^/    | /' "$work/lab.out" 2>/dev/null | tail -n 20
        # tests/lab/lab's marker, unindented: scripts/test runs the suite again after it
        grep -a "^yunhe-lab: the lab host failed" "$work/lab.out" 2>/dev/null | head -n 1
        if [ -f "$share/logs/serve.log" ]; then
            echo "# serve's log (last 30 lines):"; tail -n 30 "$share/logs/serve.log" | sed 's/^/    | /'
        fi
        for f in "$share"/logs/*.vmm.log; do
            [ -s "$f" ] || continue
            echo "# $(basename "$f") (last 10 lines):"; tail -n 10 "$f" | sed 's/^/    | /'
        done
    fi
    if [ -n "${LAB_COMPUTE_KEEP:-}" ]; then
        mkdir -p "$LAB_COMPUTE_KEEP" && cp -a "$share/." "$work/lab.out" "$work/lab-console.log" "$LAB_COMPUTE_KEEP/" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

finish() {
    echo "# total $(dt "$started" "$(now)") s"
    echo "lab-compute: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# --- inputs: binary, images, venv ---------------------------------------------------------
[ -x "$bin" ] || { echo "FAIL no yunhe binary at $bin (cargo build --release)"; failed=1; finish; }
for r in micro tiny; do
    if [ ! -f "$OUT/$r/manifest.json" ]; then
        echo "# building image recipe $r into $OUT/$r"
        "$root/image-recipes/build" "$r" "$OUT/$r" >"$out" 2>&1 || { fail "image-recipes/build $r"; finish; }
    fi
done
kernel=$OUT/micro/bzImage ramdisk=$OUT/tiny/tiny.cpio.gz disk=$OUT/tiny/tiny-root.img

# --- the lab, serve inside -----------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The lab's /tmp (a tmpfs of 90 % of its RAM) holds the state dir: a 1 GiB root disk per
# server is sparse, so the disk allocation ratio lets three servers fit; uploads keep
# 64 MiB free instead of 1 GiB.
serve_args="--disk-allocation-ratio 8 --min-free-space 64M"
[ "${LAB_COMPUTE_JAIL:-1}" = 0 ] && serve_args+=" --no-jail"
lab_wait=900
t0=$(now)
"$here/lab" run --out "$share" --fwd "$port:8080" --mem 3072 --cpus 2 --timeout $((lab_wait + 60)) \
    --bin "$bin" --console "$work/lab-console.log" \
    "$here/compute-inside.sh" "$port" "$lab_wait" $serve_args >"$work/lab.out" 2>&1 &
lab_pid=$!
# while the lab boots: the CLI's venv, and the lab's own kernel (for the Debian server)
venv=$("$root/tests/openstack/venv.sh" | tail -n1) || { fail "venv"; finish; }
py=$venv/bin/python
export PATH="$venv/bin:$PATH"
debian_kernel=""
if [ "${LAB_COMPUTE_DEBIAN:-1}" != 0 ]; then
    lab_dir=$("$here/lab" build 2>/dev/null | tail -n1)
    [ -f "$lab_dir/vmlinuz" ] && debian_kernel=$lab_dir/vmlinuz
fi
n=0
until [ -e "$share/ready" ] || [ -e "$share/failed" ] || ! kill -0 "$lab_pid" 2>/dev/null || [ $n -ge 1200 ]; do
    sleep 0.1; n=$((n + 1))
done
if [ ! -e "$share/ready" ]; then
    cp "$work/lab.out" "$out"; fail "the lab started yunhe serve"; finish
fi
pass "the lab started yunhe serve ($(dt "$t0" "$(now)") s from the lab's start)"

export SSL_CERT_FILE=$share/ca.pem REQUESTS_CA_BUNDLE=$share/ca.pem OS_CACERT=$share/ca.pem
export CURL_CA_BUNDLE=$share/ca.pem
sed "s|^\( *cacert:\).*|\1 \"$share/ca.pem\"|" "$share/clouds.yaml" >"$work/clouds.yaml"
export OS_CLIENT_CONFIG_FILE=$work/clouds.yaml OS_CLOUD=yunhe
URL=https://127.0.0.1:$port
export NOVA=$URL/compute/v2.1
check "GET /healthz through the forwarded port, TLS verified with the lab's CA" \
    curl -sf --max-time 20 "$URL/healthz"

# labsh LIMIT SCRIPT: run SCRIPT in the lab (with compute-inside.sh's functions); its output
# on stdout; its status, or 124 when it did not finish within LIMIT seconds.
# (called in $(...) too, where a counter would not survive: each command gets a fresh name)
labsh() {
    local limit=$1 b n=0; shift
    b=$(mktemp -u "$share/cmd/c.XXXXXXXX")
    printf '%s\n' "$*" >"$b.tmp" && mv "$b.tmp" "$b.sh"
    while [ ! -e "$b.rc" ]; do
        if [ $n -ge $((limit * 10)) ] || ! kill -0 "$lab_pid" 2>/dev/null; then
            echo "lab command did not finish in ${limit}s: $*"; return 124
        fi
        sleep 0.1; n=$((n + 1))
    done
    cat "$b.out"
    return "$(cat "$b.rc")"
}

# lab_alive: ends the run (one FAIL) when the lab is gone, instead of a FAIL per check left.
lab_alive() {
    kill -0 "$lab_pid" 2>/dev/null && return 0
    tail -n 5 "$work/lab.out" >"$out"; fail "the lab is still running"; finish
}
wait_server() { "$py" "$here/nova.py" wait "$1" "$2" "$3"; }
# step NAME ID WANT BOUND CMD...: the CLI command (must exit 0), then WANT within BOUND seconds.
step() {
    local name=$1 id=$2 want=$3 bound=$4; shift 4
    local t0 t1 t2
    t0=$(now)
    if ! "$@" >"$out" 2>&1; then fail "$name: the command failed"; return 1; fi
    t1=$(now)
    if wait_server "$id" "$want" "$bound" >>"$out" 2>&1; then
        t2=$(now)
        pass "$name -> $want in $(dt "$t0" "$t2") s (command $(dt "$t0" "$t1") s, then $(dt "$t1" "$t2") s; bound $bound s)"
    else
        fail "$name -> $want within $bound s"; return 1
    fi
}
# ready NAME ID COUNT BOUND: the console shows `yunhe-tiny: ready` COUNT times within BOUND s.
ready() {
    local t
    if t=$("$py" "$here/nova.py" console "$2" '^yunhe-tiny: ready' "$3" "$4" 2>&1); then
        pass "$1: console shows yunhe-tiny: ready (#$3) $t s later (bound $4 s)"
    else echo "$t" >"$out"; fail "$1: console shows yunhe-tiny: ready (#$3) within $4 s"; fi
}
console_log() { openstack console log show "$1" >"$work/console" 2>&1; }
count() { grep -Ec -- "$1" "$work/console"; }
# console_roundtrip NAME ID SEND EXPECT: a fresh serial console URL, then a websocket round trip.
console_roundtrip() {
    local name=$1 id=$2 url t0; t0=$(now)
    url=$(openstack console url show --serial "$id" -f value -c url 2>"$out") || { fail "$name: console url"; return 1; }
    if "$py" "$here/serial-console.py" "$url" --cacert "$share/ca.pem" --send "$3" --expect "$4" \
        --timeout 20 >"$out" 2>&1; then
        pass "$name ($(grep '^match:' "$out" | sed 's/^match: //'); $(dt "$t0" "$(now)") s with the URL)"
    else fail "$name"; return 1; fi
}
# guest_uptime ID: the guest's uptime in seconds, read through the serial console.
guest_uptime() {
    local url
    url=$(openstack console url show --serial "$1" -f value -c url 2>/dev/null) || return 1
    "$py" "$here/serial-console.py" "$url" --cacert "$share/ca.pem" \
        --send "echo up=\$(cut -d' ' -f1 /proc/uptime)=" --expect 'up=([0-9.]+)=' --timeout 20 \
        >"$out" 2>&1 || return 1
    sed -n 's/^match: \([0-9.]*\) .*/\1/p' "$out"
}

# Bounds (seconds) each state change must converge within, after its CLI command returned:
# about three times the slowest seen on a 2-core machine shared with other builds (docs/lab.md).
B_READY=45        # a boot of micro + tiny, ACTIVE to `yunhe-tiny: ready` on the console
B_SNAPSHOT=90     # server image create --wait, the whole command (1 GiB hashed)

# --- images, key pair, user data ----------------------------------------------------------
check "openstack token issue (admin's password)" openstack token issue -f json
TOKEN=$(json 'd["id"]' 2>/dev/null); export TOKEN
# Every password check is an Argon2 hash, about 8 s under the lab's emulated CPU: the CLI
# authenticates with that token from here on (Keystone's token method, no hash).
"$py" - "$work/clouds.yaml" "$TOKEN" <<'EOF'
import sys, yaml
path, token = sys.argv[1], sys.argv[2]
c = yaml.safe_load(open(path))
cloud = dict(c["clouds"]["yunhe"])
auth = cloud["auth"]
cloud["auth_type"] = "token"
cloud["auth"] = {"auth_url": auth["auth_url"], "token": token, "project_name": auth["project_name"],
                 "project_domain_name": auth["project_domain_name"]}
c["clouds"]["yunhe-token"] = cloud
yaml.safe_dump(c, open(path, "w"))
EOF
export OS_CLOUD=yunhe-token
check "image create micro bzImage (aki)" openstack image create --disk-format aki --container-format aki \
    --file "$kernel" --property os_distro=yunhe-micro yunhe-micro-bzimage -f json
kernel_id=$(json 'd["id"]' 2>/dev/null)
check "image create tiny initramfs (ari)" openstack image create --disk-format ari --container-format ari \
    --file "$ramdisk" yunhe-tiny-initramfs -f json
ramdisk_id=$(json 'd["id"]' 2>/dev/null)
# the disk image as the tiny recipe's manifest describes it, links replaced by these ids
props=$("$py" - "$OUT/tiny/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
img = next(i for i in m["images"] if i["file"] == "tiny-root.img")
print(img["disk_format"], img["container_format"])
for k, v in img["properties"].items():
    print("%s=%s" % (k, v))
EOF
)
read -r disk_format container_format <<<"$(head -n1 <<<"$props")"
prop_args=()
while read -r p; do [ -n "$p" ] && prop_args+=(--property "$p"); done < <(tail -n +2 <<<"$props")
check "image create tiny-root.img ($disk_format) with kernel_id, ramdisk_id, os_command_line" \
    openstack image create --disk-format "$disk_format" --container-format "$container_format" \
    --file "$disk" --property "kernel_id=$kernel_id" --property "ramdisk_id=$ramdisk_id" \
    "${prop_args[@]}" yunhe-tiny -f json
is_true "yunhe-tiny is active and names its kernel and ramdisk" \
    "d['status']=='active' and '$kernel_id' in json.dumps(d) and '$ramdisk_id' in json.dumps(d)"
ssh-keygen -q -t ed25519 -N '' -C lab-compute -f "$work/id_ed25519"
check "keypair create --public-key k1" openstack keypair create --public-key "$work/id_ed25519.pub" k1 -f json
pubkey=$(cut -d' ' -f2 "$work/id_ed25519.pub")
cat >"$work/user-data" <<'EOF'
#!/bin/sh
echo "user-data: ran on $(hostname), 6*7=$((6 * 7))"
sed 's/^/user-data: authorized_keys: /' /root/.ssh/authorized_keys
EOF

# --- vm1: boot, config drive --------------------------------------------------------------
lab_alive
t0=$(now)
check "server create --wait vm1 (micro + tiny, m1.nano, key k1, user data)" \
    openstack server create --image yunhe-tiny --flavor m1.nano --key-name k1 --nic none \
    --user-data "$work/user-data" --wait vm1 -f json
vm1=$(json 'd["id"]' 2>/dev/null)
is_true "vm1 is ACTIVE" 'd["status"]=="ACTIVE"'
if [ -z "$vm1" ]; then finish; fi
json '"# vm1: created %s, launched %s (the CLI polls every 5 s)" % (d.get("created_at", d.get("created")), d.get("OS-SRV-USG:launched_at"))' 2>/dev/null
ready "vm1 boot" "$vm1" 1 "$B_READY"
console_log "$vm1"
console_has "config drive reached the guest" '^yunhe-tiny: metadata from config drive'
console_has "hostname is the server name (vm1)" '^yunhe-tiny: hostname vm1'
console_has_line "key pair k1 in root's authorized_keys" "user-data: authorized_keys: ssh-ed25519 $pubkey"
console_has "user_data ran (on vm1, 6*7=42)" '^user-data: ran on vm1, 6\*7=42'
vm1_pid=$(labsh 10 "vmm_pids $vm1")
echo "# vm1's VMM: pid $vm1_pid"

# --- stop (ACPI power button) and start ---------------------------------------------------
lab_alive
downs=$(count 'reboot: Power down')
step "server stop vm1" "$vm1" SHUTOFF 20 openstack server stop vm1
console_log "$vm1"
if [ "$(count 'reboot: Power down')" -gt "$downs" ] && grep -q 'The system is going down NOW' "$work/console"; then
    pass "vm1 powered itself off on the ACPI power button (init's shutdown and the kernel's 'reboot: Power down' on its console)"
else cp "$work/console" "$out"; fail "vm1 powered itself off on the ACPI power button"; fi
step "server start vm1" "$vm1" ACTIVE 15 openstack server start vm1 && ready "vm1 start" "$vm1" 2 "$B_READY"
step "server reboot vm1 (soft)" "$vm1" ACTIVE 30 openstack server reboot vm1 && ready "vm1 soft reboot" "$vm1" 3 "$B_READY"
step "server reboot --hard vm1" "$vm1" ACTIVE 15 openstack server reboot --hard vm1 && ready "vm1 hard reboot" "$vm1" 4 "$B_READY"

# --- pause/unpause, suspend/resume: the guest keeps running ------------------------------
lab_alive
step "server pause vm1" "$vm1" PAUSED 10 openstack server pause vm1
step "server unpause vm1" "$vm1" ACTIVE 10 openstack server unpause vm1
console_roundtrip "serial console websocket round trip on vm1 (typed echo x-\$((6*7)), read x-42)" \
    "$vm1" 'echo x-$((6*7))' 'x-42'
up1=$(guest_uptime "$vm1")
step "server suspend vm1" "$vm1" SUSPENDED 30 openstack server suspend vm1
step "server resume vm1" "$vm1" ACTIVE 30 openstack server resume vm1
up2=$(guest_uptime "$vm1")
echo "uptime before suspend: $up1, after resume: $up2" >"$out"
if [ -n "$up1" ] && [ -n "$up2" ] && awk -v a="$up1" -v b="$up2" 'BEGIN { exit !(b > a) }'; then
    pass "vm1 is alive after resume: its console answers, uptime went on ($up1 s -> $up2 s)"
else fail "vm1 is alive after resume: its console answers, uptime went on"; fi
if [ "$("$py" "$here/nova.py" console-count "$vm1" '^yunhe-tiny: ready')" = 4 ]; then
    pass "resume restored vm1, it did not boot it again (still 4 ready lines)"
else echo "ready lines: $("$py" "$here/nova.py" console-count "$vm1" '^yunhe-tiny: ready')" >"$out"
    fail "resume restored vm1, it did not boot it again"; fi

# --- shelve/unshelve, resize ----------------------------------------------------------------
lab_alive
step "server shelve vm1" "$vm1" SHELVED_OFFLOADED 90 openstack server shelve vm1
step "server unshelve vm1" "$vm1" ACTIVE 15 openstack server unshelve vm1 && ready "vm1 unshelve" "$vm1" 5 "$B_READY"
step "server resize --flavor m1.micro vm1" "$vm1" VERIFY_RESIZE 20 openstack server resize --flavor m1.micro vm1 \
    && ready "vm1 resize" "$vm1" 6 "$B_READY"
step "server resize confirm vm1" "$vm1" ACTIVE 15 openstack server resize confirm vm1
check "server show vm1" openstack server show vm1 -f json
is_true "vm1's flavor is m1.micro" '"m1.micro" in json.dumps(d["flavor"])'
console_roundtrip "vm1 has 256 MiB after the resize (MemTotal seen in the guest)" "$vm1" \
    "echo mem=\$(awk '/MemTotal/ {print int(\$2/1024)}' /proc/meminfo)=" 'mem=(2[0-9][0-9])='

# --- createImage and a server from it ------------------------------------------------------
lab_alive
t0=$(now)
check "server image create --wait vm1 -> snap" openstack server image create --name snap --wait vm1 -f json
took=$(dt "$t0" "$(now)")
is_true "snapshot snap is active in $took s with the CLI's 5 s polling (bound $B_SNAPSHOT s)" \
    "d['status']=='active' and $took <= $B_SNAPSHOT"
snap_id=$(json 'd["id"]' 2>/dev/null)
wait_server "$vm1" ACTIVE 30 >"$out" 2>&1 && pass "vm1 is ACTIVE after the snapshot" || fail "vm1 is ACTIVE after the snapshot"
t0=$(now)
if openstack server create --image snap --flavor m1.nano --key-name k1 --nic none vm2 -f json >"$out" 2>&1; then
    vm2=$(json 'd["id"]' 2>/dev/null)
    t1=$(now)
    if wait_server "$vm2" ACTIVE 30 >>"$out" 2>&1; then
        pass "server create --image snap vm2 -> ACTIVE in $(dt "$t0" "$(now)") s (command $(dt "$t0" "$t1") s; bound 30 s)"
        ready "vm2 (from the snapshot)" "$vm2" 1 "$B_READY"
    else fail "vm2 -> ACTIVE within 30 s"; fi
else fail "server create --image snap vm2"; vm2=""; fi

# --- Debian's stock kernel --------------------------------------------------------------------
lab_alive
vm3=""
if [ -n "$debian_kernel" ]; then
    check "image create Debian's stock kernel (the lab's own vmlinuz, aki)" openstack image create \
        --disk-format aki --container-format aki --file "$debian_kernel" debian-generic-kernel -f json
    deb_kernel_id=$(json 'd["id"]' 2>/dev/null)
    check "image create tiny-root.img booting Debian's kernel" openstack image create --disk-format raw \
        --container-format bare --file "$disk" --property "kernel_id=$deb_kernel_id" \
        --property "ramdisk_id=$ramdisk_id" --property os_command_line=console=ttyS0 tiny-on-debian -f json
    t0=$(now)
    if openstack server create --image tiny-on-debian --flavor m1.nano --nic none vm3 -f json >"$out" 2>&1; then
        vm3=$(json 'd["id"]' 2>/dev/null)
        t1=$(now)
        if wait_server "$vm3" ACTIVE 30 >>"$out" 2>&1; then
            pass "vm3 (Debian's stock kernel + tiny) -> ACTIVE in $(dt "$t0" "$(now)") s (bound 30 s)"
            ready "vm3 (Debian's stock kernel)" "$vm3" 1 90
        else fail "vm3 -> ACTIVE within 30 s"; fi
    else fail "server create vm3 (Debian's stock kernel)"; fi
fi

# --- kill -9 of serve: the guests keep running ---------------------------------------------
lab_alive
pids_before="vm1:$(labsh 10 "vmm_pids $vm1") vm2:$(labsh 10 "vmm_pids ${vm2:-none}")"
if labsh 90 kill9_and_restart_serve >"$out" 2>&1; then
    pass "kill -9 of serve inside the lab, restarted on the same state dir ($(tail -n1 "$out"))"
else fail "kill -9 of serve inside the lab, restarted"; fi
check "GET /healthz after the restart" curl -sf --max-time 20 "$URL/healthz"
wait_server "$vm1" ACTIVE 10 >"$out" 2>&1 && pass "vm1 is ACTIVE after the restart" || fail "vm1 is ACTIVE after the restart"
pids_after="vm1:$(labsh 10 "vmm_pids $vm1") vm2:$(labsh 10 "vmm_pids ${vm2:-none}")"
echo "before: $pids_before; after: $pids_after" >"$out"
if [ "$pids_before" = "$pids_after" ] && printf '%s' "$pids_after" | grep -Eqx 'vm1:[0-9]+ vm2:[0-9]+'; then
    pass "the guests kept their VMMs ($pids_after)"
else fail "the guests kept their VMMs"; fi
console_roundtrip "vm1's serial console works through the restarted serve" "$vm1" 'echo y-$((7*7))' 'y-49'

# --- delete ----------------------------------------------------------------------------------
lab_alive
for id in $vm1 $vm2 $vm3; do
    step "server delete $id" "$id" GONE 15 openstack server delete "$id"
done
left=$(labsh 10 all_vmm_pids)
echo "left: $left" >"$out"
if [ -z "$left" ]; then pass "no VMM is left in the lab"; else fail "no VMM is left in the lab"; fi
check "image delete snap" openstack image delete "${snap_id:-snap}"
finish
