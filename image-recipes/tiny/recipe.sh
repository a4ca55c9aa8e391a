# tiny: yunhe's cirros. A gzip cpio initramfs with busybox-static, dropbear and the virtio and
# config-drive modules of Debian's linux-image-cloud-amd64 and linux-image-amd64 (so it boots on
# those kernels as well as on micro, whose drivers are built in). rootfs/ holds its init and configuration.
# shellcheck shell=bash

# add_modules SRC DST LIST: copy the modules LIST names (and what they depend on, from SRC's
# modules.dep; built-in ones skipped) from SRC to DST, with DST/load-order in dependency order.
add_modules() {
    python3 - "$1" "$2" "$3" <<'PY' || die "module selection for $1 failed"
import os, shutil, sys
src, dst, listfile = sys.argv[1:4]
want = [l.strip() for l in open(listfile) if l.strip() and not l.startswith("#")]
deps, byname = {}, {}
for line in open(os.path.join(src, "modules.dep")):
    path, _, rest = line.partition(":")
    deps[path] = rest.split()
    byname[os.path.basename(path).split(".ko")[0].replace("-", "_")] = path
builtin = {os.path.basename(l.strip()).split(".ko")[0].replace("-", "_")
           for l in open(os.path.join(src, "modules.builtin"))}
order, seen = [], set()
def visit(path):
    if path in seen:
        return
    seen.add(path)
    for d in reversed(deps[path]):   # modules.dep lists the deepest dependency last
        visit(d)
    order.append(path)
for name in want:
    key = name.replace("-", "_")
    if key in builtin:
        continue
    if key not in byname:
        sys.exit(f"module {name} not found in {src}")
    visit(byname[key])
os.makedirs(dst, exist_ok=True)
for p in order:
    os.makedirs(os.path.dirname(os.path.join(dst, p)), exist_ok=True)
    shutil.copy2(os.path.join(src, p), os.path.join(dst, p))
with open(os.path.join(dst, "load-order"), "w") as f:
    f.write("\n".join(order) + "\n")
print(f"{len(order)} modules", file=sys.stderr)
PY
}

