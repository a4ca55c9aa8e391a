#!/usr/bin/env bash
# The lab benchmark (issue 10 item 6; docs/lab.md): inside the lab, the same kernel (Debian's
# stock linux-image-amd64 vmlinuz) and initramfs (tiny) boot under `yunhe vm run` and under
# QEMU with accel=kvm (-M microvm and -M q35; Debian's qemu-system-x86 with its libraries copied
# in), alternated, ROUNDS times each (default 5); prints each median, the ratios against QEMU,
# the VMMs' memory beyond guest memory (PSS) and guest-side virtio-blk throughput.
#   tests/lab/bench.sh [ROUNDS]     boot times, memory and virtio-blk throughput
#   tests/lab/bench.sh blk          virtio-blk throughput only
#   tests/lab/bench.sh mem          memory only: one boot under each VMM, PSS at ready (under
#                                   yunhe also 10 s later)
#   tests/lab/bench.sh exits        KVM exit histograms of one boot under each
#   tests/lab/bench.sh net          guest-to-guest TCP only: a receiver and a sender guest on one
#                                   lab bridge, yunhe's pair against QEMU q35's (NET_ROUNDS,
#                                   default 3; NET_MIB per round, default 128; both pairs on
#                                   the lab CPUs NET_CPUS, a taskset list, default 1, empty for
#                                   none: fewer IPIs to a lab CPU in guest mode, docs/lab.md;
#                                   NET_TSO_SEGS, if set, the sender guest's tcp_min_tso_segs)
# Not a timed test: numbers depend on the machine's load; the ratios come from one run.
# Environment: YUNHE_BIN (the yunhe binary, default target/release/yunhe), BOOT_TIMEOUT (a boot
# that does not reach ready within it counts as failed and the rounds go on; default 300 s),
# BLK_ROUNDS (default 3), LAB_TIMEOUT (the whole lab, default 3600 s), LAB_CPUS (lab CPUs, default 2;
# 1 keeps the lab host clear of the cross-CPU interrupts behind its panics, docs/lab.md).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# `bench.sh exits`: instead of the timings, the KVM exits of one boot under each (in/exits.sh)
mode=bench
if [ "${1:-}" = exits ]; then mode=exits; shift; fi
# `bench.sh blk`: only the guest-side virtio-blk throughput (yunhe against QEMU q35)
if [ "${1:-}" = blk ]; then mode=blk; shift; fi
# `bench.sh mem`: only the memory part
if [ "${1:-}" = mem ]; then mode=mem; shift; fi
# `bench.sh net`: only guest-to-guest TCP
if [ "${1:-}" = net ]; then mode=net; shift; fi
rounds=${1:-5}
out=${OUT:-$root/out}
[ -f "$out/tiny/tiny.cpio.gz" ] || "$root/image-recipes/build" tiny "$out/tiny" >&2
labdir=$("$here/lab" build)
payload=$(mktemp -d "${TMPDIR:-/tmp}/yunhe-lab-bench.XXXXXX")
trap 'rm -rf "$payload"' EXIT
cp "$labdir/vmlinuz" "$payload/vmlinuz"
cp "$out/tiny/tiny.cpio.gz" "$payload/tiny.cpio.gz"
[ -d "$out/cloud-kernel" ] || "$root/image-recipes/build" cloud-kernel "$out/cloud-kernel" >&2
cp "$out"/cloud-kernel/vmlinuz-* "$payload/cloud-vmlinuz"
# QEMU with its shared libraries and the firmware microvm and q35 need
mkdir -p "$payload/qemu/lib" "$payload/qemu/share"
cp /usr/bin/qemu-system-x86_64 "$payload/qemu/"
ldd /usr/bin/qemu-system-x86_64 | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u |
    while read -r lib; do cp -L "$lib" "$payload/qemu/lib/"; done
for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/qboot.rom /usr/share/qemu/linuxboot_dma.bin \
    /usr/share/qemu/kvmvapic.bin /usr/share/qemu/multiboot_dma.bin; do
    cp -L "$f" "$payload/qemu/share/"
done
ln -s qboot.rom "$payload/qemu/share/bios-microvm.bin"
cp "$here/in/bench.sh" "$here/in/exits.sh" "$payload/"
case $mode in
    exits) run=("$payload/exits.sh") ;;
    blk | mem | net) run=("$payload/bench.sh" "$mode") ;;
    *) run=("$payload/bench.sh" "$rounds") ;;
esac
# the in-lab script's knobs travel in the payload (the lab passes no environment)
printf 'BOOT_TIMEOUT=%s\nBLK_ROUNDS=%s\nNET_ROUNDS=%s\nNET_MIB=%s\nNET_CPUS=%s\nNET_TSO_SEGS=%s\n' "${BOOT_TIMEOUT:-300}" \
    "${BLK_ROUNDS:-3}" "${NET_ROUNDS:-3}" "${NET_MIB:-128}" "${NET_CPUS-1}" "${NET_TSO_SEGS:-}" >"$payload/env"
# the host's load decides how far apart the numbers of two runs are; the rounds alternate, so
# the ratios within one run stay fair
echo "host load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(date -u '+%Y-%m-%d %H:%M UTC'))"
# not exec: the trap above removes the payload when the lab is done
status=0
"$here/lab" run --payload "$payload" --mem 3072 --cpus "${LAB_CPUS:-2}" --timeout "${LAB_TIMEOUT:-3600}" \
    --bin "${YUNHE_BIN:-$root/target/release/yunhe}" "${run[@]}" || status=$?
echo "host load after: $(cut -d' ' -f1-3 /proc/loadavg) ($(date -u '+%Y-%m-%d %H:%M UTC'))"
exit "$status"
