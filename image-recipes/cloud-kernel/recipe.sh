# cloud-kernel: Debian's linux-image-cloud-amd64 kernel (vmlinuz, a bzImage), unchanged.
# tiny carries this kernel's virtio and file-system modules, so tiny boots on it as well as on
# micro; this recipe provides the matching kernel (14 MiB, too big to ship inside tiny).
# shellcheck shell=bash

recipe_build() {
    local kpkg kdeb ver kver
    kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [ -n "$kpkg" ] || die "cannot resolve linux-image-cloud-amd64 to a kernel package"
    kdeb=$(fetch_deb "$kpkg")
    ver=$(deb_version "$kpkg")
    kver=${kpkg#linux-image-}
    rm -f "$OUTDIR"/vmlinuz-*
    dpkg-deb --fsys-tarfile "$kdeb" | tar -xO "./boot/vmlinuz-$kver" >"$OUTDIR/vmlinuz-$kver.tmp" \
        || die "no /boot/vmlinuz-$kver in $kdeb"
    mv "$OUTDIR/vmlinuz-$kver.tmp" "$OUTDIR/vmlinuz-$kver"
    write_manifest "$OUTDIR" "$(cat <<JSON
{
  "recipe": "cloud-kernel",
  "description": "Debian linux-image-cloud-amd64 kernel $kver (modules for it are inside tiny)",
  "kernel_version": "$kver",
  "packages": {"$kpkg": "$ver"},
  "build_seconds": $(( $(date +%s) - BUILD_START )),
  "images": [
    {"name": "debian-cloud-kernel", "file": "vmlinuz-$kver", "disk_format": "aki", "container_format": "aki",
     "properties": {"os_type": "linux", "os_distro": "debian", "os_version": "12",
                    "hw_boot_protocol": "linux-bzimage", "recommended_os_command_line": "console=ttyS0"}}
  ]
}
JSON
)"
}
