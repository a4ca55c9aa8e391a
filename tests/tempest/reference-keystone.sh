#!/usr/bin/env bash
# Install real Keystone (PyPI, pinned) in its own venv and print the path of a command that
# behaves like `yunhe serve` (see keystone_as_yunhe.py). For checking the harness and for
# seeing what Keystone itself answers; CI does not use it.
#   YUNHE_BIN=$(tests/tempest/reference-keystone.sh) YUNHE_TEMPEST_CONCURRENCY=1 tests/tempest/run.sh
#   YUNHE_BIN=$(tests/tempest/reference-keystone.sh) tests/openstack/identity-cli.sh
# Venv: ${YUNHE_KEYSTONE_VENV:-<repo>/target/keystone-venv}. Keystone 30.0.0 passes all 116
# tests that are not on the expected-failure list (checked 2026-11-27, concurrency 1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${YUNHE_KEYSTONE_VENV:-$repo/target/keystone-venv}"
pin="keystone==30.0.0"
if [ ! -x "$venv/bin/keystone-manage" ] || ! grep -qx "$pin" "$venv/.yunhe-pin" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$pin" \
        -c "$repo/tests/openstack/constraints.txt" >&2
    echo "$pin" > "$venv/.yunhe-pin"
fi
cat > "$venv/bin/yunhe-keystone" <<WRAP
#!/usr/bin/env bash
exec "$venv/bin/python" "$here/keystone_as_yunhe.py" "\$@"
WRAP
chmod +x "$venv/bin/yunhe-keystone"
echo "$venv/bin/yunhe-keystone"
