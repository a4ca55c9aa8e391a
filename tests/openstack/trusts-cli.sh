#!/usr/bin/env bash
# OS-TRUST with the real `openstack` CLI (and curl for exact status codes) against a
# freshly started `yunhe serve`: trust create/list/show/delete as the trustor, a token
# through the trust as the trustee (`openstack --os-trust-id ... token issue`), and the
# trust's tokens dying when the trustor loses the role or the trust is deleted.
#   tests/openstack/trusts-cli.sh
# Prints one line per check and ends with `N passed, M failed`; exits non-zero on failure.
# Env: YUNHE_BIN (server binary), YUNHE_VENV (venv path), YUNHE_CLI_LOG (keep the
# commands' output there; default: a temp file, printed for failing checks).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$("$here/venv.sh" | tail -n1)" || { echo "venv setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$venv/bin:$PATH"
py="$venv/bin/python"

. "$here/start-server.sh"
. "$here/lib.sh"

passed=0 failed=0
out="$(mktemp "${TMPDIR:-/tmp}/yunhe-trust-cli.XXXXXX")"
yunhe_on_exit "rm -f '$out' '$out.h' '$out.b'"
log="${YUNHE_CLI_LOG:-}"

pass() { passed=$((passed+1)); echo "PASS $1"; }
fail() {
    failed=$((failed+1)); echo "FAIL $1"
    if [ -s "$out" ]; then { cat "$out"; echo; } | sed -e '/^\r\?$/d' -e 's/^/    | /' | tail -n 15; fi
}
# check NAME CMD...: the command must exit 0. Its output is kept in $out.
check() {
    local name="$1"; shift
    if "$@" >"$out" 2>&1; then pass "$name"; else fail "$name"; fi
    [ -n "$log" ] && { echo "== $name: $*"; cat "$out"; } >>"$log"
    return 0
}
# verdict NAME PYTHON-EXPR: the expression on the JSON in $out (keys lower-cased,
# spaces as underscores, bound to `d`; extra args in sys.argv[3:]) must print True.
verdict() {
    local name="$1"; shift
    if "$py" -c 'import json,sys
def low(x):
    if isinstance(x, dict): return {k.lower().replace(" ", "_"): low(v) for k, v in x.items()}
    if isinstance(x, list): return [low(v) for v in x]
    return x
d=low(json.load(open(sys.argv[1]))); print(eval(sys.argv[2]))' "$out" "$@" 2>/dev/null | grep -qx True; then
        pass "$name"
    else fail "$name"; fi
}
field() { "$py" -c 'import json,sys; d={k.lower().replace(" ", "_"): v for k, v in json.load(open(sys.argv[1])).items()}; print(d[sys.argv[2]])' "$out" "$1" 2>/dev/null; }
# http METHOD PATH [curl args...]: prints the status; headers in $out.h, body in $out.b.
http() {
    local m="$1" p="$2"; shift 2
    curl -s -o "$out.b" -D "$out.h" -w '%{http_code}' --max-time 20 -X "$m" \
        -H 'Content-Type: application/json' "$@" "$KS$p"
}
# expect_status NAME WANT METHOD PATH [curl args...]
expect_status() {
    local name="$1" want="$2"; shift 2
    local got; got="$(http "$@")"
    { echo "HTTP $got (want $want): $1 $2"; cat "$out.h" "$out.b" 2>/dev/null; } >"$out"
    if [ "$got" = "$want" ]; then pass "$name"; else fail "$name"; fi
    [ -n "$log" ] && { echo "== $name"; cat "$out"; echo; } >>"$log"
    return 0
}

if ! yunhe_start_server; then
    echo "FAIL server start"
    echo "0 passed, 1 failed"
    exit 1
fi
KS="$(yunhe_keystone_v3 "$(yunhe_openrc_get "$YUNHE_STATE/admin-openrc.sh" OS_AUTH_URL)")"
case "$KS" in http://127.0.0.1:*) ;; *) KS="$YUNHE_URL/identity/v3" ;; esac
echo "# keystone at $KS"

# as USER [PROJECT] -- CMD...: run CMD with USER's password credentials (no OS_CLOUD).
as() {
    local user="$1" project="$2"; shift 2
    local scope=()
    [ -n "$project" ] && scope=(OS_PROJECT_NAME="$project" OS_PROJECT_DOMAIN_NAME=Default)
    env -u OS_CLOUD -u OS_CLIENT_CONFIG_FILE OS_AUTH_URL="${KS%/v3}" OS_IDENTITY_API_VERSION=3 \
        OS_USERNAME="$user" OS_PASSWORD="s3cret-$user" OS_USER_DOMAIN_NAME=Default \
        "${scope[@]}" "$@"
}

