#!/bin/sh
# shellcheck disable=SC3043 # busybox ash has "local"
# Runs inside the lab: PCI hotplug of a running Linux guest (docs/vmm.md, "PCI hotplug").
# Boots Debian's kernel (acpiphp built in: CONFIG_HOTPLUG_PCI_ACPI=y) with tiny's initramfs
# under `yunhe vmm`, no disk and no NIC; then, through `yunhe vm ctl`, adds a read-only disk
# holding a known pattern (the guest must see /sys/block/vda and read the pattern), grows its
# image and `resize-disk`s it (the guest must see the new size in /sys/block/vda/size), removes it
# (the guest must eject it and lose vda), adds a NIC on a tap (the guest must see eth0 with the
# MAC given) and removes it. The guest is driven through its serial console shell.
#
#   tests/lab/lab run --payload DIR --mem 1024 --timeout 900 --bin target/release/yunhe \
#       tests/lab/in/hotplug.sh
#
# DIR holds kernels/debian-vmlinuz (the lab's own kernel: `tests/lab/lab build` prints its
# directory) and tiny.cpio.gz (out/tiny). Prints PASS/FAIL/TIME lines, then
# "lab-hotplug: N passed, M failed".
P=/payload
W=/tmp/hotplug
D=$W
rm -rf "$W" && mkdir -p "$W"
KERNEL=${KERNEL:-$P/kernels/debian-vmlinuz}
SOCK=$W/vmm.sock
CON=$W/console.log
TAP=hp0
MAC=52:54:00:77:aa:01
TOKEN=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
: >"$W/result"

now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
pass() { echo "PASS hotplug $*" >>"$W/result"; }
fail() { echo "FAIL hotplug $*" >>"$W/result"; }

# wait_for FILE PATTERN SECONDS: until FILE has a line matching PATTERN (0) or the time is up.
wait_for() {
    local i=0 limit=$(($3 * 10))
    while [ $i -lt $limit ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$PID" 2>/dev/null || { grep -q "$2" "$1" 2>/dev/null; return; }
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# line_of PATTERN: the last console line matching PATTERN, without CR.
line_of() { grep -a "$1" "$CON" | tail -n 1 | tr -d '\r'; }

# Markers the guest prints are written as hp""-x in the command, so the command's own echo on
# the console never matches "hp-x".
dd if=/dev/zero of="$W/hot.img" bs=1M count=4 2>/dev/null
printf 'yunhe-hotplug-%s' "$TOKEN" | dd of="$W/hot.img" conv=notrunc 2>/dev/null
tunctl -t "$TAP" >/dev/null && ip link set "$TAP" up || fail "setup: no tap"

cat >"$W/spec.json" <<EOF
{"vm": {"boot": {"type": "kernel", "path": "$KERNEL"}, "initrd": "$P/tiny.cpio.gz",
        "cmdline": "console=ttyS0 reboot=k panic=1", "memory_mib": 256, "cpus": 1, "rng": true,
        "console_log": "$CON"},
 "control_socket": "$SOCK", "no_reboot": true}
EOF
yunhe vmm --spec "$W/spec.json" </dev/null >"$W/vmm.log" 2>&1 &
PID=$!
if wait_for "$CON" "yunhe-tiny: ready" 300; then
    pass "boot: $(line_of 'yunhe-tiny: ready')"
else
    fail "boot: no 'yunhe-tiny: ready' on the console"
fi

# The guest side, fed to its console shell; the lab side acts between the steps.
guest() { printf '%s\n' "$1"; }
{
    guest ''
    sleep 2
    guest 'echo "hp""-shell: $(ls /sys/bus/pci/slots 2>/dev/null | wc -l) slots, acpiphp: $(dmesg | grep -c acpiphp)"'
    wait_for "$CON" "hp-shell:" 30
    # 1. a disk appears
    t0=$(now_ms)
    yunhe vm ctl --socket "$SOCK" add-disk "$W/hot.img" --ro --id vol1 --serial hotvol >"$W/add-disk.out" 2>&1
    guest 'i=0; while [ ! -b /dev/vda ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo "hp""-disk: $(ls /sys/block | tr "\n" " ")serial=$(cat /sys/block/vda/serial 2>/dev/null) data=$(head -c 40 /dev/vda 2>/dev/null)"'
    wait_for "$CON" "hp-disk:" 90
    t1=$(now_ms)
    echo "TIME hotplug disk-attach: $((t1 - t0)) ms from add-disk to the guest reading it" >>"$W/result"
    # 1b. its image grows (4 MiB to 8 MiB: 16384 sectors) and the guest sees the new size
    t0=$(now_ms)
    dd if=/dev/zero bs=1M count=4 2>/dev/null >>"$W/hot.img"
    yunhe vm ctl --socket "$SOCK" resize-disk vol1 >"$W/resize-disk.out" 2>&1
    guest 'i=0; while [ "$(cat /sys/block/vda/size)" != 16384 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; echo "hp""-resize: size=$(cat /sys/block/vda/size) $(dmesg | grep -e "new size" | tail -n 1)"'
    wait_for "$CON" "hp-resize:" 60
    t1=$(now_ms)
    echo "TIME hotplug disk-resize: $((t1 - t0)) ms from resize-disk to the guest seeing the new size" >>"$W/result"
    # 2. and leaves
    t0=$(now_ms)
    yunhe vm ctl --socket "$SOCK" remove vol1 --timeout 90 >"$W/remove-disk.out" 2>&1
    t1=$(now_ms)
    echo "TIME hotplug disk-detach: $((t1 - t0)) ms until the guest ejected it" >>"$W/result"
    guest 'echo "hp""-disk-gone: [$(ls /sys/block | tr "\n" " ")]"'
    wait_for "$CON" "hp-disk-gone:" 30
    # 3. a NIC appears
    t0=$(now_ms)
    yunhe vm ctl --socket "$SOCK" add-net "$TAP" --mac "$MAC" --id nic1 >"$W/add-net.out" 2>&1
    guest 'i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo "hp""-nic: $(ls /sys/class/net | tr "\n" " ")mac=$(cat /sys/class/net/eth0/address 2>/dev/null)"'
    wait_for "$CON" "hp-nic:" 90
    t1=$(now_ms)
    echo "TIME hotplug nic-attach: $((t1 - t0)) ms from add-net to the guest seeing eth0" >>"$W/result"
    # 4. and leaves
    yunhe vm ctl --socket "$SOCK" remove nic1 --timeout 90 >"$W/remove-net.out" 2>&1
    guest 'echo "hp""-nic-gone: [$(ls /sys/class/net | tr "\n" " ")]"'
    wait_for "$CON" "hp-nic-gone:" 30
    guest 'dmesg | grep -i -e acpiphp -e "pci 0000:00" -e virtio | tail -n 25 | sed "s/^/hp""-dmesg: /"'
    sleep 3
} | timeout 600 yunhe vm ctl --socket "$SOCK" console --linger 2 >"$W/console-client.log" 2>&1

got=$(line_of "hp-shell:")
case $got in
    *"hp-shell: 0 slots"* | "") fail "slots: the guest registered no hotplug slot ($got)" ;;
    *) pass "slots: ${got#*hp-shell: }" ;;
