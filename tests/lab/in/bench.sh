#!/bin/sh
# In-lab half of tests/lab/bench.sh: yunhe vm run against QEMU (accel=kvm) in the same lab.
# Payload: vmlinuz (Debian's stock kernel), tiny.cpio.gz, qemu/ (binary, libraries, firmware).
#   bench.sh [ROUNDS]   boot times (alternated rounds), memory, virtio-blk throughput
#   bench.sh blk        only the virtio-blk throughput part
#   bench.sh mem        only the memory part: one boot under each VMM, PSS at ready (and under
#                       yunhe 10 s later, after it released its binary's pages)
#   bench.sh net        only guest-to-guest TCP: two guests on taps in one lab bridge, yunhe's
#                       pair against QEMU q35's pair (virtio-net-pci, no vhost), alternated
# A boot that does not reach ready within BOOT_TIMEOUT s (default 300) counts as failed; the
# rounds go on, and each median is over the boots that finished (the count is printed).
only=
case ${1:-} in blk | mem | net) only=$1; shift ;; esac
rounds=${1:-5}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
cd /payload || exit 1
# shellcheck disable=SC1091 # BOOT_TIMEOUT, BLK_ROUNDS from tests/lab/bench.sh
[ -f env ] && . ./env
Q=/payload/qemu
up() { cut -d' ' -f1 /proc/uptime; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
exec_qemu() { exec "$Q/lib/ld-linux-x86-64.so.2" --library-path "$Q/lib" "$Q/qemu-system-x86_64" -L "$Q/share" "$@"; }

# PSS of process $1 outside its guest-RAM mapping (the one mapping of $2 MiB, +4 MiB of slack).
pss_beyond_guest() {
    awk -v want=$(($2 * 1024)) '
        /^[0-9a-f]+-[0-9a-f]+ / { split($1, r, "-"); kb = 0; size = 0; guest = 0; next }
        /^Size:/ { size = $2; guest = (size >= want && size <= want + 4096 && !seen) ; if (guest) seen = 1; next }
        /^Pss:/ { if (guest) g += $2; else o += $2 }
        END { printf "%.1f", o / 1024 }' "/proc/$1/smaps"
}

# The same PSS by kind of mapping (the executable's file, other files, [heap], [stack], other
# anonymous), in KiB, on one line
pss_kinds() {
    awk -v want=$(($2 * 1024)) -v exe="$(readlink "/proc/$1/exe")" '
        /^[0-9a-f]+-[0-9a-f]+ / { name = $6; kind = name == "" ? "anon" : name == exe ? "exe" : name ~ /^\[/ ? name : "file"; next }
        /^Size:/ { guest = ($2 >= want && $2 <= want + 4096 && !seen); if (guest) seen = 1; next }
        /^Pss:/ { if (!guest) k[kind] += $2 }
        END { for (n in k) printf "%s %d KiB, ", n, k[n]; printf "\n" }' "/proc/$1/smaps"
}

# The 8 largest of those mappings by PSS: "PSS-KiB SIZE-KiB RANGE PERMS NAME"
pss_top() {
    awk -v want=$(($2 * 1024)) '
        /^[0-9a-f]+-[0-9a-f]+ / { head = $1 " " $2 " " ($6 == "" ? "anon" : $6); next }
        /^Size:/ { size = $2; guest = ($2 >= want && $2 <= want + 4096 && !seen); if (guest) seen = 1; next }
        /^Pss:/ { if (!guest && $2 > 0) print $2, size, head }' "/proc/$1/smaps" | sort -rn | head -n 8
}

# boot NAME LOG CMD...: start CMD (console in LOG), wait for the ready marker; sets BOOT_SECS.
# Leaves the process running as $BOOT_PID.
boot() {
    name=$1 log=$2; shift 2
    : >"$log"
    s=$(up)
    "$@" </dev/null >"$log" 2>&1 &
    BOOT_PID=$!
    deadline=$(awk -v a="$s" -v t="$BOOT_TIMEOUT" 'BEGIN { print int(a) + t }')
    while ! grep -q "yunhe-tiny: ready" "$log" 2>/dev/null; do
        now=$(up)
        if [ "${now%.*}" -gt "$deadline" ] || ! kill -0 $BOOT_PID 2>/dev/null; then
            echo "bench: $name did not reach ready within $BOOT_TIMEOUT s (or ended); log tail:" >&2
            tail -n 20 "$log" >&2
            end
            return 1
        fi
        usleep 20000
    done
    BOOT_SECS=$(sub "$s" "$(up)")
}
# end: kill the VMM and reap it, but wait at most 30 s: a VMM stuck in the lab kernel (KVM_RUN
# under the emulated SVM) ignores SIGKILL, and an unbounded wait would stall the whole bench
end() {
    kill -KILL "$BOOT_PID" 2>/dev/null
    i=0
    while kill -0 "$BOOT_PID" 2>/dev/null && [ $i -lt 300 ]; do usleep 100000; i=$((i + 1)); done
    if kill -0 "$BOOT_PID" 2>/dev/null; then
        echo "bench: pid $BOOT_PID did not end 30 s after SIGKILL; going on without it" >&2
    else
        wait "$BOOT_PID" 2>/dev/null
    fi
}
# ok N OF: "N of OF" if some failed, else nothing (for the tables)
ok() { [ "$1" = "$2" ] || printf ' (%s of %s finished)' "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f\n", a / b }'; }

CMD="console=ttyS0"
# each runs as "$@ &" in a subshell: exec, so $! is the VMM itself (memory, kill)
yunhe_boot() { exec yunhe vm run --kernel vmlinuz --initrd tiny.cpio.gz --cmdline "$CMD" --memory 256 --cpus 2 --no-reboot "$@"; }
yunhe_boot_huge() { yunhe_boot --huge-pages; }
qemu_microvm() {
    exec_qemu -M microvm,accel=kvm -cpu host -m 256 -smp 2 -nodefaults -no-user-config -display none \
        -serial stdio -no-reboot -kernel vmlinuz -initrd tiny.cpio.gz -append "$CMD"
}
qemu_q35() {
    exec_qemu -M q35,accel=kvm -cpu host -m 256 -smp 2 -nodefaults -no-user-config -display none \
        -serial stdio -no-reboot -kernel vmlinuz -initrd tiny.cpio.gz -append "$CMD"
}

VMMS="yunhe_boot qemu_microvm qemu_q35 yunhe_boot_huge"
label() {
    case $1 in
        yunhe_boot) echo "yunhe" ;; yunhe_boot_huge) echo "yunhe --huge-pages" ;;
        qemu_microvm) echo "microvm" ;; qemu_q35) echo "q35" ;;
    esac
}
# pss NAME: PSS beyond guest memory of the running $BOOT_PID into /tmp/NAME.pss; under yunhe
# again 10 s later (the VMM releases its binary's pages 2 s after start: docs/performance.md)
pss() {
    sleep 1 # settle, then memory
    pss_beyond_guest "$BOOT_PID" 256 >"/tmp/$1.pss"
    [ "$only" = mem ] && echo "$(label "$1") PSS by mapping at ready: $(pss_kinds "$BOOT_PID" 256)"
    case $1 in yunhe_boot*)
        sleep 10
        pss_beyond_guest "$BOOT_PID" 256 >"/tmp/$1.pss10"
        if [ "$only" = mem ]; then
            echo "$(label "$1") PSS by mapping 10 s later: $(pss_kinds "$BOOT_PID" 256)"
            echo "$(label "$1") largest mappings 10 s later (PSS KiB, size KiB, range, perms, name):"
            pss_top "$BOOT_PID" 256 | sed 's/^/    /'
        fi ;;
    esac
}
mem_line() {
    line="VMM memory beyond guest memory (PSS, MiB, 1 s after ready):"
    for v in $VMMS; do
        [ -s "/tmp/$v.pss" ] || { line="$line $(label "$v") -,"; continue; }
        extra=
        [ -s "/tmp/$v.pss10" ] && extra=" ($(cat "/tmp/$v.pss10") 10 s later)"
        line="$line $(label "$v") $(cat "/tmp/$v.pss")$extra,"
    done
    echo "${line%,}"
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

if [ "$only" != blk ] && [ "$only" != net ]; then
    # the first yunhe boot unpacks the kernel into the cache (once per kernel file)
    if boot first /tmp/first.log yunhe_boot; then
        end
        echo "yunhe first boot (unpacks and caches the kernel): $BOOT_SECS s"
    fi
fi

if [ "$only" = mem ]; then
    echo "lab bench, memory: Debian $(uname -r) kernel + tiny initramfs, 256 MiB, 2 vCPUs; lab load $(load)"
    for v in $VMMS; do
        if boot "$v" "/tmp/$v.log" "$v"; then
            echo "$(label "$v"): ready after $BOOT_SECS s"
            pss "$v"
            end
        fi
    done
    mem_line
    exit 0
fi

if [ "$only" != blk ] && [ "$only" != net ]; then
echo "lab bench: Debian $(uname -r) kernel (the guest: the same package's vmlinuz) + tiny initramfs, 256 MiB, 2 vCPUs, $rounds rounds; lab load $(load)"
for v in $VMMS; do : >"/tmp/$v.times"; done
: >/tmp/ratios
for r in $(seq 1 "$rounds"); do
    line="round $r:"
    for v in $VMMS; do
        t=failed
        if boot "$v" "/tmp/$v.log" "$v"; then
            t=$BOOT_SECS
            echo "$t" >>"/tmp/$v.times"
            [ "$r" = 1 ] && pss "$v"
            end
        fi
        eval "t_$v=\$t"
        line="$line $(label "$v") $t s,"
    done
    if [ "$t_yunhe_boot" != failed ] && [ "$t_qemu_microvm" != failed ]; then
        ratio "$t_yunhe_boot" "$t_qemu_microvm" >>/tmp/ratios
        line="$line ratio $(tail -n1 /tmp/ratios),"
    fi
    echo "${line%,}; lab load $(load)"
done
y=$(median </tmp/yunhe_boot.times); ny=$(wc -l </tmp/yunhe_boot.times)
m=$(median </tmp/qemu_microvm.times); nm=$(wc -l </tmp/qemu_microvm.times)
q=$(median </tmp/qemu_q35.times); nq=$(wc -l </tmp/qemu_q35.times)
c=$(median </tmp/yunhe_boot_huge.times); nc=$(wc -l </tmp/yunhe_boot_huge.times)
echo
echo "| start to 'yunhe-tiny: ready' (median of the rounds that finished, of $rounds) | seconds | ratio to QEMU microvm |"
echo "| --- | --- | --- |"
echo "| yunhe vm run$(ok "$ny" "$rounds") | $y | $(ratio "$y" "$m") |"
echo "| yunhe vm run --huge-pages$(ok "$nc" "$rounds") | $c | $(ratio "$c" "$m") |"
echo "| QEMU -M microvm (baseline)$(ok "$nm" "$rounds") | $m | 1.00 |"
echo "| QEMU -M q35$(ok "$nq" "$rounds") | $q | $(ratio "$q" "$m") |"
echo "per-round ratios yunhe/microvm: $(tr '\n' ' ' </tmp/ratios)(median $(median </tmp/ratios))"
echo
mem_line
echo "lab load after the boots: $(load)"
fi

# The guests' kernel: whatever kernel has the virtio drivers in tiny: the payload's optional
# cloud-vmlinuz, else the stock one (which needs tiny's modules).
kernel=vmlinuz
[ -f cloud-vmlinuz ] && kernel=cloud-vmlinuz
# config_drive IMG HOST USER_DATA: a vfat config drive (busybox makes FAT32 only, which needs at
# least 33 MiB) with meta_data.json naming HOST and the user data
config_drive() {
    mkdir -p /tmp/cfgmnt
    rm -f "$1" && truncate -s 64M "$1"
    mkdosfs -n config-2 "$1" >/dev/null
    mount -t vfat -o loop "$1" /tmp/cfgmnt || return 1
    mkdir -p /tmp/cfgmnt/openstack/latest
    echo "{\"uuid\": \"00000000-0000-0000-0000-0000000000$2\", \"hostname\": \"bench-$2\"}" \
        >/tmp/cfgmnt/openstack/latest/meta_data.json
    cp "$3" /tmp/cfgmnt/openstack/latest/user_data
    umount /tmp/cfgmnt
}

# Guest-to-guest TCP: a lab bridge bn0 (10.88.0.1/24, udhcpd giving each guest's MAC its address),
# two taps on it, a receiver guest (busybox nc -l, counting the bytes with wc -c) and a sender
# guest that times `dd if=/dev/zero bs=64k | nc` of NET_MIB MiB by its own uptime (kvmclock):
# from the connect to the receiver closing the connection after the sender's FIN. A round
# counts only when the receiver got every byte. Both guests of a pair run under the
# same VMM; yunhe's pair and QEMU q35's pair (userspace virtio-net-pci: the lab loads no
# vhost_net, and yunhe has no vhost either) alternate, NET_ROUNDS times each.
net_bench() {
    mib=${NET_MIB:-128}
    net_rounds=${NET_ROUNDS:-3}
    brctl addbr bn0 && ip addr add 10.88.0.1/24 dev bn0 && ip link set bn0 up || return 1
    for n in 1 2; do
        tunctl -t "bt$n" >/dev/null && brctl addif bn0 "bt$n" && ip link set "bt$n" up || return 1
    done
    {
        echo "start 10.88.0.10"
        echo "end 10.88.0.20"
        echo "interface bn0"
        echo "lease_file /tmp/udhcpd-bn0.leases"
        echo "option subnet 255.255.255.0"
        echo "option lease 600"
        echo "static_lease 52:54:00:88:00:01 10.88.0.11"
        echo "static_lease 52:54:00:88:00:02 10.88.0.12"
    } >/tmp/udhcpd-bn0.conf
    : >/tmp/udhcpd-bn0.leases
    udhcpd -f /tmp/udhcpd-bn0.conf >/tmp/udhcpd-bn0.log 2>&1 &
    dhcp_pid=$!
    {
        echo '#!/bin/sh'
        echo '(sleep 1; echo "bench-net: listening") &'
        # busybox nc half-closes the connection when its stdin ends, and the sender's nc then
        # quits: the receiver's stdin is a FIFO opened read-write (no data, never an end)
        echo 'mkfifo /tmp/never'
        echo 'echo "bench-net: rx $(nc -l -p 5001 <>/tmp/never | wc -c)"'
    } >/tmp/rx.ud
    {
        echo '#!/bin/sh'
        echo 'up() { cut -d" " -f1 /proc/uptime; }'
        # the TCP segments retransmitted so far (/proc/net/snmp's RetransSegs)
        echo 'retrans() { awk '"'"'/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RetransSegs") c = i; h = 1 } else print $c }'"'"' /proc/net/snmp; }'
        # NET_TSO_SEGS: the least TCP segments per TSO burst (the kernel sizes a burst to
        # about 1 ms at the connection's pacing rate, so at the lab's emulated rates it is 1-3
        # segments; docs/lab.md)
        [ -n "${NET_TSO_SEGS:-}" ] && echo "echo $NET_TSO_SEGS >/proc/sys/net/ipv4/tcp_min_tso_segs"
        echo 'i=0'
        echo 'until ping -c 1 -W 1 10.88.0.11 >/dev/null 2>&1 || [ $i -ge 30 ]; do i=$((i + 1)); done'
        echo "s=\$(up); dd if=/dev/zero bs=64k count=$((mib * 16)) 2>/dev/null | nc 10.88.0.11 5001; rc=\$?; e=\$(up)"
        # after the retransmits, the sender's interrupts per virtio vector (NAME:COUNT)
        echo 'irqs() { awk '"'"'/virtio/ { printf " %s:%s", $NF, $2 }'"'"' /proc/interrupts; }'
        echo "echo \"bench-net: tx $((mib * 1048576)) \$s \$e \$rc \$(retrans)\$(irqs)\""
    } >/tmp/tx.ud
    config_drive /tmp/rx.cfg 01 /tmp/rx.ud || return 1
    config_drive /tmp/tx.cfg 02 /tmp/tx.ud || return 1
    echo "lab bench, guest-to-guest TCP: $kernel + tiny, 256 MiB, 1 vCPU each, $mib MiB per round, $net_rounds alternated rounds; lab load $(load)"
    : >/tmp/yunhe.net; : >/tmp/qemu.net
    # every VMM of both pairs on the lab CPUs NET_CPUS (tests/lab/bench.sh)
    if [ -n "${NET_CPUS:-}" ] && taskset -p -c "$NET_CPUS" $$ >/dev/null; then
        echo "both pairs run on lab CPUs $NET_CPUS only"
    fi
    for r in $(seq 1 "$net_rounds"); do
        net_pair yunhe yunhe_net
        net_pair qemu qemu_net
    done
    kill "$dhcp_pid" 2>/dev/null
    for n in 1 2; do tunctl -d "bt$n" >/dev/null 2>&1; done
    ip link set bn0 down; brctl delbr bn0
    yn=$(median </tmp/yunhe.net); qn=$(median </tmp/qemu.net)
    echo
    echo "| guest-to-guest TCP, $mib MiB, busybox nc ($kernel, median of the rounds that finished, of $net_rounds) | MB/s |"
    echo "| --- | --- |"
    echo "| yunhe virtio-net$(ok "$(wc -l </tmp/yunhe.net)" "$net_rounds") | $yn |"
    echo "| QEMU q35 virtio-net-pci, no vhost (baseline)$(ok "$(wc -l </tmp/qemu.net)" "$net_rounds") | $qn |"
    echo "| ratio (goal >= 1) | $(ratio "$yn" "$qn") |"
    echo "lab load after guest-to-guest TCP: $(load)"
}
# yunhe_net / qemu_net ROLE N: the guest ROLE (rx or tx) on tap btN with MAC ...:0N
yunhe_net() {
    exec yunhe vm run --kernel $kernel --initrd tiny.cpio.gz --cmdline "$CMD" --memory 256 --cpus 1 \
        --no-reboot --disk "/tmp/$1.cfg,ro" --net "tap=bt$2,mac=52:54:00:88:00:0$2"
}
qemu_net() {
    exec_qemu -M q35,accel=kvm -cpu host -m 256 -smp 1 -nodefaults -no-user-config -display none \
        -serial stdio -no-reboot -kernel $kernel -initrd tiny.cpio.gz -append "$CMD" \
        -drive "if=none,id=cfg,file=/tmp/$1.cfg,format=raw,readonly=on" -device virtio-blk-pci,drive=cfg \
        -netdev "tap,id=n0,ifname=bt$2,script=no,downscript=no" -device "virtio-net-pci,netdev=n0,mac=52:54:00:88:00:0$2,romfile="
}
# wait_for LOG PATTERN PID: until PATTERN is in LOG (0), or BOOT_TIMEOUT passed or PID ended (1)
wait_for() {
    deadline=$(($(cut -d. -f1 /proc/uptime) + BOOT_TIMEOUT))
    while ! grep -aq "$2" "$1" 2>/dev/null; do
        if [ "$(cut -d. -f1 /proc/uptime)" -gt "$deadline" ] || ! kill -0 "$3" 2>/dev/null; then
            echo "bench: no '$2' in $1; log tail:" >&2
            tail -n 20 "$1" >&2
            return 1
        fi
        usleep 50000
    done
}
# net_pair NAME VMM: the receiver, then the sender once it listens; the sender's rate (MB/s)
# into /tmp/NAME.net
net_pair() {
    name=$1 vmm=$2
    frames_before=$(cat /sys/class/net/bt2/statistics/rx_packets)
    rx_dropped_before=$(cat /sys/class/net/bt1/statistics/tx_dropped)
    bytes_before=$(cat /sys/class/net/bt2/statistics/rx_bytes)
    ("$vmm" rx 1) </dev/null >"/tmp/$name.rx" 2>&1 &
    rx_pid=$!
    tx_pid=
    if wait_for "/tmp/$name.rx" "bench-net: listening" $rx_pid; then
        ("$vmm" tx 2) </dev/null >"/tmp/$name.tx" 2>&1 &
        tx_pid=$!
        if wait_for "/tmp/$name.tx" "bench-net: tx " $tx_pid &&
            wait_for "/tmp/$name.rx" "bench-net: rx " $rx_pid; then
            line=$(grep -a "bench-net: tx " "/tmp/$name.tx" | head -n1 | tr -d '\r' | sed 's/.*bench-net: /bench-net: /')
            got=$(grep -a "bench-net: rx " "/tmp/$name.rx" | head -n1 | tr -d '\r' | sed 's/.*bench-net: rx //')
            rate=$(echo "$line" | awk -v got="$got" '$6 == 0 && got == $3 { d = $5 - $4; if (d > 0) printf "%.2f", $3 / d / 1e6 }')
            [ -n "$rate" ] && echo "$rate" >>"/tmp/$name.net"
            # what the sender's tap took from its VMM: with TCP segmentation offload the frames
            # are up to 64 KiB, without it at most the MTU
            frames=$(($(cat /sys/class/net/bt2/statistics/rx_packets) - frames_before))
            bytes=$(($(cat /sys/class/net/bt2/statistics/rx_bytes) - bytes_before))
            # the receiver's tap drops what its VMM does not read in time
            rx_dropped=$(($(cat /sys/class/net/bt1/statistics/tx_dropped) - rx_dropped_before))
            echo "$name: $line; the receiver got $got bytes -> ${rate:-?} MB/s; the sender's tap took $frames frames, $((bytes / (frames > 0 ? frames : 1))) bytes on average; the receiver's tap dropped $rx_dropped; the sender retransmitted $(echo "$line" | awk '{print $7}') segments, its interrupts:$(echo "$line" | cut -d' ' -f8-)"
        fi
    fi
    for pid in $tx_pid $rx_pid; do BOOT_PID=$pid end; done
}
if [ "$only" = net ]; then
    net_bench
    exit 0
fi

# virtio-blk: the guest writes then reads 64 MiB with O_DIRECT in 4 KiB requests (dd bs=4k: one
# request in flight, so requests/s is the QD1 IOPS; the offsets are sequential, which on the
# lab's tmpfs-backed file costs the same as random ones and which neither VMM merges with one
# request in flight), then 256 MiB in 1 MiB requests (throughput), on a data disk in the lab's
# tmpfs; the guests' kernel as above.
mkdir -p /tmp/cfg
# busybox makes FAT32 only, which needs at least 33 MiB
truncate -s 64M /tmp/cfg.img
mkdosfs -n config-2 /tmp/cfg.img >/dev/null
mount -t vfat -o loop /tmp/cfg.img /tmp/cfg || exit 1
mkdir -p /tmp/cfg/openstack/latest
echo '{"uuid": "00000000-0000-0000-0000-00000000b10c", "hostname": "bench"}' >/tmp/cfg/openstack/latest/meta_data.json
# busybox dd prints no rate: the guest times each dd itself from /proc/uptime (kvmclock) and
# prints "bench-blk: write|read BYTES START END" (the seconds of its uptime)
cat >/tmp/cfg/openstack/latest/user_data <<'UD'
#!/bin/sh
for s in /sys/block/vd*; do [ "$(cat $s/size)" = 614400 ] && d=/dev/${s##*/}; done
[ -n "$d" ] || { echo "bench-blk: no data disk"; exit 1; }
up() { cut -d' ' -f1 /proc/uptime; }
s=$(up); dd if=/dev/zero of=$d bs=4k count=16384 oflag=direct 2>/tmp/w4.err; e=$(up)
echo "bench-blk: write4k $((16384 * 4096)) $s $e $(tail -n1 /tmp/w4.err)"
s=$(up); dd if=$d of=/dev/null bs=4k count=16384 iflag=direct 2>/tmp/r4.err; e=$(up)
echo "bench-blk: read4k $((16384 * 4096)) $s $e $(tail -n1 /tmp/r4.err)"
s=$(up); dd if=/dev/zero of=$d bs=1M count=256 oflag=direct 2>/tmp/w.err; e=$(up)
echo "bench-blk: write $((256 * 1048576)) $s $e $(tail -n1 /tmp/w.err)"
s=$(up); dd if=$d of=/dev/null bs=1M count=256 iflag=direct 2>/tmp/r.err; e=$(up)
echo "bench-blk: read $((256 * 1048576)) $s $e $(tail -n1 /tmp/r.err)"
UD
umount /tmp/cfg
# MB/s (10^6 bytes) of the "bench-blk: write|read" line, from its bytes and uptime stamps; the
# dd must have moved all 256 records ("256+0 records out")
rate() {
    grep -a "bench-blk: $1 " "$2" | head -n1 | tr -d '\r' | sed 's/.*bench-blk: /bench-blk: /' |
        awk '$6 == "256+0" { d = $5 - $4; if (d > 0) printf "%.2f", $3 / d / 1e6 }'
}
# IOPS of the "bench-blk: write4k|read4k" line: 4 KiB requests per second of guest uptime; the
# dd must have moved all 16384 records
iops() {
    grep -a "bench-blk: $1 " "$2" | head -n1 | tr -d '\r' | sed 's/.*bench-blk: /bench-blk: /' |
        awk '$6 == "16384+0" { d = $5 - $4; if (d > 0) printf "%.0f", 16384 / d }'
}
blk_boot() {
    name=$1; shift
    rm -f /tmp/data.img && truncate -s 300M /tmp/data.img
    : >"/tmp/$name.blk"
    "$@" </dev/null >"/tmp/$name.blk" 2>&1 &
    pid=$!
    deadline=$(($(cut -d. -f1 /proc/uptime) + BOOT_TIMEOUT))
    while ! grep -q "bench-blk: read \|bench-blk: no" "/tmp/$name.blk"; do
        if [ "$(cut -d. -f1 /proc/uptime)" -gt "$deadline" ] || ! kill -0 $pid 2>/dev/null; then
            echo "bench: $name: no virtio-blk result; log tail:" >&2
            tail -n 20 "/tmp/$name.blk" >&2
            BOOT_PID=$pid end
            return 1
        fi
        usleep 50000
    done
    BOOT_PID=$pid end
    grep -a "bench-blk:" "/tmp/$name.blk" | tr -d '\r' | sed "s/.*bench-blk: /$name: bench-blk: /"
    w=$(rate write "/tmp/$name.blk") rd=$(rate read "/tmp/$name.blk")
    [ -n "$w" ] && echo "$w" >>"/tmp/$name.wr"
    [ -n "$rd" ] && echo "$rd" >>"/tmp/$name.rd"
    w4=$(iops write4k "/tmp/$name.blk") r4=$(iops read4k "/tmp/$name.blk")
    [ -n "$w4" ] && echo "$w4" >>"/tmp/$name.w4"
    [ -n "$r4" ] && echo "$r4" >>"/tmp/$name.r4"
    echo "$name: write ${w:-?} MB/s, read ${rd:-?} MB/s; 4 KiB QD1: write ${w4:-?} IOPS, read ${r4:-?} IOPS"
}
yunhe_blk() {
    exec yunhe vm run --kernel $kernel --initrd tiny.cpio.gz --cmdline "$CMD" --memory 256 --cpus 2 \
        --no-reboot --disk /tmp/cfg.img,ro --disk /tmp/data.img
}
qemu_blk() {
    exec_qemu -M q35,accel=kvm -cpu host -m 256 -smp 2 -nodefaults -no-user-config -display none \
        -serial stdio -no-reboot -kernel $kernel -initrd tiny.cpio.gz -append "$CMD" \
        -drive if=none,id=cfg,file=/tmp/cfg.img,format=raw,readonly=on -device virtio-blk-pci,drive=cfg \
        -drive if=none,id=data,file=/tmp/data.img,format=raw -device virtio-blk-pci,drive=data
}
blk_rounds=${BLK_ROUNDS:-3}
echo "lab bench, virtio-blk: $kernel + tiny, 256 MiB, 2 vCPUs, $blk_rounds alternated rounds; lab load $(load)"
: >/tmp/yunhe.wr; : >/tmp/yunhe.rd; : >/tmp/qemu.wr; : >/tmp/qemu.rd
: >/tmp/yunhe.w4; : >/tmp/yunhe.r4; : >/tmp/qemu.w4; : >/tmp/qemu.r4
for r in $(seq 1 $blk_rounds); do
    blk_boot yunhe yunhe_blk
    blk_boot qemu qemu_blk
done
yw=$(median </tmp/yunhe.wr); yr=$(median </tmp/yunhe.rd)
qw=$(median </tmp/qemu.wr); qr=$(median </tmp/qemu.rd)
echo
echo "| guest dd of 256 MiB, O_DIRECT, 1 MiB blocks ($kernel, median of the rounds that finished, of $blk_rounds) | write MB/s | read MB/s |"
echo "| --- | --- | --- |"
echo "| yunhe virtio-blk$(ok "$(wc -l </tmp/yunhe.wr)" $blk_rounds) | $yw | $yr |"
echo "| QEMU q35 virtio-blk-pci (baseline)$(ok "$(wc -l </tmp/qemu.wr)" $blk_rounds) | $qw | $qr |"
echo "| ratio | $(ratio "$yw" "$qw") | $(ratio "$yr" "$qr") |"
yw4=$(median </tmp/yunhe.w4); yr4=$(median </tmp/yunhe.r4)
qw4=$(median </tmp/qemu.w4); qr4=$(median </tmp/qemu.r4)
echo
echo "| guest dd of 64 MiB, O_DIRECT, 4 KiB requests, one in flight ($kernel, median of the rounds that finished, of $blk_rounds) | write IOPS | read IOPS |"
echo "| --- | --- | --- |"
echo "| yunhe virtio-blk$(ok "$(wc -l </tmp/yunhe.w4)" $blk_rounds) | $yw4 | $yr4 |"
echo "| QEMU q35 virtio-blk-pci (baseline)$(ok "$(wc -l </tmp/qemu.w4)" $blk_rounds) | $qw4 | $qr4 |"
echo "| ratio (goal >= 1) | $(ratio "$yw4" "$qw4") | $(ratio "$yr4" "$qr4") |"
echo "lab load after virtio-blk: $(load)"

# the full bench ends with guest-to-guest TCP
[ -z "$only" ] && net_bench
exit 0
