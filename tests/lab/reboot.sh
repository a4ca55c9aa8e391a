#!/usr/bin/env bash
# A host reboot, in the lab (docs/lab.md, "The reboot flow"; issue 12's "after a host reboot the
# whole dataplane comes back"). yunhe's state directory lives on a disk that outlives the lab (an
# ext4 image on this machine, the lab's /dev/vda):
#   1. the lab boots; `yunhe serve --dataplane` in it; the openstack CLI on this machine makes an
#      external network, a tenant network behind a router, a security group that lets ICMP in, a
#      micro + tiny guest on the tenant network and a floating IP for it; the lab host pings it;
#   2. serve and the guest's VMM are killed (-9), the lab shuts down (the disk synced and
#      unmounted, as a host's shutdown does once its processes are gone);
#   3. a new lab boots on the same disk: serve starts on the same state directory and its
#      dataplane makes the namespaces, bridges, taps and nftables tables again; the server whose
#      VMM went with the host is SHUTOFF (Nova's default, resume_guests_state_on_host_boot off);
#      `server start` boots it, DHCP gives it its port's address again and the lab host reaches it
#      on the same floating IP;
#   4. deleting everything leaves no namespace and no yh-* link.
#
#   tests/lab/reboot.sh
#
# One PASS/FAIL line per check; ends with `lab-reboot: N passed, M failed`, non-zero on failure.
# Env: as tests/lab/client.sh (YUNHE_BIN, OUT, YUNHE_VENV, LAB_KEEP=DIR, LAB_SERVE_CPUS).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
SUITE=lab-reboot
# shellcheck source=tests/lab/client.sh
. "$here/client.sh"

B_READY=60      # ACTIVE to `yunhe-tiny: ready`
B_FIP=30        # the floating IP answers the lab host
SERVE_ARGS=(--dataplane --force-config-drive false --disk-allocation-ratio 8 --min-free-space 64M)

mkfs=$(command -v mkfs.ext4 || echo /sbin/mkfs.ext4)
export LAB_STATE_DISK=$work/state-disk.img
truncate -s 4G "$LAB_STATE_DISK"
check "an ext4 state disk for the lab ($LAB_STATE_DISK, 4 GiB sparse)" "$mkfs" -q -F "$LAB_STATE_DISK"

# fip_answers LABEL: the lab host pings the floating IP within B_FIP seconds.
fip_answers() {
    local t0; t0=$(now)
    if labsh $((B_FIP + 10)) "i=0; while [ \$i -lt $B_FIP ]; do ping -c 1 -W 1 $fip >/dev/null 2>&1 && exit 0; i=\$((i + 1)); done; exit 1" >"$out" 2>&1; then
        pass "$1: the lab host reaches vma on its floating IP $fip ($(dt "$t0" "$(now)") s; bound $B_FIP s)"
    else fail "$1: the lab host reaches vma on its floating IP $fip"; fi
}

# --- the first boot ---------------------------------------------------------------------------
lab_start "${SERVE_ARGS[@]}"
lab_login
upload_tiny_images
lab_alive
check "network create --external public" openstack network create --external public -f json
check "subnet create public-v4 172.24.4.0/24 (no DHCP)" openstack subnet create --network public \
    --subnet-range 172.24.4.0/24 --no-dhcp public-v4 -f json
check "network create net1" openstack network create net1 -f json
net1=$(json 'd["id"]' 2>/dev/null)
check "subnet create net1-v4 10.10.0.0/24 (DHCP)" openstack subnet create --network net1 \
    --subnet-range 10.10.0.0/24 net1-v4 -f json
check "router create r1" openstack router create r1 -f json
r1=$(json 'd["id"]' 2>/dev/null)
check "router set r1 --external-gateway public" openstack router set --external-gateway public r1
check "router add subnet r1 net1-v4" openstack router add subnet r1 net1-v4
check "security group create lab-sg" openstack security group create lab-sg -f json
check "security group rule: ICMP in from anywhere" openstack security group rule create \
    --ingress --protocol icmp --remote-ip 0.0.0.0/0 lab-sg -f json
check "server create vma (net1 at 10.10.0.11, lab-sg)" openstack server create \
    --image yunhe-tiny --flavor m1.nano --nic "net-id=$net1,v4-fixed-ip=10.10.0.11" \
    --security-group lab-sg vma -f json
