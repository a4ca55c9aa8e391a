#!/bin/sh
# mmdebstrap customize hook for the debian recipe: $1 is the image's root directory.
# YUNHE_ROOT_UUID, YUNHE_ESP_UUID and YUNHE_LAYOUT (bls: kernels on the ESP with Boot Loader
# Specification entries; genericcloud: GRUB's /boot/grub/grub.cfg, as Debian's official cloud
# images) come from recipe.sh.
set -eu
root=$1
: "${YUNHE_ROOT_UUID:?}" "${YUNHE_ESP_UUID:?}"
layout=${YUNHE_LAYOUT:-bls}

cat >"$root/etc/fstab" <<FSTAB
# <file system>              <mount point> <type> <options>           <dump> <pass>
UUID=$YUNHE_ROOT_UUID  /             ext4   errors=remount-ro   0      1
UUID=$YUNHE_ESP_UUID                        /boot/efi     vfat   umask=0077,nofail   0      2
FSTAB
mkdir -p "$root/boot/efi"

echo debian >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"

cat >"$root/etc/network/interfaces" <<'IFACES'
# cloud-init writes the interfaces it configures to interfaces.d/50-cloud-init
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
IFACES

echo LANG=C.UTF-8 >"$root/etc/default/locale"

mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat >"$root/etc/cloud/cloud.cfg.d/90_yunhe.cfg" <<'CLOUD'
# yunhe: look for a config drive first, then the OpenStack metadata service.
datasource_list: [ ConfigDrive, OpenStack, None ]
# The image has no "locales" package: C.UTF-8 is built into libc, and /etc/default/locale (written
# below) already names it, so cc_locale finds nothing to change and runs neither locale-gen nor
# update-locale (both in "locales"). `locale: false` would skip the module too, but cloud-init's
# schema wants a string there and warns "Invalid cloud-config provided" on every boot.
locale: C.UTF-8
datasource:
  OpenStack:
    max_wait: 30
    timeout: 5
CLOUD

# Slow hosts: under emulation (the lab: QEMU TCG with nested SVM, other builds on the same
# cores) udev may reach the disks and ttyS0 minutes into the boot; systemd's default 90 s job
# timeout would then fail /boot/efi (no kernel hook output) and the serial getty. On hardware
# this changes nothing: the devices are there in well under a second. systemd 252 (bookworm)
# waits for a device unit (/dev/disk/by-uuid/<ESP> of the /boot/efi mount, dev-ttyS0.device of
# the serial getty) DefaultDeviceTimeoutSec, a setting of its own (90 s), not
# DefaultTimeoutStartSec: both are raised.
mkdir -p "$root/etc/systemd/system.conf.d"
cat >"$root/etc/systemd/system.conf.d/90-yunhe-slow-hosts.conf" <<'SYSTEMD'
[Manager]
DefaultTimeoutStartSec=15min
DefaultDeviceTimeoutSec=15min
SYSTEMD

# Kernel command line for BLS entries (used by the kernel hook below for future kernels).
echo "root=UUID=$YUNHE_ROOT_UUID ro console=tty0 console=ttyS0,115200n8" >"$root/etc/kernel/cmdline"

if [ "$layout" = genericcloud ]; then
    # GRUB's configuration, as Debian's cloud images set it (their /etc/default/grub.d files);
    # update-grub (grub2-common) regenerates /boot/grub/grub.cfg when a kernel is installed or
    # removed inside the guest, as grub-efi-amd64's zz-update-grub hooks do.
    mkdir -p "$root/etc/default/grub.d"
    cat >"$root/etc/default/grub.d/15_yunhe.cfg" <<'GRUB'
GRUB_TIMEOUT=0
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0"
GRUB_TERMINAL="console serial"
GRUB
    for d in postinst.d postrm.d; do
        cat >"$root/etc/kernel/$d/zz-update-grub" <<'HOOK'
#!/bin/sh
# Regenerate /boot/grub/grub.cfg after a kernel was installed or removed.
set -e
command -v update-grub >/dev/null || exit 0
[ -e /boot/grub/grub.cfg ] || exit 0
[ -z "${DPKG_MAINTSCRIPT_PACKAGE:-}" ] || [ -n "${1:-}" ] || exit 0
exec update-grub
HOOK
        chmod 755 "$root/etc/kernel/$d/zz-update-grub"
    done
else
# Keep the ESP's BLS entries in step with kernels installed later inside the guest.
cat >"$root/etc/kernel/postinst.d/zz-yunhe-bls" <<'HOOK'
#!/bin/sh
# Copy kernel $1 and its initrd to the ESP and write its Boot Loader Specification entry.
set -e
kver=$1
esp=/boot/efi
mountpoint -q "$esp" || exit 0
[ -f "/boot/initrd.img-$kver" ] || exit 0   # the initramfs post-update hook calls us again
mkdir -p "$esp/debian/$kver" "$esp/loader/entries"
cp "/boot/vmlinuz-$kver" "$esp/debian/$kver/linux"
cp "/boot/initrd.img-$kver" "$esp/debian/$kver/initrd"
. /etc/os-release
cat >"$esp/loader/entries/debian-$kver.conf" <<ENTRY
title      $PRETTY_NAME
version    $kver
sort-key   debian
linux      /debian/$kver/linux
initrd     /debian/$kver/initrd
options    $(cat /etc/kernel/cmdline)
ENTRY
HOOK
cat >"$root/etc/kernel/postrm.d/zz-yunhe-bls" <<'HOOK'
#!/bin/sh
# Remove kernel $1's files and BLS entry from the ESP.
set -e
esp=/boot/efi
mountpoint -q "$esp" || exit 0
rm -rf "$esp/debian/$1" "$esp/loader/entries/debian-$1.conf"
HOOK
mkdir -p "$root/etc/initramfs/post-update.d"
ln -sf ../../kernel/postinst.d/zz-yunhe-bls "$root/etc/initramfs/post-update.d/zz-yunhe-bls"
chmod 755 "$root/etc/kernel/postinst.d/zz-yunhe-bls" "$root/etc/kernel/postrm.d/zz-yunhe-bls"
fi

# Per-instance state is made on first boot: ssh host keys (cloud-init), machine-id (systemd).
rm -f "$root"/etc/ssh/ssh_host_*
# sshd starts after cloud-init.service (whose ssh module makes this instance's keys) and makes
# any key still missing itself, so a first boot never has ssh.service fail on `sshd -t` ("no
# hostkeys available") and hit its start limit. Seen in the lab (docs/lab.md, "The Debian cloud
# image"): the genericcloud guest's ssh.service failed six times on some first boots.
# cloud-init 22.4's unit orders itself before `sshd.service`, the alias, and before
# sysinit.target; this names Debian's own unit and does not rest on the ordering alone.
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat >"$root/etc/systemd/system/ssh.service.d/yunhe-host-keys.conf" <<'UNIT'
[Unit]
After=cloud-init.service

[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# Smaller image: no package caches or lists (the guest runs apt update itself).
rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
rm -rf "$root"/var/lib/apt/lists/*
mkdir -p "$root/var/lib/apt/lists/partial"
rm -f "$root"/var/log/*.log "$root"/var/log/apt/*
