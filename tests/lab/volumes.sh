#!/usr/bin/env bash
# Volumes with Linux guests, in the lab (docs/lab.md, "Volumes"): one lab runs `yunhe serve`
# (tests/lab/compute-inside.sh), the real `openstack` CLI on this machine drives it through a
# forwarded port, and the servers are Debian's stock kernel (the lab's own vmlinuz: acpiphp for
# PCI hotplug) with tiny's initramfs, driven through their serial console shells.
#
#   tests/lab/volumes.sh
#
# A blank volume attached to a running guest (found by its serial, the volume id), a pattern
# written to it, detached (the guest loses the disk), attached to a second guest which reads the
# pattern back; extended online while attached (the guest sees the new size); a snapshot -> a
# new volume with the same bytes; a backup -> restored to a new volume with the same bytes; a
# server booted from a volume made from the tiny image. The data is a raw pattern on the block
# device, and, on a second volume, a file on a FAT filesystem made in one guest and mounted in the
# other (vfat is the one disk filesystem tiny carries modules for; the Debian suite mounts an ext4
# volume hot-added to a full Debian guest: tests/lab/debian.sh).
# One PASS/FAIL line per check; ends with `lab-volumes: N passed, M failed`, non-zero on failure.
# Env: YUNHE_BIN (default target/release/yunhe), OUT (recipe outputs, default out/).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
SUITE=lab-volumes
# shellcheck source=tests/lab/client.sh
. "$here/client.sh"

lab_start --disk-allocation-ratio 8 --min-free-space 64M

B_READY=90    # ACTIVE -> `yunhe-tiny: ready` with Debian's kernel
B_VOLUME=120  # a volume (or snapshot, backup) reaching its status
B_GUEST=60    # a guest seeing a disk arrive, leave or grow
TOKEN=$(date +%s%N)
PATTERN="yunhe-vol-$TOKEN"

# volume_status KIND NAME WANT BOUND: the volume, snapshot or backup reaches WANT within BOUND s.
volume_status() {
    local kind=$1 name=$2 want=$3 bound=$4 t0 got=""
    t0=$(now)
    while [ "$(dt "$t0" "$(now)" | cut -d. -f1)" -lt "$bound" ]; do
        got=$(openstack volume ${kind:+$kind }show "$name" -f value -c status 2>"$out")
        [ "$got" = "$want" ] && { pass "$kind${kind:+ }$name is $want ($(dt "$t0" "$(now)") s; bound $bound s)"; return 0; }
        [ "$got" = error ] && break
        sleep 1
    done
    fail "$kind${kind:+ }$name is $want within $bound s (last: ${got:-?})"; return 1
}

# find_disk SERIAL: guest shell code that waits (up to B_GUEST s) for the disk whose virtio
# serial is SERIAL and leaves its name in $d.
find_disk() {
    printf 'i=0; d=; while [ -z "$d" ] && [ $i -lt %d ]; do for s in /sys/block/vd*; do [ "$(cat $s/serial 2>/dev/null)" = "%s" ] && d=${s##*/}; done; [ -n "$d" ] || sleep 0.1; i=$((i+1)); done; ' \
        $((B_GUEST * 10)) "$1"
}

volume_id() { openstack volume show "$1" -f value -c id 2>/dev/null; }

# --- images, two servers on Debian's kernel ----------------------------------------------------
lab_login
upload_tiny_images
upload_tiny_on_debian

lab_alive
declare -A srv
for name in va vb; do
    if openstack server create --image tiny-on-debian --flavor m1.nano --nic none "$name" -f json >"$out" 2>&1; then
        srv[$name]=$(json 'd["id"]' 2>/dev/null)
    else fail "server create $name"; finish; fi
done
for name in va vb; do
    if wait_server "${srv[$name]}" ACTIVE 60 >"$out" 2>&1; then pass "$name -> ACTIVE"
    else fail "$name -> ACTIVE within 60 s"; finish; fi
    ready "$name (Debian's stock kernel + tiny)" "${srv[$name]}" 1 "$B_READY"
done

# --- attach, write, detach, attach elsewhere, read -------------------------------------------
lab_alive
check "volume create --size 1 data1" openstack volume create --size 1 data1 -f json
volume_status "" data1 available "$B_VOLUME"
data1=$(volume_id data1); ser1=${data1:0:20}
t0=$(now)
check "server add volume va data1 (virtio-blk hot-add)" openstack server add volume va data1
guest "va sees data1 (serial $ser1) and writes a pattern to it" "${srv[va]}" \
    "$(find_disk "$ser1")printf '$PATTERN' | dd of=/dev/\$d conv=notrunc 2>/dev/null; sync; echo \"vw\"\"-\$d-\$(head -c ${#PATTERN} /dev/\$d)-\"" \
    "vw-vd[a-z]+-$PATTERN-" "$B_GUEST"
echo "# attach command to the pattern read back in the guest: $(dt "$t0" "$(now)") s (includes the CLI and typing under TCG)"
volume_status "" data1 in-use 30
check "server remove volume va data1 (the guest ejects it)" openstack server remove volume va data1
volume_status "" data1 available "$B_VOLUME"
guest "va no longer has data1" "${srv[va]}" \
    "echo \"gone\"\"-\$(cat /sys/block/vd*/serial 2>/dev/null | grep -c '$ser1')-\"" 'gone-0-' 30
check "server add volume vb data1" openstack server add volume vb data1
guest "vb sees data1 and reads va's pattern" "${srv[vb]}" \
    "$(find_disk "$ser1")echo \"vr\"\"-\$d-\$(head -c ${#PATTERN} /dev/\$d)-\"" "vr-vd[a-z]+-$PATTERN-" "$B_GUEST"

