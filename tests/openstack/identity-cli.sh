#!/usr/bin/env bash
# Issue 2's CLI acceptance: the real `openstack` CLI (and curl for exact status codes)
# against a freshly started `yunhe serve`.
#   tests/openstack/identity-cli.sh
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
out="$(mktemp "${TMPDIR:-/tmp}/yunhe-cli.XXXXXX")"
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
# json EXPR: evaluate a Python expression on the JSON in $out (bound to `d`).
json() { "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$out" "$1"; }
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

# --- as admin, through clouds.yaml (OS_CLOUD=yunhe) ---------------------------
check "openstack token issue" openstack token issue -f json
check "openstack catalog list" openstack catalog list -f json
if json 'any(s.get("Type", s.get("type"))=="identity" for s in d)' 2>/dev/null | grep -qx True; then
    pass "catalog lists the identity service"
else fail "catalog lists the identity service"; fi

check "openstack project create demo" openstack project create demo -f json
demo_id="$(json 'd["id"]' 2>/dev/null)"
check "openstack user create --project demo --password s3cret-Alice alice" \
    openstack user create --project demo --password s3cret-Alice alice -f json
alice_id="$(json 'd["id"]' 2>/dev/null)"
check "openstack role add --project demo --user alice member" \
    openstack role add --project demo --user alice member
check "openstack role assignment list --names" openstack role assignment list --names -f json
if json 'any(a["Role"]=="member" and a["User"].startswith("alice") and a["Project"].startswith("demo") for a in d)' 2>/dev/null | grep -qx True; then
    pass "role assignment list shows alice as member of demo"
else fail "role assignment list shows alice as member of demo"; fi
check "openstack application credential create ci" openstack application credential create ci -f json
# openstackclient titles this command's keys ("ID", "Secret"); accept either case.
ac_id="$(json '{k.lower(): v for k, v in d.items()}["id"]' 2>/dev/null)"
ac_secret="$(json '{k.lower(): v for k, v in d.items()}["secret"]' 2>/dev/null)"
if [ -n "$ac_id" ] && [ -n "$ac_secret" ] && [ "$ac_secret" != "None" ]; then
    expect_status "application credential ci authenticates (201)" 201 POST /auth/tokens \
        -d "{\"auth\":{\"identity\":{\"methods\":[\"application_credential\"],\"application_credential\":{\"id\":\"$ac_id\",\"secret\":\"$ac_secret\"}}}}"
else
    fail "application credential ci authenticates (201)"
fi

