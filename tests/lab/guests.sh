#!/usr/bin/env bash
# Linux guests in the lab (docs/lab.md, "Linux guests"): one lab run that boots micro (bzImage
# and PVH vmlinux), Debian's linux-image-amd64 and linux-image-cloud-amd64 kernels with tiny's
# initramfs under `yunhe vm run`, with 1 and 2 vCPUs, each using every device, then saves a
# running guest and restores it in a new VMM process (tests/lab/in/guests.sh).
#
#   tests/lab/guests.sh [sr]       needs target/release/yunhe; builds missing recipes into out/
#                                  (sr: only the save/restore check)
#   tests/lab/guests.sh only KERNEL [ROUNDS]
#                                  only KERNEL's (micro-bzImage, micro-vmlinux, debian-vmlinuz,
#                                  cloud-vmlinuz) 1- and 2-vCPU boots, ROUNDS times (for hunting a
#                                  rare hang; every boot traces its vCPUs into vmm.log)
#
# Prints one PASS/FAIL line per check, TIME lines with measurements, and finally
# "lab-guests: N passed, M failed"; exits non-zero when anything failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
OUT=${OUT:-$root/out}
bin=${YUNHE_BIN:-$root/target/release/yunhe}
[ -x "$bin" ] || { echo "FAIL lab-guests: no $bin (cargo build --release)"; echo "lab-guests: 0 passed, 1 failed"; exit 1; }

for r in micro tiny cloud-kernel; do
    if [ ! -f "$OUT/$r/manifest.json" ]; then
        "$root/image-recipes/build" "$r" "$OUT/$r" >&2
    fi
done
labdir=$("$here/lab" build | tail -n 1)

# tiny must carry modules for exactly these Debian kernels: the lab's and the cloud kernel's.
# When Debian's archive has moved on since out/ was built (the lab follows linux-image-amd64),
# cloud-kernel and tiny are built again, once.
tiny_missing() {
    local generic cloud k
    generic=$(cat "$labdir/kernel-version")
    cloud=$(basename "$(ls "$OUT"/cloud-kernel/vmlinuz-* | head -n 1)")
    cloud=${cloud#vmlinuz-}
    missing=()
    for k in "$generic" "$cloud"; do
        grep -q "\"$k\"" "$OUT/tiny/manifest.json" || missing+=("$k")
    done
}
tiny_missing
if [ "${#missing[@]}" -gt 0 ]; then
    echo "# out/tiny has no modules for ${missing[*]}: building cloud-kernel and tiny again" >&2
    rm -rf "$OUT/cloud-kernel" "$OUT/tiny"
    for r in cloud-kernel tiny; do
        "$root/image-recipes/build" "$r" "$OUT/$r" >&2
    done
    tiny_missing
fi

payload=$(mktemp -d "${TMPDIR:-/tmp}/yunhe-lab-guests.XXXXXX")
trap 'rm -rf "$payload"' EXIT
mkdir -p "$payload/kernels"
cp "$OUT/micro/bzImage" "$payload/kernels/micro-bzImage"
cp "$OUT/micro/vmlinux" "$payload/kernels/micro-vmlinux"
cp "$labdir/vmlinuz" "$payload/kernels/debian-vmlinuz"
cp "$OUT"/cloud-kernel/vmlinuz-* "$payload/kernels/cloud-vmlinuz"
cp "$OUT/tiny/tiny.cpio.gz" "$payload/"
cp "$here/in/guest-check.sh" "$here/in/save-restore.sh" "$here/in/hotplug.sh" "$payload/"
# every VMM on lab CPU 1 only (LAB_GUEST_CPUS, a taskset list; empty: no pinning), as client.sh
# pins serve: fewer IPIs to a lab CPU in guest mode (docs/lab.md, "Known problems")
printf '%s' "${LAB_GUEST_CPUS-1}" >"$payload/guest-cpus"

# a hung guest costs up to 2 x 150 s: the rounds of "only" get that much room each
lab_timeout=900
[ "${1:-}" = only ] && lab_timeout=$((300 + ${3:-1} * 400))
start=$SECONDS
log=$payload/lab.out
set +e
"$here/lab" run --payload "$payload" --mem 2048 --timeout "$lab_timeout" --bin "$bin" "$here/in/guests.sh" "$@" | tee "$log"
status=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - start))

passed=$(grep -c '^PASS ' "$log" || true)
failed=$(grep -c '^FAIL ' "$log" || true)
for k in "${missing[@]}"; do
    echo "FAIL tiny-modules: out/tiny carries no modules for $k (rebuild: image-recipes/build tiny out/tiny)"
    failed=$((failed + 1))
done
if [ "$status" != 0 ]; then
    echo "FAIL lab: the lab run ended with status $status"
    failed=$((failed + 1))
fi
if [ "$passed" -eq 0 ]; then
    echo "FAIL lab-guests: no check passed"
    failed=$((failed + 1))
fi
echo "TIME lab-guests: whole lab run ${elapsed} s"
echo "lab-guests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
