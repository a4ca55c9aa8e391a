#!/bin/sh
# In-lab half of `tests/lab/bench.sh exits`: KVM exits by reason, port I/O by port, MMIO by
# address and MSRs by index (the lab kernel's tracing histograms), for one boot to ready under
# yunhe and under QEMU microvm. Payload as bench.sh's.
cd /payload || exit 1
mount -t debugfs none /sys/kernel/debug 2>/dev/null
mount -t tracefs none /sys/kernel/debug/tracing 2>/dev/null
T=/sys/kernel/debug/tracing/events/kvm
Q=/payload/qemu
run_qemu() { exec "$Q/lib/ld-linux-x86-64.so.2" --library-path "$Q/lib" "$Q/qemu-system-x86_64" -L "$Q/share" -M microvm,accel=kvm -cpu host -m 256 -smp 2 -nodefaults -no-user-config -display none -serial stdio -no-reboot -kernel vmlinuz -initrd tiny.cpio.gz -append "console=ttyS0"; }
run_yunhe() { exec yunhe vm run --kernel vmlinuz --initrd tiny.cpio.gz --cmdline console=ttyS0 --memory 256 --cpus 2 --no-reboot; }
H1='hist:keys=exit_reason:sort=hitcount.descending'
H2='hist:keys=port,rw:sort=hitcount.descending'
H3='hist:keys=gpa,type:sort=hitcount.descending'
H4='hist:keys=ecx,write:sort=hitcount.descending'
on() { echo "$H1" >$T/kvm_exit/trigger; echo "$H2" >$T/kvm_pio/trigger; echo "$H3" >$T/kvm_mmio/trigger; echo "$H4" >$T/kvm_msr/trigger; }
off() { echo "!$H1" >$T/kvm_exit/trigger; echo "!$H2" >$T/kvm_pio/trigger; echo "!$H3" >$T/kvm_mmio/trigger; echo "!$H4" >$T/kvm_msr/trigger; }
for v in yunhe qemu; do
    on
    s=$(cut -d' ' -f1 /proc/uptime)
    "run_$v" </dev/null >/tmp/$v.log 2>&1 &
    pid=$!
    i=0
    while [ $i -lt 4000 ]; do grep -q "yunhe-tiny: ready" /tmp/$v.log && break; usleep 50000; i=$((i+1)); done
    e=$(cut -d' ' -f1 /proc/uptime)
    echo "== $v: ready after $(awk -v a=$s -v b=$e 'BEGIN{print b-a}') s; console lines $(wc -l </tmp/$v.log)"
    for ev in kvm_exit kvm_pio kvm_mmio kvm_msr; do
        echo "-- $ev"; grep -v '^#' $T/$ev/hist | grep -v '^$' | head -n 14
    done
    kill -KILL $pid; wait $pid 2>/dev/null
    off
done
