#!/usr/bin/env bash
# Create (idempotently) the Python venv with python-openstackclient and tempest.
#   tests/openstack/venv.sh            -> prints the venv path on the last line of stdout
# The venv lives at ${YUNHE_VENV:-<repo>/.venv}. It is rebuilt only when
# requirements.txt or constraints.txt change (their hash is kept in the venv), so a
# second call returns in well under a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${YUNHE_VENV:-$repo/.venv}"
req="$here/requirements.txt"
con="$here/constraints.txt"

hash_inputs() {
    { cat "$req"; [ -f "$con" ] && cat "$con"; python_bin --version 2>&1; } | sha256sum | cut -d' ' -f1
}

python_bin() {
    if [ -n "${YUNHE_PYTHON:-}" ]; then "$YUNHE_PYTHON" "$@"
    elif command -v python3.11 >/dev/null 2>&1; then python3.11 "$@"
    else python3 "$@"; fi
}

want="$(hash_inputs)"
stamp="$venv/.yunhe-requirements.sha256"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && [ -x "$venv/bin/openstack" ] && [ -x "$venv/bin/tempest" ]; then
    echo "$venv"
    exit 0
fi

start=$(date +%s)
echo "venv: building $venv (this takes a few minutes the first time)" >&2
rm -rf "$venv"
python_bin -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel >&2
args=(-r "$req")
[ -f "$con" ] && args+=(-c "$con")
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}" >&2
"$venv/bin/openstack" --version >&2
"$venv/bin/tempest" --version >&2 2>&1 || true
echo "$want" > "$stamp"
echo "venv: ready in $(( $(date +%s) - start ))s" >&2
echo "$venv"
