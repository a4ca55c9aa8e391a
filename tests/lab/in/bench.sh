#!/bin/sh
# In-lab half of tests/lab/bench.sh: yunhe vm run against QEMU (accel=kvm) in the same lab.
# Payload: vmlinuz (Debian's stock kernel), tiny.cpio.gz, qemu/ (binary, libraries, firmware).
# `bench.sh blk`: only the virtio-blk throughput part
only=
if [ "${1:-}" = blk ]; then only=blk; shift; fi
rounds=${1:-5}
cd /payload || exit 1
Q=/payload/qemu
up() { cut -d' ' -f1 /proc/uptime; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
exec_qemu() { exec "$Q/lib/ld-linux-x86-64.so.2" --library-path "$Q/lib" "$Q/qemu-system-x86_64" -L "$Q/share" "$@"; }

# PSS of process $1 outside its guest-RAM mapping (the one mapping of $2 MiB, +4 MiB of slack).
pss_beyond_guest() {
    awk -v want=$(($2 * 1024)) '
        /^[0-9a-f]+-[0-9a-f]+ / { split($1, r, "-"); kb = 0; size = 0; guest = 0; next }
        /^Size:/ { size = $2; guest = (size >= want && size <= want + 4096 && !seen) ; if (guest) seen = 1; next }
        /^Pss:/ { if (guest) g += $2; else o += $2 }
        END { printf "%.1f", o / 1024 }' "/proc/$1/smaps"
}

# boot NAME LOG CMD...: start CMD (console in LOG), wait for the ready marker; sets BOOT_SECS.
# Leaves the process running as $BOOT_PID.
boot() {
    name=$1 log=$2; shift 2
    : >"$log"
    s=$(up)
    "$@" </dev/null >"$log" 2>&1 &
    BOOT_PID=$!
    deadline=$(awk -v a="$s" 'BEGIN { print int(a) + 300 }')
    while ! grep -q "yunhe-tiny: ready" "$log" 2>/dev/null; do
        now=$(up)
        if [ "${now%.*}" -gt "$deadline" ] || ! kill -0 $BOOT_PID 2>/dev/null; then
            echo "bench: $name did not reach ready within 300 s; log tail:" >&2
            tail -n 20 "$log" >&2
            end
            return 1
        fi
        usleep 20000
    done
    BOOT_SECS=$(sub "$s" "$(up)")
}
end() { kill -KILL "$BOOT_PID" 2>/dev/null; wait "$BOOT_PID" 2>/dev/null; }

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

if [ "$only" != blk ]; then
echo "lab bench: Debian $(uname -r) kernel (the guest: the same package's vmlinuz) + tiny initramfs, 256 MiB, 2 vCPUs, $rounds rounds"
# the first yunhe boot unpacks the kernel into the cache (once per kernel file)
boot first /tmp/first.log yunhe_boot || exit 1
end
echo "yunhe first boot (unpacks and caches the kernel): $BOOT_SECS s"

for r in $(seq 1 "$rounds"); do
    for v in yunhe_boot qemu_microvm qemu_q35 yunhe_boot_huge; do
        boot "$v" "/tmp/$v.log" "$v" || exit 1
        echo "$BOOT_SECS" >>"/tmp/$v.times"
        if [ "$r" = 1 ]; then
            sleep 1 # settle, then memory
            case $v in
                yunhe_boot) echo "$(pss_beyond_guest $BOOT_PID 256)" >/tmp/yunhe.pss ;;
                yunhe_boot_huge) echo "$(pss_beyond_guest $BOOT_PID 256)" >/tmp/yunhe-huge.pss ;;
                qemu_microvm) echo "$(pss_beyond_guest $BOOT_PID 256)" >/tmp/microvm.pss ;;
                qemu_q35) echo "$(pss_beyond_guest $BOOT_PID 256)" >/tmp/q35.pss ;;
            esac
        fi
        end
    done
    echo "round $r: yunhe $(tail -n1 /tmp/yunhe_boot.times) s, microvm $(tail -n1 /tmp/qemu_microvm.times) s, q35 $(tail -n1 /tmp/qemu_q35.times) s, yunhe --huge-pages $(tail -n1 /tmp/yunhe_boot_huge.times) s"
done
y=$(median </tmp/yunhe_boot.times)
m=$(median </tmp/qemu_microvm.times)
q=$(median </tmp/qemu_q35.times)
c=$(median </tmp/yunhe_boot_huge.times)
echo
echo "| start to 'yunhe-tiny: ready' (median of $rounds) | seconds | ratio to QEMU microvm |"
echo "| --- | --- | --- |"
echo "| yunhe vm run | $y | $(awk -v a="$y" -v b="$m" 'BEGIN { printf "%.2f", a / b }') |"
echo "| yunhe vm run --huge-pages | $c | $(awk -v a="$c" -v b="$m" 'BEGIN { printf "%.2f", a / b }') |"
echo "| QEMU -M microvm (baseline) | $m | 1.00 |"
echo "| QEMU -M q35 | $q | $(awk -v a="$q" -v b="$m" 'BEGIN { printf "%.2f", a / b }') |"
echo
echo "VMM memory beyond guest memory (PSS, MiB, at ready): yunhe $(cat /tmp/yunhe.pss) (--huge-pages $(cat /tmp/yunhe-huge.pss)), QEMU microvm $(cat /tmp/microvm.pss), QEMU q35 $(cat /tmp/q35.pss)"
fi

