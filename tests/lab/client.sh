# shellcheck shell=bash
# Host-side helpers of the lab suites that run `yunhe serve` inside the lab and drive it from
# this machine with the real openstack CLI through a forwarded port (tests/lab/compute.sh,
# tests/lab/network.sh). Sourced after `set -uo pipefail` with `here` (tests/lab) and `root`
# (the repository) set, and SUITE naming the summary line (`$SUITE: N passed, M failed`).
#
#   lab_start [SERVE_ARGS...]   boot the lab with compute-inside.sh and serve in it; sets URL,
#                               NOVA, the CA and clouds.yaml variables, `py` (the venv's python);
#                               with LAB_STATE_DISK=FILE (an ext4 image), serve's state directory
#                               is on that disk (the lab's /dev/vda), which outlives the lab
#   lab_stop                    end the lab as compute-inside.sh does at the end (serve and the
#                               VMMs stopped, the state disk synced and unmounted); then
#                               lab_start may boot it again
#   lab_login [PROJECT CLOUD]   a token for admin (one Argon2 check), then the CLI uses it
#                               (with PROJECT: a token for admin in PROJECT, as cloud CLOUD)
#   upload_tiny_images          micro's bzImage (aki), tiny's initramfs (ari) and tiny-root.img
#                               naming both: images yunhe-micro-bzimage, yunhe-tiny-initramfs,
#                               yunhe-tiny; sets kernel_id and ramdisk_id
#   upload_recipe_image RECIPE  OUT/RECIPE's qcow2 image as its manifest describes it; sets
#                               img_name
# and the checks: pass, fail, check, json, is_true, labsh, lab_alive, step, ready, console_log,
# console_has, count, finish.  Env: YUNHE_BIN, OUT, YUNHE_VENV, LAB_KEEP=DIR (copy the lab's
# logs there; LAB_COMPUTE_KEEP too, its older name); a suite may set LAB_MEM (the lab's MiB,
# default 3072), LAB_WAIT (seconds the lab waits for the host to finish, default 900) and
# LAB_SERVE_CPUS (a taskset CPU list: serve and its VMMs run on those lab CPUs only; default 1,
# empty for no pinning).
started=$(date +%s.%N)
# serve and its VMMs on lab CPU 1 only: fewer IPIs to a lab CPU in guest mode, which QEMU's
# emulated SVM has delivered while GIF was clear (docs/lab.md, "Known problems"). A suite may set
# it before lab_start.
LAB_SERVE_CPUS=${LAB_SERVE_CPUS-1}
bin=${YUNHE_BIN:-$root/target/release/yunhe}
OUT=${OUT:-$root/out}
kernel=$OUT/micro/bzImage ramdisk=$OUT/tiny/tiny.cpio.gz disk=$OUT/tiny/tiny-root.img

passed=0 failed=0
work=$(mktemp -d "${TMPDIR:-/tmp}/yunhe-$SUITE.XXXXXX")
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
    # A lab that has ended (its host panicked or stopped: tests/lab/lab says which) runs no
    # more checks: end the suite now rather than let each remaining check wait out its bound
    # (the cleanup prints the lab's output and its marker, on which scripts/test reruns)
    if [ -n "$lab_pid" ] && ! kill -0 "$lab_pid" 2>/dev/null; then
        echo "# the lab has ended: the remaining checks are not run"
        finish
    fi
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
    local keep=${LAB_KEEP:-${LAB_COMPUTE_KEEP:-}}
    if [ -n "$keep" ]; then
        mkdir -p "$keep" && cp -a "$share/." "$work/lab.out" "$work/lab-console.log" "$keep/" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

