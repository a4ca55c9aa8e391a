#!/usr/bin/env bash
# (b) tiny's init applies an OpenStack config drive built here, once as ISO 9660 (what Nova
# writes by default) and once as VFAT, both labelled config-2 and attached as virtio-blk:
# root's authorized_keys get the public_keys, the hostname is set, user_data (#!) runs.
# user_data prints what the guest sees, so the checks read only the serial console.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LIMIT=${LIMIT:-120}
KERNEL=${KERNEL:-}
ensure_built tiny
if [ -z "$KERNEL" ]; then ensure_built micro; KERNEL=$OUT/micro/bzImage; fi
need_tool genisoimage genisoimage
need_tool mkfs.vfat dosfstools
need_tool mcopy mtools
need_tool dropbearkey dropbear-bin
work=$(mktemp -d); trap 'stop_qemu; rm -rf "$work"' EXIT

# key one is real: user_data logs in to the guest's own dropbear with it over loopback
dropbearkey -t ed25519 -f "$work/id_test" >/dev/null 2>&1 || fail "dropbearkey failed"
key1="$(dropbearkey -y -f "$work/id_test" | grep '^ssh-ed25519' | cut -d' ' -f1,2) key-one@test"
key_b64=$(base64 -w0 "$work/id_test")
key2="ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCyunhetesttwo key-two@test"
tree=$work/cd
mkdir -p "$tree/openstack/latest"
cat >"$tree/openstack/latest/meta_data.json" <<JSON
{"uuid": "0b7d3a64-8a5e-4a0b-9e3c-2f1d7f0c9a11", "name": "cfgtest",
 "hostname": "cfgtest-host.example.org",
 "public_keys": {"one": "$key1\n", "two": "$key2"},
 "keys": [{"name": "one", "type": "ssh", "data": "$key1\n"}, {"name": "two", "type": "ssh", "data": "$key2"}],
 "launch_index": 0, "availability_zone": "nova", "project_id": "p", "devices": []}
JSON
cat >"$tree/openstack/latest/user_data" <<SH
#!/bin/sh
echo "$key_b64" | base64 -d >/run/id_test && chmod 600 /run/id_test
(
    for i in \$(seq 60); do netstat -ltn | grep -q ':22 ' && break; sleep 0.5; done
    echo "UD-SSH \$(HOME=/run dbclient -y -y -i /run/id_test root@127.0.0.1 'echo login-ok-\$(hostname)' </dev/null 2>/run/dbclient.err)"
    cat /run/dbclient.err
) &
SH
cat >>"$tree/openstack/latest/user_data" <<'SH'
echo "UD-MARKER host=$(hostname) keys=$(grep -c '^ssh-' /root/.ssh/authorized_keys) k1=$(grep -c 'key-one@test$' /root/.ssh/authorized_keys) k2=$(grep -c 'key-two@test$' /root/.ssh/authorized_keys) mode=$(stat -c %a /root/.ssh/authorized_keys)"
SH

genisoimage -quiet -V config-2 -r -J -o "$work/config-iso.img" "$tree" 2>/dev/null || fail "genisoimage failed"
truncate -s 2M "$work/config-vfat.img"
mkfs.vfat -n config-2 "$work/config-vfat.img" >/dev/null 2>&1 || fail "mkfs.vfat failed"
mcopy -s -i "$work/config-vfat.img" "$tree/openstack" ::/ || fail "mcopy failed"

want="UD-MARKER host=cfgtest-host keys=2 k1=1 k2=1 mode=600"
results=()
for kind in iso vfat; do
    log=$OUT/test-$TEST-$kind.log
    boot_until "$log" "UD-SSH" "$LIMIT" -M q35,accel=tcg -m 256 -nic none -device virtio-rng-pci \
        -kernel "$KERNEL" -initrd "$OUT/tiny/tiny.cpio.gz" -append console=ttyS0 \
        -drive "file=$work/config-$kind.img,if=virtio,format=raw,readonly=on" \
        || fail "$kind config drive: no ready marker within ${LIMIT}s (console log: $log)"
    secs=$BOOT_SECS
    stop_qemu
    tr -d '\r' <"$log" | grep -q "metadata from config drive" || fail "$kind: config drive not found ($log)"
    got=$(tr -d '\r' <"$log" | grep -o 'UD-MARKER.*' | head -n1 || true)
    [ -n "$got" ] || fail "$kind: user_data did not run ($log)"
    [ "$got" = "$want" ] || fail "$kind: user_data saw '$got', wanted '$want' ($log)"
    tr -d '\r' <"$log" | grep -q "yunhe-tiny: hostname cfgtest-host" || fail "$kind: hostname not set ($log)"
    tr -d '\r' <"$log" | grep -q "yunhe-tiny: ready" || fail "$kind: no ready marker ($log)"
    tr -d '\r' <"$log" | grep -q "UD-SSH login-ok-cfgtest-host" || fail "$kind: ssh login to dropbear with key one failed ($log)"
    results+=("$kind ${secs}s")
done
pass "config drive applied (keys, hostname, user_data; ssh login to dropbear with the key) from ${results[*]} on $(basename "$KERNEL")"