# --- unified limits: registered limits and project limits (issue 9) --------------
# kv EXPR: like json, with every dict key lower-cased and spaces as underscores.
kv() { "$py" -c 'import json,sys
def low(x):
    if isinstance(x, dict): return {k.lower().replace(" ", "_"): low(v) for k, v in x.items()}
    if isinstance(x, list): return [low(v) for v in x]
    return x
d=low(json.load(open(sys.argv[1]))); print(eval(sys.argv[2]))' "$out" "$@"; }
check "openstack registered limit list" openstack registered limit list -f json
if kv 'sorted(r["resource_name"] for r in d if r["resource_name"].startswith("image_"))' 2>/dev/null \
    | grep -qx "\['image_count_total', 'image_count_uploading', 'image_size_total', 'image_stage_total'\]"; then
    pass "a fresh cloud registers the image service's default limits"
else fail "a fresh cloud registers the image service's default limits"; fi
seeded_id="$(kv '[r["id"] for r in d if r["resource_name"]=="image_count_total"][0]' 2>/dev/null)"
check "openstack registered limit delete (the default image_count_total)" \
    openstack registered limit delete "$seeded_id"
check "openstack registered limit create --service image --default-limit 5 image_count_total" \
    openstack registered limit create --service image --default-limit 5 image_count_total -f json
rl_id="$(kv 'd["id"]' 2>/dev/null)"
check "openstack registered limit show" openstack registered limit show "$rl_id" -f json
if kv 'd["default_limit"]' 2>/dev/null | grep -qx 5; then pass "registered limit show: default_limit 5"
else fail "registered limit show: default_limit 5"; fi
check "openstack registered limit set --default-limit 1000" \
    openstack registered limit set --default-limit 1000 "$rl_id" -f json
if kv 'd["default_limit"]' 2>/dev/null | grep -qx 1000; then pass "registered limit set: default_limit 1000"
else fail "registered limit set: default_limit 1000"; fi
check "openstack limit create --project demo --service image --resource-limit 2 image_count_total" \
    openstack limit create --project demo --service image --resource-limit 2 image_count_total -f json
limit_id="$(kv 'd["id"]' 2>/dev/null)"
if kv 'd["project_id"]' 2>/dev/null | grep -qx "$demo_id"; then pass "the limit names project demo"
else fail "the limit names project demo"; fi
check "openstack limit list" openstack limit list -f json
if kv 'any(l["id"]==sys.argv[3] for l in d)' "$limit_id" 2>/dev/null | grep -qx True; then
    pass "limit list shows the demo limit"
else fail "limit list shows the demo limit"; fi
check "openstack limit show" openstack limit show "$limit_id" -f json
check "openstack limit set --resource-limit 3" openstack limit set --resource-limit 3 "$limit_id" -f json
if kv 'd["resource_limit"]' 2>/dev/null | grep -qx 3; then pass "limit set: resource_limit 3"
else fail "limit set: resource_limit 3"; fi
if ! openstack registered limit delete "$rl_id" >"$out" 2>&1; then
    pass "a registered limit with a project limit below it cannot be deleted"
else fail "a registered limit with a project limit below it cannot be deleted"; fi
check "openstack limit delete" openstack limit delete "$limit_id"
check "openstack registered limit list --service image --resource-name image_count_total" \
    openstack registered limit list --service image --resource-name image_count_total -f json
if kv 'len(d)' 2>/dev/null | grep -qx 1; then pass "registered limit list filters by service and resource"
else fail "registered limit list filters by service and resource"; fi

# --- as alice -------------------------------------------------------------------
alice_auth='{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"alice","domain":{"id":"default"},"password":"s3cret-Alice"}}},"scope":{"project":{"name":"demo","domain":{"id":"default"}}}}}'
expect_status "alice gets a demo-scoped token (201)" 201 POST /auth/tokens -d "$alice_auth"
alice_token="$(sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: *//p' "$out.h" | tr -d '\r')"
if [ -n "$alice_token" ] && "$py" -c 'import json,sys; t=json.load(open(sys.argv[1]))["token"]; assert t["project"]["id"]==sys.argv[2], t["project"]; assert any(r["name"]=="member" for r in t["roles"]), t["roles"]' "$out.b" "$demo_id" >"$out" 2>&1; then
    pass "alice's token is scoped to demo with role member"
else fail "alice's token is scoped to demo with role member"; fi

check "openstack token issue as alice (demo)" env -u OS_CLOUD -u OS_CLIENT_CONFIG_FILE \
    OS_AUTH_URL="${KS%/v3}" OS_IDENTITY_API_VERSION=3 OS_USERNAME=alice OS_PASSWORD=s3cret-Alice \
    OS_PROJECT_NAME=demo OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default \
    openstack token issue -f json
if json 'd["project_id"]' 2>/dev/null | grep -qx "$demo_id"; then
    pass "CLI token for alice is scoped to demo"
else fail "CLI token for alice is scoped to demo"; fi

expect_status "alice reads her own user (200)" 200 GET "/users/$alice_id" -H "X-Auth-Token: $alice_token"
expect_status "alice creating a user gets 403" 403 POST /users -H "X-Auth-Token: $alice_token" \
    -d '{"user":{"name":"mallory","password":"x-Mallory-1"}}'
if "$py" -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert e["code"]==403 and e["title"] and e["message"], e' "$out.b" >"$out" 2>&1; then
    pass "the 403 body is {\"error\": {code, title, message}}"
else fail "the 403 body is {\"error\": {code, title, message}}"; fi
if ! env -u OS_CLOUD -u OS_CLIENT_CONFIG_FILE \
    OS_AUTH_URL="${KS%/v3}" OS_IDENTITY_API_VERSION=3 OS_USERNAME=alice OS_PASSWORD=s3cret-Alice \
    OS_PROJECT_NAME=demo OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default \
    openstack user create --password x-Mallory-1 mallory >"$out" 2>&1 && grep -Eq 'HTTP 403|403: |Forbidden' "$out"; then
    pass "openstack user create as alice fails with 403"
else fail "openstack user create as alice fails with 403"; fi
expect_status "alice's token validates before the disable (200)" 200 GET /auth/tokens \
    -H "X-Auth-Token: $alice_token" -H "X-Subject-Token: $alice_token"

# --- disable alice: her token stops working ---------------------------------------
check "openstack user set --disable alice" openstack user set --disable alice
expect_status "alice's token gets 401 after the disable (GET /v3/auth/tokens)" 401 GET /auth/tokens \
    -H "X-Auth-Token: $alice_token" -H "X-Subject-Token: $alice_token"
expect_status "alice's token gets 401 after the disable (GET /v3/users/{alice})" 401 GET "/users/$alice_id" \
    -H "X-Auth-Token: $alice_token"
if grep -qi '^www-authenticate: *Keystone uri=' "$out"; then
    pass "the 401 carries WWW-Authenticate: Keystone uri=..."
else fail "the 401 carries WWW-Authenticate: Keystone uri=..."; fi
if grep -qi '^x-openstack-request-id: *req-[0-9a-f-]\{36\}' "$out"; then
    pass "responses carry x-openstack-request-id: req-<uuid>"
else fail "responses carry x-openstack-request-id: req-<uuid>"; fi
expect_status "disabled alice cannot get a new token (401)" 401 POST /auth/tokens -d "$alice_auth"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
