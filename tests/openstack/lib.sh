# Shared helpers for the tests/openstack and tests/tempest scripts (sourced).
# Needs: _yunhe_repo from start-server.sh, or sets it itself.

: "${_yunhe_repo:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

# Print the OS_* variables that admin-openrc.sh exports, one NAME=VALUE a line,
# without touching the caller's environment.
yunhe_openrc_vars() {
    ( set -a; . "$1" >/dev/null 2>&1; env ) | grep -E '^OS_[A-Z_]+=' || true
}

# Value of one OS_* variable from admin-openrc.sh.
yunhe_openrc_get() {
    yunhe_openrc_vars "$1" | sed -n "s/^$2=//p" | head -n1
}

# The Keystone v3 base URL (…/identity/v3) for an auth_url that may or may not
# carry the version.
yunhe_keystone_v3() {
    local u="${1%/}"
    u="${u%/v3}"
    echo "$u/v3"
}
