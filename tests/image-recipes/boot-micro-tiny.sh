#!/usr/bin/env bash
# (a) micro's bzImage + tiny's initramfs boot under QEMU TCG to "yunhe-tiny: ready" within 120 s.
# Builds the recipes into $OUT (default out/) first if they are not there.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LIMIT=${LIMIT:-120}
KERNEL=${KERNEL:-}
ensure_built tiny
if [ -z "$KERNEL" ]; then ensure_built micro; KERNEL=$OUT/micro/bzImage; fi
work=$(mktemp -d); trap 'stop_qemu; rm -rf "$work"' EXIT
log=$OUT/test-$TEST.log
boot_until "$log" "yunhe-tiny: ready" "$LIMIT" -M q35,accel=tcg -m 256 -nic none -device virtio-rng-pci \
    -monitor "unix:$work/mon,server,nowait" \
    -kernel "$KERNEL" -initrd "$OUT/tiny/tiny.cpio.gz" -append console=ttyS0 \
    || fail "no ready marker within ${LIMIT}s (console log: $log)"
secs=$BOOT_SECS
ready=$(grep -o 'yunhe-tiny: ready [0-9.]*' "$log" | head -n1)
# the ACPI power button (what a cloud's graceful stop presses) must power the guest off
sleep 1
qemu_monitor "$work/mon" system_powerdown || fail "cannot reach QEMU's monitor"
wait_exit 60 || fail "guest ignored the ACPI power button for 60 s (console log: $log)"
grep -q "reboot: Power down" "$log" || fail "QEMU exited without a guest power-off (console log: $log)"
pass "$(basename "$KERNEL") + tiny reached '$ready' (guest uptime) after ${secs}s wall clock under TCG; ACPI power button powered it off"
