# debian: a Debian 12 (bookworm) cloud image made with mmdebstrap. GPT disk:
#   1  ESP (FAT32, 256 MiB): Boot Loader Specification entries (/loader/entries/*.conf) plus the
#      kernel and initrd they name, and systemd-boot as EFI/BOOT/BOOTX64.EFI for UEFI firmware
#   2  root (ext4, Discoverable Partitions "Linux root x86-64" type)
# Built without loop devices or mounts: mkfs.ext4 -d, mkfs.vfat + mtools, sfdisk, dd.
# Outputs debian-12.raw and debian-12.qcow2.
# shellcheck shell=bash

DEBIAN_DISK_SIZE=${DEBIAN_DISK_SIZE:-2G}
DEBIAN_ESP_MIB=256
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

recipe_build() {
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
    export YUNHE_ROOT_UUID=$root_uuid YUNHE_ESP_UUID=$esp_uuid

    log "mmdebstrap bookworm (package cache: $debs)"
    local t0
    t0=$(date +%s)
    mmdebstrap --mode=root --variant=minbase --format=directory \
        --include="$(grep -v '^#' "$here/packages" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')" \
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
