#!/usr/bin/env bash
# The Neutron kernel dataplane (issue 12, docs/network.md "Dataplane"), end to end, as root:
# `yunhe serve --dataplane` runs inside a network and mount namespace this script makes for
# itself (nothing of the host's network is touched: the "uplink" is a veth inside it, the
# named namespaces live on a private tmpfs /run/netns, and all of it goes when the script
# ends, failed or not). Guests are namespaces holding a veth on a network's bridge, named as
# the port's tap (yh-t<id>), with the port's MAC.
#   tests/network-dataplane.sh
# Prints one line per check and ends with `N passed, M failed`; exits non-zero on failure.
# Env: YUNHE_BIN (default target/release/yunhe).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bin="${YUNHE_BIN:-$repo/target/release/yunhe}"

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: the dataplane test needs root (network namespaces, bridges)"; echo "0 passed, 0 failed"; exit 0
fi
if [ -z "${YH_DP_INNER:-}" ]; then
    if ! unshare -m -n --propagation private true 2>/dev/null; then
        echo "SKIP: no network/mount namespace support here"; echo "0 passed, 0 failed"; exit 0
    fi
    for tool in ip busybox curl python3; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool missing (apt-get install iproute2 busybox-static curl python3)"; echo "0 passed, 0 failed"; exit 0; }
    done
    exec env YH_DP_INNER=1 unshare -m -n --propagation private bash "$0" "$@"
fi

# --- inside our own namespaces from here on ------------------------------------------
mkdir -p /run/netns
mount -t tmpfs -o size=1m yhtest /run/netns
ip link set lo up
# The host's "uplink" and what lies beyond it: a namespace yhtest-out at 198.51.100.2,
# the default route of this (the "host's") namespace.
ip netns add yhtest-out
ip link add uplink type veth peer name eth0 netns yhtest-out
ip addr add 198.51.100.1/24 dev uplink
ip link set uplink up
ip -n yhtest-out addr add 198.51.100.2/24 dev eth0
ip -n yhtest-out link set eth0 up
ip -n yhtest-out link set lo up
ip route add default via 198.51.100.2

work="$(mktemp -d "${TMPDIR:-/tmp}/yunhe-dataplane.XXXXXX")"
state="$work/state"
pid=""
cleanup() {
    local rc=$?
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" 2>/dev/null; fi
    if [ "$rc" != 0 ] || [ "${failed:-0}" != 0 ]; then
        echo "--- server log (tail)"; tail -n 40 "$work/server.log" 2>/dev/null | sed 's/^/    | /'
    fi
    # the guests' namespaces, also when a check failed or the script stopped early
    local g
    for g in yhtest-g9 yhtest-g1 yhtest-g2 yhtest-g3 yhtest-g4 yhtest-g5 yhtest-g6 yhtest-g7 yhtest-g8 yhtest-rogue yhtest-out; do
        ip netns del "$g" 2>/dev/null || true
    done
    rm -rf "$work"
    return $rc
}
trap cleanup EXIT

passed=0 failed=0
pass() { passed=$((passed+1)); echo "PASS $1"; }
fail() { failed=$((failed+1)); echo "FAIL $1"; }
check() { local name="$1"; shift; if "$@" >"$work/out" 2>&1; then pass "$name"; else fail "$name"; sed 's/^/    | /' "$work/out" | tail -n 10; fi; }
refuse() { local name="$1"; shift; if "$@" >"$work/out" 2>&1; then fail "$name"; else pass "$name"; fi; }
# wait_for SECONDS CMD...: until CMD succeeds.
wait_for() { local n=$(( $1 * 5 )); shift; while [ $n -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; n=$((n-1)); done; "$@"; }

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
export YUNHE_ADMIN_PASSWORD="admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
start() {
    "$bin" serve --dataplane --initial-networks false --state-dir "$state" --listen "127.0.0.1:$port" --insecure-http \
        >>"$work/server.log" 2>&1 </dev/null &
    pid=$!
    wait_for 30 curl -sf "$url/healthz"
}
start || { echo "FAIL server start"; tail -n 30 "$work/server.log"; echo "0 passed, 1 failed"; exit 1; }

new_token() {
    curl -si "$url/identity/v3/auth/tokens" -H 'Content-Type: application/json' -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"'"$YUNHE_ADMIN_PASSWORD"'"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}' | tr -d '\r' | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p'
}
token="$(new_token)"
[ -n "$token" ] || { echo "FAIL token"; echo "0 passed, 1 failed"; exit 1; }
# api METHOD PATH [BODY] -> JSON on stdout
api() { curl -sf -X "$1" "$url/network/v2.0$2" -H "X-Auth-Token: $token" -H 'Content-Type: application/json' ${3:+-d "$3"}; }
# get JSON-EXPR: evaluate on stdin as d
get() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
short() { echo "$1" | tr -d - | cut -c1-10; }

# guest NAME PORT_JSON NETNS: a namespace with a veth on the port's bridge.
guest() {
    local name="$1" pj="$2" ns="$3" id mac
    id="$(echo "$pj" | get 'd["port"]["id"]')"
    mac="$(echo "$pj" | get 'd["port"]["mac_address"]')"
    ip netns add "$name"
    ip -n "$ns" link add "yh-t$(short "$id")" type veth peer name eth0 netns "$name"
    ip -n "$name" link set eth0 address "$mac"
    ip -n "$name" link set lo up
    ip -n "$name" link set eth0 up
}
cat >"$work/udhcpc.sh" <<'EOF'
#!/bin/sh
# busybox udhcpc's hook: apply the lease and keep what it said.
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    env | grep -E '^(ip|mask|router|dns|domain|hostname|mtu|lease|staticroutes|serverid)=' > "$YH_LEASE_FILE"
    ;;