# --- as admin: a project, a role to delegate and one to keep, two users ----------
check "openstack project create trustproj" openstack project create trustproj -f json
proj_id="$(field id)"
check "openstack role create delegated" openstack role create delegated -f json
role_id="$(field id)"
check "openstack role create kept" openstack role create kept -f json
for u in alice bob; do
    check "openstack user create $u" openstack user create --password "s3cret-$u" "$u" -f json
    eval "${u}_id=\"\$(field id)\""
done
check "openstack role add --project trustproj --user alice delegated" \
    openstack role add --project trustproj --user alice delegated
check "openstack role add --project trustproj --user alice kept" \
    openstack role add --project trustproj --user alice kept

# --- as alice (the trustor) --------------------------------------------------------
check "openstack trust create --impersonate (alice -> bob, role delegated)" \
    as alice trustproj openstack trust create --project "$proj_id" --role "$role_id" \
    --impersonate "$alice_id" "$bob_id" -f json
trust_id="$(field id)"
verdict "the trust names alice, bob, trustproj and impersonates" \
    'd["trustor_user_id"]==sys.argv[3] and d["trustee_user_id"]==sys.argv[4] and d["project_id"]==sys.argv[5] and str(d.get("impersonation", d.get("is_impersonation")))=="True"' \
    "$alice_id" "$bob_id" "$proj_id"
check "openstack trust show" as alice trustproj openstack trust show "$trust_id" -f json
verdict "trust show: the delegated role only" 'sys.argv[3] in str(d["roles"]) and "kept" not in str(d["roles"])' delegated
check "openstack trust list --auth-user (alice)" as alice trustproj openstack trust list --auth-user -f json
verdict "trust list --auth-user shows the trust" 'any(t["id"]==sys.argv[3] for t in d)' "$trust_id"
check "openstack trust list (admin)" openstack trust list -f json
verdict "admin's trust list shows the trust" 'any(t["id"]==sys.argv[3] for t in d)' "$trust_id"
if ! as alice trustproj openstack trust list -f json >"$out" 2>&1 && grep -Eq '403|Forbidden' "$out"; then
    pass "alice cannot list every trust (403)"
else fail "alice cannot list every trust (403)"; fi

# --- as bob (the trustee): a token through the trust --------------------------------
check "openstack --os-trust-id ... token issue (bob)" \
    as bob "" openstack --os-trust-id "$trust_id" token issue -f json
verdict "the trust token is alice's (impersonation) on trustproj" \
    'd["user_id"]==sys.argv[3] and d["project_id"]==sys.argv[4]' "$alice_id" "$proj_id"
trust_token="$(field id)"
expect_status "the trust token validates (200)" 200 GET /auth/tokens \
    -H "X-Auth-Token: $trust_token" -H "X-Subject-Token: $trust_token"
if "$py" -c 'import json,sys; t=json.load(open(sys.argv[1]))["token"]; assert t["OS-TRUST:trust"]["id"]==sys.argv[2], t; assert sorted(r["name"] for r in t["roles"])==["delegated"], t["roles"]' "$out.b" "$trust_id" >"$out" 2>&1; then
    pass "the token carries OS-TRUST:trust and only the delegated role"
else fail "the token carries OS-TRUST:trust and only the delegated role"; fi
expect_status "a trust token cannot create another token (403)" 403 POST /auth/tokens \
    -d "{\"auth\":{\"identity\":{\"methods\":[\"token\"],\"token\":{\"id\":\"$trust_token\"}},\"scope\":{\"project\":{\"id\":\"$proj_id\"}}}}"

# --- revocation -----------------------------------------------------------------------
check "openstack role remove --project trustproj --user alice delegated" \
    openstack role remove --project trustproj --user alice delegated
expect_status "the trust token stops validating when alice loses the role (404)" 404 GET /auth/tokens \
    -H "X-Auth-Token: $(openstack token issue -f value -c id)" -H "X-Subject-Token: $trust_token"
if ! as bob "" openstack --os-trust-id "$trust_id" token issue -f json >"$out" 2>&1; then
    pass "no new trust token while alice lacks the role"
else fail "no new trust token while alice lacks the role"; fi
check "openstack role add (alice gets delegated back)" \
    openstack role add --project trustproj --user alice delegated
check "openstack --os-trust-id ... token issue works again" \
    as bob "" openstack --os-trust-id "$trust_id" token issue -f json
trust_token="$(field id)"
check "openstack trust delete" as alice trustproj openstack trust delete "$trust_id"
expect_status "the deleted trust's token is revoked (404)" 404 GET /auth/tokens \
    -H "X-Auth-Token: $(openstack token issue -f value -c id)" -H "X-Subject-Token: $trust_token"
if ! as alice trustproj openstack trust show "$trust_id" -f json >"$out" 2>&1; then
    pass "trust show after delete fails"
else fail "trust show after delete fails"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
