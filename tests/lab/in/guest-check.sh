# The body of the user_data script tests/lab/in/guests.sh gives each tiny guest on its config
# drive (it prepends "#!/bin/sh" and NAME, CPUS, LAB_IP, GUEST_IP, TOKEN, MODE, LAB_FLAGS). tiny runs it
# before its ready marker; it checks every device and prints "yunhe-check: ok|FAIL ..." lines
# on the console. MODE=boot powers the guest off once tiny is ready; MODE=sr leaves it running
# and writes /run/after.sh, which the lab runs over the serial console after a save and restore.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
cat >/run/check-lib.sh <<'LIB'
say() { echo "yunhe-check: $*"; }
ok() { say "ok $*"; }
bad() { say "FAIL $*"; }

# net_handshake: report the clocks, then wait for the lab to ping us and send "go" over TCP.
net_handshake() {
    local rtc=none got
    [ -r /sys/class/rtc/rtc0/since_epoch ] && rtc=$(cat /sys/class/rtc/rtc0/since_epoch)
    rm -f /tmp/go
    timeout 40 nc -l -p 5555 >/tmp/go 2>/dev/null &
    sleep 0.3
    say "clock sys=$(date +%s) rtc=$rtc"
    say "net-ready $GUEST_IP"
    wait $!
    got=$(cat /tmp/go 2>/dev/null)
    if [ "$got" = go ]; then ok "lab-tcp: the lab reached the guest over TCP"; else bad "lab-tcp: got '$got'"; fi
}

# disk_write TOKEN SECTOR: write TOKEN there, flush, drop the cache and read it back.
disk_write() {
    local got
    printf '%s' "$1" | dd of=/dev/vda bs=512 seek="$2" conv=notrunc,sync,fsync 2>/dev/null
    sync
    echo 3 >/proc/sys/vm/drop_caches
    got=$(dd if=/dev/vda bs=512 skip="$2" count=1 2>/dev/null | head -c ${#1})
    if [ "$got" = "$1" ]; then ok "disk-write: sector $2 written and read back"; else bad "disk-write: read back '$got'"; fi
}

ping_lab() {
    if ping -c 2 -W 3 "$LAB_IP" >/dev/null 2>&1; then ok "ping-lab: $LAB_IP answers"; else
        bad "ping-lab: $LAB_IP"
        net_diag
    fi
}

# net_diag: what the guest's side of a silent network looks like (counters, interrupts).
net_diag() {
    say "diag eth0 $(grep eth0 /proc/net/dev | tr -s ' ')"
    grep virtio /proc/interrupts | tr -s ' ' | while read -r line; do say "diag irq $line"; done
    say "diag neigh $(ip neigh 2>/dev/null | tr '\n' ';')"
}

# virtio_irqs: the interrupts the virtio devices have taken so far (all CPUs).
virtio_irqs() {
    awk '/virtio/ { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i } END { print s + 0 }' /proc/interrupts
}

LIB
. /run/check-lib.sh

online=$(cat /sys/devices/system/cpu/online)
n=$(grep -c '^processor' /proc/cpuinfo)
want=0
[ "$CPUS" -gt 1 ] && want="0-$((CPUS - 1))"
if [ "$online" = "$want" ] && [ "$n" = "$CPUS" ]; then ok "cpus: $n online ($online)"; else bad "cpus: $n, online '$online', want $CPUS ($want)"; fi

# the instruction-set features the lab's own CPU has (LAB_FLAGS: popcnt) reach the guest: yunhe
# hides POPCNT only on hosts that cannot run it (src/vmm/cpu_probe.rs)
missing=""
for f in $LAB_FLAGS; do grep -qw "$f" /proc/cpuinfo || missing="$missing $f"; done
if [ -z "$missing" ]; then ok "cpu-flags: the lab's '$LAB_FLAGS' reach the guest"; else bad "cpu-flags: missing$missing (the lab has '$LAB_FLAGS')"; fi

if [ -b /dev/vda ] && head -c 64 /dev/vda | grep -q "yunhe-lab-disk $NAME"; then
    ok "disk-read: /dev/vda sector 0 holds the lab's marker"
else
    bad "disk-read: /dev/vda $(ls /dev/vd* 2>/dev/null | tr '\n' ' ')"
fi
disk_write "$TOKEN" 2048

addr=$(ip -4 addr show eth0 2>/dev/null | awk '/inet / {print $2; exit}')
if [ "${addr%/*}" = "$GUEST_IP" ]; then ok "dhcp: eth0 $addr from the lab's udhcpd"; else bad "dhcp: eth0 '$addr', want $GUEST_IP"; fi
ping_lab

cur=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
bytes=$(head -c 16 /dev/hwrng 2>/dev/null | od -An -tx1 | tr -d ' \n')
case $cur:$bytes in
    virtio_rng*:00000000000000000000000000000000) bad "hwrng: $cur gave zeros" ;;
    virtio_rng*:????????????????????????????????) ok "hwrng: $cur $bytes" ;;
    *) bad "hwrng: rng_current '$cur', bytes '$bytes'" ;;
esac

net_handshake

if [ "$MODE" = sr ]; then
    # What the lab runs on the console after the restore, with TOKEN2 as $1.
    printf 'NAME=%s CPUS=%s LAB_IP=%s GUEST_IP=%s\n' "$NAME" "$CPUS" "$LAB_IP" "$GUEST_IP" >/run/check-env.sh
    cat >/run/after.sh <<'EOF'
. /run/check-env.sh
. /run/check-lib.sh
local_timer_irqs() {
    awk '/^ *LOC:/ { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i } END { print s + 0 }' /proc/interrupts
}
say "after-restore uptime $(cut -d' ' -f1 /proc/uptime)"
i0=$(virtio_irqs)
l0=$(local_timer_irqs)
t0=$(cut -d' ' -f1 /proc/uptime)
sleep 1
t1=$(cut -d' ' -f1 /proc/uptime)
l1=$(local_timer_irqs)
if awk -v a="$t0" -v b="$t1" 'BEGIN { d = b - a; exit !(d >= 0.9 && d < 2) }'; then ok "timer: sleep 1 took $t0 -> $t1"; else bad "timer: sleep 1 took $t0 -> $t1"; fi
if [ "$l1" -gt "$l0" ]; then ok "local-timer-irqs: $l0 -> $l1"; else bad "local-timer-irqs: $l0 -> $l1"; fi
disk_write "$1" 4096
ping_lab
net_handshake
i1=$(virtio_irqs)
if [ "$i1" -gt "$i0" ]; then ok "virtio-irqs: $i0 -> $i1"; else bad "virtio-irqs: $i0 -> $i1"; fi
say "after-done"
EOF
    say "sr-ready"
else
    # Power off once rc.sysinit (our parent) has printed the ready marker and exited.
    parent=$PPID
    (while kill -0 "$parent" 2>/dev/null; do sleep 0.1; done; poweroff) </dev/null >/dev/null 2>&1 &
fi