esac
exit 0
EOF
chmod +x "$work/udhcpc.sh"
# dhcp NAME: run udhcpc in the guest; its lease lands in $work/lease.NAME.
dhcp() {
    rm -f "$work/lease.$1"
    YH_LEASE_FILE="$work/lease.$1" ip netns exec "$1" busybox udhcpc -i eth0 -n -q -f -t 4 -T 1 -s "$work/udhcpc.sh" >/dev/null 2>&1 || return 1
    [ -s "$work/lease.$1" ]
}
# has NAME LINE: the lease of guest NAME holds LINE.
has() { grep -qx -- "$2" "$work/lease.$1"; }

# --- topology: a network, a subnet, two ports -----------------------------------------
net1="$(api POST /networks '{"network":{"name":"net1"}}' | get 'd["network"]["id"]')"
sub1="$(api POST /subnets '{"subnet":{"network_id":"'"$net1"'","cidr":"10.0.0.0/24","ip_version":4,"dns_nameservers":["10.0.0.53"]}}' | get 'd["subnet"]["id"]')"
p1="$(api POST /ports '{"port":{"network_id":"'"$net1"'","name":"p1","device_owner":"compute:nova"}}')"
p2="$(api POST /ports '{"port":{"network_id":"'"$net1"'","name":"p2","device_owner":"compute:nova"}}')"
p1_id="$(echo "$p1" | get 'd["port"]["id"]')"; p1_ip="$(echo "$p1" | get 'd["port"]["fixed_ips"][0]["ip_address"]')"
p2_ip="$(echo "$p2" | get 'd["port"]["fixed_ips"][0]["ip_address"]')"
ns1="yunhe-n-$net1"
check "network namespace with its bridge" wait_for 10 ip -n "$ns1" link show yh-br
check "bridge is up" sh -c "ip -n $ns1 link show yh-br | grep -q ',UP'"

guest yhtest-g1 "$p1" "$ns1"
guest yhtest-g2 "$p2" "$ns1"
check "guest veths enslaved to the bridge" wait_for 10 sh -c "ip -n $ns1 link show master yh-br | grep -c yh-t | grep -qx 2"
check "port ACTIVE with binding:vif_type tap once plugged" wait_for 10 sh -c \
    "curl -sf $url/network/v2.0/ports/$p1_id -H 'X-Auth-Token: $token' | grep -q '\"status\": *\"ACTIVE\"' && curl -sf $url/network/v2.0/ports/$p1_id -H 'X-Auth-Token: $token' | grep -q '\"binding:vif_type\": *\"tap\"'"

# --- port status (docs/network.md "Port status and VIF events"): a bound compute port is DOWN
# until its tap is on its bridge, ACTIVE from then on (never before: every read of ACTIVE finds
# the tap enslaved), DOWN again when the tap goes.
p9="$(api POST /ports '{"port":{"network_id":"'"$net1"'","name":"p9","device_owner":"compute:nova","device_id":"'"$(python3 -c 'import uuid; print(uuid.uuid4())')"'"}}')"
p9_id="$(echo "$p9" | get 'd["port"]["id"]')"
p9_tap="yh-t$(short "$p9_id")"
port_status() { api GET "/ports/$1" | get 'd["port"]["status"]'; }
status_is() { [ "$(port_status "$1")" = "$2" ]; }
sleep 4  # more than one resync pass (3 s)
check "a bound port without its tap stays DOWN" status_is "$p9_id" DOWN
# The tap arrives outside the bridge; watch until the port is ACTIVE, checking at every ACTIVE read
# that the tap is on the bridge already.
active_only_when_enslaved() {
    local n=100 st
    while [ $n -gt 0 ]; do
        st="$(port_status "$p9_id")"
        if [ "$st" = ACTIVE ]; then
            ip -n "$ns1" link show master yh-br | grep -q "$p9_tap" || { echo "ACTIVE before $p9_tap is on yh-br"; return 1; }
            return 0
        fi
        sleep 0.1; n=$((n-1))
    done
    echo "still $st"; return 1
}
guest yhtest-g9 "$p9" "$ns1"
check "the port goes ACTIVE only once its tap is on the bridge" active_only_when_enslaved
ip netns del yhtest-g9
check "the port is DOWN again when its tap goes" wait_for 10 status_is "$p9_id" DOWN
api DELETE "/ports/$p9_id" >/dev/null

check "guest 1 gets a DHCP lease" dhcp yhtest-g1
check "DHCP: the port's address" has yhtest-g1 "ip=$p1_ip"
check "DHCP: mask, router, DNS" eval "has yhtest-g1 mask=24 && has yhtest-g1 router=10.0.0.1 && has yhtest-g1 dns=10.0.0.53"
check "DHCP: domain, host name, MTU, lease time" eval "has yhtest-g1 domain=openstacklocal && has yhtest-g1 hostname=host-${p1_ip//./-} && has yhtest-g1 mtu=1500 && has yhtest-g1 lease=86400"
# No router yet: the network is isolated, its own namespace serves metadata on the link.
check "DHCP: classless routes include 169.254.169.254 (on the link: no router yet)" grep -q '^staticroutes=.*169.254.169.254/32 0.0.0.0' "$work/lease.yhtest-g1"
check "guest 2 gets its port's address by DHCP" eval "dhcp yhtest-g2 && has yhtest-g2 ip=$p2_ip"
check "guest 1 pings guest 2" ip netns exec yhtest-g1 busybox ping -c1 -W2 "$p2_ip"