vma=$(json 'd["id"]' 2>/dev/null)
[ -n "$vma" ] || finish
if wait_server "$vma" ACTIVE 30 >"$out" 2>&1; then pass "vma is ACTIVE"; else fail "vma is ACTIVE"; fi
ready "vma, first boot" "$vma" 1 "$B_READY"
check "floating ip create public" openstack floating ip create public -f json
fip=$(json 'd["floating_ip_address"]' 2>/dev/null)
check "server add floating ip vma $fip" openstack server add floating ip vma "$fip"
fip_answers "before the reboot"
labsh 30 'ls /run/netns | grep "^yunhe" | sort' >"$work/netns-before" 2>&1
if grep -q "^yunhe-r-$r1" "$work/netns-before"; then pass "the router's namespace yunhe-r-$r1 exists"
else cp "$work/netns-before" "$out"; fail "the router's namespace yunhe-r-$r1 exists"; fi

# --- the reboot -------------------------------------------------------------------------------
lab_alive
if labsh 30 'kill -9 $(serve_pid); for p in $(all_vmm_pids); do kill -9 $p; done; sleep 1; [ -z "$(all_vmm_pids)" ]' >"$out" 2>&1; then
    pass "kill -9 of serve and of vma's VMM in the lab"
else fail "kill -9 of serve and of vma's VMM in the lab"; fi
t0=$(now)
if lab_stop; then pass "the lab shut down, its state disk synced and unmounted ($(dt "$t0" "$(now)") s)"
else fail "the lab shut down within 60 s"; finish; fi

# --- the second boot, on the same disk ---------------------------------------------------------
# (the same host port: the state directory's clouds.yaml and the public URL name it)
LAB_PORT=$port lab_start "${SERVE_ARGS[@]}"
lab_login
t0=$(now)
if labsh 60 'i=0; while [ $i -lt 30 ]; do ls /run/netns | grep "^yunhe" | sort >/tmp/netns-now; [ -s /tmp/netns-now ] && [ "$(wc -l </tmp/netns-now)" -ge '"$(wc -l <"$work/netns-before")"' ] && break; i=$((i + 1)); sleep 1; done; cat /tmp/netns-now' >"$work/netns-after" 2>&1 \
    && cmp -s "$work/netns-before" "$work/netns-after"; then
    pass "the dataplane made the same namespaces again ($(tr '\n' ' ' <"$work/netns-after"); $(dt "$t0" "$(now)") s)"
else
    { echo "before:"; cat "$work/netns-before"; echo "after:"; cat "$work/netns-after"; } >"$out"
    fail "the dataplane made the same namespaces again"
fi
if labsh 30 "nsenter --net=/run/netns/yunhe-r-$r1 ip -4 addr" >"$out" 2>&1 && grep -q "inet $fip/32" "$out"; then
    pass "the router's gateway interface holds the floating IP $fip again"
else fail "the router's gateway interface holds the floating IP $fip again"; fi
if wait_server "$vma" SHUTOFF 30 >"$out" 2>&1; then
    pass "vma, whose VMM went with the host, is SHUTOFF (as Nova without resume_guests_state_on_host_boot)"
else fail "vma is SHUTOFF after the reboot"; fi
step "server start vma" "$vma" ACTIVE 30 openstack server start vma
ready "vma, after the reboot" "$vma" 2 "$B_READY"
console_log "$vma"
n=$(count '^yunhe-tiny: eth0 has 10\.10\.0\.11/24')
if [ "${n:-0}" -ge 2 ]; then pass "vma got its port's address 10.10.0.11 by DHCP again (in both boots)"
else cp "$work/console" "$out"; fail "vma got its port's address 10.10.0.11 by DHCP again ($n times)"; fi
fip_answers "after the reboot"

# --- everything deleted, nothing left in the lab's kernel ------------------------------------------
lab_alive
step "server delete vma" "$vma" GONE 15 openstack server delete "$vma"
check "floating ip delete $fip" openstack floating ip delete "$fip"
check "router remove subnet r1 net1-v4" openstack router remove subnet r1 net1-v4
check "router delete r1" openstack router delete r1
check "network delete net1 public" openstack network delete net1 public
t0=$(now)
if labsh 40 'i=0; while [ $i -lt 30 ]; do left=$(ls /run/netns 2>/dev/null | grep "^yunhe"; ls /sys/class/net | grep "^yh-"); [ -z "$left" ] && exit 0; i=$((i + 1)); sleep 1; done; echo "left: $left"; exit 1' >"$out" 2>&1; then
    pass "no yunhe namespace and no yh-* link is left in the lab ($(dt "$t0" "$(now)") s)"
else fail "no yunhe namespace and no yh-* link is left in the lab"; fi
finish
