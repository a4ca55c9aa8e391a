# micro: a small Linux kernel from Debian's linux-source-6.1, tinyconfig + micro/kernel.fragment.
# Outputs vmlinux (uncompressed ELF with the Xen PVH entry note) and bzImage.
# The built kernel is cached under $YUNHE_CACHE/micro/<key>, key = hash of the fragment, the
# source package version and MICRO_BUILD_METHOD, so a rebuild with nothing changed is a copy.
# shellcheck shell=bash

MICRO_BUILD_METHOD=1

recipe_build() {
    need_pkgs linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev lz4 \
        xz-utils cpio python3
    local here="$RECIPES_DIR/micro" ver key src cache obj jobs t0 t1
    ver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
    # The key covers what decides the kernel: the fragment, the source version and the build
    # method (bump MICRO_BUILD_METHOD when the configure/build steps below change).
    key=$(cat "$here/kernel.fragment" <(echo "$ver $MICRO_BUILD_METHOD") | sha256sum | cut -c1-16)
    cache="$YUNHE_CACHE/micro/$key"
    if [ -f "$cache/vmlinux" ] && [ -f "$cache/bzImage" ] && [ -f "$cache/build.json" ]; then
        log "kernel cached at $cache (key $key)"
    else
        src="$YUNHE_CACHE/src/linux-source-6.1_$ver"
        if [ ! -f "$src/Makefile" ]; then
            log "unpacking linux-source-6.1 $ver"
            rm -rf "$src.tmp" && mkdir -p "$src.tmp"
            tar -xf /usr/src/linux-source-6.1.tar.xz -C "$src.tmp" --strip-components=1 \
                || die "cannot unpack /usr/src/linux-source-6.1.tar.xz"
            mv "$src.tmp" "$src"
        fi
        obj="$YUNHE_CACHE/micro/build-$key"
        mkdir -p "$obj"
        log "configuring: tinyconfig + kernel.fragment"
        make -s -C "$src" O="$obj" tinyconfig >"$obj/merge.log" 2>&1 || { cat "$obj/merge.log" >&2; die "make tinyconfig failed"; }
        "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$here/kernel.fragment" \
            >>"$obj/merge.log" 2>&1 || { cat "$obj/merge.log" >&2; die "merge_config.sh failed"; }
        make -s -C "$src" O="$obj" olddefconfig >&2
        check_fragment "$here/kernel.fragment" "$obj/.config"
        jobs=${JOBS:-$(nproc)}
        log "building kernel with make -j$jobs (about 8-10 minutes on 2 cores)"
        t0=$(date +%s)
        nice make -s -C "$src" O="$obj" -j"$jobs" KBUILD_BUILD_USER=yunhe KBUILD_BUILD_HOST=yunhe \
            bzImage vmlinux >"$obj/build.log" 2>&1 \
            || { tail -n 30 "$obj/build.log" >&2; die "kernel build failed (log: $obj/build.log)"; }
        t1=$(date +%s)
        readelf -n "$obj/vmlinux" | grep -q 'Xen.*0x00000012' \
            || die "vmlinux has no XEN_ELFNOTE_PHYS32_ENTRY note: not PVH-bootable"
        mkdir -p "$cache.tmp"
        cp "$obj/vmlinux" "$obj/arch/x86/boot/bzImage" "$cache.tmp/"
        cp "$obj/.config" "$cache.tmp/config"
        cp "$obj/System.map" "$cache.tmp/System.map"
        printf '{"kernel_build_seconds": %d, "jobs": %d, "source_version": "%s", "key": "%s"}\n' \
            $((t1 - t0)) "$jobs" "$ver" "$key" >"$cache.tmp/build.json"
        rm -rf "$cache" && mv "$cache.tmp" "$cache"
        rm -rf "$obj"
    fi
    local max=$((20 * 1024 * 1024)) size
    size=$(stat -c %s "$cache/vmlinux")
    [ "$size" -le "$max" ] || die "vmlinux is $size bytes, over the 20 MiB limit"
    cp "$cache/vmlinux" "$cache/bzImage" "$cache/config" "$cache/System.map" "$OUTDIR/"
    local kbuild
    kbuild=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kernel_build_seconds"])' "$cache/build.json")
    write_manifest "$OUTDIR" "$(cat <<JSON
{
  "recipe": "micro",
  "description": "yunhe micro kernel: Linux $ver (Debian linux-source-6.1), tinyconfig + virtio/ACPI/PVH, no modules",
  "kernel_version": "$(kernel_release "$cache/bzImage")",
  "source_package": {"name": "linux-source-6.1", "version": "$ver"},
  "cache_key": "$key",
  "kernel_build_seconds": $kbuild,
  "build_seconds": $(( $(date +%s) - BUILD_START )),
  "images": [
    {"name": "yunhe-micro-vmlinux", "file": "vmlinux", "disk_format": "aki", "container_format": "aki",
     "properties": {"os_type": "linux", "os_distro": "yunhe-micro", "hw_boot_protocol": "pvh",
                    "recommended_os_command_line": "console=ttyS0"}},
    {"name": "yunhe-micro-bzimage", "file": "bzImage", "disk_format": "aki", "container_format": "aki",
     "properties": {"os_type": "linux", "os_distro": "yunhe-micro", "hw_boot_protocol": "linux-bzimage",
                    "recommended_os_command_line": "console=ttyS0"}}
  ]
}
JSON
)"
}

# kernel_release BZIMAGE: the version string stored in a bzImage's setup header.
kernel_release() {
    python3 - "$1" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read(65536)
off = struct.unpack_from("<H", d, 0x20E)[0] + 0x200
print(d[off:d.index(b"\0", off)].decode().split()[0])
PY
}

# check_fragment FRAGMENT CONFIG: every option the fragment sets must have that value in CONFIG.
check_fragment() {
    local frag=$1 config=$2 line name want got bad=0
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*) name=${line%%=*}; want=${line#*=} ;;
            "# CONFIG_"*" is not set") name=${line#\# }; name=${name%% *}; want=n ;;
            *) continue ;;
        esac
        got=$(grep -E "^$name=|^# $name is not set" "$config" | head -n1 || true)
        case "$got" in
            "$name="*) got=${got#*=} ;;
            *) got=n ;;
        esac
        if [ "$got" != "$want" ]; then
            printf '  %s: fragment wants %s, config has %s\n' "$name" "$want" "$got" >&2
            bad=1
        fi
    done <"$frag"
    [ "$bad" -eq 0 ] || die "kernel config lost options from the fragment (missing dependencies?)"
}
