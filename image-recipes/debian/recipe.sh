# debian: a Debian 12 (bookworm) cloud image made with mmdebstrap. GPT disk:
#   1  ESP (FAT32, 256 MiB): Boot Loader Specification entries (/loader/entries/*.conf) plus the
#      kernel and initrd they name, and systemd-boot as EFI/BOOT/BOOTX64.EFI for UEFI firmware
#   2  root (ext4, Discoverable Partitions "Linux root x86-64" type)
# Built without loop devices or mounts: mkfs.ext4 -d, mkfs.vfat + mtools, sfdisk, dd.
# Outputs debian-12.raw and debian-12.qcow2.
# With DEBIAN_LAYOUT=genericcloud (the debian-genericcloud recipe) the disk is laid out like
# Debian's official genericcloud image instead: see genericcloud_disk below.
# shellcheck shell=bash

DEBIAN_DISK_SIZE=${DEBIAN_DISK_SIZE:-2G}
DEBIAN_ESP_MIB=256
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DEBIAN_LAYOUT=${DEBIAN_LAYOUT:-bls}

# The outputs are cached in $YUNHE_CACHE/images/$RECIPE/<key> (about 1 GiB per recipe, the raw
# disk sparse), key = debian_cache_key: what decides the image, that is the recipe's files, the
# layout, disk size and mirrors, and the archive's candidate versions of the kernel and
# cloud-init (a new kernel ABI or point release in the archive builds afresh). The tests and the
# lab suite rebuild an image whenever out/ lacks it; this makes that a copy. Only the newest key
# is kept. YUNHE_IMAGE_CACHE=0 builds afresh (and refreshes the cache).
debian_cache_key() {
    {
        cat "$RECIPES_DIR/lib.sh" "$RECIPES_DIR/debian/recipe.sh" "$RECIPES_DIR/debian/customize.sh" \
            "$RECIPES_DIR/debian/packages" "$RECIPES_DIR/$RECIPE/recipe.sh"
        echo "$DEBIAN_LAYOUT $DEBIAN_DISK_SIZE $DEBIAN_MIRROR $DEBIAN_SECURITY_MIRROR"
        deb_version linux-image-cloud-amd64
        deb_version cloud-init
    } | sha256sum | cut -c1-16
}

