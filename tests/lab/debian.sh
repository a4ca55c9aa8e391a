#!/usr/bin/env bash
# A Debian cloud image as users run it, in the lab (docs/lab.md, "The Debian cloud image"): one
# lab runs `yunhe serve` (tests/lab/compute-inside.sh), the real `openstack` CLI on this machine
# uploads the debian recipe's qcow2 (GPT, ESP with BLS entries, ext4 root: no kernel_id, the
# disk's own kernel boots) and creates a server with a key pair, user data and a config drive.
#
#   tests/lab/debian.sh
#
# Checks, one PASS/FAIL line each, with the measured times:
#   create -> ACTIVE; cloud-init's "Cloud-init v. ... finished" line on the console; what the
#   user data printed there: hostname = server name, the key pair in the default user's
#   authorized_keys, the user data's file; login over the serial console websocket (password
#   set by cloud-config chpasswd); a second kernel (Debian's generic linux-image, brought in on
#   a Cinder volume made from an ext4 image, hot-added with `server add volume`) installed with
#   dpkg inside the guest, the cloud kernel purged, the guest's own `reboot`: the console shows
#   the new kernel's boot and `uname -r` is the new kernel; the guest's own `poweroff` leaves the
#   server SHUTOFF. Beside it deb2, the genericcloud layout (GRUB's grub.cfg), booted at the same
#   time: its cloud-init finished line, grub.cfg's default entry, the user data, a serial login
#   (checked while deb1's dpkg runs, so the two guests' work overlaps).
# Ends with `lab-debian: N passed, M failed` and exits non-zero on failure.
# Env: YUNHE_BIN, OUT (recipe outputs, default out/; out/debian and out/debian-genericcloud are
# built when missing: 2-5 minutes each the first time, then a 5 s copy from image-recipes' cache
# in ~/.cache/yunhe/images), YUNHE_VENV, LAB_KEEP=DIR (copy the lab's logs there),
# LAB_DEBIAN_GENERICCLOUD=0 (without deb2), LAB_WAIT (the whole suite's limit, default 3300 s;
# scripts/test passes 1800).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
SUITE=lab-debian
OUT=${OUT:-$root/out}
# The image's files live in the lab's /tmp (tmpfs): Glance's qcow2, its raw base, the server's
# root disk (sparse copies, ~0.5 GiB allocated each) per image, the kernel volume; each guest
# gets 1 GiB.
export LAB_MEM=${LAB_MEM:-8192} LAB_WAIT=${LAB_WAIT:-3300}
# shellcheck source=tests/lab/client.sh
. "$here/client.sh"

# Bounds (seconds): about three times the times seen in the lab on a 2-core machine
# (docs/lab.md, "The Debian cloud image").
B_ACTIVE=${B_ACTIVE:-180}        # server create -> ACTIVE (qcow2 -> raw base, root disk copy)
B_FINISHED=${B_FINISHED:-900}    # ACTIVE -> cloud-init's finished line
B_KERNEL=${B_KERNEL:-1500}       # dpkg -i of the second kernel, purge of the first, to `reboot`
B_REBOOT=${B_REBOOT:-900}        # the guest's reboot -> cloud-init's finished line again
B_POWEROFF=${B_POWEROFF:-180}    # the guest's poweroff -> SHUTOFF
PASSWORD=yunhe-lab-$$

# --- the image (built once, cached) and the second kernel's disk -----------------------------
if [ ! -f "$OUT/debian/manifest.json" ]; then
    echo "# building image recipe debian into $OUT/debian"
    t0=$(date +%s)
    "$root/image-recipes/build" debian "$OUT/debian" >"$out" 2>&1 || { fail "image-recipes/build debian"; finish; }
    pass "image-recipes/build debian ($(( $(date +%s) - t0 )) s)"
fi
# Debian's genericcloud layout too (GRUB's grub.cfg on the root; the debian-genericcloud recipe):
# booted beside the first server, checked up to cloud-init's finished line. LAB_DEBIAN_GENERICCLOUD=0
# leaves it out.
gc=""
if [ "${LAB_DEBIAN_GENERICCLOUD:-1}" != 0 ]; then
    gc=debian-genericcloud
    if [ ! -f "$OUT/$gc/manifest.json" ]; then
        echo "# building image recipe $gc into $OUT/$gc"
        t0=$(date +%s)
        "$root/image-recipes/build" $gc "$OUT/$gc" >"$out" 2>&1 || { fail "image-recipes/build $gc"; finish; }
        pass "image-recipes/build $gc ($(( $(date +%s) - t0 )) s)"
    fi