# A MAC that is no port's gets nothing.
ip netns add yhtest-rogue
ip -n "$ns1" link add yh-tdeadbeef0 type veth peer name eth0 netns yhtest-rogue
ip -n yhtest-rogue link set eth0 up
refuse "an unknown MAC gets no lease" dhcp yhtest-rogue
check "an interface named as no port is removed" wait_for 10 sh -c "! ip -n $ns1 link show yh-tdeadbeef0"

# --- a router with an interface on the subnet and a gateway -----------------------------
pub="$(api POST /networks '{"network":{"name":"public","router:external":true}}' | get 'd["network"]["id"]')"
api POST /subnets '{"subnet":{"network_id":"'"$pub"'","cidr":"172.24.4.0/24","ip_version":4,"enable_dhcp":false}}' >/dev/null
r1="$(api POST /routers '{"router":{"name":"r1","external_gateway_info":{"network_id":"'"$pub"'"}}}' | get 'd["router"]["id"]')"
api PUT "/routers/$r1/add_router_interface" '{"subnet_id":"'"$sub1"'"}' >/dev/null
check "router namespace with the subnet's gateway address" wait_for 10 sh -c "ip -n yunhe-r-$r1 -4 addr | grep -q '10.0.0.1/24'"
check "external bridge in the root namespace at the external gateway" wait_for 10 sh -c "ip -4 addr show yh-b$(short "$pub") | grep -q '172.24.4.1/24'"
check "router default route via the external gateway" sh -c "ip -n yunhe-r-$r1 route | grep -q 'default via 172.24.4.1'"
check "guest pings its router" ip netns exec yhtest-g1 busybox ping -c1 -W2 10.0.0.1
check "DHCP: with a router, 169.254.169.254 goes through it" eval "dhcp yhtest-g1 && grep -q '^staticroutes=.*169.254.169.254/32 10.0.0.1' $work/lease.yhtest-g1"
check "no longer isolated: 169.254.169.254 leaves the network's bridge" wait_for 10 sh -c "! ip -n $ns1 -4 addr show yh-br | grep -q 169.254.169.254"
gw_ip="$(api GET "/routers/$r1" | get 'd["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]')"

# --- metadata at 169.254.169.254 from the router's namespace ----------------------------
# Compute gives no instance data here, so the answers are what the records know.
vm1="$(python3 -c 'import uuid; print(uuid.uuid4())')"
api PUT "/ports/$p1_id" '{"port":{"device_id":"'"$vm1"'"}}' >/dev/null
md() { ip netns exec "$1" curl -sf -m 2 "http://169.254.169.254$2"; }
check "metadata: OpenStack meta_data.json names the instance" wait_for 10 sh -c "ip netns exec yhtest-g1 curl -sf -m 2 http://169.254.169.254/openstack/latest/meta_data.json | grep -q '\"uuid\": *\"$vm1\"'"
check "metadata: network_data.json describes the port" sh -c "ip netns exec yhtest-g1 curl -sf -m 2 http://169.254.169.254/openstack/latest/network_data.json | grep -q '$(echo "$p1" | get 'd["port"]["mac_address"]')'"
check "metadata: EC2 instance-id and local-ipv4" eval "md yhtest-g1 /latest/meta-data/instance-id | grep -qx i-$vm1 && md yhtest-g1 /latest/meta-data/local-ipv4 | grep -qx $p1_ip"
refuse "metadata: a port with no instance gets 404" md yhtest-g2 /latest/meta-data/instance-id
check "guest reaches the router's external address" ip netns exec yhtest-g1 busybox ping -c1 -W2 "$gw_ip"

# --- default NAT mode: SNAT out of the host's default route, floating IPs -----------------
# yhtest-out has no route back to 172.24.4.0/24 nor 10.0.0.0/24: only a double SNAT
# (router, then the host's masquerade) gets an answer back.
check "guest reaches the outside through router SNAT and the host's masquerade" \
    wait_for 10 ip netns exec yhtest-g1 busybox ping -c1 -W1 198.51.100.2
fip="$(api POST /floatingips '{"floatingip":{"floating_network_id":"'"$pub"'","port_id":"'"$p1_id"'"}}' | get 'd["floatingip"]["floating_ip_address"]')"
# The default group lets in only its own members: the host is not one.
check "the floating IP's address is on the router's gateway" wait_for 10 sh -c "ip -n yunhe-r-$r1 -4 addr | grep -q '$fip/32'"
refuse "security groups: the host cannot ping the floating IP before a rule allows it" busybox ping -c1 -W1 "$fip"
default_sg="$(api GET "/security-groups?name=default" | get 'd["security_groups"][0]["id"]')"
# rule GROUP ',"attr":value...': an ingress rule; prints its id.
rule() { api POST /security-group-rules '{"security_group_rule":{"security_group_id":"'"$1"'","direction":"ingress"'"$2"'}}' | get 'd["security_group_rule"]["id"]'; }
rule "$default_sg" ',"protocol":"icmp"' >/dev/null
rule "$default_sg" ',"protocol":"6","port_range_min":7070,"port_range_max":7070,"remote_ip_prefix":"0.0.0.0/0"' >/dev/null
check "the host reaches the guest on its floating IP (after an ICMP rule)" wait_for 10 busybox ping -c1 -W1 "$fip"
ip -n yhtest-out route add 172.24.4.0/24 via 198.51.100.1
check "the outside reaches the floating IP through the host" ip netns exec yhtest-out busybox ping -c1 -W2 "$fip"
ip netns exec yhtest-g1 busybox nc -l -p 7070 -e echo hello-from-guest >/dev/null 2>&1 &
ncpid=$!
sleep 0.3
check "TCP to the floating IP reaches the guest" sh -c "echo | busybox nc -w 2 $fip 7070 | grep -q hello-from-guest"
kill "$ncpid" 2>/dev/null; wait "$ncpid" 2>/dev/null
if command -v nft >/dev/null; then
    check "nftables: the floating IP's DNAT in the router's table yunhe" sh -c "ip netns exec yunhe-r-$r1 nft list table ip yunhe | grep -q 'ip daddr $fip'"
