#!/usr/bin/env bash
# Bridged external mode (docs/network.md "Bridged mode"), end to end, as root, in the style of
# tests/network-dataplane.sh: `yunhe serve` runs inside a network and mount namespace this
# script makes for itself, so nothing of the host's network is touched. A veth pair plays the
# operator's LAN: `lan0` in serve's namespace is the host's NIC, its peer is in namespace
# yhtest-lan, a LAN host that is also the LAN's router (192.0.2.1/24).
#   1. refusals at start: an interface that does not exist, values that do not fit, a NIC
#      holding the host's address;
#   2. `--external-interface lan0` (a NIC without address): the first start's `public` is a
#      flat network on the LAN, lan0 goes on its bridge, no host address and no masquerade;
#      a guest on `private` gets DHCP and reaches the LAN host through router1, the LAN host
#      pings the guest's floating IP (an address of the LAN); deleting `public` lets lan0 go;
#   3. `--external-interface br-lan` (a bridge holding lan0 and the host's 192.0.2.5/24, as
#      Proxmox's vmbr0): the same, and the host keeps its address and its LAN.
# Prints one line per check and ends with `N passed, M failed`; exits non-zero on failure.
# Env: YUNHE_BIN (default target/release/yunhe).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bin="${YUNHE_BIN:-$repo/target/release/yunhe}"

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: the bridged-mode test needs root (network namespaces, bridges)"; echo "0 passed, 0 failed"; exit 0
fi
if [ -z "${YH_BR_INNER:-}" ]; then
    if ! unshare -m -n --propagation private true 2>/dev/null; then
        echo "SKIP: no network/mount namespace support here"; echo "0 passed, 0 failed"; exit 0
    fi
    for tool in ip busybox curl python3; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool missing (apt-get install iproute2 busybox-static curl python3)"; echo "0 passed, 0 failed"; exit 0; }
    done
    exec env YH_BR_INNER=1 unshare -m -n --propagation private bash "$0" "$@"
fi

# --- inside our own namespaces from here on ------------------------------------------
mkdir -p /run/netns
mount -t tmpfs -o size=1m yhtest /run/netns
ip link set lo up
ip netns add yhtest-lan
ip link add lan0 type veth peer name eth0 netns yhtest-lan
ip link set lan0 up
ip -n yhtest-lan addr add 192.0.2.1/24 dev eth0
ip -n yhtest-lan link set eth0 up
ip -n yhtest-lan link set lo up

work="$(mktemp -d "${TMPDIR:-/tmp}/yunhe-bridged.XXXXXX")"
pid=""
cleanup() {
    local rc=$?
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" 2>/dev/null; fi
    if [ "$rc" != 0 ] || [ "${failed:-0}" != 0 ]; then
        echo "--- server log (tail)"; tail -n 40 "$work/server.log" 2>/dev/null | sed 's/^/    | /'
    fi
    rm -rf "$work"
    return $rc
}
trap cleanup EXIT

