#!/usr/bin/env bash
# Start a fresh `yunhe serve` on a free loopback port with a temporary state dir.
#
# Sourced (the usual way):
#     . tests/openstack/start-server.sh
#     yunhe_start_server            # sets YUNHE_URL, YUNHE_PORT, YUNHE_PID, YUNHE_STATE,
#                                   #      YUNHE_ADMIN_PASSWORD, OS_CLIENT_CONFIG_FILE, OS_CLOUD
#     ...                           # the server is stopped and its temp dir removed on exit
#     yunhe_on_exit 'rm -f /tmp/x'  # add more cleanup, run in the same EXIT trap
#
# Run directly, it starts a server, runs the given command with that environment, and stops:
#     tests/openstack/start-server.sh -- openstack token issue
#
# Env knobs: YUNHE_BIN (default <repo>/target/release/yunhe), YUNHE_SERVER_LOG (copy the
# server's log there on exit), YUNHE_START_TIMEOUT (seconds, default 60).
# Only the pid this file started is ever signalled.
# serve's dataplane (and with it the first-start networks) is off here unless the caller
# exported YUNHE_DATAPLANE / YUNHE_INITIAL_NETWORKS (run-network.sh does, in its own
# namespaces): as root, `--dataplane auto` would otherwise change the host's network.

_yunhe_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export YUNHE_DATAPLANE="${YUNHE_DATAPLANE:-false}"
export YUNHE_INITIAL_NETWORKS="${YUNHE_INITIAL_NETWORKS:-false}"
_yunhe_repo="$(cd "$_yunhe_here/../.." && pwd)"
_yunhe_exit_cmds=()
_yunhe_tmp=""

yunhe_on_exit() { _yunhe_exit_cmds+=("$1"); }

