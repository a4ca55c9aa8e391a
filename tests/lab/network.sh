#!/usr/bin/env bash
# Networking with Linux guests, in the lab (docs/lab.md, "The network flow"): the lab runs
# `yunhe serve --dataplane` (tests/lab/compute-inside.sh), the real `openstack` CLI on this
# machine builds an external network, a tenant network behind a router and a security group,
# and boots two micro + tiny guests on it with fixed addresses. Then:
#   - each guest gets its port's address by DHCP from yunhe (no dnsmasq), its metadata (host
#     name, OpenStack and EC2 formats) from 169.254.169.254 through the router;
#   - the guests ping each other (a rule for members of their group lets ICMP in) and the
#     external gateway through the router's SNAT;
#   - a source address that is not the guest's port's is dropped (anti-spoofing);
#   - a second project's network on the same 10.10.0.0/24 behind its own router: its guest gets
#     the address a first-project guest holds, reaches the outside, and not the first project;
#   - a floating IP on one guest: the lab host's ping is dropped until a rule allows ICMP from
#     anywhere, then answered (DNAT in the router, the security group in nftables); the same for
#     the guest's ssh banner and TCP 22, then a login over ssh with the server's key pair (and
#     not with another key); a kill -9 of serve during a ping loses no packet;
#   - a third guest (Debian's stock kernel + tiny): a port on another network hot-added through
#     `server add network` appears as eth1 with its DHCP address, and leaves on `server remove
#     network`;
#   - deleting servers, floating IP, router and networks leaves no namespace and no yh-* link.
#
#   tests/lab/network.sh
#
# One PASS/FAIL line per check; ends with `lab-network: N passed, M failed`, non-zero on failure.
# Env: as tests/lab/client.sh (YUNHE_BIN, OUT, YUNHE_VENV, LAB_KEEP=DIR, LAB_SERVE_CPUS).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
SUITE=lab-network
# shellcheck source=tests/lab/client.sh
. "$here/client.sh"

B_READY=60      # ACTIVE to `yunhe-tiny: ready` (DHCP and the metadata service first)
B_NET=120       # ready to the guest's own network checks done (a peer that boots later)
B_FIP=30        # a rule allowing ICMP to the floating IP answered

lab_start --dataplane --force-config-drive false --disk-allocation-ratio 8 --min-free-space 64M
lab_login
upload_tiny_images

# the ssh client the lab host logs in with: Debian's dbclient (dropbear) and its libraries, run by
# their own loader from the /out share, and two ed25519 keys: the key pair's and one nova never saw
if ! command -v dropbearkey >/dev/null || ! command -v dbclient >/dev/null; then
    (RECIPE=lab-network; . "$root/image-recipes/lib.sh"; need_pkgs dropbear-bin) >"$out" 2>&1 || fail "install dropbear-bin"
fi
mkdir -p "$share/ssh"
rm -f "$share/ssh/key" "$share/ssh/other"
dropbearkey -t ed25519 -f "$share/ssh/key" 2>/dev/null | grep '^ssh-ed25519 ' >"$work/key.pub"
dropbearkey -t ed25519 -f "$share/ssh/other" >/dev/null 2>&1
cp "$(command -v dbclient)" "$share/ssh/"
ldd "$(command -v dbclient)" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u |
    while read -r lib; do cp -L "$lib" "$share/ssh/"; done
check "keypair create --public-key labkey (an ed25519 key made with dropbearkey)" \
    openstack keypair create --public-key "$work/key.pub" labkey -f json

# --- the networks ----------------------------------------------------------------------------
lab_alive
check "network create --external public" openstack network create --external public -f json
check "subnet create public-v4 172.24.4.0/24 (no DHCP)" openstack subnet create --network public \
    --subnet-range 172.24.4.0/24 --no-dhcp public-v4 -f json
gateway=$(json 'd["gateway_ip"]' 2>/dev/null)
check "network create net1" openstack network create net1 -f json
net1=$(json 'd["id"]' 2>/dev/null)
check "subnet create net1-v4 10.10.0.0/24 (DHCP)" openstack subnet create --network net1 \
    --subnet-range 10.10.0.0/24 net1-v4 -f json
check "router create r1" openstack router create r1 -f json
check "router set r1 --external-gateway public" openstack router set --external-gateway public r1
check "router add subnet r1 net1-v4" openstack router add subnet r1 net1-v4
check "security group create lab-sg" openstack security group create lab-sg -f json
check "security group rule: ICMP in from members of lab-sg" openstack security group rule create \
    --ingress --protocol icmp --remote-group lab-sg lab-sg -f json