fi
fip_id="$(api GET /floatingips | get 'd["floatingips"][0]["id"]')"
api PUT "/floatingips/$fip_id" '{"floatingip":{"port_id":null}}' >/dev/null
check "a disassociated floating IP stops answering" wait_for 10 sh -c "! busybox ping -c1 -W1 $fip"

# --- security groups and port security on net1 (docs/network.md "Security groups") ----------
web="$(api POST /security-groups '{"security_group":{"name":"web"}}' | get 'd["security_group"]["id"]')"
p4="$(api POST /ports '{"port":{"network_id":"'"$net1"'","name":"p4","device_owner":"compute:nova","security_groups":["'"$web"'"]}}')"
p5="$(api POST /ports '{"port":{"network_id":"'"$net1"'","name":"p5","device_owner":"compute:nova","port_security_enabled":false}}')"
p2_id="$(echo "$p2" | get 'd["port"]["id"]')"
p4_id="$(echo "$p4" | get 'd["port"]["id"]')"; p4_ip="$(echo "$p4" | get 'd["port"]["fixed_ips"][0]["ip_address"]')"
p5_id="$(echo "$p5" | get 'd["port"]["id"]')"; p5_ip="$(echo "$p5" | get 'd["port"]["fixed_ips"][0]["ip_address"]')"
guest yhtest-g4 "$p4" "$ns1"
guest yhtest-g5 "$p5" "$ns1"
check "guests 4 (group web) and 5 (port security off) get their leases" eval "dhcp yhtest-g4 && has yhtest-g4 ip=$p4_ip && dhcp yhtest-g5 && has yhtest-g5 ip=$p5_ip"
check "the bridge hands IP frames to the namespace's hooks (nf_call_iptables)" sh -c "ip -d -n $ns1 link show yh-br | grep -q 'nf_call_iptables 1'"
if command -v nft >/dev/null; then
    check "nftables: bridge yunhe has the port's anti-spoofing chain, inet yunhe its in/out chains" sh -c \
        "ip netns exec $ns1 nft list table bridge yunhe | grep -q 'chain spoof-$p4_id' && ip netns exec $ns1 nft list table inet yunhe | grep -q 'chain in-$p4_id'"
    check "nftables: no chains for a port with port security off" sh -c "! ip netns exec $ns1 nft list ruleset | grep -q '$p5_id'"
fi
ip netns exec yhtest-g4 busybox nc -ll -p 8080 -e echo web4 >/dev/null 2>&1 &
sgpids="$!"
ip netns exec yhtest-g2 busybox nc -ll -p 8080 -e echo web2 >/dev/null 2>&1 &
sgpids="$sgpids $!"
sleep 0.3
# tcp_ok GUEST IP PORT WORD: a TCP connection answers WORD.
tcp_ok() { echo | ip netns exec "$1" busybox nc -w 1 "$2" "$3" 2>/dev/null | grep -q "$4"; }
refuse "TCP 8080 closed by default (group web has no ingress rule)" tcp_ok yhtest-g1 "$p4_ip" 8080 web4
web_rule="$(rule "$web" ',"protocol":"tcp","port_range_min":8000,"port_range_max":8100,"remote_ip_prefix":"10.0.0.0/24"')"
if command -v nft >/dev/null; then
    check "a new rule is in the kernel within a second" wait_for 1 sh -c "ip netns exec $ns1 nft list chain inet yunhe in-$p4_id | grep -q 8100"
fi
check "TCP 8080 opened by an ingress rule (tcp 8000-8100 from 10.0.0.0/24)" wait_for 3 tcp_ok yhtest-g1 "$p4_ip" 8080 web4
api DELETE "/security-group-rules/$web_rule" >/dev/null
if command -v nft >/dev/null; then
    check "a deleted rule leaves the kernel within a second" wait_for 1 sh -c "! ip netns exec $ns1 nft list chain inet yunhe in-$p4_id | grep -q 8100"
fi
# The dataplane applies the delete on its next pass (after the write's notify); without nft
# here to watch the chain, wait for the refusal as the opening above waits for the answer.
tcp_refused() { ! tcp_ok "$@"; }
check "TCP 8080 closed again once the rule is deleted (within 3 s)" wait_for 3 tcp_refused yhtest-g1 "$p4_ip" 8080 web4
check "remote_group_id: a member of the default group connects to a default-group port" tcp_ok yhtest-g1 "$p2_ip" 8080 web2
refuse "remote_group_id: a non-member (group web) is refused" tcp_ok yhtest-g4 "$p2_ip" 8080 web2
if command -v nft >/dev/null; then
    check "the default group's address set holds its members" sh -c \
        "ip netns exec $ns1 nft list set inet yunhe v4-$default_sg | grep -q '$p1_ip' && ip netns exec $ns1 nft list set inet yunhe v4-$default_sg | grep -q '$p2_ip'"
