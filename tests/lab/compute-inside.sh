#!/bin/sh
# The lab side of tests/lab/compute.sh (runs inside the lab, under busybox sh):
# starts `yunhe serve`, hands the host its client files through the /out share, then runs the
# commands the host drops into /out/cmd until the host writes /out/done (or the wait times out).
#
#   compute-inside.sh PUBLIC_PORT WAIT_SECONDS [SERVE_ARGS...]
#
# The handshake, all through /out (9p, host directory):
#   lab  -> host  /out/ready          serve answers on :8080; clouds.yaml and ca.pem are beside it
#                 /out/failed         serve did not start (its log is in /out/logs/serve.log)
#   host -> lab   /out/cmd/N.sh       a command: run here (with this script's functions) as soon
#                                     as seen; output to /out/cmd/N.out, status to /out/cmd/N.rc
#                                     (written last, by rename, so N.rc means N.out is complete)
#   host -> lab   /out/done           the host side is finished: clean up and exit
# Without /out/done within WAIT_SECONDS of the start, the script cleans up and exits 1.
port=${1:?public port}
wait_s=${2:-480}
shift 2
serve_args="$*"
# The lab suites keep their meaning: no dataplane and no first-start networks unless the
# suite asks (network.sh passes --dataplane and makes its own networks).
export YUNHE_DATAPLANE="${YUNHE_DATAPLANE:-false}"
export YUNHE_INITIAL_NETWORKS="${YUNHE_INITIAL_NETWORKS:-false}"
state=/tmp/yunhe-state
# With /out/state-disk (tests/lab/reboot.sh), the state directory lives on the lab's /dev/vda,
# which outlives this lab: a second lab booted on the same disk is the same host after a reboot.
state_disk=""
if [ -e /out/state-disk ]; then
    mkdir -p /mnt/state
    if mount -t ext4 /dev/vda /mnt/state; then
        state_disk=/mnt/state
        state=/mnt/state/yunhe-state
    else
        echo "lab-compute(lab): cannot mount the state disk /dev/vda" >&2
    fi
fi
serve_log=/tmp/serve.log
lab_port=8080
t0=$(date +%s)

say() { echo "lab-compute(lab): $*"; }

# start_serve: `yunhe serve` in the background, its pid in /tmp/serve.pid.
start_serve() {
    # /out/serve-cpus (the host's LAB_SERVE_CPUS): serve, and the VMMs it starts, on those lab
    # CPUs only (docs/lab.md, "Known problems": fewer cross-CPU kicks of a vCPU in guest mode)
    local pin=""
    if [ -s /out/serve-cpus ]; then
        pin="taskset -c $(cat /out/serve-cpus)"
        # the VMMs are born into cgroups below yunhe/, whose cpuset (the lab enables every
        # controller) would give them every CPU again
        mkdir -p /sys/fs/cgroup/yunhe
        cat /out/serve-cpus >/sys/fs/cgroup/yunhe/cpuset.cpus
    fi
    # shellcheck disable=SC2086 # serve_args and pin are word lists on purpose
    $pin yunhe serve --state-dir "$state" --listen "0.0.0.0:$lab_port" \
        --public-url "https://127.0.0.1:$port" $serve_args >>"$serve_log" 2>&1 </dev/null &
    echo $! >/tmp/serve.pid
    [ -z "$pin" ] || say "serve runs on lab CPUs $(cat /out/serve-cpus) only: $(taskset -p "$!" 2>&1); yunhe/cpuset.cpus $(cat /sys/fs/cgroup/yunhe/cpuset.cpus.effective)"
}
serve_pid() { cat /tmp/serve.pid 2>/dev/null; }

# wait_listening [SECONDS]: until serve accepts TCP on its port (busybox has no TLS client).
wait_listening() {
    local n=0 limit=$((${1:-60} * 10)) hex
    hex=$(printf '%04X' "$lab_port")
    while :; do
        # a socket in LISTEN (state 0A) on the port, in /proc/net/tcp or tcp6
        if grep -q ":$hex [0-9A-F]*:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            return 0
        fi
        kill -0 "$(serve_pid)" 2>/dev/null || return 1
        n=$((n + 1))
        [ "$n" -ge "$limit" ] && return 1
        usleep 100000
    done
}

# vmm_pids ID: pids of the `yunhe vmm` processes of server ID (as this lab sees them).
vmm_pids() {
    local p out=""
    for p in /proc/[0-9]*; do
        if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "vmm --spec $state/instances/$1/"; then
            out="$out ${p#/proc/}"
        fi
    done
    echo $out
}
all_vmm_pids() {
    local p out=""
    # (the redirection's error, when a process ended since the glob, goes to the group's
    # 2>/dev/null: a plain `<file 2>/dev/null` opens the file before stderr is redirected)
    for p in /proc/[0-9]*; do
        if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "vmm --spec $state/"; then
            out="$out ${p#/proc/}"
        fi
    done
    echo $out
}
instance_dir() { echo "$state/instances/$1"; }

