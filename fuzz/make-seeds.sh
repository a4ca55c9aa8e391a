#!/bin/sh
# Regenerates the seed corpora of the disk-boot and qcow2 fuzz targets from real, small images
# made with the distributions' own tools (e2fsprogs, dosfstools, mtools, gdisk, qemu-utils).
# Each seed stays small (at most 256 KiB) so the fuzzer mutates structure, not padding.
# Usage: fuzz/make-seeds.sh   (writes fuzz/seeds/{diskboot,boot_config,qcow2}/)
set -eu
PATH=$PATH:/usr/sbin:/sbin
here=$(cd "$(dirname "$0")" && pwd)
out=$here/seeds
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out/diskboot" "$out/boot_config" "$out/qcow2"
rm -f "$out/diskboot/"* "$out/boot_config/"* "$out/qcow2/"*
export MTOOLS_SKIP_CHECK=1
UUID=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d

# Boot configurations, as the distributions write them.
cat > "$tmp/grub.cfg" <<'CFG'
set default="0"
if [ -s $prefix/grubenv ]; then
  load_env
fi
function load_video {
  insmod all_video
}
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux $menuentry_id_option 'gnulinux-simple-0a1b' {
	load_video
	insmod gzio
	set root='hd0,gpt1'
	search --no-floppy --fs-uuid --set=root 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d
	echo	'Loading Linux 6.1.0-13-cloud-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-13-cloud-amd64 root=UUID=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-13-cloud-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-0a1b' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-12-cloud-amd64' --class debian {
		linux	/boot/vmlinuz-6.1.0-12-cloud-amd64 root=UUID=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d ro
		initrd	/boot/initrd.img-6.1.0-12-cloud-amd64
	}
}
CFG
cat > "$tmp/stub.cfg" <<'CFG'
search.fs_uuid 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d root
set prefix=($root)'/boot/grub'
configfile $prefix/grub.cfg
CFG
cat > "$tmp/bls.conf" <<'CFG'
title Fedora Linux (6.5.6-300.fc39.x86_64) 39 (Cloud Edition)
version 6.5.6-300.fc39.x86_64
linux /vmlinuz-6.5.6-300.fc39.x86_64
initrd /initramfs-6.5.6-300.fc39.x86_64.img
options root=UUID=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d ro rootflags=subvol=root no_timer_check net.ifnames=0 console=tty1 console=ttyS0,115200n8
grub_users $grub_users
grub_arg --unrestricted
grub_class fedora
CFG
cat > "$tmp/extlinux.conf" <<'CFG'
DEFAULT linux
TIMEOUT 1
PROMPT 0
LABEL rescue
  KERNEL /boot/vmlinuz-rescue
LABEL linux
  MENU LABEL Alpine Linux
  LINUX /boot/vmlinuz-virt
  INITRD /boot/initramfs-virt
  APPEND root=UUID=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d modules=sd-mod,usb-storage,ext4 quiet rootfstype=ext4
CFG
cp "$tmp/grub.cfg" "$out/boot_config/grub.cfg"
cp "$tmp/stub.cfg" "$out/boot_config/grub-stub.cfg"
cp "$tmp/bls.conf" "$out/boot_config/bls.conf"
cp "$tmp/extlinux.conf" "$out/boot_config/extlinux.conf"

# A root filesystem tree: Debian's /boot/grub/grub.cfg and /vmlinuz links, a BLS entry,
# extlinux.conf. Kernels are a few hundred bytes: the parsers never look inside them.
kernel() { printf 'KERNEL %s ' "$1"; head -c 300 /dev/zero | tr '\0' 'k'; }
root=$tmp/root
mkdir -p "$root/boot/grub" "$root/boot/loader/entries" "$root/boot/extlinux"
cp "$tmp/grub.cfg" "$root/boot/grub/grub.cfg"
kernel 6.1.0-13 > "$root/boot/vmlinuz-6.1.0-13-cloud-amd64"
kernel initrd-13 > "$root/boot/initrd.img-6.1.0-13-cloud-amd64"
ln -s boot/vmlinuz-6.1.0-13-cloud-amd64 "$root/vmlinuz"
ln -s boot/initrd.img-6.1.0-13-cloud-amd64 "$root/initrd.img"

mkext4() { # tree image size-KiB extra-args...
  t=$1 img=$2 kib=$3; shift 3
  mke2fs -q -F -U "$UUID" -b 1024 -N 32 -m 0 -d "$t" "$@" "$img" "${kib}k" >/dev/null
}

# 1. ext4 on the whole disk: grub.cfg + /vmlinuz links.
mkext4 "$root" "$tmp/whole-ext4.img" 192 -t ext4 -O ^has_journal,^resize_inode
cp "$tmp/whole-ext4.img" "$out/diskboot/whole-ext4-grub"

# 2. ext2 (block maps, no extents) with only the /vmlinuz links.
links=$tmp/links
mkdir -p "$links/boot"
cp "$root/boot/vmlinuz-6.1.0-13-cloud-amd64" "$root/boot/initrd.img-6.1.0-13-cloud-amd64" "$links/boot/"
ln -s boot/vmlinuz-6.1.0-13-cloud-amd64 "$links/vmlinuz"
ln -s /boot/initrd.img-6.1.0-13-cloud-amd64 "$links/initrd.img"
mkext4 "$links" "$tmp/ext2.img" 128 -t ext2 -O ^resize_inode
cp "$tmp/ext2.img" "$out/diskboot/whole-ext2-links"