_yunhe_cleanup() {
    local rc=$?
    local i
    for (( i=${#_yunhe_exit_cmds[@]}-1; i>=0; i-- )); do
        eval "${_yunhe_exit_cmds[$i]}" || true
    done
    yunhe_stop_server
    return $rc
}
trap _yunhe_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port on 127.0.0.1 (the kernel picks it; there is a small race until the
# server binds, so yunhe_start_server retries on a bind failure).
yunhe_free_port() {
    local py
    for py in "${YUNHE_VENV:-$_yunhe_repo/.venv}/bin/python" python3; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
            return
        fi
    done
    echo $(( 20000 + RANDOM % 20000 ))
}

yunhe_stop_server() {
    if [ -n "${YUNHE_PID:-}" ]; then
        if kill -0 "$YUNHE_PID" 2>/dev/null; then
            kill -TERM "$YUNHE_PID" 2>/dev/null || true
            local n=0
            while kill -0 "$YUNHE_PID" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
            if kill -0 "$YUNHE_PID" 2>/dev/null; then
                echo "yunhe: server pid $YUNHE_PID did not stop on TERM, killing it" >&2
                kill -KILL "$YUNHE_PID" 2>/dev/null || true
            fi
        fi
        wait "$YUNHE_PID" 2>/dev/null || true
        YUNHE_PID=""
    fi
    if [ -n "$_yunhe_tmp" ] && [ -d "$_yunhe_tmp" ]; then
        # VMMs outlive `serve` by design; the ones this test's server started
        # (their spec lies in its temp dir) go with it.
        yunhe_kill_vmms "$_yunhe_tmp"
        # Their control sockets live in /run/yunhe/<hash of the state dir> (src/compute/virt.rs).
        if [ -n "${YUNHE_STATE:-}" ] && [ -d "$YUNHE_STATE" ]; then
            local sockets
            sockets="/run/yunhe/$(printf %s "$(realpath "$YUNHE_STATE")" | sha256sum | cut -c1-12)"
            rm -rf "$sockets" 2>/dev/null || true
        fi
        if [ -n "${YUNHE_SERVER_LOG:-}" ] && [ -f "$_yunhe_tmp/server.log" ]; then
            cp "$_yunhe_tmp/server.log" "$YUNHE_SERVER_LOG" 2>/dev/null || true
        fi
        rm -rf "$_yunhe_tmp"
        _yunhe_tmp=""
    fi
}

# yunhe_kill_vmms DIR: SIGKILL every `yunhe vmm` whose command line names DIR.
yunhe_kill_vmms() {
    local dir="$1" p
    [ -n "$dir" ] || return 0
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null < "$p/cmdline" | grep -q -- "vmm --spec $dir/"; then
            kill -KILL "${p#/proc/}" 2>/dev/null || true
        fi
    done
}

# yunhe_start_server [extra serve args...]
yunhe_start_server() {
    local bin="${YUNHE_BIN:-$_yunhe_repo/target/release/yunhe}"
    local timeout="${YUNHE_START_TIMEOUT:-60}"
    if [ ! -x "$bin" ]; then
        echo "yunhe: no server binary at $bin (run: cargo build --release)" >&2
        return 1
    fi
    _yunhe_tmp="$(mktemp -d "${TMPDIR:-/tmp}/yunhe-test.XXXXXX")"
    YUNHE_STATE="$_yunhe_tmp/state"
    mkdir -p "$YUNHE_STATE"
    YUNHE_ADMIN_PASSWORD="${YUNHE_TEST_ADMIN_PASSWORD:-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}"
    export YUNHE_ADMIN_PASSWORD

    local attempt
    for attempt in 1 2 3; do
        YUNHE_PORT="$(yunhe_free_port)"
        # HTTPS with yunhe's own CA, as a user gets it (YUNHE_TEST_TLS=0: plain HTTP).
        local scheme=https tls_args=()
        if [ "${YUNHE_TEST_TLS:-1}" = 0 ]; then scheme=http; tls_args=(--insecure-http); fi
        YUNHE_URL="$scheme://127.0.0.1:$YUNHE_PORT"
        "$bin" serve --state-dir "$YUNHE_STATE" --listen "127.0.0.1:$YUNHE_PORT" "${tls_args[@]}" "$@" \
            >>"$_yunhe_tmp/server.log" 2>&1 </dev/null &
        YUNHE_PID=$!
        local deadline=$(( $(date +%s) + timeout )) code=""
        while :; do
            if ! kill -0 "$YUNHE_PID" 2>/dev/null; then
                wait "$YUNHE_PID" 2>/dev/null || true
                YUNHE_PID=""
                break
            fi
            # The CA appears on first start: until then curl cannot verify.
            code="$(CURL_CA_BUNDLE="$YUNHE_STATE/tls/ca.pem" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$YUNHE_URL/healthz" || true)"
            [ "$code" = "200" ] && break
            if [ "$(date +%s)" -ge "$deadline" ]; then
                echo "yunhe: /healthz not 200 after ${timeout}s (last: $code)" >&2
                tail -n 50 "$_yunhe_tmp/server.log" >&2 || true
                return 1
            fi
            sleep 0.1
        done
        [ -n "$YUNHE_PID" ] && break
        if ! grep -qi 'address.*in use' "$_yunhe_tmp/server.log"; then
            echo "yunhe: server exited during start; its log:" >&2
            tail -n 50 "$_yunhe_tmp/server.log" >&2 || true
            return 1
        fi
    done
    if [ -z "$YUNHE_PID" ]; then echo "yunhe: could not bind a port" >&2; return 1; fi

    # The files the server writes on first start.
    local f
    for f in clouds.yaml admin-openrc.sh; do
        if [ ! -f "$YUNHE_STATE/$f" ]; then
            echo "yunhe: server did not write $YUNHE_STATE/$f" >&2
            return 1
        fi
    done
    export YUNHE_URL YUNHE_PORT YUNHE_PID YUNHE_STATE
    if [ -f "$YUNHE_STATE/tls/ca.pem" ]; then
        # Every client of the tests trusts yunhe's CA: curl, python's ssl
        # (websockets, tempest's urllib3 through its own setting), requests.
        YUNHE_CA="$YUNHE_STATE/tls/ca.pem"
        export YUNHE_CA CURL_CA_BUNDLE="$YUNHE_CA" SSL_CERT_FILE="$YUNHE_CA" REQUESTS_CA_BUNDLE="$YUNHE_CA" OS_CACERT="$YUNHE_CA"
    fi
    export OS_CLIENT_CONFIG_FILE="$YUNHE_STATE/clouds.yaml" OS_CLOUD=yunhe
    echo "yunhe: server pid $YUNHE_PID at $YUNHE_URL, state $YUNHE_STATE" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    [ "${1:-}" = "--" ] && shift
    yunhe_start_server
    if [ $# -gt 0 ]; then "$@"; else echo "no command given; server started and stopped" >&2; fi
fi