recipe_build() {
    need_pkgs busybox-static dropbear-bin kmod binutils python3
    local here="$RECIPES_DIR/tiny" stage kpkg kdeb kver kdir mods kpkgver
    stage=$(mktemp -d "${TMPDIR:-/tmp}/yunhe-tiny.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$stage'" EXIT

    log "assembling rootfs"
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,dev,proc,sys,run,tmp,mnt,root,var/log,etc/dropbear}
    chmod 700 "$stage/root"; chmod 1777 "$stage/tmp"
    cp -a "$here/rootfs/." "$stage/"
    install -m 0755 /bin/busybox "$stage/bin/busybox"
    if ldd "$stage/bin/busybox" >/dev/null 2>&1; then die "/bin/busybox is not static (busybox-static expected)"; fi
    local a
    while read -r a; do
        case "$a" in linuxrc|"") continue ;; esac
        [ -e "$stage/$a" ] || [ -L "$stage/$a" ] && continue
        mkdir -p "$stage/$(dirname "$a")"
        ln -s "$(realpath -m --relative-to="$stage/$(dirname "$a")" "$stage/bin/busybox")" "$stage/$a"
    done < <("$stage/bin/busybox" --list-full)

    log "adding dropbear and its libraries"
    install -m 0755 /usr/sbin/dropbear "$stage/usr/sbin/dropbear"
    install -m 0755 /usr/bin/dropbearkey "$stage/usr/bin/dropbearkey"
    install -m 0755 /usr/bin/dbclient "$stage/usr/bin/dbclient"
    ln -s dbclient "$stage/usr/bin/ssh"
    local lib
    for lib in $(ldd /usr/sbin/dropbear /usr/bin/dropbearkey /usr/bin/dbclient | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u); do
        mkdir -p "$stage/$(dirname "$lib")"
        cp -L "$lib" "$stage/$lib"
    done
    [ -e "$stage/lib64/ld-linux-x86-64.so.2" ] || die "dynamic loader missing from the rootfs"
    strip --strip-unneeded "$stage"/lib/x86_64-linux-gnu/*.so* 2>/dev/null || true

    # The same modules for each Debian kernel tiny supports: the cloud kernel and the generic
    # one (linux-image-amd64); each finds its own under /lib/modules/$(uname -r).
    local meta kvers=() pkgjson=""
    for meta in linux-image-cloud-amd64 linux-image-amd64; do
        kpkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
        [ -n "$kpkg" ] || die "cannot resolve $meta to a kernel package"
        kdeb=$(fetch_deb "$kpkg")
        kpkgver=$(deb_version "$kpkg")
        kdir="$YUNHE_CACHE/tiny/$kpkg-$kpkgver"
        if [ ! -f "$kdir/.done" ]; then
            log "unpacking $kpkg"
            rm -rf "$kdir" && mkdir -p "$kdir"
            dpkg -x "$kdeb" "$kdir"
            touch "$kdir/.done"
        fi
        kver=${kpkg#linux-image-}
        mods="$kdir/lib/modules/$kver"
        [ -d "$mods" ] || die "no modules for $kver in $kdeb"
        [ -f "$mods/modules.dep" ] || depmod -b "$kdir" "$kver" || die "depmod failed for $kver"
        log "adding modules of $kver"
        add_modules "$mods" "$stage/lib/modules/$kver" "$here/modules.list"
        kvers+=("$kver")
        pkgjson+="\"$kpkg\": \"$kpkgver\", "
    done

    log "writing the initramfs"
    rm -f "$OUTDIR/tiny.cpio.gz" "$OUTDIR/tiny-root.img" "$OUTDIR"/vmlinuz-*
    python3 "$here/mkcpio.py" "$stage" "$OUTDIR/tiny.cpio.gz" \
        --dev /dev/console:c:5:1:0600 --dev /dev/null:c:1:3:0666 --dev /dev/ttyS0:c:4:64:0600
    # The Glance "ami" image that ties kernel and ramdisk together needs a disk of its own: 1 MiB
    # of zeros (tiny lives entirely in RAM).
    truncate -s 1M "$OUTDIR/tiny-root.img"

    local size max=$((16 * 1024 * 1024))
    size=$(cat "$OUTDIR"/tiny.cpio.gz "$OUTDIR"/tiny-root.img | wc -c)
    [ "$size" -le "$max" ] || die "tiny is $size bytes, over the 16 MiB limit"
    write_manifest "$OUTDIR" "$(cat <<JSON
{
  "recipe": "tiny",
  "description": "yunhe tiny: busybox + dropbear initramfs that reads OpenStack metadata (config drive or 169.254.169.254)",
  "packages": {"busybox-static": "$(dpkg-query -W -f='${Version}' busybox-static)",
               "dropbear-bin": "$(dpkg-query -W -f='${Version}' dropbear-bin)",
               ${pkgjson%, }},
  "modules_for_kernels": [$(printf '"%s",' "${kvers[@]}" | sed 's/,$//')],
  "ready_marker": "yunhe-tiny: ready",
  "build_seconds": $(( $(date +%s) - BUILD_START )),
  "images": [
    {"name": "yunhe-tiny-initramfs", "file": "tiny.cpio.gz", "disk_format": "ari", "container_format": "ari",
     "properties": {"os_type": "linux", "os_distro": "yunhe-tiny"}},
    {"name": "yunhe-tiny", "file": "tiny-root.img", "disk_format": "ami", "container_format": "ami",
     "links": {"kernel_id": "yunhe-micro-vmlinux", "ramdisk_id": "yunhe-tiny-initramfs"},
     "links_note": "kernel_id and ramdisk_id name other images (yunhe-micro-vmlinux from recipe micro, or debian-cloud-kernel from recipe cloud-kernel); the uploader replaces them with those images' Glance ids",
     "properties": {"os_type": "linux", "os_distro": "yunhe-tiny", "os_command_line": "console=ttyS0",
                    "hw_disk_bus": "virtio", "hw_vif_model": "virtio", "hw_rng_model": "virtio",
                    "hw_serial_port_count": "1", "min_ram": "64"}}
  ]
}
JSON
)"
}