# --- two guests --------------------------------------------------------------------------------
# user_data PEER OWN [TRIES]: the checks run in the background after the ready line, written
# to the console
# (the first may share a line with getty's prompt, so the patterns below are not anchored)
user_data() {
    cat <<EOF
#!/bin/sh
(
peer=$1
i=0
while [ \$i -lt ${3:-90} ]; do ping -c 1 -W 1 \$peer >/dev/null 2>&1 && break; i=\$((i + 1)); sleep 1; done
[ \$i -lt ${3:-90} ] && echo "yunhe-net: peer \$peer answers" || echo "yunhe-net: peer \$peer silent"
ping -c 2 -W 2 $gateway >/dev/null 2>&1 && echo "yunhe-net: gateway $gateway answers" || echo "yunhe-net: gateway $gateway silent"
# a source address that is not the port's: anti-spoofing drops it at the port (without it, the
# router would NAT it and the answer would come back to this address)
ping -c 2 -W 2 -I $2 $gateway >/dev/null 2>&1 && echo "yunhe-net: own source $2 answered" || echo "yunhe-net: own source $2 dropped"
ip addr add 10.10.0.99/32 dev eth0
ping -c 2 -W 2 -I 10.10.0.99 $gateway >/dev/null 2>&1 && echo "yunhe-net: spoofed source 10.10.0.99 answered" || echo "yunhe-net: spoofed source 10.10.0.99 dropped"
ip addr del 10.10.0.99/32 dev eth0
md=\$(wget -q -O - http://169.254.169.254/openstack/latest/meta_data.json | tr -d '\n' | sed -n 's/.*"uuid" *: *"\([^"]*\)".*/\1/p')
echo "yunhe-net: metadata uuid \$md"
echo "yunhe-net: ec2 instance-id \$(wget -q -O - http://169.254.169.254/latest/meta-data/instance-id)"
echo "yunhe-net: eth0 counters \$(grep eth0 /proc/net/dev | tr -s ' ')"
echo "yunhe-net: done"
) >/dev/console 2>&1 &
EOF
}
user_data 10.10.0.12 10.10.0.11 >"$work/ud-a"
user_data 10.10.0.11 10.10.0.12 >"$work/ud-b"
lab_alive
check "server create vma (net1 at 10.10.0.11, lab-sg, key labkey, no config drive)" openstack server create \
    --image yunhe-tiny --flavor m1.nano --nic "net-id=$net1,v4-fixed-ip=10.10.0.11" \
    --security-group lab-sg --key-name labkey --user-data "$work/ud-a" vma -f json
vma=$(json 'd["id"]' 2>/dev/null)
check "server create vmb (net1 at 10.10.0.12, lab-sg, no config drive)" openstack server create \
    --image yunhe-tiny --flavor m1.nano --nic "net-id=$net1,v4-fixed-ip=10.10.0.12" \
    --security-group lab-sg --user-data "$work/ud-b" vmb -f json
vmb=$(json 'd["id"]' 2>/dev/null)
[ -n "$vma" ] && [ -n "$vmb" ] || finish
for v in vma:$vma vmb:$vmb; do
    name=${v%%:*} id=${v#*:}
    if wait_server "$id" ACTIVE 30 >"$out" 2>&1; then pass "$name is ACTIVE"; else fail "$name is ACTIVE"; fi
done
for v in vma:$vma:10.10.0.11:10.10.0.12 vmb:$vmb:10.10.0.12:10.10.0.11; do
    IFS=: read -r name id addr peer <<<"$v"
    ready "$name boot" "$id" 1 "$B_READY"
    t=$("$py" "$here/nova.py" console "$id" '^yunhe-net: done' 1 "$B_NET" 2>&1) \
        || echo "# $name: no 'yunhe-net: done' within $B_NET s ($t)"
    console_log "$id"
    console_has "$name: DHCP from yunhe gave eth0 its port's address $addr" "^yunhe-tiny: eth0 has ${addr//./\\.}/24"
    console_has "$name: metadata from the metadata service (no config drive)" '^yunhe-tiny: metadata from http://169\.254\.169\.254/'
    console_has "$name: host name from the metadata service" "^yunhe-tiny: hostname $name"
    console_has "$name: pings $peer on the same network (security group: ICMP from members)" "yunhe-net: peer ${peer//./\\.} answers"
    console_has "$name: pings the external gateway $gateway through the router (SNAT)" "yunhe-net: gateway ${gateway//./\\.} answers"
    console_has "$name: a ping from its own address named with ping -I is answered (the spoof check's control)" "yunhe-net: own source ${addr//./\\.} answered"
    console_has "$name: a ping from a source address not its port's (10.10.0.99) is dropped" "yunhe-net: spoofed source 10\.10\.0\.99 dropped"
    console_has "$name: OpenStack metadata names this server" "yunhe-net: metadata uuid $id"
    console_has "$name: EC2 metadata's instance-id names this server" "yunhe-net: ec2 instance-id i-$id"
done
if [ -n "${LAB_SERVE_CPUS:-}" ]; then
    echo "# the CPUs each yunhe process may run on (LAB_SERVE_CPUS=$LAB_SERVE_CPUS):"
    labsh 30 'for p in /proc/[0-9]*; do grep -q "^Name:.*yunhe" $p/status 2>/dev/null && echo "$p $(grep Cpus_allowed_list $p/status)"; done' 2>&1 | sed 's/^/#   /'
fi
# --- a second project on the same CIDR -------------------------------------------------------
# p2's net2 is 10.10.0.0/24 too, behind its own router: its guest vmc gets 10.10.0.12 (vmb's
# address on net1), reaches the external gateway through its own router, and never vma.
lab_alive
check "image set --public (the three tiny images, for p2)" openstack image set --public yunhe-tiny
openstack image set --public yunhe-micro-bzimage >/dev/null 2>&1
openstack image set --public yunhe-tiny-initramfs >/dev/null 2>&1
check "project create p2" openstack project create p2 -f json
check "role add --user admin --project p2 member" openstack role add --user admin --project p2 member
lab_login p2 yunhe-p2
p2() { OS_CLOUD=yunhe-p2 openstack "$@"; }
check "p2: network create net2" p2 network create net2 -f json
net2=$(json 'd["id"]' 2>/dev/null)
check "p2: subnet create net2-v4 10.10.0.0/24 (net1's CIDR)" p2 subnet create --network net2 \
    --subnet-range 10.10.0.0/24 net2-v4 -f json
check "p2: router create r2" p2 router create r2 -f json
check "p2: router set r2 --external-gateway public" p2 router set --external-gateway public r2
check "p2: router add subnet r2 net2-v4" p2 router add subnet r2 net2-v4
user_data 10.10.0.11 10.10.0.12 5 >"$work/ud-c"
check "p2: server create vmc (net2 at 10.10.0.12, vmb's address on net1)" p2 server create \
    --image yunhe-tiny --flavor m1.nano --nic "net-id=$net2,v4-fixed-ip=10.10.0.12" \
    --user-data "$work/ud-c" vmc -f json
vmc=$(json 'd["id"]' 2>/dev/null)
if [ -n "$vmc" ]; then
    if wait_server "$vmc" ACTIVE 30 >"$out" 2>&1; then pass "vmc is ACTIVE"; else fail "vmc is ACTIVE"; fi
    ready "vmc boot" "$vmc" 1 "$B_READY"
    "$py" "$here/nova.py" console "$vmc" 'yunhe-net: done' 1 "$B_NET" >/dev/null 2>&1
    console_log "$vmc"
    console_has "vmc: DHCP gave eth0 10.10.0.12 on p2's net2 (vmb holds it on net1)" '^yunhe-tiny: eth0 has 10\.10\.0\.12/24'
    console_has "vmc: pings the external gateway through p2's own router" "yunhe-net: gateway ${gateway//./\\.} answers"
    console_has "vmc: vma's 10.10.0.11 (net1, the other project) does not answer" 'yunhe-net: peer 10\.10\.0\.11 silent'
    console_has "vmc: metadata names vmc, not the server at its address on net1" "yunhe-net: metadata uuid $vmc"
fi

# what the lab's kernel holds, when the guests could not use the network
if [ "$failed" -gt 0 ]; then
    echo "# the network namespaces in the lab:"
    labsh 60 'for ns in /run/netns/yunhe*; do echo "== $ns"; for c in "cat /proc/net/dev" "ip addr" "ip route" "cat /proc/net/packet"; do echo "-- $c"; nsenter --net="$ns" $c; done; done; echo "== modules"; cat /proc/modules | cut -d" " -f1 | tr "\n" " "' 2>&1 | sed 's/^/    | /'
fi
check "server show vma lists 10.10.0.11 on net1" openstack server show vma -f json
is_true "vma's addresses hold net1's 10.10.0.11" '"10.10.0.11" in json.dumps(d["addresses"])'

# --- a floating IP -------------------------------------------------------------------------------
lab_alive
check "floating ip create public" openstack floating ip create public -f json
fip=$(json 'd["floating_ip_address"]' 2>/dev/null)
check "server add floating ip vma $fip" openstack server add floating ip vma "$fip"
if labsh 30 "ping -c 3 -W 2 $fip" >"$out" 2>&1; then
    fail "the lab host's ping to $fip is dropped while no rule allows it"
else pass "the lab host's ping to $fip is dropped while no rule allows it"; fi
check "security group rule: ICMP in from anywhere" openstack security group rule create \
    --ingress --protocol icmp --remote-ip 0.0.0.0/0 lab-sg -f json
t0=$(now)
if labsh $((B_FIP + 10)) "i=0; while [ \$i -lt $B_FIP ]; do ping -c 1 -W 1 $fip >/dev/null 2>&1 && exit 0; i=\$((i + 1)); done; exit 1" >"$out" 2>&1; then
    pass "the lab host reaches vma on its floating IP $fip once the rule is there ($(dt "$t0" "$(now)") s; bound $B_FIP s)"
else fail "the lab host reaches vma on its floating IP $fip once the rule is there"; fi
# ssh (tiny's dropbear) through the floating IP: the banner, only once a rule lets TCP 22 in
if labsh 20 "echo | nc -w 3 $fip 22" 2>&1 | grep -q "^SSH-2.0"; then
    fail "the lab host gets no ssh banner from $fip while no rule allows TCP 22"
else pass "the lab host gets no ssh banner from $fip while no rule allows TCP 22"; fi
check "security group rule: TCP 22 in from anywhere" openstack security group rule create \
    --ingress --protocol tcp --dst-port 22 --remote-ip 0.0.0.0/0 lab-sg -f json
t0=$(now)
# (at most 3 s a try, so the lab's command ends before labsh gives up on it and the next
# command does not queue behind it)
if labsh $((B_FIP + 10)) "i=0; while [ \$i -lt $((B_FIP / 3)) ]; do echo | nc -w 2 $fip 22 | grep -q '^SSH-2.0' && exit 0; i=\$((i + 1)); sleep 1; done; exit 1" >"$out" 2>&1; then
    pass "the lab host gets vma's ssh banner through $fip once the rule is there ($(dt "$t0" "$(now)") s)"
else
    fail "the lab host gets vma's ssh banner through $fip once the rule is there"
    echo "# vma's console (tail) and the yunhe namespaces' TCP 22 conntrack entries:"
    console_log "$vma"
    tail -n 15 "$work/console" | sed 's/^/    | /'
    labsh 30 'for ns in /run/netns/yunhe*; do echo "== $ns"; nsenter --net="$ns" cat /proc/net/nf_conntrack 2>&1 | grep "dport=22 " | head -n 10; done' 2>&1 | sed 's/^/    | /'
fi
# a login over ssh through the floating IP: the key pair's key is let in (the key came to the guest
# from the metadata service), another key is not
ssh_vma() {
    labsh 45 "HOME=/tmp DROPBEAR_PASSWORD=not-the-password timeout 40 /out/ssh/ld-linux-x86-64.so.2 --library-path /out/ssh /out/ssh/dbclient -y -y -i /out/ssh/$1 root@$fip 'echo ssh-login-\$(id -u)-\$(hostname)' </dev/null"
}
t0=$(now)
if ssh_vma key >"$out" 2>&1 && grep -q "^ssh-login-0-vma$" "$out"; then
    pass "the lab host logs in on vma over ssh through $fip with the key pair labkey (root, host name vma; $(dt "$t0" "$(now)") s)"
else fail "the lab host logs in on vma over ssh through $fip with the key pair labkey"; fi
if ssh_vma other >"$out" 2>&1 || grep -q "ssh-login" "$out"; then
    fail "a key that is not the server's key pair is refused"
else pass "a key that is not the server's key pair is refused"; fi
# kill -9 of serve while the lab host pings the floating IP: the dataplane is the kernel's, the
# guest's VMM outlives serve, and the restarted serve's first pass changes nothing that carries it
if labsh 120 "ping -c 10 -W 1 $fip >/tmp/fip-ping.out 2>&1 & p=\$!; sleep 2; kill9_and_restart_serve; wait \$p; grep 'packets transmitted' /tmp/fip-ping.out" >"$out" 2>&1 \
    && grep -q "10 packets transmitted, 10 packets received" "$out"; then
    pass "kill -9 of serve during a ping of $fip: no packet lost, serve back ($(grep -o 'listening after [0-9.]* s' "$out"))"
else fail "kill -9 of serve during a ping of $fip: no packet lost"; fi
check "GET /healthz after the restart" curl -sf --max-time 20 "$URL/healthz"
check "server show vma lists the floating IP" openstack server show vma -f json
is_true "vma's addresses hold $fip" "'$fip' in json.dumps(d['addresses'])"

# --- a NIC hot-added through compute, and removed ------------------------------------------------
# vmd boots Debian's stock kernel (acpiphp built in) with tiny on net1; `server add network vmd
# net3` gives it a second port, which the VMM hot-adds as virtio-net: the guest sees eth1 appear
# and gets net3's address from yunhe's DHCP on it (net3 has no router); `server remove network`
# takes the port away again and the guest ejects the NIC.
lab_alive
check "network create net3" openstack network create net3 -f json
check "subnet create net3-v4 10.30.0.0/24 (DHCP, no router)" openstack subnet create --network net3 \
    --subnet-range 10.30.0.0/24 net3-v4 -f json
upload_tiny_on_debian
vmd=""
if openstack server create --image tiny-on-debian --flavor m1.nano --nic "net-id=$net1" \
    --security-group lab-sg vmd -f json >"$out" 2>&1; then
    vmd=$(json 'd["id"]' 2>/dev/null)
    if wait_server "$vmd" ACTIVE 60 >"$out" 2>&1; then pass "vmd (Debian's stock kernel + tiny, net1) -> ACTIVE"
    else fail "vmd -> ACTIVE within 60 s"; fi
    ready "vmd (Debian's stock kernel + tiny)" "$vmd" 1 90
    t0=$(now)
    check "server add network vmd net3 (a port hot-added as virtio-net)" openstack server add network vmd net3
    guest "vmd: eth1 appeared and got its net3 address from yunhe's DHCP" "$vmd" \
        'i=0; while [ ! -e /sys/class/net/eth1 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; udhcpc -i eth1 -s /etc/yunhe/udhcpc.script -n -q -t 10 -T 2 >/dev/null 2>&1; echo "nic-$((6*7)) $(ip -4 addr show eth1 | grep -o "inet [0-9./]*")"' \
        'nic-42 inet (10\.30\.0\.[0-9]+/24)' 90 \
        || guest_notes "$vmd" 'ls /sys/class/net; ls -l /sys/bus/pci/devices/*/driver; ip link; dmesg | tail -n 15'
    nic_addr=${match%%/*}
    nic_addr=${nic_addr%% *}
    check "server show vmd" openstack server show vmd -f json
    is_true "vmd's addresses list net3's $nic_addr" "'net3' in d['addresses'] and '$nic_addr' in json.dumps(d['addresses'])"
    check "server remove network vmd net3" openstack server remove network vmd net3
    guest "vmd: eth1 left the guest" "$vmd" \
        'i=0; while [ -e /sys/class/net/eth1 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; [ -e /sys/class/net/eth1 ] && echo "nic-gone-$((6*7)) no" || echo "nic-gone-$((6*7)) yes"' \
        'nic-gone-42 (yes)' 90
    echo "TIME NIC hot-add and removal through compute: $(dt "$t0" "$(now)") s"
    check "server show vmd" openstack server show vmd -f json
    is_true "vmd's addresses no longer list net3" "'net3' not in d['addresses']"
else fail "server create vmd (tiny-on-debian, net1)"; fi

# --- everything deleted, nothing left in the lab's kernel ------------------------------------------
lab_alive
for id in $vma $vmb $vmd; do
    step "server delete $id" "$id" GONE 15 openstack server delete "$id"
done
check "network delete net3" openstack network delete net3
[ -n "${vmc:-}" ] && step "server delete $vmc" "$vmc" GONE 15 p2 server delete "$vmc"
check "p2: router remove subnet r2 net2-v4" p2 router remove subnet r2 net2-v4
check "p2: router delete r2" p2 router delete r2
check "p2: network delete net2" p2 network delete net2
check "floating ip delete $fip" openstack floating ip delete "$fip"
check "router remove subnet r1 net1-v4" openstack router remove subnet r1 net1-v4
check "router delete r1" openstack router delete r1
check "network delete net1 public" openstack network delete net1 public
check "security group delete lab-sg" openstack security group delete lab-sg
check "project delete p2" openstack project delete p2
t0=$(now)
if labsh 40 'i=0; while [ $i -lt 30 ]; do left=$(ls /run/netns 2>/dev/null | grep "^yunhe"; ls /sys/class/net | grep "^yh-"); [ -z "$left" ] && exit 0; i=$((i + 1)); sleep 1; done; echo "left: $left"; exit 1' >"$out" 2>&1; then
    pass "no yunhe namespace and no yh-* link is left in the lab ($(dt "$t0" "$(now)") s)"
else fail "no yunhe namespace and no yh-* link is left in the lab"; fi
finish
