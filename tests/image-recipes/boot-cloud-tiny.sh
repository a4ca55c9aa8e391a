#!/usr/bin/env bash
# (d) tiny with Debian's linux-image-cloud-amd64 kernel (recipe cloud-kernel): the modules tiny
# carries load, and it reaches "yunhe-tiny: ready" under QEMU TCG, then applies a config drive.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
ensure_built tiny
ensure_built cloud-kernel
kernel=$(ls "$OUT"/cloud-kernel/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$kernel" ] || fail "no vmlinuz-* in $OUT/cloud-kernel"
out=$(KERNEL=$kernel TEST=boot-cloud-tiny "$here/boot-micro-tiny.sh") || fail "$out"
grep -q 'yunhe-tiny: loaded [1-9][0-9]* modules' "$OUT/test-boot-cloud-tiny.log" || fail "no modules loaded"
out2=$(KERNEL=$kernel TEST=cloud-config-drive "$here/tiny-config-drive.sh") || fail "$out2"
pass "${out#PASS boot-cloud-tiny: }; ${out2#PASS cloud-config-drive: }"