passed=0 failed=0
pass() { passed=$((passed+1)); echo "PASS $1"; }
fail() { failed=$((failed+1)); echo "FAIL $1"; }
check() { local name="$1"; shift; if "$@" >"$work/out" 2>&1; then pass "$name"; else fail "$name"; sed 's/^/    | /' "$work/out" | tail -n 10; fi; }
refuse() { local name="$1"; shift; if "$@" >"$work/out" 2>&1; then fail "$name"; else pass "$name"; fi; }
wait_for() { local n=$(( $1 * 5 )); shift; while [ $n -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; n=$((n-1)); done; "$@"; }

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
export YUNHE_ADMIN_PASSWORD="admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
lan=(--external-cidr 192.0.2.0/24 --external-gateway 192.0.2.1 --external-pool 192.0.2.100-192.0.2.150)
token=""
new_token() {
    curl -si "$url/identity/v3/auth/tokens" -H 'Content-Type: application/json' -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"'"$YUNHE_ADMIN_PASSWORD"'"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}' | tr -d '\r' | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p'
}
# start STATE IFACE: serve with the defaults (the dataplane: auto) bridged to IFACE.
start() {
    "$bin" serve --state-dir "$work/$1" --listen "127.0.0.1:$port" --insecure-http \
        --external-interface "$2" "${lan[@]}" >>"$work/server.log" 2>&1 </dev/null &
    pid=$!
    wait_for 30 curl -sf "$url/healthz" && token="$(new_token)" && [ -n "$token" ]
}
stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null; pid=""; }
api() { curl -sf -X "$1" "$url/network/v2.0$2" -H "X-Auth-Token: $token" -H 'Content-Type: application/json' ${3:+-d "$3"}; }
get() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
holds() { api GET "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if eval(sys.argv[1]) else 1)' "$2"; }
short() { echo "$1" | tr -d - | cut -c1-10; }
# refused_with TEXT ARGS...: serve exits non-zero at start and says TEXT.
refused_with() {
    local text="$1"; shift
    if timeout 20 "$bin" serve --state-dir "$work/refused" --listen 127.0.0.1:0 --insecure-http "$@" >"$work/refused.out" 2>&1; then
        echo "serve started"; return 1
    fi
    grep -q -- "$text" "$work/refused.out" || { cat "$work/refused.out"; return 1; }
}
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
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "ip=$ip" > "$YH_LEASE_FILE"
    ;;
esac
exit 0
EOF
chmod +x "$work/udhcpc.sh"
dhcp() {
    rm -f "$work/lease.$1"
    YH_LEASE_FILE="$work/lease.$1" ip netns exec "$1" busybox udhcpc -i eth0 -n -q -f -t 4 -T 1 -s "$work/udhcpc.sh" >/dev/null 2>&1 || return 1
    grep -qx "ip=$2" "$work/lease.$1"
}

# flow NAME STATE IFACE: a first start bridged to IFACE; a guest on private; its floating IP
# from the LAN. Leaves serve running; sets pub, r1, fip.
flow() {
    local name="$1" p ip
    check "$name: first start" start "$2" "$3"
    pub="$(api GET '/networks?name=public' | get 'd["networks"][0]["id"]')"
    check "$name: public is a flat network on physical network public" holds "/networks/$pub" \
        'd["network"]["provider:network_type"] == "flat" and d["network"]["provider:physical_network"] == "public" and d["network"]["router:external"]'
    check "$name: public-subnet is the LAN with the given pool" holds "/subnets?name=public-subnet" \
        '[(s["cidr"], s["gateway_ip"], s["allocation_pools"]) for s in d["subnets"]] == [("192.0.2.0/24", "192.0.2.1", [{"start": "192.0.2.100", "end": "192.0.2.150"}])]'
    r1="$(api GET '/routers?name=router1' | get 'd["routers"][0]["id"]')"
    check "$name: router1's gateway is an address of the LAN" holds "/routers/$r1" \
        'd["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"] == "192.0.2.100"'
    check "$name: the router's gateway answers on the LAN" wait_for 15 ip netns exec yhtest-lan busybox ping -c1 -W1 192.0.2.100
    check "$name: no yunhe address and no masquerade in the host's namespace" sh -c \
        "! ip -4 -o addr | grep -q ' yh-' && ! { command -v nft >/dev/null && nft list tables | grep -q 'ip yunhe'; }"
    local priv
    priv="$(api GET '/networks?name=private' | get 'd["networks"][0]["id"]')"
    p="$(api POST /ports '{"port":{"network_id":"'"$priv"'","name":"g","device_owner":"compute:nova"}}')"
    ip="$(echo "$p" | get 'd["port"]["fixed_ips"][0]["ip_address"]')"
    guest "yhtest-$name" "$p" "yunhe-n-$priv"
    check "$name: a guest on private gets its address by DHCP" wait_for 15 dhcp "yhtest-$name" "$ip"
    check "$name: the guest reaches the LAN host through router1 (SNAT to the LAN address)" \
        wait_for 10 ip netns exec "yhtest-$name" busybox ping -c1 -W1 192.0.2.1
    fip="$(api POST /floatingips '{"floatingip":{"floating_network_id":"'"$pub"'","port_id":"'"$(echo "$p" | get 'd["port"]["id"]')"'"}}' | get 'd["floatingip"]["floating_ip_address"]')"
    check "$name: the floating IP is from the LAN pool" sh -c "case '$fip' in 192.0.2.1[0-4][0-9]|192.0.2.150) true;; *) false;; esac"
    local sg
    sg="$(api GET "/security-groups?name=default" | get 'd["security_groups"][0]["id"]')"
    api POST /security-group-rules '{"security_group_rule":{"security_group_id":"'"$sg"'","direction":"ingress","protocol":"icmp"}}' >/dev/null
    check "$name: a LAN host pings the guest's floating IP" wait_for 15 ip netns exec yhtest-lan busybox ping -c1 -W1 "$fip"
}

# --- 1. refusals ----------------------------------------------------------------------
check "refused: an interface that does not exist" refused_with "no such interface" --dataplane true --external-interface nope0 "${lan[@]}"
check "refused: a gateway outside the LAN" refused_with "--external-gateway 198.51.100.1" --dataplane true --external-interface lan0 \
    --external-cidr 192.0.2.0/24 --external-gateway 198.51.100.1 --external-pool 192.0.2.100-192.0.2.150
check "refused: a pool holding the gateway" refused_with "holds the gateway" --dataplane true --external-interface lan0 \
    --external-cidr 192.0.2.0/24 --external-gateway 192.0.2.120 --external-pool 192.0.2.100-192.0.2.150
check "refused: without the dataplane" refused_with "needs the dataplane" --dataplane false --external-interface lan0 "${lan[@]}"
refuse "refused: --external-interface without --external-pool" timeout 20 "$bin" serve --state-dir "$work/refused" --listen 127.0.0.1:0 \
    --insecure-http --external-interface lan0 --external-cidr 192.0.2.0/24 --external-gateway 192.0.2.1
ip addr add 192.0.2.5/24 dev lan0
check "refused: a NIC holding the host's address" refused_with "holds the host's address 192.0.2.5/24" --external-interface lan0 "${lan[@]}"
check "refused: the host's address is left where it was" sh -c "ip -4 addr show lan0 | grep -q 192.0.2.5/24"
ip addr del 192.0.2.5/24 dev lan0

# --- 2. a NIC without address ---------------------------------------------------------
flow nic state-nic lan0
check "nic: lan0 is on public's bridge" sh -c "ip -o link show lan0 | grep -q 'master yh-b$(short "$pub")'"
for f in $(api GET /floatingips | get '" ".join(f["id"] for f in d["floatingips"])'); do api DELETE "/floatingips/$f" >/dev/null; done
api PUT "/routers/$r1" '{"router":{"external_gateway_info":null}}' >/dev/null
api DELETE "/networks/$pub" >/dev/null
check "nic: deleting public lets lan0 go (no master, still up)" wait_for 10 sh -c "ip -o link show lan0 | grep -v -q master && ip -o link show lan0 | grep -q ',UP'"
stop

# --- 3. an operator's bridge holding the host's address (Proxmox's vmbr0) -------------
ip link add br-lan type bridge
ip link set lan0 master br-lan
ip addr add 192.0.2.5/24 dev br-lan
ip link set br-lan up
flow bridge state-bridge br-lan
check "bridge: router1's gateway veth is on br-lan" sh -c "ip -o link show master br-lan | grep -q ' yh-g'"
check "bridge: the host keeps its address on br-lan" sh -c "ip -4 addr show br-lan | grep -q 192.0.2.5/24"
check "bridge: the host still reaches its LAN" busybox ping -c1 -W2 192.0.2.1
check "bridge: the host reaches the floating IP over the LAN" wait_for 10 busybox ping -c1 -W1 "$fip"
stop

for g in yhtest-nic yhtest-bridge yhtest-lan; do ip netns del "$g" 2>/dev/null; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