fi
refuse "ICMP to group web refused without a rule" ip netns exec yhtest-g1 busybox ping -c1 -W1 "$p4_ip"
rule "$web" ',"protocol":"icmp","port_range_min":8,"port_range_max":0' >/dev/null
check "ICMP echo allowed by an ICMP rule (type 8 code 0)" wait_for 3 ip netns exec yhtest-g1 busybox ping -c1 -W1 "$p4_ip"

# Anti-spoofing: guest 5 (port security off, so it takes anything) logs each UDP datagram;
# guest 2 sends from its own address, from another, from another MAC, and ARP for another.
cat >"$work/udp.py" <<'PY'
import socket, sys
if sys.argv[1] == "recv":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9000))
    while True:
        data, peer = s.recvfrom(2048)
        with open(sys.argv[2], "a") as f: f.write(peer[0] + " " + data.decode() + "\n")
elif sys.argv[1] == "send":  # send SRC DST WORD (SRC need not be ours: IP_TRANSPARENT)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_IP, 19, 1)
    s.bind((sys.argv[2], 0)); s.sendto(sys.argv[4].encode(), (sys.argv[3], 9000))
else:  # arp IFACE SENDER_IP TARGET_IP: a request "who has TARGET, tell SENDER" from our MAC
    iface, spa, tpa = sys.argv[2:5]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((iface, 0x0806))
    mac = s.getsockname()[4]
    arp = bytes.fromhex("0001080006040001") + mac + socket.inet_aton(spa) + b"\0" * 6 + socket.inet_aton(tpa)
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
PY
: >"$work/udp.log"
ip netns exec yhtest-g5 python3 "$work/udp.py" recv "$work/udp.log" >/dev/null 2>&1 &
sgpids="$sgpids $!"
sleep 0.3
udp() { ip netns exec yhtest-g2 python3 "$work/udp.py" send "$1" "$p5_ip" "$2"; }
got() { grep -q "^$1 $2\$" "$work/udp.log"; }
# (sent again until it arrives: the receiver may still be starting)
check "anti-spoofing: UDP from the port's own address arrives" wait_for 3 sh -c "ip netns exec yhtest-g2 python3 $work/udp.py send $p2_ip $p5_ip own && sleep 0.2 && grep -q '^$p2_ip own\$' $work/udp.log"
udp 10.0.0.99 spoof-ip; sleep 0.5
refuse "anti-spoofing: a spoofed source IP is dropped" got 10.0.0.99 spoof-ip
p2_mac="$(echo "$p2" | get 'd["port"]["mac_address"]')"
ip -n yhtest-g2 link set eth0 address 02:00:00:00:00:99
udp "$p2_ip" spoof-mac; sleep 0.5
ip -n yhtest-g2 link set eth0 address "$p2_mac"
refuse "anti-spoofing: a spoofed source MAC is dropped" got "$p2_ip" spoof-mac
ip netns exec yhtest-g2 python3 "$work/udp.py" arp eth0 10.0.0.99 "$p5_ip"; sleep 0.5
refuse "anti-spoofing: ARP for an address not the port's is dropped" sh -c "ip -n yhtest-g5 neigh show 10.0.0.99 | grep -q lladdr"
api PUT "/ports/$p2_id" '{"port":{"port_security_enabled":false,"security_groups":[]}}' >/dev/null
check "port security off: the spoofed source gets through" wait_for 3 sh -c "ip netns exec yhtest-g2 python3 $work/udp.py send 10.0.0.99 $p5_ip off && sleep 0.2 && grep -q '^10.0.0.99 off\$' $work/udp.log"
check "port security off: ARP for another address gets through" sh -c "ip netns exec yhtest-g2 python3 $work/udp.py arp eth0 10.0.0.99 $p5_ip; sleep 0.3; ip -n yhtest-g5 neigh show 10.0.0.99 | grep -q lladdr"
check "port security off: no ingress filtering either (group web reaches it)" tcp_ok yhtest-g4 "$p2_ip" 8080 web2
for p in $sgpids; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done

# --- overlapping CIDRs on two networks stay apart ---------------------------------------
net2="$(api POST /networks '{"network":{"name":"net2"}}' | get 'd["network"]["id"]')"
api POST /subnets '{"subnet":{"network_id":"'"$net2"'","cidr":"10.0.0.0/24","ip_version":4}}' >/dev/null
p3="$(api POST /ports '{"port":{"network_id":"'"$net2"'","name":"p3","device_owner":"compute:nova"}}')"
p3_ip="$(echo "$p3" | get 'd["port"]["fixed_ips"][0]["ip_address"]')"
check "second network's namespace" wait_for 10 ip -n "yunhe-n-$net2" link show yh-br
guest yhtest-g3 "$p3" "yunhe-n-$net2"
check "guest 3 (same CIDR, other network) gets its lease" eval "dhcp yhtest-g3 && has yhtest-g3 ip=$p3_ip"
other="$p2_ip"; [ "$other" = "$p3_ip" ] && other="$p1_ip"
refuse "guest 3 cannot reach net1's guests" ip netns exec yhtest-g3 busybox ping -c1 -W1 "$other"

