# Shared helpers for the image-recipe tests. Sourced, not run.
# shellcheck shell=bash
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-$ROOT/out}
TEST=${TEST:-$(basename "$0" .sh)}

fail() { echo "FAIL $TEST: $*"; exit 1; }
pass() { echo "PASS $TEST: $*"; exit 0; }
note() { echo "[$TEST] $*" >&2; }

# need_tool CMD PKG: make sure CMD exists, installing Debian package PKG if it does not.
need_tool() {
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "$(id -u)" -eq 0 ] || fail "$1 missing; install Debian package $2"
    note "installing $2"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
        --no-install-recommends "$2" >/dev/null 2>&1 \
        || { apt-get -o DPkg::Lock::Timeout=900 update -qq >/dev/null 2>&1 &&
             DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
                 --no-install-recommends "$2" >/dev/null 2>&1; } \
        || fail "cannot install $2"
    command -v "$1" >/dev/null 2>&1 || fail "$2 installed but $1 still missing"
}

# ensure_built RECIPE: build RECIPE into $OUT/RECIPE unless its manifest is there already.
ensure_built() {
    [ -f "$OUT/$1/manifest.json" ] && return 0
    note "building recipe $1"
    "$ROOT/image-recipes/build" "$1" "$OUT/$1" >&2 || fail "image-recipes/build $1 failed"
}

QEMU_PID=
stop_qemu() {
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    QEMU_PID=
}

# boot_until LOG MARKER SECONDS QEMU-ARGS...: start QEMU (TCG, no network to anywhere: the caller
# passes -nic none) with the serial console in LOG; wait for MARKER. Sets BOOT_SECS (wall clock
# seconds to the marker) and QEMU_PID; call it directly, not in $(...), so QEMU outlives it.
boot_until() {
    local log=$1 marker=$2 limit=$3 start now
    shift 3
    need_tool qemu-system-x86_64 qemu-system-x86
    : >"$log"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086 # QEMU_WRAP is a command prefix, e.g. "ip netns exec NS"
    timeout --kill-after=5 "$((limit + 10))" ${QEMU_WRAP:-} qemu-system-x86_64 -nographic -no-reboot "$@" \
        </dev/null >"$log" 2>&1 &
    QEMU_PID=$!
    while :; do
        if grep -q -- "$marker" "$log"; then
            now=$(date +%s.%N)
            BOOT_SECS=$(awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
            return 0
        fi
        kill -0 "$QEMU_PID" 2>/dev/null || { note "QEMU exited early; console:"; tail -n 40 "$log" >&2; return 1; }
        now=$(date +%s)
        if [ "$now" -ge "$(( ${start%.*} + limit ))" ]; then
            note "no '$marker' within ${limit}s; console tail:"; tail -n 40 "$log" >&2
            return 1
        fi
        sleep 0.5
    done
}

# qemu_monitor SOCKET COMMAND: send one human-monitor command to QEMU's unix monitor socket.
qemu_monitor() {
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
time.sleep(0.2)
s.sendall(sys.argv[2].encode() + b"\n")
time.sleep(0.5)
s.close()
PY
}

# wait_exit SECONDS: wait for the QEMU started by boot_until to exit by itself.
wait_exit() {
    local i
    for ((i = 0; i < $1 * 2; i++)); do
        kill -0 "$QEMU_PID" 2>/dev/null || { wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=; return 0; }
        sleep 0.5
    done
    return 1
}