recipe_build() {
    local key cache
    key=$(debian_cache_key)
    cache="$YUNHE_CACHE/images/$RECIPE/$key"
    if [ "${YUNHE_IMAGE_CACHE:-1}" != 0 ] && [ -f "$cache/manifest.json" ]; then
        log "cached at $cache (key $key)"
        cp --sparse=always "$cache"/* "$OUTDIR/" || die "copying the cached image failed"
        return
    fi
    debian_build
    rm -rf "$YUNHE_CACHE/images/$RECIPE"
    mkdir -p "$cache.tmp"
    local files
    files=$(python3 -c 'import json, sys; print("\n".join(f["name"] for f in json.load(open(sys.argv[1]))["files"]))' \
        "$OUTDIR/manifest.json")
    # shellcheck disable=SC2086 # one file name a line, none with spaces
    if (cd "$OUTDIR" && cp --sparse=always $files manifest.json "$cache.tmp/"); then
        mv "$cache.tmp" "$cache" && log "cached in $cache (key $key)"
    else
        rm -rf "$cache.tmp"; log "could not cache the image in $cache"
    fi
}

debian_build() {
    need_pkgs mmdebstrap e2fsprogs dosfstools mtools fdisk qemu-utils python3 uuid-runtime
    local here="$RECIPES_DIR/debian" work debs rootfs kver esp_uuid root_uuid esp_serial
    work=$(mktemp -d "${TMPDIR:-/var/tmp}/yunhe-debian.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    debs="$YUNHE_CACHE/debian/apt-archives"
    mkdir -p "$debs"
    rootfs="$work/rootfs"
    root_uuid=$(uuidgen)
    esp_serial=$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n' | tr a-f A-F)
    esp_uuid="${esp_serial:0:4}-${esp_serial:4:4}"
    export YUNHE_ROOT_UUID=$root_uuid YUNHE_ESP_UUID=$esp_uuid YUNHE_LAYOUT=$DEBIAN_LAYOUT
    local extra=""
    # update-grub inside the guest (the genericcloud layout's kernel hooks)
    [ "$DEBIAN_LAYOUT" = genericcloud ] && extra=",grub2-common"

    log "mmdebstrap bookworm (package cache: $debs)"
    local t0
    t0=$(date +%s)
    mmdebstrap --mode=root --variant=minbase --format=directory \
        --include="$(grep -v '^#' "$here/packages" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')$extra" \
        --skip=download/empty \
        --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
        --setup-hook="sync-in '$debs' /var/cache/apt/archives" \
        --customize-hook="sync-out /var/cache/apt/archives '$debs'" \
        --customize-hook="'$here/customize.sh' \"\$1\"" \
        bookworm "$rootfs" \
        "deb $DEBIAN_MIRROR bookworm main" \
        "deb $DEBIAN_MIRROR bookworm-updates main" \
        "deb $DEBIAN_SECURITY_MIRROR bookworm-security main" \
        >"$work/mmdebstrap.log" 2>&1 \
        || { tail -n 40 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    rm -f "$debs"/lock; rm -rf "$debs"/partial
    log "root file system ready after $(( $(date +%s) - t0 )) s"

    kver=$(cd "$rootfs/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n1)
    [ -n "$kver" ] && [ -f "$rootfs/boot/initrd.img-$kver" ] || die "no kernel/initrd in the image's /boot"
    if [ "$DEBIAN_LAYOUT" = genericcloud ]; then
        genericcloud_disk "$work" "$rootfs" "$kver" "$root_uuid" "$esp_serial" "$esp_uuid"
        return
    fi

    log "partitioning ($DEBIAN_DISK_SIZE GPT disk)"
    local raw="$work/disk.raw" esp="$work/esp.img" root="$work/root.img"
    truncate -s "$DEBIAN_DISK_SIZE" "$raw"
    sfdisk --quiet "$raw" <<SFDISK || die "sfdisk failed"
label: gpt
unit: sectors
first-lba: 2048
start=2048, size=$((DEBIAN_ESP_MIB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="ESP"
start=$(( (1 + DEBIAN_ESP_MIB) * 2048 )), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"
SFDISK
    local p1start p1size p2start p2size
    read -r p1start p1size p2start p2size < <(sfdisk --json "$raw" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"]
print(p[0]["start"], p[0]["size"], p[1]["start"], p[1]["size"])')

    log "ESP: BLS entry, kernel $kver, initrd, systemd-boot"
    rm -f "$esp"
    mkfs.vfat -F 32 -n ESP -i "$esp_serial" -C "$esp" $((p1size / 2)) >/dev/null || die "mkfs.vfat failed"
    local sdboot
    sdboot=$(fetch_deb systemd-boot-efi)
    mkdir -p "$work/sdboot" && dpkg -x "$sdboot" "$work/sdboot"
    local bls="$work/bls"
    mkdir -p "$bls/loader/entries" "$bls/debian/$kver" "$bls/EFI/BOOT"
    cp "$rootfs/boot/vmlinuz-$kver" "$bls/debian/$kver/linux"
    cp "$rootfs/boot/initrd.img-$kver" "$bls/debian/$kver/initrd"
    cp "$work/sdboot/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$bls/EFI/BOOT/BOOTX64.EFI"
    printf 'timeout 0\ndefault debian-*\n' >"$bls/loader/loader.conf"
    cat >"$bls/loader/entries/debian-$kver.conf" <<BLS
title      Debian GNU/Linux 12 (bookworm)
version    $kver
sort-key   debian
linux      /debian/$kver/linux
initrd     /debian/$kver/initrd
options    root=UUID=$root_uuid ro console=tty0 console=ttyS0,115200n8
BLS
    # the same files inside the image's /boot/efi, so the guest's kernel hook keeps them in sync
    mcopy -s -i "$esp" "$bls"/* ::/ || die "mcopy to the ESP failed"

    log "root: ext4 from the tree (mkfs.ext4 -d)"
    rm -f "$root"
    mkfs.ext4 -q -F -L debian-root -U "$root_uuid" -d "$rootfs" -E root_owner=0:0 \
        "$root" "$((p2size / 2))k" || die "mkfs.ext4 -d failed"

    log "assembling the disk"
    dd if="$esp" of="$raw" bs=512 seek="$p1start" conv=notrunc,sparse status=none
    dd if="$root" of="$raw" bs=512 seek="$p2start" conv=notrunc,sparse status=none
    rm -f "$esp" "$root"
    rm -f "$OUTDIR"/debian-12.raw "$OUTDIR"/debian-12.qcow2
    mv "$raw" "$OUTDIR/debian-12.raw"
    qemu-img convert -f raw -O qcow2 "$OUTDIR/debian-12.raw" "$OUTDIR/debian-12.qcow2" \
        || die "qemu-img convert failed"
    cp "$bls/loader/entries/debian-$kver.conf" "$OUTDIR/bls-entry.conf"

    local pkgs
    pkgs=$(chroot_versions "$rootfs")
    write_manifest "$OUTDIR" "$(cat <<JSON
{
  "recipe": "debian",
  "description": "Debian 12 (bookworm) cloud image: cloud-init (ConfigDrive, OpenStack), openssh-server, $kver, serial console ttyS0",
  "kernel_version": "$kver",
  "packages": $pkgs,
  "layout": {"table": "gpt", "esp": {"partition": 1, "fs": "vfat", "uuid": "$esp_uuid",
             "bls_entry": "/loader/entries/debian-$kver.conf"},
             "root": {"partition": 2, "fs": "ext4", "uuid": "$root_uuid", "label": "debian-root"}},
  "allocated_bytes_raw": $(( $(stat -c %b "$OUTDIR/debian-12.raw") * $(stat -c %B "$OUTDIR/debian-12.raw") )),
  "build_seconds": $(( $(date +%s) - BUILD_START )),
  "images": [
    {"name": "debian-12", "file": "debian-12.qcow2", "disk_format": "qcow2", "container_format": "bare",
     "properties": $(glance_props)},
    {"name": "debian-12-raw", "file": "debian-12.raw", "disk_format": "raw", "container_format": "bare",
     "properties": $(glance_props)}
  ]
}
JSON
)"
}

# genericcloud_disk WORK ROOTFS KVER ROOT_UUID ESP_SERIAL ESP_UUID: the disk as Debian's official
# genericcloud image lays it out (debian-12-genericcloud-amd64.raw, sfdisk -l):
#   1   root (ext4, "Linux root x86-64"), from sector 262144, with /boot/grub/grub.cfg
#   14  BIOS boot (3 MiB, sectors 2048-8191): left empty here (no BIOS boot in yunhe; GRUB's
#       i386-pc core image would need grub-install on a loop device)
#   15  ESP (FAT, 124 MiB, sectors 8192-262143): shim and Debian's signed monolithic GRUB as
#       EFI/BOOT/BOOTX64.EFI + grubx64.efi and EFI/debian/, each with the grub.cfg stub that
#       finds the root by UUID and hands over to its /boot/grub/grub.cfg (as Debian's)
# grub.cfg is written here in grub-mkconfig's shape (grub-mkconfig itself needs the real root
# device); inside the guest, update-grub rewrites it when kernels change (customize.sh).
# Outputs debian-12-genericcloud.raw and .qcow2.
genericcloud_disk() {
    local work=$1 rootfs=$2 kver=$3 root_uuid=$4 esp_serial=$5 esp_uuid=$6
    local name=debian-12-genericcloud raw="$work/disk.raw" esp="$work/esp.img" root="$work/root.img"
    local part_uuid cmdline
    part_uuid=$(uuidgen)
    cmdline="root=PARTUUID=$part_uuid ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0"
    log "partitioning ($DEBIAN_DISK_SIZE GPT disk, genericcloud layout)"
    truncate -s "$DEBIAN_DISK_SIZE" "$raw"
    sfdisk --quiet "$raw" <<SFDISK || die "sfdisk failed"
label: gpt
unit: sectors
first-lba: 2048
${raw}1 : start=262144, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$part_uuid
${raw}14 : start=2048, size=6144, type=21686148-6449-6E6F-744E-656564454649
${raw}15 : start=8192, size=253952, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
SFDISK
    local p1start p1size
    read -r p1start p1size < <(sfdisk --json "$raw" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"]
r = next(x for x in p if x["start"] == 262144)
print(r["start"], r["size"])')

    log "ESP: shim, signed GRUB, the grub.cfg stub"
    local shim grub stub="$work/efi"
    shim=$(fetch_deb shim-signed)
    grub=$(fetch_deb grub-efi-amd64-signed)
    mkdir -p "$work/shim" "$work/grub" "$stub/EFI/BOOT" "$stub/EFI/debian"
    dpkg -x "$shim" "$work/shim" && dpkg -x "$grub" "$work/grub"
    local d
    for d in BOOT debian; do
        cp "$work/grub/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" "$stub/EFI/$d/grubx64.efi"
        printf 'search.fs_uuid %s root hd0,gpt1\nset prefix=($root)'"'"'/boot/grub'"'"'\nconfigfile $prefix/grub.cfg\n' \
            "$root_uuid" >"$stub/EFI/$d/grub.cfg"
    done
    cp "$work/shim/usr/lib/shim/shimx64.efi.signed" "$stub/EFI/BOOT/BOOTX64.EFI"
    cp "$work/shim/usr/lib/shim/shimx64.efi.signed" "$stub/EFI/debian/shimx64.efi"
    rm -f "$esp"
    # FAT32: with a FAT16 ESP (as mkfs.vfat picks for 124 MiB) the guest's udev never made
    # /dev/disk/by-uuid/<serial>, so /boot/efi waited for it and timed out (lab and QEMU TCG)
    mkfs.vfat -F 32 -n UEFI -i "$esp_serial" -C "$esp" $((253952 / 2)) >/dev/null || die "mkfs.vfat failed"
    mcopy -s -i "$esp" "$stub"/* ::/ || die "mcopy to the ESP failed"

    log "root: /boot/grub/grub.cfg for $kver, ext4 from the tree"
    mkdir -p "$rootfs/boot/grub"
    cat >"$rootfs/boot/grub/grub.cfg" <<GRUBCFG
#
# DO NOT EDIT THIS FILE
#
# It is automatically generated by grub-mkconfig using templates
# from /etc/grub.d and settings from /etc/default/grub
# (here: written by yunhe's image-recipes/debian in the same shape; update-grub replaces it)
#

### BEGIN /etc/grub.d/00_header ###
if [ -s \$prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "\${next_entry}" ] ; then
   set default="\${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi

if [ x"\${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi

export menuentry_id_option

if [ x\$feature_default_font_path = xy ] ; then
   font=unicode
else
   font="\$prefix/unicode.pf2"
fi

function load_video {
  if [ x\$feature_all_video_module = xy ]; then
    insmod all_video
  else
    insmod efi_gop
    insmod efi_uga
    insmod ieee1275_fb
    insmod vbe
    insmod vga
    insmod video_bochs
    insmod video_cirrus
  fi
}

serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
terminal_input console serial
terminal_output console serial
set timeout=0
### END /etc/grub.d/00_header ###

### BEGIN /etc/grub.d/10_linux ###
function gfxmode {
	set gfxpayload="\${1}"
}
set linux_gfx_mode=
export linux_gfx_mode
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os \$menuentry_id_option 'gnulinux-simple-$root_uuid' {
	load_video
	insmod gzio
	if [ x\$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_gpt
	insmod ext2
	search --no-floppy --fs-uuid --set=root $root_uuid
	echo	'Loading Linux $kver ...'
	linux	/boot/vmlinuz-$kver $cmdline
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-$kver
}
submenu 'Advanced options for Debian GNU/Linux' \$menuentry_id_option 'gnulinux-advanced-$root_uuid' {
	menuentry 'Debian GNU/Linux, with Linux $kver' --class debian --class gnu-linux --class gnu --class os \$menuentry_id_option 'gnulinux-$kver-advanced-$root_uuid' {
		load_video
		insmod gzio
		insmod part_gpt
		insmod ext2
		search --no-floppy --fs-uuid --set=root $root_uuid
		echo	'Loading Linux $kver ...'
		linux	/boot/vmlinuz-$kver $cmdline
		echo	'Loading initial ramdisk ...'
		initrd	/boot/initrd.img-$kver
	}
}
### END /etc/grub.d/10_linux ###
GRUBCFG
    # the root by PARTUUID on the command line, as Debian's; fstab by file system UUID
    rm -f "$root"
    mkfs.ext4 -q -F -L debian-root -U "$root_uuid" -d "$rootfs" -E root_owner=0:0 \
        "$root" "$((p1size / 2))k" || die "mkfs.ext4 -d failed"

    log "assembling the disk"
    dd if="$esp" of="$raw" bs=512 seek=8192 conv=notrunc,sparse status=none
    dd if="$root" of="$raw" bs=512 seek="$p1start" conv=notrunc,sparse status=none
    rm -f "$esp" "$root"
    rm -f "$OUTDIR/$name.raw" "$OUTDIR/$name.qcow2"
    mv "$raw" "$OUTDIR/$name.raw"
    qemu-img convert -f raw -O qcow2 "$OUTDIR/$name.raw" "$OUTDIR/$name.qcow2" || die "qemu-img convert failed"
    cp "$rootfs/boot/grub/grub.cfg" "$OUTDIR/grub.cfg"

    write_manifest "$OUTDIR" "$(cat <<JSON
{
  "recipe": "debian-genericcloud",
  "description": "Debian 12 (bookworm) cloud image laid out like Debian's genericcloud: GPT (1 root, 14 BIOS boot, 15 ESP with shim + GRUB), /boot/grub/grub.cfg; cloud-init (ConfigDrive, OpenStack), $kver, serial console ttyS0",
  "kernel_version": "$kver",
  "packages": $(chroot_versions "$rootfs"),
  "layout": {"table": "gpt", "root": {"partition": 1, "fs": "ext4", "uuid": "$root_uuid", "partuuid": "$part_uuid",
             "grub_cfg": "/boot/grub/grub.cfg"},
             "bios_boot": {"partition": 14, "content": "empty"},
             "esp": {"partition": 15, "fs": "vfat", "uuid": "$esp_uuid", "grub_stub": "/EFI/debian/grub.cfg"}},
  "allocated_bytes_raw": $(( $(stat -c %b "$OUTDIR/$name.raw") * $(stat -c %B "$OUTDIR/$name.raw") )),
  "build_seconds": $(( $(date +%s) - BUILD_START )),
  "images": [
    {"name": "$name", "file": "$name.qcow2", "disk_format": "qcow2", "container_format": "bare",
     "properties": $(glance_props)},
    {"name": "$name-raw", "file": "$name.raw", "disk_format": "raw", "container_format": "bare",
     "properties": $(glance_props)}
  ]
}
JSON
)"
}

glance_props() {
    cat <<JSON
{"os_type": "linux", "os_distro": "debian", "os_version": "12", "os_admin_user": "debian",
 "hw_firmware_type": "uefi", "hw_boot_menu": "false", "hw_disk_bus": "virtio", "hw_vif_model": "virtio",
 "hw_rng_model": "virtio", "hw_serial_port_count": "1", "hw_machine_type": "q35",
 "hw_qemu_guest_agent": "no", "min_disk": "2", "min_ram": "256"}
JSON
}

# chroot_versions ROOTFS: JSON object of a few key package versions inside the image.
chroot_versions() {
    dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Package} ${Version}\n' \
        cloud-init openssh-server linux-image-cloud-amd64 systemd 2>/dev/null | python3 -c '
import json, sys
print(json.dumps(dict(l.split(" ", 1) for l in sys.stdin.read().splitlines() if " " in l)))'
}