finish() {
    echo "# total $(dt "$started" "$(now)") s"
    echo "$SUITE: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}


# lab_start [SERVE_ARGS...]: the lab with serve inside (its args), the venv meanwhile;
# ends the run when serve does not come up.
lab_start() {
    local r
    [ -x "$bin" ] || { echo "FAIL no yunhe binary at $bin (cargo build --release)"; failed=1; finish; }
    for r in micro tiny; do
        if [ ! -f "$OUT/$r/manifest.json" ]; then
            echo "# building image recipe $r into $OUT/$r"
            "$root/image-recipes/build" "$r" "$OUT/$r" >"$out" 2>&1 || { fail "image-recipes/build $r"; finish; }
        fi
    done
    # (LAB_PORT: the same forwarded port as a lab before, whose state directory serve reuses:
    # its clouds.yaml and public URL name that port)
    port=${LAB_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
    lab_wait=${LAB_WAIT:-900}
    t0=$(now)
    local disk_args=()
    rm -f "$share/state-disk"
    printf '%s' "${LAB_SERVE_CPUS:-}" >"$share/serve-cpus"
    if [ -n "${LAB_STATE_DISK:-}" ]; then
        disk_args=(--disk "$LAB_STATE_DISK")
        : >"$share/state-disk"
    fi
    "$here/lab" run --out "$share" --fwd "$port:8080" --mem "${LAB_MEM:-3072}" --cpus 2 --timeout $((lab_wait + 60)) \
        --bin "$bin" --console "$work/lab-console.log" "${disk_args[@]}" \
        "$here/compute-inside.sh" "$port" "$lab_wait" "$@" >"$work/lab.out" 2>&1 &
    lab_pid=$!
    # nova.py's waits end as soon as the lab does (a failed lab host answers no more).
    export LAB_PID=$lab_pid
    venv=$("$root/tests/openstack/venv.sh" | tail -n1) || { fail "venv"; finish; }
    py=$venv/bin/python
    export PATH="$venv/bin:$PATH"
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
}

# lab_stop: the host side is done with this lab: it cleans up and ends (within 60 s).
lab_stop() {
    local n=0
    : >"$share/done"
    while kill -0 "$lab_pid" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
    if kill -0 "$lab_pid" 2>/dev/null; then
        kill -TERM "$lab_pid" 2>/dev/null
        wait "$lab_pid" 2>/dev/null
        lab_pid=""
        unset LAB_PID
        return 1
    fi
    wait "$lab_pid" 2>/dev/null
    lab_pid=""
    unset LAB_PID
    rm -f "$share/done" "$share/ready" "$share/failed"
    rm -rf "$share/cmd"; mkdir -p "$share/cmd"
}

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
# guest NAME ID SEND EXPECT TIMEOUT: a command typed on ID's serial console, EXPECT in its output;
# the match is left in $match.
guest() {
    local url t0; t0=$(now); match=""
    url=$(openstack console url show --serial "$2" -f value -c url 2>"$out") || { fail "$1: console url"; return 1; }
    if "$py" "$here/serial-console.py" "$url" --cacert "$share/ca.pem" --send "$3" --expect "$4" \
        --timeout "$5" --retype "$5" >"$out" 2>&1; then
        match=$(sed -n 's/^match: //p' "$out")
        pass "$1 ($match; $(dt "$t0" "$(now)") s)"
    else fail "$1"; return 1; fi
}

# guest_notes ID CMD: what CMD prints in the guest, as '#' lines (for a failed check's
# diagnosis; never a check itself).
guest_notes() {
    local url
    url=$(openstack console url show --serial "$1" -f value -c url 2>/dev/null) || return 0
    "$py" "$here/serial-console.py" "$url" --cacert "$share/ca.pem" --send "$2; echo notes-\$((6*7))" \
        --expect 'notes-42' --timeout 30 --retype 30 2>&1 | sed -n '/^seen: /{s/^seen: //;s/\\r\\n/\n/g;p}' \
        | tail -n 40 | sed 's/^/# guest: /'
    return 0
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

# lab_login [PROJECT CLOUD]: a token from the admin password (for PROJECT instead of admin's
# own); the CLI authenticates with it from here on (OS_CLOUD=yunhe-token), or, with PROJECT,
# through the clouds.yaml entry CLOUD.
lab_login() {
    local project=${1:-} cloud=${2:-yunhe-token} token
    local scope=()
    [ -n "$project" ] && scope=(--os-project-name "$project")
    check "openstack token issue (admin's password${project:+, project $project})" \
        env OS_CLOUD=yunhe openstack "${scope[@]}" token issue -f json
    token=$(json 'd["id"]' 2>/dev/null)
    if [ -z "$project" ]; then TOKEN=$token; export TOKEN; fi
    # Every password check is an Argon2 hash, about 8 s under the lab's emulated CPU: the CLI
    # authenticates with that token from here on (Keystone's token method, no hash).
    "$py" - "$work/clouds.yaml" "$token" "$cloud" "$project" <<'EOF'
import sys, yaml
path, token, name, project = sys.argv[1:5]
c = yaml.safe_load(open(path))
cloud = dict(c["clouds"]["yunhe"])
auth = cloud["auth"]
cloud["auth_type"] = "token"
cloud["auth"] = {"auth_url": auth["auth_url"], "token": token, "project_name": project or auth["project_name"],
                 "project_domain_name": auth["project_domain_name"]}
c["clouds"][name] = cloud
yaml.safe_dump(c, open(path, "w"))
EOF
    if [ -z "$project" ]; then export OS_CLOUD=yunhe-token; fi
}

# upload_tiny_images: the three images servers boot (see the top).
upload_tiny_images() {
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
}

# upload_tiny_on_debian [KERNEL]: image tiny-on-debian, tiny-root.img booting Debian's stock
# kernel (KERNEL, by default the lab's own vmlinuz, uploaded as aki debian-generic-kernel; acpiphp
# is built in, so PCI devices hot-added through compute appear in the guest), with tiny's
# initramfs. After upload_tiny_images.
upload_tiny_on_debian() {
    local debian_kernel=${1:-}
    [ -n "$debian_kernel" ] || debian_kernel=$("$here/lab" build 2>/dev/null | tail -n1)/vmlinuz
    if [ ! -f "$debian_kernel" ]; then fail "the lab's Debian kernel ($debian_kernel)"; finish; fi
    check "image create Debian's stock kernel (the lab's own vmlinuz, aki)" openstack image create \
        --disk-format aki --container-format aki --file "$debian_kernel" debian-generic-kernel -f json
    deb_kernel_id=$(json 'd["id"]' 2>/dev/null)
    check "image create tiny-root.img booting Debian's kernel" openstack image create --disk-format raw \
        --container-format bare --file "$disk" --property "kernel_id=$deb_kernel_id" \
        --property "ramdisk_id=$ramdisk_id" --property os_command_line=console=ttyS0 tiny-on-debian -f json
}

# upload_recipe_image RECIPE: the recipe's qcow2 as its manifest describes it (properties included); sets
# img_name.
upload_recipe_image() {
    local m=$OUT/$1/manifest.json p
    mapfile -t img < <("$py" - "$m" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
img = next(i for i in m["images"] if i["file"].endswith(".qcow2"))
print(img["name"]); print(img["file"]); print(img["disk_format"]); print(img["container_format"])
for k, v in img["properties"].items():
    print("%s=%s" % (k, v))
EOF
    )
    local prop_args=()
    for p in "${img[@]:4}"; do prop_args+=(--property "$p"); done
    img_name=${img[0]}
    lab_alive
    check "image create ${img[0]} ($(du -m "$OUT/$1/${img[1]}" | cut -f1) MiB ${img[2]}, no kernel_id: the disk's own kernel)" \
        openstack image create --disk-format "${img[2]}" --container-format "${img[3]}" \
        --file "$OUT/$1/${img[1]}" "${prop_args[@]}" "${img[0]}" -f json
    is_true "${img[0]} is active" "d['status']=='active'"
}