# kill9_and_restart_serve: kill -9 serve, start it again on the same state dir; prints the
# seconds until it listens again.
kill9_and_restart_serve() {
    local old s e
    old=$(serve_pid)
    kill -9 "$old" 2>/dev/null
    while kill -0 "$old" 2>/dev/null; do usleep 20000; done
    s=$(cut -d' ' -f1 /proc/uptime)
    start_serve
    wait_listening 60 || { echo "serve did not listen again"; return 1; }
    e=$(cut -d' ' -f1 /proc/uptime)
    echo "serve pid $old killed, new pid $(serve_pid), listening after $(awk -v a="$s" -v b="$e" 'BEGIN{printf "%.2f", b-a}') s"
}

collect_logs() {
    mkdir -p /out/logs
    cp "$serve_log" /out/logs/serve.log 2>/dev/null
    local d id
    for d in "$state"/instances/*/; do
        [ -d "$d" ] || continue
        id=$(basename "$d")
        for f in vmm.log console.log console.log.1 spec.json; do
            [ -f "$d$f" ] && cp "$d$f" "/out/logs/$id.$f" 2>/dev/null
        done
    done
    dmesg >/out/logs/dmesg.txt 2>/dev/null
}

cleanup() {
    local p n=0
    p=$(serve_pid)
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
        kill -TERM "$p"
        while kill -0 "$p" 2>/dev/null && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
        kill -9 "$p" 2>/dev/null
    fi
    collect_logs
    for p in $(all_vmm_pids); do kill -9 "$p" 2>/dev/null; done
    # as a host's shutdown does once its processes are gone
    if [ -n "$state_disk" ]; then sync; umount "$state_disk" 2>/dev/null; fi
}

# A suite may ask for the state directory on ext2 over a loop device (a sparse file in /tmp)
# instead of the tmpfs itself, by writing its size in MiB to /out/state-fs before the lab starts
# (tests/lab/debian.sh): tmpfs pages a VMM writes are charged to its memory cgroup and cannot be
# reclaimed (the lab has no swap), so a guest writing a lot to its disk (dpkg unpacking a kernel)
# had its VMM killed by the cgroup's OOM killer; on a disk file system they are page cache.
if [ -f /out/state-fs ]; then
    mb=$(cat /out/state-fs)
    dd if=/dev/zero of=/tmp/state.img bs=1M count=0 seek="$mb" 2>/dev/null
    mke2fs -F /tmp/state.img >/dev/null 2>&1 && mkdir -p "$state" && mount -o loop /tmp/state.img "$state" \
        && say "state directory on ext2 over a loop device ($mb MiB, sparse, in /tmp)" \
        || say "could not put the state directory on a loop device; it stays on tmpfs"
fi
say "starting yunhe serve (lab uptime $(cut -d' ' -f1 /proc/uptime) s, $(grep MemTotal /proc/meminfo | awk '{print int($2/1024)}') MiB, $(nproc) CPUs)"
mkdir -p "$state" /out/cmd
rm -f /out/ready /out/failed /out/done
start_serve
if ! wait_listening 90; then
    say "serve did not start; its log:"
    tail -n 40 "$serve_log"
    collect_logs
    : >/out/failed
    exit 1
fi
n=0
until [ -f "$state/clouds.yaml" ] && [ -f "$state/tls/ca.pem" ]; do
    n=$((n + 1)); [ $n -gt 100 ] && break
    usleep 100000
done
cp "$state/clouds.yaml" /out/clouds.yaml
cp "$state/tls/ca.pem" /out/ca.pem
: >/out/ready
say "serve pid $(serve_pid) listening on :$lab_port ($(($(date +%s) - t0)) s); waiting for the host"

status=0
while [ ! -e /out/done ]; do
    for f in /out/cmd/*.sh; do
        [ -e "$f" ] || continue
        b=${f%.sh}
        mv "$f" "$b.run" || continue
        ( . "$b.run" ) >"$b.out" 2>&1 </dev/null
        echo $? >"$b.rc.tmp"
        mv "$b.rc.tmp" "$b.rc"
    done
    if [ $(($(date +%s) - t0)) -ge "$wait_s" ]; then
        say "no /out/done from the host after $wait_s s: giving up"
        status=1
        break
    fi
    usleep 100000
done
cleanup
say "done after $(($(date +%s) - t0)) s"
exit $status
