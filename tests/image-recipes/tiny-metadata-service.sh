#!/usr/bin/env bash
# (f) tiny without a config drive: DHCP on eth0 and the metadata service at 169.254.169.254,
# both served inside a network namespace this test creates (busybox udhcpd and httpd on a tap
# device). QEMU runs in that namespace, so the guest reaches nothing else.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LIMIT=${LIMIT:-120}
KERNEL=${KERNEL:-}
ensure_built tiny
if [ -z "$KERNEL" ]; then ensure_built micro; KERNEL=$OUT/micro/bzImage; fi
[ "$(id -u)" -eq 0 ] || fail "needs root (network namespace, tap device)"
need_tool ip iproute2
[ -x /bin/busybox ] || need_tool busybox busybox-static
ns=yunhe-imgtest-$$
work=$(mktemp -d)
pids=()
cleanup() {
    stop_qemu
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" addr add 10.99.0.1/24 dev tap0
ip -n "$ns" addr add 169.254.169.254/32 dev tap0
ip -n "$ns" link set tap0 up

mkdir -p "$work/www/openstack/latest"
cat >"$work/www/openstack/latest/meta_data.json" <<'JSON'
{"uuid": "7a0c5f0e-3b1e-4f7b-8d7e-1b2c3d4e5f60", "name": "mdtest", "hostname": "mdtest-host",
 "public_keys": {"md": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1ldGFkYXRhc2VydmljZXRlc3RrZXltZXRhZGF0 md@test"},
 "launch_index": 0, "availability_zone": "nova", "project_id": "p", "devices": []}
JSON
cat >"$work/www/openstack/latest/user_data" <<'SH'
#!/bin/sh
echo "MD-MARKER host=$(hostname) ip=$(ip -4 -o addr show eth0 | awk '{print $4}') keys=$(grep -c 'md@test$' /root/.ssh/authorized_keys)"
SH
cat >"$work/udhcpd.conf" <<CONF
start 10.99.0.10
end 10.99.0.20
interface tap0
lease_file $work/leases
option subnet 255.255.255.0
option router 10.99.0.1
option lease 3600
CONF
: >"$work/leases"
ip netns exec "$ns" busybox udhcpd -f "$work/udhcpd.conf" >"$work/udhcpd.log" 2>&1 &
pids+=($!)
ip netns exec "$ns" busybox httpd -f -p 169.254.169.254:80 -h "$work/www" >"$work/httpd.log" 2>&1 &
pids+=($!)

log=$OUT/test-$TEST.log
QEMU_WRAP="ip netns exec $ns" boot_until "$log" "yunhe-tiny: ready" "$LIMIT" \
    -M q35,accel=tcg -m 256 -device virtio-rng-pci \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0 \
    -kernel "$KERNEL" -initrd "$OUT/tiny/tiny.cpio.gz" -append console=ttyS0 \
    || fail "no ready marker within ${LIMIT}s (console log: $log)"
secs=$BOOT_SECS
stop_qemu
tr -d "\r" <"$log" | grep -q "yunhe-tiny: eth0 has 10.99.0.[12][0-9]/24" || { cat "$work/udhcpd.log" >&2; fail "no DHCP lease on eth0 ($log)"; }
tr -d '\r' <"$log" | grep -q "metadata from http://169.254.169.254" || fail "metadata service not used ($log)"
got=$(tr -d '\r' <"$log" | grep -o 'MD-MARKER.*' | head -n1 || true)
[[ "$got" =~ ^MD-MARKER\ host=mdtest-host\ ip=10\.99\.0\.[12][0-9]/24\ keys=1$ ]] || fail "user_data saw '$got' ($log)"
pass "DHCP + metadata service in a private netns: ${got#MD-MARKER }, ready after ${secs}s on $(basename "$KERNEL")"
