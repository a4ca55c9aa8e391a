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
SUITE=lab-compute
# shellcheck source=tests/lab/client.sh
. "$here/client.sh"

# --- the lab, serve inside -----------------------------------------------------------------
# The lab's /tmp (a tmpfs of 90 % of its RAM) holds the state dir: a 1 GiB root disk per
# server is sparse, so the disk allocation ratio lets three servers fit; uploads keep
# 64 MiB free instead of 1 GiB.
serve_args=(--disk-allocation-ratio 8 --min-free-space 64M)
[ "${LAB_COMPUTE_JAIL:-1}" = 0 ] && serve_args+=(--no-jail)
lab_start "${serve_args[@]}"
# the lab's own kernel (for the Debian server)
debian_kernel=""
if [ "${LAB_COMPUTE_DEBIAN:-1}" != 0 ]; then
    lab_dir=$("$here/lab" build 2>/dev/null | tail -n1)
    [ -f "$lab_dir/vmlinuz" ] && debian_kernel=$lab_dir/vmlinuz
fi

# Bounds (seconds) each state change must converge within, after its CLI command returned:
# about three times the slowest seen on a 2-core machine shared with other builds (docs/lab.md).
B_READY=45        # a boot of micro + tiny, ACTIVE to `yunhe-tiny: ready` on the console
B_SNAPSHOT=90     # server image create --wait, the whole command (1 GiB hashed)

# --- images, key pair, user data ----------------------------------------------------------
lab_login
upload_tiny_images
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
    upload_tiny_on_debian "$debian_kernel"
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