fi
kver=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kernel_version"])' "$OUT/debian/manifest.json")
case $kver in *-cloud-amd64) ;; *) fail "the image's kernel $kver is a -cloud-amd64 one"; finish ;; esac
kver2=${kver%-cloud-amd64}-amd64
# Debian's generic kernel of the same ABI: another `uname -r`, its .deb from Debian's archive
# (image-recipes' download cache), on an ext4 disk the guest mounts by label.
if deb=$(RECIPE=lab-debian; . "$root/image-recipes/lib.sh"; fetch_deb "linux-image-$kver2") 2>"$out"; then
    mkdir -p "$work/kdisk" && cp "$deb" "$work/kdisk/"
    truncate -s $(( $(stat -c %s "$deb") / 1048576 + 16 ))M "$work/kernels.img"
    if mkfs.ext4 -q -F -L yunhe-kernels -d "$work/kdisk" "$work/kernels.img" >"$out" 2>&1; then
        pass "an ext4 disk with $(basename "$deb") (label yunhe-kernels)"
    else fail "mkfs.ext4 -d of the kernel disk"; fi
else fail "fetch linux-image-$kver2"; fi
rm -rf "$work/kdisk"

# serve's state on ext2 over a loop device in the lab, not on its tmpfs (compute-inside.sh):
# the guest's disk writes are then page cache, not memory charged to its VMM's cgroup
echo 6144 >"$share/state-fs"
lab_start --disk-allocation-ratio 8 --min-free-space 64M
lab_login

upload_recipe_image debian
image=$img_name
[ -n "$gc" ] && upload_recipe_image debian-genericcloud && gc_image=$img_name
check "image create yunhe-kernels (raw, the second kernel's disk)" openstack image create \
    --disk-format raw --container-format bare --file "$work/kernels.img" yunhe-kernels -f json
check "volume create --image yunhe-kernels kvol" openstack volume create --image yunhe-kernels --size 1 kvol -f json
check "flavor create deb.1g (1 GiB, 1 vCPU, 3 GiB disk, 1 GiB ephemeral)" openstack flavor create --ram 1024 --vcpus 1 --disk 3 --ephemeral 1 deb.1g -f json
ssh-keygen -q -t ed25519 -N '' -C lab-debian -f "$work/id_ed25519"
check "keypair create --public-key k1" openstack keypair create --public-key "$work/id_ed25519.pub" k1 -f json

# The user data: cloud-config. bootcmd runs at every boot, runcmd once per instance;
# /dev/ttyS0 is the console the test reads.
cat >"$work/user-data" <<EOF
#cloud-config
password: $PASSWORD
chpasswd: { expire: false }
write_files:
  - path: /var/lib/yunhe-marker
    content: "marker-42\n"
  - path: /usr/local/sbin/yunhe-kernel-swap
    permissions: "0755"
    content: |
      #!/bin/sh
      # Install the second kernel from the attached disk, purge the first, reboot.
      exec >/dev/ttyS0 2>&1
      set -e
      echo "yunhe-kernel-swap: start, running \$(uname -r)"
      mkdir -p /mnt/kernels
      n=0
      until [ -e /dev/disk/by-label/yunhe-kernels ]; do
        n=\$((n + 1)); [ \$n -lt 120 ] || { echo "yunhe-kernel-swap: no disk"; exit 1; }; sleep 1
      done
      mount -o ro /dev/disk/by-label/yunhe-kernels /mnt/kernels
      echo MODULES=dep >/etc/initramfs-tools/conf.d/yunhe-dep.conf
      # --force-unsafe-io: no fsync per file (the generic kernel has ~4000 modules; under the
      # lab's emulation the unpack with fsyncs alone took over 10 minutes)
      DEBIAN_FRONTEND=noninteractive dpkg --force-unsafe-io -i /mnt/kernels/linux-image-*.deb
      DEBIAN_FRONTEND=noninteractive dpkg --force-unsafe-io --purge linux-image-cloud-amd64 "linux-image-\$(uname -r)"
      umount /mnt/kernels
      echo "yunhe-kernel-swap: done; BLS entries: \$(ls /boot/efi/loader/entries | tr '\n' ' ')"
      reboot