# virtio-blk: the guest writes then reads 256 MiB with O_DIRECT (dd, 1 MiB blocks) on a data
# disk in the lab's tmpfs. Debian's cloud kernel is not in the payload; the stock kernel needs
# tiny's modules for it, so this uses whatever kernel has virtio-blk in tiny: the payload's
# optional cloud-vmlinuz, else the stock one.
kernel=vmlinuz
[ -f cloud-vmlinuz ] && kernel=cloud-vmlinuz
mkdir -p /tmp/cfg
# busybox makes FAT32 only, which needs at least 33 MiB
truncate -s 64M /tmp/cfg.img
mkdosfs -n config-2 /tmp/cfg.img >/dev/null
mount -t vfat -o loop /tmp/cfg.img /tmp/cfg || exit 1
mkdir -p /tmp/cfg/openstack/latest
echo '{"uuid": "00000000-0000-0000-0000-00000000b10c", "hostname": "bench"}' >/tmp/cfg/openstack/latest/meta_data.json
cat >/tmp/cfg/openstack/latest/user_data <<'UD'
#!/bin/sh
for s in /sys/block/vd*; do [ "$(cat $s/size)" = 614400 ] && d=/dev/${s##*/}; done
[ -n "$d" ] || { echo "bench-blk: no data disk"; exit 1; }
w=$(dd if=/dev/zero of=$d bs=1M count=256 oflag=direct 2>&1 | tail -n1)
r=$(dd if=$d of=/dev/null bs=1M count=256 iflag=direct 2>&1 | tail -n1)
echo "bench-blk: write $w"
echo "bench-blk: read $r"
UD
umount /tmp/cfg
# busybox dd ends with "..., 1.2GB/s" (or MB/s, KB/s, B/s): as MB/s
rate() {
    grep -a "bench-blk: $1" "$2" | head -n1 | sed -n 's/.*, \([0-9.]*\)\([KMG]*\)B\/s.*/\1 \2/p' |
        awk '{ m = $2 == "G" ? 1000 : $2 == "M" ? 1 : $2 == "K" ? 0.001 : 0.000001; printf "%.1f", $1 * m }'
}
blk_boot() {
    name=$1; shift
    rm -f /tmp/data.img && truncate -s 300M /tmp/data.img
    : >"/tmp/$name.blk"
    "$@" </dev/null >"/tmp/$name.blk" 2>&1 &
    pid=$!
    deadline=$(($(cut -d. -f1 /proc/uptime) + 300))
    while ! grep -q "bench-blk: read" "/tmp/$name.blk"; do
        if [ "$(cut -d. -f1 /proc/uptime)" -gt "$deadline" ] || ! kill -0 $pid 2>/dev/null; then
            echo "bench: $name: no virtio-blk result; log tail:" >&2
            tail -n 20 "/tmp/$name.blk" >&2
            kill -KILL $pid 2>/dev/null
            return 1
        fi
        usleep 50000
    done
    kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
    grep -a "bench-blk:" "/tmp/$name.blk" | sed "s/^/$name: /"
    echo "$(rate write "/tmp/$name.blk") $(rate read "/tmp/$name.blk")" >>"/tmp/$name.rates"
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
blk_rounds=3
for r in $(seq 1 $blk_rounds); do
    blk_boot yunhe yunhe_blk || exit 1
    blk_boot qemu qemu_blk || exit 1
done
yw=$(cut -d' ' -f1 /tmp/yunhe.rates | median); yr=$(cut -d' ' -f2 /tmp/yunhe.rates | median)
qw=$(cut -d' ' -f1 /tmp/qemu.rates | median); qr=$(cut -d' ' -f2 /tmp/qemu.rates | median)
echo
echo "| guest dd of 256 MiB, O_DIRECT, 1 MiB blocks ($kernel, median of $blk_rounds) | write MB/s | read MB/s |"
echo "| --- | --- | --- |"
echo "| yunhe virtio-blk | $yw | $yr |"
echo "| QEMU q35 virtio-blk-pci (baseline) | $qw | $qr |"
echo "| ratio | $(awk -v a="$yw" -v b="$qw" 'BEGIN { printf "%.2f", a / b }') | $(awk -v a="$yr" -v b="$qr" 'BEGIN { printf "%.2f", a / b }') |"
