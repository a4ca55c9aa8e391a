#!/usr/bin/env bash
# Neutron with the stock clients (issue 12): network, subnet, port, router, floating IP,
# security group, quota and RBAC flows and bad input, against a freshly started `yunhe serve`.
#   tests/openstack/network-cli.sh
# Prints one line per check and ends with `N passed, M failed`; exits non-zero on failure.
# Env: YUNHE_BIN (server binary), YUNHE_VENV (venv path), YUNHE_CLI_LOG (keep the
# commands' output there).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$("$here/venv.sh" | tail -n1)" || { echo "venv setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$venv/bin:$PATH"
py="$venv/bin/python"

. "$here/start-server.sh"
. "$here/lib.sh"

passed=0 failed=0
out="$(mktemp "${TMPDIR:-/tmp}/yunhe-cli.XXXXXX")"
work="$(mktemp -d "${TMPDIR:-/tmp}/yunhe-network-cli.XXXXXX")"
yunhe_on_exit "rm -rf '$out' '$work'"
log="${YUNHE_CLI_LOG:-}"

pass() { passed=$((passed+1)); echo "PASS $1"; }
fail() {
    failed=$((failed+1)); echo "FAIL $1"
    if [ -s "$out" ]; then { cat "$out"; echo; } | sed -e '/^\r\?$/d' -e 's/^/    | /' | tail -n 15; fi
}
check() {
    local name="$1"; shift
    if "$@" >"$out" 2>&1; then pass "$name"; else fail "$name"; fi
    [ -n "$log" ] && { echo "== $name: $*"; cat "$out"; } >>"$log"
    return 0
}
# refuse NAME CMD...: the command must fail.
refuse() {
    local name="$1"; shift
    if "$@" >"$out" 2>&1; then fail "$name"; else pass "$name"; fi
    return 0
}
# json EXPR: a Python expression on the JSON in $out (as `d`), keys lower-cased.
json() { "$py" -c 'import json,sys
def low(x):
    if isinstance(x, dict): return {k.lower().replace(" ", "_"): low(v) for k, v in x.items()}
    if isinstance(x, list): return [low(v) for v in x]
    return x
d=low(json.load(open(sys.argv[1]))); print(eval(sys.argv[2]))' "$out" "$1"; }
# expect NAME EXPR: EXPR (on $out) must print True.
expect() { if json "$2" 2>/dev/null | grep -qx True; then pass "$1"; else fail "$1"; fi; }

if ! yunhe_start_server; then
    echo "FAIL server start"; echo "0 passed, 1 failed"; exit 1
fi

# --- networks and subnets ---------------------------------------------------------
check "openstack network create --external (admin)" \
    openstack network create --external --share public -f json
expect "public is external and shared" 'd["router:external"] in (True, "External") and d["shared"] is True'
check "openstack subnet create (public)" \
    openstack subnet create --network public --subnet-range 172.24.4.0/24 public-subnet -f json
check "openstack network create private" openstack network create --mtu 1400 private -f json
expect "private is ACTIVE with MTU 1400" 'd["status"]=="ACTIVE" and d["mtu"]==1400'
check "openstack subnet create (IPv4, DNS, host route, pool)" \
    openstack subnet create --network private --subnet-range 10.0.0.0/24 \
    --allocation-pool start=10.0.0.10,end=10.0.0.20 --dns-nameserver 10.0.0.1 \
    --host-route destination=10.5.0.0/16,gateway=10.0.0.30 private-subnet -f json
expect "the subnet has its pool, gateway and DNS" \
    'd["gateway_ip"]=="10.0.0.1" and "10.0.0.10" in str(d["allocation_pools"]) and d["dns_nameservers"]==["10.0.0.1"]'
check "openstack subnet create (IPv6 SLAAC)" \
    openstack subnet create --network private --ip-version 6 --subnet-range 2001:db8::/64 \
    --ipv6-ra-mode slaac --ipv6-address-mode slaac private-v6 -f json
refuse "an overlapping CIDR on the same network is refused" \
    openstack subnet create --network private --subnet-range 10.0.0.0/16 overlap
refuse "an invalid CIDR is refused" \
    openstack subnet create --network private --subnet-range 10.0.0.300/24 bad
check "openstack network list" openstack network list -f json
expect "both networks are listed" '{"public", "private"} <= {n["name"] for n in d}'
check "openstack network set --name / --description" \
    openstack network set --description "tenant net" private
check "openstack network show" openstack network show private -f json
expect "the description changed and the revision moved" 'd["description"]=="tenant net" and d["revision_number"]>=1'
check "openstack network set --tag" openstack network set --tag blue private
check "openstack network list --tags blue" openstack network list --tags blue -f json
expect "the tag filter finds private" '[n["name"] for n in d]==["private"]'

# --- ports -----------------------------------------------------------------------
check "openstack port create" openstack port create --network private p1 -f json
expect "the port has a fa:16:3e MAC, an address from the pool, and is DOWN" \
    'd["mac_address"].startswith("fa:16:3e:") and "10.0.0.10" in str(d["fixed_ips"]) and d["status"]=="DOWN"'
check "openstack port create --fixed-ip ip-address" \
    openstack port create --network private --fixed-ip subnet=private-subnet,ip-address=10.0.0.15 p2 -f json
refuse "the same address twice is refused (IpAddressAlreadyAllocated)" \
    openstack port create --network private --fixed-ip subnet=private-subnet,ip-address=10.0.0.15 p3
check "openstack port set --allowed-address" \
    openstack port set --allowed-address ip-address=10.0.0.99 p1
check "openstack port show" openstack port show p1 -f json
expect "the allowed address pair is there" '"10.0.0.99" in str(d["allowed_address_pairs"])'
check "openstack port list --network" openstack port list --network private -f json
expect "both ports are listed" 'len(d)==2'

# --- security groups ---------------------------------------------------------------
check "openstack security group create" openstack security group create web -f json
check "openstack security group rule create (tcp 22)" \
    openstack security group rule create --protocol tcp --dst-port 22 --remote-ip 0.0.0.0/0 web -f json
refuse "a duplicate rule is refused (SecurityGroupRuleExists)" \
    openstack security group rule create --protocol tcp --dst-port 22 --remote-ip 0.0.0.0/0 web
check "openstack security group rule create (icmp, by number)" \
    openstack security group rule create --protocol 1 web -f json
refuse "an unknown protocol is refused" \
    openstack security group rule create --protocol bogus web
check "openstack security group list" openstack security group list -f json
expect "the project's default group was made" '"default" in {g["name"] for g in d}'
check "openstack port set --security-group" openstack port set --security-group web p2

# --- routers and floating IPs ---------------------------------------------------------
check "openstack router create" openstack router create r1 -f json
check "openstack router set --external-gateway" openstack router set --external-gateway public r1
check "openstack router add subnet" openstack router add subnet r1 private-subnet
check "openstack router show" openstack router show r1 -f json
expect "the router has its gateway with SNAT" \
    'd["external_gateway_info"]["enable_snat"] is True and len(d["interfaces_info"])==1'
check "openstack router add route" \
    openstack router add route --route destination=10.60.0.0/16,gateway=10.0.0.20 r1
check "openstack floating ip create" openstack floating ip create public -f json
fip="$(json 'd["floating_ip_address"]')"
check "openstack floating ip set --port" openstack floating ip set --port p1 "$fip"
check "openstack floating ip show" openstack floating ip show "$fip" -f json
expect "the floating IP is associated through the router" 'd["port_id"] is not None and d["router_id"] is not None'
check "openstack floating ip unset --port" openstack floating ip unset --port "$fip"
check "openstack floating ip delete" openstack floating ip delete "$fip"
refuse "a floating IP on an internal network is refused" openstack floating ip create private

# --- quotas, RBAC, availability -----------------------------------------------------------
check "openstack quota set --networks" openstack quota set --networks 20 admin
check "openstack quota show" openstack quota show admin -f json
expect "the network quota is 20" 'any(r["resource"]=="networks" and r["limit"]==20 for r in d)'
check "openstack network rbac create" \
    openstack network rbac create --type network --action access_as_shared --target-project admin private -f json
check "openstack network rbac list" openstack network rbac list -f json
check "openstack ip availability show" openstack ip availability show private -f json
expect "two addresses used on private (plus the router's)" 'sum(s["used_ips"] for s in d["subnet_ip_availability"]) >= 2'
check "openstack extension list --network" openstack extension list --network -f json
expect "the router and security-group extensions are listed" '{"router", "security-group"} <= {e["alias"] for e in d}'

# --- tear-down: in-use refusals, then in order ---------------------------------------------
refuse "a network with ports cannot be deleted (NetworkInUse)" openstack network delete private
refuse "a router with interfaces cannot be deleted (RouterInUse)" openstack router delete r1
check "openstack router remove route" \
    openstack router remove route --route destination=10.60.0.0/16,gateway=10.0.0.20 r1
check "openstack router remove subnet" openstack router remove subnet r1 private-subnet
check "openstack router delete" openstack router delete r1
check "openstack port delete" openstack port delete p1 p2
check "openstack security group delete" openstack security group delete web
check "openstack subnet delete" openstack subnet delete private-v6
check "openstack network delete" openstack network delete private
check "openstack network list (after delete)" openstack network list -f json
expect "only public is left" '[n["name"] for n in d]==["public"]'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