bootcmd:
  - [ sh, -c, 'echo "yunhe-boot: kernel=\$(uname -r) host=\$(hostname)" >/dev/ttyS0' ]
runcmd:
  - [ sh, -c, 'echo "yunhe-ud: host=\$(hostname) keys=\$(grep -c lab-debian /home/debian/.ssh/authorized_keys) marker=\$(cat /var/lib/yunhe-marker) kernel=\$(uname -r)" >/dev/ttyS0' ]
EOF

# serial NAME SEND EXPECT TIMEOUT [RETYPE]: log in as debian on the serial console websocket of
# $serial_srv (default deb1), type SEND, wait for EXPECT.
serial() {
    local url t0; t0=$(now)
    url=$(openstack console url show --serial "${serial_srv:-$srv}" -f value -c url 2>"$out") || { fail "$1: console url"; return 1; }
    if "$py" "$here/serial-console.py" "$url" --cacert "$share/ca.pem" --login "debian:$PASSWORD" \
        --send "$2" --expect "$3" --timeout "$4" --retype "${5:-4}" >"$out" 2>&1; then
        pass "$1 ($(grep '^login:' "$out" | sed 's/^login: //'); $(grep '^match:' "$out" | sed 's/^match: //'); $(dt "$t0" "$(now)") s)"
    else fail "$1"; return 1; fi
}

# --- create -> ACTIVE -> cloud-init finished ---------------------------------------------------
lab_alive
FINISHED='Cloud-init v\. [^ ]+ finished at'
t0=$(now)
if openstack server create --image "$image" --flavor deb.1g --key-name k1 --nic none \
    --config-drive true --user-data "$work/user-data" deb1 -f json >"$out" 2>&1; then
    srv=$(json 'd["id"]' 2>/dev/null)
else fail "server create deb1"; finish; fi
t1=$(now)
if wait_server "$srv" ACTIVE "$B_ACTIVE" >>"$out" 2>&1; then
    t_active=$(dt "$t0" "$(now)")
    pass "server create deb1 ($image, deb.1g, key k1, user data, config drive) -> ACTIVE in $t_active s (command $(dt "$t0" "$t1") s; bound $B_ACTIVE s)"
else fail "deb1 -> ACTIVE within $B_ACTIVE s"; finish; fi
gc_srv=""
if [ -n "$gc" ]; then
    t0_gc=$(now)
    if openstack server create --image "$gc_image" --flavor deb.1g --key-name k1 --nic none \
        --config-drive true --user-data "$work/user-data" deb2 -f json >"$out" 2>&1; then
        gc_srv=$(json 'd["id"]' 2>/dev/null)
    else fail "server create deb2 ($gc_image)"; fi
fi
if r=$("$py" "$here/nova.py" console "$srv" "$FINISHED" 1 "$B_FINISHED" 2>&1); then
    pass "deb1: cloud-init's finished line on the console $r s after ACTIVE, $(dt "$t0" "$(now)") s after create (bound $B_FINISHED s)"
else echo "$r" >"$out"; fail "deb1: cloud-init's finished line within $B_FINISHED s of ACTIVE"; finish; fi
console_log "$srv"
grep -aE "$FINISHED" "$work/console" | head -n1 | sed 's/^/# /'
console_has "the disk's own kernel booted ($kver, from the ESP's BLS entry)" "Linux version $kver "
console_has "cloud-init used the config drive" 'DataSourceConfigDrive'
console_has_line "user data ran: hostname deb1, the key pair in debian's authorized_keys, the file written, kernel $kver" \
    "yunhe-ud: host=deb1 keys=1 marker=marker-42 kernel=$kver"
