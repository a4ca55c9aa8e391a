# shellcheck shell=sh disable=SC3043
# Sourced by guests.sh inside the lab (its helpers are defined): a running Linux guest (micro
# bzImage + tiny, 2 vCPUs, every device) is paused, saved, restored in a NEW `yunhe vmm`
# process and resumed; it must keep running: uptime continues, the serial console echoes, disk,
# network, timers and interrupts work, the wall clock is right; then it powers off on the ACPI
# power button and the VMM exits 0.
# wait_pid PID SECONDS: wait for PID to exit (its status), killing it after SECONDS (status 124).
wait_pid() {
    local i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then
        kill "$1"
        wait "$1"
        return 124
    fi
    wait "$1"
}

sr_main() {
    local name=save-restore n=20 kernel=$P/kernels/micro-bzImage sock pid pid2 rc st u1 u2 t0 t1 got token2
    RTC_EXPECTED=0
    guest_setup "$name" "$n" 2 sr || { echo "FAIL $name setup"; return; }
    : >"$D/result"
    sock=$D/vmm.sock
    cat >"$D/spec.json" <<EOF
{"vm": {"boot": {"type": "kernel", "path": "$kernel"}, "initrd": "$P/tiny.cpio.gz",
        "memory_mib": 256, "cpus": 2, "rng": true,
        "disks": [{"path": "$D/data.img"}, {"path": "$D/config.img", "read_only": true}],
        "nets": [{"tap": "$TAP", "mac": "$MAC"}],
        "console_log": "$D/console.log"},
 "control_socket": "$sock", "no_reboot": true}
EOF
    sed "s|$D/console.log|$D/console2.log|; s|\"vm\": {|\"restore_from\": \"$D/state\", \"vm\": {|" \
        "$D/spec.json" >"$D/spec2.json"
    yunhe vmm --spec "$D/spec.json" </dev/null >"$D/vmm1.log" 2>&1 &
    pid=$!
    echo "save-restore: booting (pid $pid)"
    lab_side "$D/console.log" "$name-before" "$pid"
    if ! wait_for "$D/console.log" "yunhe-tiny: ready" 60 "$pid"; then
        echo "FAIL $name ready: no 'yunhe-tiny: ready' before the save" >>"$D/result"
        kill "$pid" 2>/dev/null
        sr_end
        return
    fi
    guest_checks "$D/console.log" "$name-before" 8
    u1=$(grep -a "yunhe-tiny: ready" "$D/console.log" | tail -n 1 | tr -d '\r' | awk '{print $3}')
    st=$(timeout 10 yunhe vm ctl --socket "$sock" pause)
    case $st in *'"paused"'*) echo "PASS $name pause: $st" >>"$D/result" ;; *) echo "FAIL $name pause: $st" >>"$D/result" ;; esac
    st=$(timeout 10 yunhe vm ctl --socket "$sock" status)
    case $st in *'"state":"paused"'*) echo "PASS $name status: paused" >>"$D/result" ;; *) echo "FAIL $name status: $st" >>"$D/result" ;; esac
    t0=$(now_ms)
    # 256 MiB written to the lab's tmpfs: seconds when the lab is loaded
    st=$(timeout 120 yunhe vm ctl --socket "$sock" save "$D/state" 2>&1)
    t1=$(now_ms)
    case $st in *'"saved"'*) echo "PASS $name save: $(du -sk "$D/state" | cut -f1) KiB in $((t1 - t0)) ms" >>"$D/result" ;; *) echo "FAIL $name save: $st" >>"$D/result" ;; esac
    echo "save-restore: saved: $st"
    wait_pid "$pid" 30
    rc=$?
    [ "$rc" = 0 ] && echo "PASS $name save-exit: the first VMM exited 0 after the save" >>"$D/result" ||
        echo "FAIL $name save-exit: the first VMM exited $rc" >>"$D/result"
    # a few seconds saved, so a wall clock that stood still would show
    sleep 3
    t0=$(now_ms)
    yunhe vmm --spec "$D/spec2.json" </dev/null >"$D/vmm2.log" 2>&1 &
    pid2=$!
    local i=0
    while [ ! -S "$sock" ] && [ $i -lt 100 ] && kill -0 "$pid2" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    # the socket is up before the saved memory is read and checked: wait for the VM
    i=0
    while [ $i -lt 90 ]; do
        st=$(timeout 10 yunhe vm ctl --socket "$sock" status 2>&1)
        case $st in *'"state":"starting"'*) sleep 1; i=$((i + 1)) ;; *) break ;; esac
    done
    t1=$(now_ms)
    echo "save-restore: restored: $(echo "$st" | cut -c1-80)"
    case $st in
        *'"state":"running"'*) echo "PASS $name restore: a new VMM (pid $pid2) runs the saved guest $((t1 - t0)) ms after it started" >>"$D/result" ;;
        *'"state":"paused"'*)
            timeout 10 yunhe vm ctl --socket "$sock" resume >/dev/null
            echo "PASS $name restore: a new VMM (pid $pid2) holds the saved guest paused; resumed" >>"$D/result"
            ;;
        *) echo "FAIL $name restore: $st $(cat "$D/vmm2.log")" >>"$D/result" ;;
    esac
    token2=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    # Through the serial console: Enter starts tiny's console shell, then the after-restore
    # checks; the lab answers their network handshake meanwhile.
    {
        printf '\n'
        sleep 1
        printf 'sh /run/after.sh %s\n' "$token2"
        wait_for "$D/console2.log" "yunhe-check: net-ready" 60 "$pid2"
        sleep 0.2
        lab_side "$D/console2.log" "$name-after" "$pid2"
        wait_for "$D/console2.log" "yunhe-check: after-done" 30 "$pid2"
    } | timeout 120 yunhe vm ctl --socket "$sock" console --linger 1 >"$D/console-client.log" 2>&1
    if grep -q "sh /run/after.sh $token2" "$D/console-client.log"; then
        echo "PASS $name console-echo: the guest's shell echoed the command sent through 'yunhe vm ctl console'" >>"$D/result"
    else
        echo "FAIL $name console-echo: no echo of the command in the console client's output" >>"$D/result"
    fi
    # The restored VMM's device counters and the tap's, shown when a check failed.
    timeout 10 yunhe vm ctl --socket "$sock" stats >"$D/stats2.json" 2>&1
    for c in rx_packets rx_dropped tx_packets tx_dropped carrier; do
        echo "$c $(cat "/sys/class/net/$TAP/statistics/$c" "/sys/class/net/$TAP/$c" 2>/dev/null)"
    done >"$D/tap.txt"
    guest_checks "$D/console2.log" "$name-after" 6
    u2=$(grep -a "yunhe-check: after-restore uptime" "$D/console2.log" | tail -n 1 | tr -d '\r' | awk '{print $4}')
    if [ -n "$u1" ] && [ -n "$u2" ] && awk -v a="$u1" -v b="$u2" 'BEGIN { exit !(b > a) }'; then
        echo "PASS $name uptime: ${u1}s at ready before the save, ${u2}s after the restore" >>"$D/result"
    else
        echo "FAIL $name uptime: '${u1}' before, '${u2}' after" >>"$D/result"
    fi
    st=$(timeout 10 yunhe vm ctl --socket "$sock" powerdown 2>&1)
    i=0
    while kill -0 "$pid2" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$pid2" 2>/dev/null; then
        kill "$pid2"
        echo "FAIL $name powerdown: the guest did not power off within 30 s ($st)" >>"$D/result"
    fi
    wait_pid "$pid2" 5
    rc=$?
    [ "$rc" = 0 ] && echo "PASS $name exit: the restored VMM exited 0 on the guest's poweroff (power button)" >>"$D/result" ||
        echo "FAIL $name exit: the restored VMM exited $rc" >>"$D/result"
    got=$(disk_token "$D/data.img" 4096 ${#token2})
    if [ "$got" = "$token2" ]; then
        echo "PASS $name disk-verify: the restored guest's write is on the data disk" >>"$D/result"
    else
        echo "FAIL $name disk-verify: found '$got' at sector 4096, want $token2" >>"$D/result"
    fi
    sr_end
}

sr_end() {
    guest_teardown
    cat "$D/result"
    grep -q '^FAIL' "$D/result" && {
        for f in console.log console2.log console-client.log vmm1.log vmm2.log stats2.json tap.txt; do
            echo "--- $f (last 30 lines)"
            tail -n 30 "$D/$f" 2>/dev/null | tr -d '\r'
        done
        echo "---"
    }
}

sr_main