# --- IPv6: router advertisements (SLAAC) from the router's interface ---------------------
net6="$(api POST /networks '{"network":{"name":"net6"}}' | get 'd["network"]["id"]')"
sub6="$(api POST /subnets '{"subnet":{"network_id":"'"$net6"'","cidr":"fd00:6::/64","ip_version":6,"ipv6_ra_mode":"slaac","ipv6_address_mode":"slaac","dns_nameservers":["fd00:6::53"]}}' | get 'd["subnet"]["id"]')"
api PUT "/routers/$r1/add_router_interface" '{"subnet_id":"'"$sub6"'"}' >/dev/null
check "router interface holds the IPv6 gateway address" wait_for 10 sh -c "ip -n yunhe-r-$r1 -6 addr | grep -q 'fd00:6::1/64'"
check "IPv6 forwarding on in the router namespace only" sh -c \
    "[ \$(ip netns exec yunhe-r-$r1 cat /proc/sys/net/ipv6/conf/all/forwarding) = 1 ] && [ \$(ip netns exec yunhe-n-$net6 cat /proc/sys/net/ipv6/conf/all/forwarding) = 0 ] && [ \$(cat /proc/sys/net/ipv6/conf/all/forwarding) = 0 ]"
p6="$(api POST /ports '{"port":{"network_id":"'"$net6"'","name":"p6","device_owner":"compute:nova"}}')"
p6_ip="$(echo "$p6" | get 'd["port"]["fixed_ips"][0]["ip_address"]')"
check "the SLAAC port's address is its EUI-64 one" sh -c "echo '$p6_ip' | grep -q '^fd00:6::f816:3eff:fe'"
# The guest takes router advertisements (accept_ra; the kernel sends a solicitation when
# eth0 comes up).
ip netns add yhtest-g6
ip -n "yunhe-n-$net6" link add "yh-t$(short "$(echo "$p6" | get 'd["port"]["id"]')")" type veth peer name eth0 netns yhtest-g6
ip -n yhtest-g6 link set eth0 address "$(echo "$p6" | get 'd["port"]["mac_address"]')"
ip netns exec yhtest-g6 sysctl -qw net.ipv6.conf.eth0.accept_ra=1 net.ipv6.conf.eth0.autoconf=1
ip -n yhtest-g6 link set lo up
ip -n yhtest-g6 link set eth0 up
# has6 ADDR: the guest's eth0 holds ADDR (compared as addresses, not as text).
has6() { ip -n yhtest-g6 -6 -o addr show dev eth0 scope global | python3 -c 'import ipaddress,sys; want=ipaddress.ip_address(sys.argv[1]); sys.exit(0 if any(ipaddress.ip_interface(l.split()[3]).ip == want for l in sys.stdin) else 1)' "$1"; }
check "guest autoconfigures its port's address from the router advertisement" wait_for 20 has6 "$p6_ip"
check "guest has a default route via the router's link-local address" sh -c "ip -n yhtest-g6 -6 route show default | grep -q 'via fe80::'"
check "guest pings the router's IPv6 gateway" wait_for 5 ip netns exec yhtest-g6 busybox ping6 -c1 -W2 fd00:6::1
api PUT "/networks/$net6" '{"network":{"mtu":1400}}' >/dev/null
check "a changed network MTU reaches the guest in the next advertisement (MTU option)" wait_for 10 sh -c "[ \$(ip netns exec yhtest-g6 cat /proc/sys/net/ipv6/conf/eth0/mtu) = 1400 ]"
api PUT "/routers/$r1/remove_router_interface" '{"subnet_id":"'"$sub6"'"}' >/dev/null
check "the IPv6 interface goes with its router interface" wait_for 10 sh -c "! ip -n yunhe-r-$r1 -6 addr | grep -q 'fd00:6::1'"

# --- isolated metadata: a network with DHCP and no router ---------------------------------
neti="$(api POST /networks '{"network":{"name":"isolated"}}' | get 'd["network"]["id"]')"
api POST /subnets '{"subnet":{"network_id":"'"$neti"'","cidr":"10.7.0.0/24","ip_version":4}}' >/dev/null
vm7="$(python3 -c 'import uuid; print(uuid.uuid4())')"
p7="$(api POST /ports '{"port":{"network_id":"'"$neti"'","name":"p7","device_owner":"compute:nova","device_id":"'"$vm7"'"}}')"
p7_ip="$(echo "$p7" | get 'd["port"]["fixed_ips"][0]["ip_address"]')"
check "isolated network: 169.254.169.254 on its bridge" wait_for 10 sh -c "ip -n yunhe-n-$neti -4 addr show yh-br | grep -q '169.254.169.254/32'"
guest yhtest-g7 "$p7" "yunhe-n-$neti"
check "isolated network: the lease routes 169.254.169.254 on the link (router 0.0.0.0)" eval \
    "dhcp yhtest-g7 && has yhtest-g7 ip=$p7_ip && grep -q '^staticroutes=.*169.254.169.254/32 0.0.0.0' $work/lease.yhtest-g7"
# (udhcpc's hook here applies only the default route; a real guest's DHCP client applies 121.)
# (busybox 1.35's wget crashes with -T, so timeout(1) bounds it.)
ip -n yhtest-g7 route add 169.254.169.254/32 dev eth0
check "isolated network: the guest fetches meta_data.json naming its instance" wait_for 10 sh -c \
    "timeout 5 ip netns exec yhtest-g7 busybox wget -q -O - http://169.254.169.254/openstack/latest/meta_data.json | grep -q '\"uuid\": *\"$vm7\"'"
check "isolated network: EC2 local-ipv4 is the guest's address" sh -c \
    "timeout 5 ip netns exec yhtest-g7 busybox wget -q -O - http://169.254.169.254/latest/meta-data/local-ipv4 | grep -qx $p7_ip"

