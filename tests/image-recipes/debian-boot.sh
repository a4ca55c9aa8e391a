#!/usr/bin/env bash
# (e, slow) the debian disk boots under QEMU TCG with UEFI firmware (OVMF): systemd-boot reads the
# BLS entry from the ESP, the kernel mounts root by UUID, cloud-init takes a config drive built
# here (hostname, ssh key, runcmd marker on the serial console; no unit failed, no cloud-config
# schema warning in cloud-init.log). The image is not modified: QEMU
# writes to a qcow2 overlay. Time limit LIMIT (default 900 s).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LIMIT=${LIMIT:-900}
ensure_built debian
need_tool genisoimage genisoimage
need_tool qemu-img qemu-utils
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || need_tool /usr/share/OVMF/OVMF_CODE_4M.fd ovmf
work=$(mktemp -d); trap 'stop_qemu; rm -rf "$work"' EXIT

cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
qemu-img create -q -f qcow2 -F qcow2 -b "$OUT/debian/debian-12.qcow2" "$work/overlay.qcow2"
mkdir -p "$work/cd/openstack/latest"
cat >"$work/cd/openstack/latest/meta_data.json" <<'JSON'
{"uuid": "5d1f0f55-7a4c-4d8e-9a51-0d3c0e6b1f20", "name": "debtest", "hostname": "debtest",
 "public_keys": {"k": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHl1bmhlZGViaWFudGVzdGtleXl1bmhlZGViaWFu deb@test"},
 "launch_index": 0, "availability_zone": "nova", "project_id": "p", "devices": []}
JSON
cat >"$work/cd/openstack/latest/user_data" <<'YAML'
#cloud-config
runcmd:
  - [ sh, -c, 'echo "DEBIAN-UD-MARKER host=$(hostname) keys=$(grep -c deb@test /home/debian/.ssh/authorized_keys) esp=$(mountpoint -q /boot/efi && echo mounted) failed_units=$(systemctl --failed --no-legend --plain | awk "{print \$1}" | paste -sd, -) schema_warnings=$(grep -c "Invalid cloud-config" /var/log/cloud-init.log)" > /dev/ttyS0' ]
YAML
genisoimage -quiet -V config-2 -r -J -o "$work/config.iso" "$work/cd" 2>/dev/null || fail "genisoimage failed"

log=$OUT/test-debian-boot.log
boot_until "$log" "DEBIAN-UD-MARKER" "$LIMIT" -M q35,accel=tcg -m 1024 -nic none \
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,file="$work/vars.fd" \
    -drive file="$work/overlay.qcow2",if=virtio,format=qcow2 \
    -drive file="$work/config.iso",if=virtio,format=raw,readonly=on \
    || fail "no cloud-init marker within ${LIMIT}s (console log: $log)"
secs=$BOOT_SECS
stop_qemu
got=$(tr -d '\r' <"$log" | grep -o 'DEBIAN-UD-MARKER.*' | head -n1)
[ "$got" = "DEBIAN-UD-MARKER host=debtest keys=1 esp=mounted failed_units= schema_warnings=0" ] || fail "cloud-init result: '$got' ($log)"
pass "debian booted via OVMF + systemd-boot + BLS entry; cloud-init applied the config drive ($got) after ${secs}s under TCG"
