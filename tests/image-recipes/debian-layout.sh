#!/usr/bin/env bash
# (c) the debian disk: GPT with an ESP and an ext4 root (checked with sfdisk), a BLS entry on the
# ESP (read with mtools) whose linux/initrd exist there, whose kernel is a bzImage and whose
# root=UUID= is the root partition's ext4 file system; the qcow2 holds the same disk.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_built debian
need_tool sfdisk fdisk
need_tool mtype mtools
need_tool qemu-img qemu-utils
need_tool debugfs e2fsprogs
raw=$OUT/debian/debian-12.raw
qcow=$OUT/debian/debian-12.qcow2
[ -f "$raw" ] && [ -f "$qcow" ] || fail "missing $raw or $qcow"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

read -r label n t1 s1 z1 t2 s2 z2 < <(sfdisk --json "$raw" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]; p = t["partitions"] + [{}, {}]
print(t["label"], len(t["partitions"]), *[p[i].get(k, "-") for i in (0, 1) for k in ("type", "start", "size")])')
[ "$label" = gpt ] || fail "partition table is $label, not gpt"
[ "$n" = 2 ] || fail "$n partitions, expected 2"
[ "${t1^^}" = C12A7328-F81F-11D2-BA4B-00A0C93EC93B ] || fail "partition 1 is not an EFI system partition ($t1)"
[ "${t2^^}" = 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 ] || fail "partition 2 is not a Linux root x86-64 partition ($t2)"

esp=$work/esp.img
dd if="$raw" of="$esp" bs=512 skip="$s1" count="$z1" status=none
entries=$(mdir -b -i "$esp" ::/loader/entries 2>/dev/null | grep -i '\.conf$' || true)
[ -n "$entries" ] || fail "no /loader/entries/*.conf on the ESP"
entry=$(echo "$entries" | head -n1)
mtype -i "$esp" "$entry" | tr -d '\r' >"$work/entry.conf"
key() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ +/, ""); print; exit }' "$work/entry.conf"; }
linux=$(key linux); initrd=$(key initrd); options=$(key options)
[ -n "$linux" ] && [ -n "$initrd" ] && [ -n "$options" ] || fail "BLS entry $entry lacks linux/initrd/options"
mcopy -n -i "$esp" "::$linux" "$work/linux" 2>/dev/null || fail "BLS linux $linux is not on the ESP"
mcopy -n -i "$esp" "::$initrd" "$work/initrd" 2>/dev/null || fail "BLS initrd $initrd is not on the ESP"
[ "$(dd if="$work/linux" bs=1 skip=514 count=4 status=none)" = HdrS ] || fail "$linux is not a bzImage"
[ "$(stat -c %s "$work/initrd")" -gt 1000000 ] || fail "$initrd is suspiciously small"
mcopy -n -i "$esp" ::/EFI/BOOT/BOOTX64.EFI "$work/boot.efi" 2>/dev/null || fail "no EFI/BOOT/BOOTX64.EFI"

want_uuid=$(sed -n 's/.*root=UUID=\([0-9a-fA-F-]*\).*/\1/p' <<<"$options")
[ -n "$want_uuid" ] || fail "options have no root=UUID=: $options"
rootdev="$raw?offset=$((s2 * 512))"
got_uuid=$(dumpe2fs -h "$rootdev" 2>/dev/null | awk '/^Filesystem UUID:/ {print $3}')
[ "$got_uuid" = "$want_uuid" ] || fail "root ext4 UUID is '$got_uuid', BLS wants $want_uuid"
debugfs -R 'cat /etc/fstab' "$rootdev" 2>/dev/null | grep -q "UUID=$want_uuid" || fail "/etc/fstab does not mount root by UUID"
kver=$(key version)
debugfs -R "stat /lib/modules/$kver/modules.dep" "$rootdev" 2>/dev/null | grep -q 'Type: regular' \
    || fail "root file system has no modules for $kver"
debugfs -R 'stat /usr/bin/cloud-init' "$rootdev" 2>/dev/null | grep -q 'Type: regular' || fail "no cloud-init in root"
debugfs -R 'stat /usr/sbin/sshd' "$rootdev" 2>/dev/null | grep -q 'Type: regular' || fail "no sshd in root"

qemu-img info --output=json "$qcow" | grep -q '"format": "qcow2"' || fail "$qcow is not qcow2"
qemu-img compare -q -f raw -F qcow2 "$raw" "$qcow" || fail "qcow2 and raw differ"
pass "GPT ESP+root, BLS entry $(basename "$entry") -> $linux + $initrd, root=UUID=$want_uuid matches ext4, qcow2 == raw"