# --- restart safety ----------------------------------------------------------------------
kill -KILL "$pid"; wait "$pid" 2>/dev/null; pid=""
check "kill -9 of serve: guests still talk" ip netns exec yhtest-g1 busybox ping -c1 -W2 "$p2_ip"
ip netns del "yunhe-r-$r1"
ip -n "$ns1" link del yh-br
have_nft=0; command -v nft >/dev/null && have_nft=1
[ "$have_nft" = 1 ] && ip netns exec "$ns1" nft delete table inet yunhe
start
if [ "$have_nft" = 1 ]; then
    check "restart: the lost security-group table comes back" wait_for 15 sh -c "ip netns exec $ns1 nft list table inet yunhe | grep -q 'chain in-$p4_id'"
fi
check "restart: the lost router namespace comes back" wait_for 15 sh -c "ip -n yunhe-r-$r1 -4 addr | grep -q '10.0.0.1/24'"
check "restart: the lost bridge comes back with its ports" wait_for 15 sh -c "ip -n $ns1 link show master yh-br | grep -c yh-t | grep -qx 4"
check "restart: guest pings its router again" wait_for 10 ip netns exec yhtest-g1 busybox ping -c1 -W1 10.0.0.1
check "restart: DHCP answers again" eval "dhcp yhtest-g2 && has yhtest-g2 ip=$p2_ip"
check "restart: metadata answers again" wait_for 10 sh -c "ip netns exec yhtest-g1 curl -sf -m 2 http://169.254.169.254/latest/meta-data/instance-id | grep -qx i-$vm1"

# --- a server on net1: compute's side (docs/network.md "Nova's side") --------------------
# The echo guest boots with one NIC on net1: its tap yh-t<port> is made in the network's
# namespace and handed to the VMM; the port goes ACTIVE; delete takes port and tap away.
nova() { curl -s -X "$1" "$url/compute/v2.1$2" -H "X-Auth-Token: $token" -H 'OpenStack-API-Version: compute 2.73' -H 'Content-Type: application/json' ${3:+-d "$3"}; }
# upload JSON FILE: a Glance image with FILE's bytes; prints its id.
upload() {
    local id
    id="$(curl -sf -X POST "$url/image/v2/images" -H "X-Auth-Token: $token" -H 'Content-Type: application/json' -d "$1" | get 'd["id"]')"
    curl -sf -X PUT "$url/image/v2/images/$id/file" -H "X-Auth-Token: $token" -H 'Content-Type: application/octet-stream' --data-binary "@$2" >/dev/null
    echo "$id"
}
code() { curl -s -o /dev/null -w '%{http_code}' "$url$1" -H "X-Auth-Token: $token"; }
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    "$bin" vm guest echo -o "$work/echo.elf" >/dev/null 2>&1
    head -c 1048576 /dev/zero >"$work/disk.raw"
    kernel="$(upload '{"name":"echo-kernel","disk_format":"aki","container_format":"aki"}' "$work/echo.elf")"
    image="$(upload '{"name":"echo-disk","disk_format":"raw","container_format":"bare","kernel_id":"'"$kernel"'"}' "$work/disk.raw")"
    vm="$(nova POST /servers '{"server":{"name":"nic1","imageRef":"'"$image"'","flavorRef":"42","networks":[{"uuid":"'"$net1"'"}]}}' | get 'd["server"]["id"]')"
    check "server with a network ACTIVE" wait_for 60 sh -c "curl -sf $url/compute/v2.1/servers/$vm -H 'X-Auth-Token: $token' | grep -q '\"status\": *\"ACTIVE\"'"
    vport="$(api GET "/ports?device_id=$vm" | get 'd["ports"][0]["id"]')"
    check "its tap is in the network's namespace, on the bridge" wait_for 10 sh -c "ip -n $ns1 link show master yh-br | grep -q yh-t$(short "$vport")"
    check "its port becomes ACTIVE" wait_for 10 sh -c "curl -sf $url/network/v2.0/ports/$vport -H 'X-Auth-Token: $token' | grep -q '\"status\": *\"ACTIVE\"'"
    check "its addresses show the port's fixed IP" sh -c "curl -sf $url/compute/v2.1/servers/$vm -H 'X-Auth-Token: $token' | grep -q '\"net1\"'"
    nova DELETE "/servers/$vm" >/dev/null
    check "server deleted" wait_for 30 sh -c "[ \$(curl -s -o /dev/null -w '%{http_code}' $url/compute/v2.1/servers/$vm -H 'X-Auth-Token: $token') = 404 ]"
    check "its port is gone" test "$(code "/network/v2.0/ports/$vport")" = 404
    check "its tap is gone" wait_for 10 sh -c "! ip -n $ns1 link show yh-t$(short "$vport")"
else
    echo "SKIP server with a network: /dev/kvm is not usable here"
fi