# 3. A /boot filesystem with BLS entries (Fedora's layout: paths relative to /boot).
bls=$tmp/bls
mkdir -p "$bls/loader/entries"
cp "$tmp/bls.conf" "$bls/loader/entries/6.5.6-300.fc39.x86_64.conf"
sed 's/6\.5\.6-300/6.4.1-200/g' "$tmp/bls.conf" > "$bls/loader/entries/6.4.1-200.fc39.x86_64.conf"
kernel 6.5.6 > "$bls/vmlinuz-6.5.6-300.fc39.x86_64"
kernel initramfs > "$bls/initramfs-6.5.6-300.fc39.x86_64.img"
mkext4 "$bls" "$tmp/bls.img" 128 -t ext4 -O ^has_journal,^resize_inode

# 4. extlinux (Alpine's layout).
ext=$tmp/ext
mkdir -p "$ext/boot/extlinux"
cp "$tmp/extlinux.conf" "$ext/boot/extlinux/extlinux.conf"
kernel virt > "$ext/boot/vmlinuz-virt"
kernel initramfs-virt > "$ext/boot/initramfs-virt"
mkext4 "$ext" "$tmp/extlinux.img" 128 -t ext4 -O ^has_journal,^resize_inode
cp "$tmp/extlinux.img" "$out/diskboot/whole-ext4-extlinux"

# 5. An ESP (FAT12) with a grub.cfg stub and a BLS entry, on its own.
mkfs.vfat -C -n ESP -i 1a2b3c4d "$tmp/esp.img" 64 >/dev/null
mmd -i "$tmp/esp.img" ::/EFI ::/EFI/debian ::/loader ::/loader/entries
mcopy -i "$tmp/esp.img" "$tmp/stub.cfg" ::/EFI/debian/grub.cfg
mcopy -i "$tmp/esp.img" "$tmp/bls.conf" "::/loader/entries/a-long-entry-name-6.5.6.conf"
kernel esp > "$tmp/vmlinuz-6.5.6-300.fc39.x86_64"
mcopy -i "$tmp/esp.img" "$tmp/vmlinuz-6.5.6-300.fc39.x86_64" ::/
kernel initramfs-esp > "$tmp/initramfs-6.5.6-300.fc39.x86_64.img"
mcopy -i "$tmp/esp.img" "$tmp/initramfs-6.5.6-300.fc39.x86_64.img" ::/
cp "$tmp/esp.img" "$out/diskboot/whole-fat12-esp"

# 6. Debian genericcloud's layout: GPT with a BIOS boot partition, an ESP with the stub, and
#    an ext4 root holding /boot/grub/grub.cfg.
mkext4 "$root" "$tmp/root.img" 128 -t ext4 -O ^has_journal,^resize_inode
disk=$tmp/gpt.img
truncate -s 256k "$disk"
sgdisk -a 1 -n 14:34:41 -t 14:EF02 -n 15:42:169 -t 15:EF00 -n 1:170:425 -t 1:8304 "$disk" >/dev/null 2>&1
dd if="$tmp/esp.img" of="$disk" bs=512 seek=42 conv=notrunc status=none
dd if="$tmp/root.img" of="$disk" bs=512 seek=170 conv=notrunc status=none
cp "$disk" "$out/diskboot/gpt-debian-genericcloud"

# 7. MBR: a /boot partition with BLS entries and a FAT partition.
disk=$tmp/mbr.img
truncate -s 200k "$disk"
printf 'label: dos\nstart=1, size=128, type=ef\nstart=129, size=256, type=83\n' | sfdisk -q "$disk" >/dev/null
dd if="$tmp/esp.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
dd if="$tmp/bls.img" of="$disk" bs=512 seek=129 conv=notrunc status=none
cp "$disk" "$out/diskboot/mbr-esp-bls"

# qcow2: v2 and v3, plain, zlib- and zstd-compressed, small clusters so the tables are many.
raw=$out/diskboot/gpt-debian-genericcloud
qemu-img convert -q -f raw -O qcow2 -o compat=0.10,cluster_size=4096 "$raw" "$out/qcow2/v2-plain"
qemu-img convert -q -f raw -O qcow2 -o compat=1.1,cluster_size=4096 "$raw" "$out/qcow2/v3-plain"
qemu-img convert -q -c -f raw -O qcow2 -o compat=0.10,cluster_size=4096 "$raw" "$out/qcow2/v2-zlib"
qemu-img convert -q -c -f raw -O qcow2 -o compat=1.1,cluster_size=4096,compression_type=zlib "$raw" "$out/qcow2/v3-zlib"
qemu-img convert -q -c -f raw -O qcow2 -o compat=1.1,cluster_size=4096,compression_type=zstd "$raw" "$out/qcow2/v3-zstd" 2>/dev/null || true
qemu-img create -q -f qcow2 -o compat=1.1,cluster_size=512 "$tmp/empty.qcow2" 1M
cp "$tmp/empty.qcow2" "$out/qcow2/v3-empty"

for f in "$out"/*/*; do
  [ "$(stat -c %s "$f")" -le 262144 ] || { echo "seed $f is over 256 KiB" >&2; exit 1; }
done
ls -l "$out"/diskboot "$out"/boot_config "$out"/qcow2