esac
case $(cat "$W/add-disk.out") in
    *'"id":"vol1"'*) pass "add-disk: $(cat "$W/add-disk.out")" ;;
    *) fail "add-disk: $(cat "$W/add-disk.out")" ;;
esac
got=$(line_of "hp-disk:")
case $got in
    *"vda"*"serial=hotvol"*"data=yunhe-hotplug-$TOKEN"*) pass "disk-appears: the guest sees vda and reads the pattern ($got)" ;;
    *) fail "disk-appears: '$got', want vda with serial hotvol and yunhe-hotplug-$TOKEN" ;;
esac
case $(cat "$W/resize-disk.out") in
    *'"capacity":8388608'*'"previous":4194304'*) pass "resize-disk: $(cat "$W/resize-disk.out")" ;;
    *) fail "resize-disk: $(cat "$W/resize-disk.out")" ;;
esac
got=$(line_of "hp-resize:")
case $got in
    *"size=16384"*"new size"*) pass "disk-grows: the guest sees 16384 sectors ($got)" ;;
    *) fail "disk-grows: '$got', want size=16384 and virtio_blk's 'new size'" ;;
esac
case $(cat "$W/remove-disk.out") in
    *'"ok":true'* | *'"id":"vol1"'*) pass "remove-disk: $(cat "$W/remove-disk.out")" ;;
    *) fail "remove-disk: $(cat "$W/remove-disk.out")" ;;
esac
got=$(line_of "hp-disk-gone:")
case $got in
    *vda*| "") fail "disk-leaves: '$got'" ;;
    *) pass "disk-leaves: the guest has no vda any more ($got)" ;;
esac
case $(cat "$W/add-net.out") in
    *'"id":"nic1"'*) pass "add-net: $(cat "$W/add-net.out")" ;;
    *) fail "add-net: $(cat "$W/add-net.out")" ;;
esac
got=$(line_of "hp-nic:")
case $got in
    *"eth0"*"mac=$MAC"*) pass "nic-appears: the guest sees eth0 with $MAC ($got)" ;;
    *) fail "nic-appears: '$got', want eth0 with mac=$MAC" ;;
esac
case $(cat "$W/remove-net.out") in
    *'"id":"nic1"'*) pass "remove-net: $(cat "$W/remove-net.out")" ;;
    *) fail "remove-net: $(cat "$W/remove-net.out")" ;;
esac
got=$(line_of "hp-nic-gone:")
case $got in
    *eth0* | "") fail "nic-leaves: '$got'" ;;
    *) pass "nic-leaves: the guest has no eth0 any more ($got)" ;;
esac
st=$(timeout 10 yunhe vm ctl --socket "$SOCK" stats 2>&1)
case $st in
    *vol1* | *nic1*) fail "stats: removed devices still listed: $st" ;;
    *) pass "stats: only the boot devices are left" ;;
esac

timeout 10 yunhe vm ctl --socket "$SOCK" stop >/dev/null 2>&1
i=0
while kill -0 "$PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
kill "$PID" 2>/dev/null
wait "$PID" 2>/dev/null
tunctl -d "$TAP" >/dev/null 2>&1

cat "$W/result"
if grep -q '^FAIL' "$W/result"; then
    echo "--- console (last 60 lines)"
    tail -n 60 "$CON" | tr -d '\r'
    echo "--- vmm.log"
    tail -n 20 "$W/vmm.log"
    echo "---"
fi
grep -a "hp-dmesg:" "$CON" | tr -d '\r' | grep -v 'sed "s' | sed 's/^/NOTE /'
echo "lab-hotplug: $(grep -c '^PASS' "$W/result") passed, $(grep -c '^FAIL' "$W/result") failed"
grep -q '^FAIL' "$W/result" && exit 1
exit 0