# --- deleting everything leaves nothing --------------------------------------------------
for f in $(api GET /floatingips | get '" ".join(f["id"] for f in d["floatingips"])'); do api DELETE "/floatingips/$f" >/dev/null; done
api PUT "/routers/$r1/remove_router_interface" '{"subnet_id":"'"$sub1"'"}' >/dev/null
api PUT "/routers/$r1" '{"router":{"external_gateway_info":null}}' >/dev/null
api DELETE "/routers/$r1" >/dev/null
for p in $(api GET /ports | get '" ".join(p["id"] for p in d["ports"])'); do api DELETE "/ports/$p" >/dev/null; done
for s in $(api GET /subnets | get '" ".join(s["id"] for s in d["subnets"])'); do api DELETE "/subnets/$s" >/dev/null; done
for n in $(api GET /networks | get '" ".join(n["id"] for n in d["networks"])'); do api DELETE "/networks/$n" >/dev/null; done
check "no yunhe namespace left" wait_for 10 sh -c "! ls /run/netns | grep -q '^yunhe-'"
check "no yh- link left in the root namespace" sh -c "! ip -o link | grep -q ' yh-'"
check "no nftables table left" sh -c "! command -v nft >/dev/null || ! nft list tables | grep -q yunhe"

# --- first start with the defaults: the dataplane (auto: root, /dev/net/tun) and DevStack's
# networks `public`, `private`, `router1`; a guest on `private` reaches the uplink ----------
kill -TERM "$pid"; wait "$pid" 2>/dev/null; pid=""
state="$work/state-defaults"
start_defaults() {
    "$bin" serve --state-dir "$state" --listen "127.0.0.1:$port" --insecure-http \
        >>"$work/server.log" 2>&1 </dev/null &
    pid=$!
    wait_for 30 curl -sf "$url/healthz" && token="$(new_token)" && [ -n "$token" ]
}
: >"$work/server.log"
check "first start with the defaults" start_defaults
check "first start: the dataplane is on by default (auto)" grep -q 'dataplane on (guests get DHCP' "$work/server.log"
check "first start: the message names the networks it made" grep -q "created network 'public' (172.24.4.0/24" "$work/server.log"
nets_json="$(api GET /networks)"
pub2="$(echo "$nets_json" | get '[n["id"] for n in d["networks"] if n["name"] == "public"][0]')"
priv2="$(echo "$nets_json" | get '[n["id"] for n in d["networks"] if n["name"] == "private"][0]')"
# holds PATH EXPR: GET PATH and EXPR (Python, the answer as d) is true.
holds() { api GET "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if eval(sys.argv[1]) else 1)' "$2"; }
check "first start: public is external and not shared" holds "/networks/$pub2" 'd["network"]["router:external"] and not d["network"]["shared"]'
check "first start: public-subnet 172.24.4.0/24, no DHCP, pool .2-.254" holds "/subnets?name=public-subnet" \
    '[(s["cidr"], s["gateway_ip"], s["enable_dhcp"], s["allocation_pools"]) for s in d["subnets"]] == [("172.24.4.0/24", "172.24.4.1", False, [{"start": "172.24.4.2", "end": "172.24.4.254"}])]'
check "first start: private-subnet 10.0.0.0/26 with DHCP" holds "/subnets?name=private-subnet" \
    '[(s["cidr"], s["enable_dhcp"], s["network_id"]) for s in d["subnets"]] == [("10.0.0.0/26", True, "'"$priv2"'")]'
r2="$(api GET '/routers?name=router1' | get 'd["routers"][0]["id"]')"
check "first start: router1's gateway is on public" holds "/routers/$r2" 'd["router"]["external_gateway_info"]["network_id"] == "'"$pub2"'"'
check "first start: router1's namespace holds private-subnet's gateway" wait_for 15 sh -c "ip -n yunhe-r-$r2 -4 addr | grep -q '10.0.0.1/26'"
p6="$(api POST /ports '{"port":{"network_id":"'"$priv2"'","name":"p6","device_owner":"compute:nova"}}')"
p6_ip="$(echo "$p6" | get 'd["port"]["fixed_ips"][0]["ip_address"]')"
guest yhtest-g8 "$p6" "yunhe-n-$priv2"
check "a guest on private gets its address by DHCP" wait_for 15 eval "dhcp yhtest-g8 && has yhtest-g8 ip=$p6_ip && has yhtest-g8 router=10.0.0.1"
check "a guest on private reaches the uplink through router1" wait_for 10 ip netns exec yhtest-g8 busybox ping -c1 -W1 198.51.100.2
kill -TERM "$pid"; wait "$pid" 2>/dev/null; pid=""
check "restart: serve comes back" start_defaults
check "restart: the first-start networks are not made twice" test "$(api GET /networks | get 'len(d["networks"])')" = 2
api DELETE "/ports/$(echo "$p6" | get 'd["port"]["id"]')" >/dev/null
api PUT "/routers/$r2/remove_router_interface" '{"subnet_id":"'"$(api GET '/subnets?name=private-subnet' | get 'd["subnets"][0]["id"]')"'"}' >/dev/null
api DELETE "/routers/$r2" >/dev/null
for s in $(api GET /subnets | get '" ".join(s["id"] for s in d["subnets"])'); do api DELETE "/subnets/$s" >/dev/null; done
for n in $(api GET /networks | get '" ".join(n["id"] for n in d["networks"])'); do api DELETE "/networks/$n" >/dev/null; done
kill -TERM "$pid"; wait "$pid" 2>/dev/null; pid=""
check "restart after deleting them" start_defaults
check "restart: what the operator deleted stays deleted" test "$(api GET /networks | get 'len(d["networks"])')" = 0
check "first start: nothing of it left in the kernel" wait_for 10 sh -c "! ls /run/netns | grep -q '^yunhe-'"

for g in yhtest-g1 yhtest-g2 yhtest-g3 yhtest-g4 yhtest-g5 yhtest-g6 yhtest-g7 yhtest-g8 yhtest-rogue yhtest-out; do ip netns del "$g" 2>/dev/null; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