UNIT_FAILED='Failed to start|Dependency failed|Timed out waiting'
# After a unit failed: what systemd and the journal say (ssh.service's and every failed unit's
# last lines, the host keys' times), logged in on the serial console and printed as NOTE lines,
# so the next occurrence is diagnosed from the suite's output alone. Not a check.
unit_diagnosis() {
    local url
    url=$(openstack console url show --serial "$1" -f value -c url 2>/dev/null) || return 0
    # the markers are computed, so only the output (not the echoed command) matches
    "$py" "$here/serial-console.py" "$url" --cacert "$share/ca.pem" --login "debian:$PASSWORD" \
        --send 'echo "D$((1+1))<<"; sudo systemctl --failed --no-legend --plain; for u in ssh.service $(systemctl --failed --no-legend --plain | cut -d" " -f1); do sudo journalctl -b -o short-monotonic -u "$u" --no-pager | tail -n 12; done; sudo journalctl -b -o short-monotonic -u cloud-init.service --no-pager | head -n 3; ls -l --time-style=+%s /etc/ssh/; cut -d" " -f1 /proc/uptime; echo ">>DIAG-$((6*7))"' \
        --expect '(?s)D2<<(.*)>>DIAG-42' --timeout 60 2>&1 | tr -d '\r' | sed 's/^/NOTE diagnosis: /' | head -n 80
}
if grep -aEq "$UNIT_FAILED" "$work/console"; then
    grep -aE "$UNIT_FAILED" "$work/console" >"$out"; fail "no systemd unit failed or timed out on the first boot"
    unit_diagnosis "$srv"
else pass "no systemd unit failed or timed out on the first boot"; fi

# --- login over the serial console -----------------------------------------------------------
lab_alive
# cloud-init validates the merged system and user cloud-config on every boot and logs a warning
# for what its schema refuses (the image's own cloud.cfg.d included): there must be none.
serial "login as debian (password from cloud-config chpasswd) on the serial console websocket; no cloud-config schema warning in cloud-init.log" \
    'echo "in-$((6*7)) $(id -un) $(hostname) schema-warnings=$(sudo grep -c "Invalid cloud-config" /var/log/cloud-init.log)"' \
    'in-42 debian deb1 schema-warnings=0' 90
# The flavor's ephemeral disk: FAT32 labelled ephemeral0 by serve (Nova's default mkfs), found
# by cloud-init through the config drive's EC2 block-device-mapping and mounted on /mnt by its
# default `mounts`, with nothing asked in the user data.
serial "the flavor's ephemeral disk mounted on /mnt by cloud-init (vfat, label ephemeral0)" \
    'echo "mnt-$((6*7)) $(findmnt -n -o FSTYPE,LABEL /mnt)"' 'mnt-42 vfat +ephemeral0' 60

# --- a second kernel, the guest's own reboot ------------------------------------------------
lab_alive
t0=$(now)
check "volume kvol is available" bash -c "for i in \$(seq 60); do openstack volume show kvol -f value -c status | grep -qx available && exit 0; sleep 2; done; exit 1"
check "server add volume deb1 kvol (hot-added virtio-blk)" openstack server add volume deb1 kvol
serial "started the kernel swap as root (sudo) from the serial console" \
    'sudo -b /usr/local/sbin/yunhe-kernel-swap; echo "swap-$((6*7))"' 'swap-42' 60 60
t0=$(now)

# --- the genericcloud layout: GRUB's grub.cfg (checked while deb1 runs dpkg) ---------------
if [ -n "$gc_srv" ]; then
    lab_alive
    if wait_server "$gc_srv" ACTIVE "$B_ACTIVE" >"$out" 2>&1; then
        pass "server create deb2 ($gc_image) -> ACTIVE"
        if r=$("$py" "$here/nova.py" console "$gc_srv" "$FINISHED" 1 "$B_FINISHED" 2>&1); then
            pass "deb2: cloud-init's finished line $(dt "$t0_gc" "$(now)") s after create (bound $B_FINISHED s)"
        else echo "$r" >"$out"; fail "deb2: cloud-init's finished line within $B_FINISHED s"; fi
        console_log "$gc_srv"
        # the default entry's linux line, as the recipe wrote it
        gc_cmdline=$(awk '$1 == "linux" { $1 = ""; $2 = ""; sub(/^ +/, ""); print; exit }' "$OUT/$gc/grub.cfg")
        gc_line=$(grep -a -m1 'Command line:' "$work/console" | tr -d '\r')
        if [ -n "$gc_cmdline" ] && [[ $gc_line == *"$gc_cmdline"* ]] && grep -aq "Linux version $kver " "$work/console"; then
            pass "deb2 booted grub.cfg's default entry: $kver, ${gc_line#*Command line: }"
        else cp "$work/console" "$out"; fail "deb2 booted grub.cfg's default entry ($kver, $gc_cmdline)"; fi
        console_has_line "deb2: user data ran (hostname deb2, the key, the file)" \
            "yunhe-ud: host=deb2 keys=1 marker=marker-42 kernel=$kver"
        if grep -aEq "$UNIT_FAILED" "$work/console"; then
            grep -aE "$UNIT_FAILED" "$work/console" >"$out"; fail "deb2: no systemd unit failed or timed out"
            unit_diagnosis "$gc_srv"
        else pass "deb2: no systemd unit failed or timed out"; fi
        serial_srv=$gc_srv serial "deb2: login as debian on the serial console" \
            'echo "in-$((6*7)) $(id -un) $(hostname)"' 'in-42 debian deb2' 90
    else fail "deb2 -> ACTIVE within $B_ACTIVE s"; fi
    step "server delete deb2" "$gc_srv" GONE 30 openstack server delete "$gc_srv"
