#!/bin/sh
# In-lab half of tests/lab/churn.sh: VMs that come and go, ROUNDS times, while micro + tiny
# guests boot one after another beside them. Each start and end of a VM makes the lab kernel
# patch its own code (KVM's jump labels); prints one line per round and `churn: survived N
# rounds` at the end. A lab host that cannot take that stops or crashes here within seconds.
rounds=${1:-150}
yunhe vm guest hello -o /tmp/hello.elf || exit 1
(
    while :; do
        timeout 30 yunhe vm run --kernel /payload/bzImage --initrd /payload/tiny.cpio.gz \
            --memory 128 --no-reboot </dev/null >/dev/null 2>&1
    done
) &
beside=$!
i=0
while [ "$i" -lt "$rounds" ]; do
    yunhe vm run --kernel /tmp/hello.elf --memory 16 </dev/null >/dev/null 2>&1 &
    p=$!
    sleep 0.5
    kill "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    # KVM drops some of its jump labels a second after their last user (deferred keys)
    sleep 1.2
    i=$((i + 1))
    echo "churn: round $i at lab uptime $(cut -d' ' -f1 /proc/uptime)"
done
kill "$beside" 2>/dev/null
echo "churn: survived $rounds rounds"
