#!/usr/bin/env bash
# Run tempest's tempest.api.identity tests against a freshly started `yunhe serve`.
#   tests/tempest/run.sh
# Workspace (tempest.conf, logs, stestr results, server.log, failures.txt) is kept in
# ${YUNHE_TEMPEST_WORK:-<repo>/tests/tempest/work} (git-ignored), recreated each run.
# Tests listed in tests/tempest/identity-expected-failures.txt are excluded.
# Ends with `N passed, M failed, K skipped`; exits non-zero when fewer than 95% of the
# tests not on the list pass (skips count as not passed) or the list holds > 20%.
# Env: YUNHE_BIN, YUNHE_VENV, YUNHE_TEMPEST_CONCURRENCY (default 2),
#      YUNHE_TEMPEST_REGEX (default ^tempest\.api\.identity), YUNHE_TEMPEST_TIMEOUT (s, 2400),
#      YUNHE_TEMPEST_TRUST (True/False, default True), YUNHE_TEMPEST_ACCESS_RULES (default True),
#      YUNHE_LOCKOUT_FAILURE_ATTEMPTS / YUNHE_LOCKOUT_DURATION / YUNHE_UNIQUE_LAST_PASSWORD_COUNT
#      (the server's security compliance, told to tempest's tests; default 6 / 10 s / 2).
# Other services reuse this runner (see run-image.sh) through:
#      YUNHE_TEMPEST_SERVICE (label, default identity), YUNHE_TEMPEST_XF (expected-failure
#      file), YUNHE_TEMPEST_GOAL / YUNHE_TEMPEST_LIST_MAX (pass and list ratios, default
#      0.95 / 0.20), YUNHE_TEMPEST_GLANCE (True/False, default False).
#      YUNHE_TEMPEST_CONF_EXTRA (ini appended to tempest.conf); run-compute.sh sets it for Nova.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$("$repo/tests/openstack/venv.sh" | tail -n1)" || { echo "venv setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$venv/bin:$PATH"
py="$venv/bin/python"
work="${YUNHE_TEMPEST_WORK:-$here/work}"
regex="${YUNHE_TEMPEST_REGEX:-^tempest\.api\.identity}"
xf="${YUNHE_TEMPEST_XF:-$here/identity-expected-failures.txt}"

. "$repo/tests/openstack/start-server.sh"
. "$repo/tests/openstack/lib.sh"

rm -rf "$work"
mkdir -p "$work"
export YUNHE_SERVER_LOG="$work/server.log"
# Lockout and password history as `yunhe serve` is started with; tempest waits the lockout out.
export YUNHE_LOCKOUT_FAILURE_ATTEMPTS="${YUNHE_LOCKOUT_FAILURE_ATTEMPTS:-6}" YUNHE_LOCKOUT_DURATION="${YUNHE_LOCKOUT_DURATION:-10}"
export YUNHE_UNIQUE_LAST_PASSWORD_COUNT="${YUNHE_UNIQUE_LAST_PASSWORD_COUNT:-2}"
if ! yunhe_start_server; then
    echo "server did not start"; echo "0 passed, 1 failed"; exit 1
fi