fi

swap_left=$(awk -v b="$B_KERNEL" -v e="$(dt "$t0" "$(now)")" 'BEGIN { l = int(b - e); print (l < 60 ? 60 : l) }')
if r=$("$py" "$here/nova.py" console-after "$srv" 'yunhe-kernel-swap: start' 'yunhe-kernel-swap: done.*' "$swap_left" 2>&1); then
    t_swap=$(dt "$t0" "$(now)")
    pass "dpkg -i $kver2, dpkg --purge $kver: done in $t_swap s (bound $B_KERNEL s): ${r#* }"
else echo "$r" >"$out"; fail "the kernel swap within $B_KERNEL s"; finish; fi
console_log "$srv"
t0=$(now)
if r=$("$py" "$here/nova.py" console-after "$srv" 'yunhe-kernel-swap: done' "yunhe-boot: kernel=[^ ]+ host=deb1" "$B_REBOOT" 2>&1); then
    pass "the guest's own reboot: it booted again ($(dt "$t0" "$(now)") s to its bootcmd): ${r#* }"
else echo "$r" >"$out"; fail "the guest booted again within $B_REBOOT s of its reboot"; fi
if r=$("$py" "$here/nova.py" console-after "$srv" 'yunhe-kernel-swap: done' "$FINISHED" "$B_REBOOT" 2>&1); then
    t_reboot=$(dt "$t0" "$(now)")
    pass "cloud-init finished again $t_reboot s after the reboot began (bound $B_REBOOT s)"
else echo "$r" >"$out"; fail "cloud-init finished again within $B_REBOOT s"; fi
console_log "$srv"
console_has "the second boot ran the new kernel (Linux version $kver2)" "Linux version $kver2 "
# anywhere in a console line: in one run (2026-12-02) the line shared its console line with other
# output, and this check failed while the wait above had seen it
console_has "bootcmd after the reboot: kernel=$kver2" "yunhe-boot: kernel=${kver2//./\\.} host=deb1"
wait_server "$srv" ACTIVE 10 >"$out" 2>&1 && pass "deb1 stayed ACTIVE through its own reboot" || fail "deb1 stayed ACTIVE through its own reboot"
serial "uname -r on the serial console is the new kernel" 'echo "k=$(uname -r)="' "k=$kver2=" 90

# --- the guest's own poweroff -----------------------------------------------------------------
lab_alive
t0=$(now)
serial "sudo poweroff typed on the serial console" 'echo "off-$((6*7))"; sudo poweroff' 'off-42' 60 60
if wait_server "$srv" SHUTOFF "$B_POWEROFF" >"$out" 2>&1; then
    t_off=$(dt "$t0" "$(now)")
    pass "the guest's poweroff -> SHUTOFF in $t_off s (bound $B_POWEROFF s)"
else fail "the guest's poweroff -> SHUTOFF within $B_POWEROFF s"; fi
console_log "$srv"
console_has "the guest powered itself off (reboot: Power down)" 'reboot: Power down'

echo "# times: create -> ACTIVE ${t_active:-?} s; ACTIVE -> cloud-init finished (first boot) see above;" \
    "kernel swap ${t_swap:-?} s; reboot -> finished ${t_reboot:-?} s; poweroff -> SHUTOFF ${t_off:-?} s"

# --- delete ------------------------------------------------------------------------------------
step "server delete deb1" "$srv" GONE 30 openstack server delete "$srv"
left=$(labsh 10 all_vmm_pids)
echo "left: $left" >"$out"
if [ -z "$left" ]; then pass "no VMM is left in the lab"; else fail "no VMM is left in the lab"; fi
finish