# --- a filesystem made in one guest, read in the other ---------------------------------------------
# (vfat: the one disk filesystem tiny carries modules for; busybox's mkdosfs makes FAT32, which
# wants at least 33 MiB)
lab_alive
check "volume create --size 1 fs1" openstack volume create --size 1 fs1 -f json
volume_status "" fs1 available "$B_VOLUME"
fs1=$(volume_id fs1); serfs=${fs1:0:20}
check "server add volume va fs1" openstack server add volume va fs1
guest "va makes a FAT filesystem on fs1, mounts it and writes a file" "${srv[va]}" \
    "$(find_disk "$serfs")mkdosfs -n YUNHEFS /dev/\$d >/dev/null && mkdir -p /mnt/fs1 && mount -t vfat /dev/\$d /mnt/fs1 && echo $PATTERN >/mnt/fs1/data.txt && umount /mnt/fs1 && echo \"fw\"\"-\$d-ok-\"" \
    'fw-vd[a-z]+-ok-' "$B_GUEST"
check "server remove volume va fs1" openstack server remove volume va fs1
volume_status "" fs1 available "$B_VOLUME"
check "server add volume vb fs1" openstack server add volume vb fs1
guest "vb mounts fs1 and reads va's file" "${srv[vb]}" \
    "$(find_disk "$serfs")mkdir -p /mnt/fs1 && mount -t vfat -o ro /dev/\$d /mnt/fs1 && echo \"fr\"\"-\$(cat /mnt/fs1/data.txt)-\"; umount /mnt/fs1" \
    "fr-$PATTERN-" "$B_GUEST"
check "server remove volume vb fs1" openstack server remove volume vb fs1
volume_status "" fs1 available "$B_VOLUME"

# --- online extend ----------------------------------------------------------------------------
lab_alive
check "volume set --size 2 data1 while attached to vb (online extend, 3.42)" \
    openstack --os-volume-api-version 3.42 volume set --size 2 data1
guest "vb sees data1 grow to 2 GiB (4194304 sectors)" "${srv[vb]}" \
    "$(find_disk "$ser1")j=0; while [ \"\$(cat /sys/block/\$d/size)\" != 4194304 ] && [ \$j -lt $((B_GUEST * 10)) ]; do sleep 0.1; j=\$((j+1)); done; echo \"vs\"\"-\$(cat /sys/block/\$d/size)-\"" \
    'vs-4194304-' "$B_GUEST"
check "server remove volume vb data1" openstack server remove volume vb data1
volume_status "" data1 available "$B_VOLUME"

# --- snapshot -> volume, backup -> restore ---------------------------------------------------------
lab_alive
check "volume snapshot create --volume data1 snap1" openstack volume snapshot create --volume data1 snap1 -f json
volume_status snapshot snap1 available "$B_VOLUME"
check "volume create --snapshot snap1 data2" openstack volume create --snapshot snap1 data2 -f json
volume_status "" data2 available "$B_VOLUME"
check "volume backup create --name bk1 data1" openstack volume backup create --name bk1 data1 -f json
volume_status backup bk1 available "$B_VOLUME"
check "volume backup restore bk1 data3 (a new volume)" openstack volume backup restore bk1 data3 -f json
volume_status "" data3 available "$B_VOLUME"
for v in data2 data3; do
    id=$(volume_id "$v"); ser=${id:0:20}
    check "server add volume va $v" openstack server add volume va "$v"
    guest "va reads data1's pattern on $v" "${srv[va]}" \
        "$(find_disk "$ser")echo \"vr\"\"-\$d-\$(head -c ${#PATTERN} /dev/\$d)-\"" "vr-vd[a-z]+-$PATTERN-" "$B_GUEST"
    check "server remove volume va $v" openstack server remove volume va "$v"
    volume_status "" "$v" available "$B_VOLUME"
done

# --- boot from a volume made from the tiny image ------------------------------------------------
lab_alive
check "volume create --image tiny-on-debian --size 1 bootvol" \
    openstack volume create --image tiny-on-debian --size 1 bootvol -f json
volume_status "" bootvol available "$B_VOLUME"
vc=""
if openstack server create --volume bootvol --flavor m1.nano --nic none vc -f json >"$out" 2>&1; then
    vc=$(json 'd["id"]' 2>/dev/null)
    if wait_server "$vc" ACTIVE 90 >"$out" 2>&1; then
        pass "vc (booted from volume bootvol) -> ACTIVE"
        ready "vc (from volume)" "$vc" 1 "$B_READY"
        guest "vc's root disk is bootvol (serial)" "$vc" \
            "echo \"root\"\"-\$(cat /sys/block/vda/serial)-\"" "root-$(volume_id bootvol | cut -c1-20)-" 30
    else fail "vc -> ACTIVE within 90 s"; fi
else fail "server create --volume bootvol vc"; fi

# --- delete -----------------------------------------------------------------------------------
lab_alive
for id in "${srv[va]}" "${srv[vb]}" $vc; do
    step "server delete $id" "$id" GONE 30 openstack server delete "$id"
done
check "volume backup delete bk1" openstack volume backup delete bk1
check "volume delete data2 data3 bootvol fs1" openstack volume delete data2 data3 bootvol fs1
check "volume snapshot delete snap1" openstack volume snapshot delete snap1
check "volume delete data1 (once its snapshot is gone)" bash -c "for i in \$(seq 60); do openstack volume delete data1 2>/dev/null && exit 0; sleep 2; done; exit 1"
finish