tempest init --workspace-path "$work/workspace.yaml" "$work/ws" >"$work/tempest-init.txt" 2>&1 || { echo "tempest init failed"; echo "0 passed, 1 failed"; exit 1; }
openrc="$YUNHE_STATE/admin-openrc.sh"
get() { local v; v="$(yunhe_openrc_get "$openrc" "$1")"; echo "${v:-$2}"; }
auth_url="$(get OS_AUTH_URL "$YUNHE_URL/identity")"
TC_WORKSPACE="$work/ws" \
TC_URI_V3="$(yunhe_keystone_v3 "$auth_url")" \
TC_ADMIN_USERNAME="$(get OS_USERNAME admin)" \
TC_ADMIN_PASSWORD="$(get OS_PASSWORD "$YUNHE_ADMIN_PASSWORD")" \
TC_ADMIN_PROJECT_NAME="$(get OS_PROJECT_NAME admin)" \
TC_ADMIN_DOMAIN_NAME=Default \
TC_ADMIN_USER_DOMAIN_NAME="$(get OS_USER_DOMAIN_NAME Default)" \
TC_ADMIN_PROJECT_DOMAIN_NAME="$(get OS_PROJECT_DOMAIN_NAME Default)" \
TC_REGION="$(get OS_REGION_NAME RegionOne)" \
TC_FEATURE_TRUST="${YUNHE_TEMPEST_TRUST:-True}" \
TC_FEATURE_ACCESS_RULES="${YUNHE_TEMPEST_ACCESS_RULES:-True}" \
TC_LOCKOUT_ATTEMPTS="$YUNHE_LOCKOUT_FAILURE_ATTEMPTS" \
TC_LOCKOUT_DURATION="$YUNHE_LOCKOUT_DURATION" \
TC_UNIQUE_PASSWORDS="$YUNHE_UNIQUE_LAST_PASSWORD_COUNT" \
TC_GLANCE="${YUNHE_TEMPEST_GLANCE:-False}" \
"$py" - "$here/tempest.conf.in" "$work/ws/etc/tempest.conf" <<'PYEOF'
import os, re, sys
src, dst = sys.argv[1:3]
# oslo.config expands $name in values: write a literal $ as $$.
text = re.sub(r"@([A-Z0-9_]+)@", lambda m: os.environ["TC_" + m.group(1)].replace("$", "$$"),
              open(src).read())
open(dst, "w").write(text)
PYEOF
[ $? -eq 0 ] || { echo "writing tempest.conf failed"; echo "0 passed, 1 failed"; exit 1; }
# yunhe serves HTTPS with its own CA: tempest trusts it (oslo.config: a later
# section's value wins).
if [ -n "${YUNHE_CA:-}" ]; then
    printf '\n[identity]\nca_certificates_file = %s\n' "$YUNHE_CA" >> "$work/ws/etc/tempest.conf"
fi
# Extra sections for other services' runs (oslo.config: a later value wins).
if [ -n "${YUNHE_TEMPEST_CONF_EXTRA:-}" ]; then
    cat "$YUNHE_TEMPEST_CONF_EXTRA" >> "$work/ws/etc/tempest.conf"
fi
# A setup script (e.g. uploading the guest images servers boot) prints more settings.
if [ -n "${YUNHE_TEMPEST_SETUP:-}" ]; then
    "$YUNHE_TEMPEST_SETUP" >> "$work/ws/etc/tempest.conf" 2>"$work/setup.log" \
        || { echo "tempest setup failed:"; tail -n 20 "$work/setup.log"; echo "0 passed, 1 failed"; exit 1; }
fi

cd "$work/ws"
tempest run --list-tests --regex "$regex" 2>/dev/null | grep '^tempest\.' > "$work/all-tests.txt"
# The list holds plain test ids; stestr wants regexes: anchor each id exactly.
"$py" - "$xf" > "$work/exclude-regex.txt" <<'PYEOF'
import re, sys
for line in open(sys.argv[1]):
    entry = line.split("#", 1)[0].strip()
    if entry:
        print("^%s(\\[|$)" % re.escape(entry))
PYEOF

echo "# tempest $(tempest --version 2>&1 | tail -n1) against $YUNHE_URL; $(wc -l < "$work/all-tests.txt") tests match $regex"
start=$(date +%s)
timeout "${YUNHE_TEMPEST_TIMEOUT:-2400}" tempest run --regex "$regex" --exclude-list "$work/exclude-regex.txt" \
    --concurrency "${YUNHE_TEMPEST_CONCURRENCY:-2}" > "$work/tempest-run.txt" 2>&1
rc=$?
echo "# tempest run exited $rc after $(( $(date +%s) - start ))s; output in $work/tempest-run.txt"
grep -E '^(Totals|=+$| - (Passed|Skipped|Failed|Expected|Unexpected)|Sum of execute)' "$work/tempest-run.txt" | grep -v '^=*$' || true
stestr last --subunit > "$work/results.subunit" 2>/dev/null
"$py" "$here/summarize.py" "$work/all-tests.txt" "$xf" "$work/results.subunit" "$work" \
    "${YUNHE_TEMPEST_SERVICE:-identity}" "${YUNHE_TEMPEST_GOAL:-0.95}" "${YUNHE_TEMPEST_LIST_MAX:-0.20}" \
    "${YUNHE_TEMPEST_NOT_APPLICABLE:-}"
