#!/usr/bin/env bash
# Issue 16 (Keystone part): unified limits, access rules, project hierarchy, endpoint
# filtering and domain-specific configuration with the stock `openstack` CLI (and curl where
# the CLI has no command) against a freshly started `yunhe serve`.
#   tests/openstack/keystone-extra-cli.sh
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

TOKEN="$(openstack token issue -f value -c id)"
auth=(-H "X-Auth-Token: $TOKEN")
admin_project="$(openstack project show admin -f value -c id)"
me="$(openstack token issue -f value -c user_id)"

# --- 1. unified limits -----------------------------------------------------------
svc="$(openstack service create --name extra-svc extra -f value -c id)"
check "openstack registered limit create" openstack registered limit create --service "$svc" \
    --default-limit 10 --region RegionOne widgets -f json
rl="$(json 'd["id"]' 2>/dev/null)"
check "openstack registered limit list" openstack registered limit list --service "$svc" -f json
[ "$(json 'len(d)')" = 1 ] && pass "registered limit list shows it" || fail "registered limit list shows it"
check "openstack registered limit show" openstack registered limit show "$rl"
check "openstack registered limit set --default-limit 20" openstack registered limit set --default-limit 20 "$rl" -f json
[ "$(json 'd["default_limit"]')" = 20 ] && pass "registered limit set changed it" || fail "registered limit set changed it"
check "openstack limit create" openstack limit create --project admin --service "$svc" \
    --resource-limit 5 --region RegionOne widgets -f json
lim="$(json 'd["id"]' 2>/dev/null)"
check "openstack limit list" openstack limit list --project admin -f json
check "openstack limit show" openstack limit show "$lim"
check "openstack limit set --resource-limit 7" openstack limit set --resource-limit 7 "$lim" -f json
[ "$(json 'd["resource_limit"]')" = 7 ] && pass "limit set changed it" || fail "limit set changed it"
expect_status "GET /v3/limits/model (200)" 200 GET /limits/model "${auth[@]}"

# --- 2. access rules ---------------------------------------------------------------
rules='[{"service": "compute", "method": "GET", "path": "/v2.1/servers"}]'
check "openstack application credential create --access-rules" \
    openstack application credential create --access-rules "$rules" ac-rules -f json
check "openstack access rule list" openstack access rule list -f json
ar="$(json 'd[0]["ID"]' 2>/dev/null)"
[ "$(json '[r["ID"] for r in d]')" = "['$ar']" ] && pass "access rule list shows the credential's rule" \
    || fail "access rule list shows the credential's rule"
check "openstack access rule show" openstack access rule show "$ar" -f json
[ "$(json 'd["Path"]')" = /v2.1/servers ] && pass "access rule show has the path" || fail "access rule show has the path"
check "a second credential with the same rule" \
    openstack application credential create --access-rules "$rules" ac-rules-2 -f json
openstack access rule list -f json >"$out" 2>&1
[ "$(json '[r["ID"] for r in d]')" = "['$ar']" ] && pass "the same rule is reused (one id)" \
    || fail "the same rule is reused (one id)"
expect_status "DELETE an access rule in use (403)" 403 DELETE "/users/$me/access_rules/$ar" "${auth[@]}"
if openstack access rule delete "$ar" >"$out" 2>&1; then fail "openstack access rule delete refused while in use"
else pass "openstack access rule delete refused while in use"; fi
check "openstack application credential delete (both)" openstack application credential delete ac-rules ac-rules-2
check "openstack access rule delete" openstack access rule delete "$ar"
expect_status "the deleted access rule is gone (404)" 404 GET "/users/$me/access_rules/$ar" "${auth[@]}"

# --- 3. project hierarchy -------------------------------------------------------------
check "openstack project create --parent admin child-a" openstack project create --parent admin child-a -f json
child="$(json 'd["id"]' 2>/dev/null)"
check "openstack project create --parent child-a grandchild" openstack project create --parent child-a grandchild -f json
grand="$(json 'd["id"]' 2>/dev/null)"
check "openstack role add --project child-a" openstack role add --user admin --project child-a admin
check "openstack project show --parents --children admin" openstack project show --parents --children admin -f json
[ "$(json 'd["subtree"]')" = "{'$child': {'$grand': None}}" ] \
    && pass "project show --children shows the subtree" || fail "project show --children shows the subtree"
check "openstack project show --parents child-a" openstack project show --parents child-a -f json
[ "$(json 'd["parents"]')" = "{'$admin_project': {'default': None}}" ] \
    && pass "project show --parents shows admin and the domain" || fail "project show --parents shows admin and the domain"
expect_status "GET /v3/projects/{id}?subtree_as_list (200)" 200 GET "/projects/$admin_project?subtree_as_list" "${auth[@]}"
cp "$out.b" "$out"
[ "$(json '[p["project"]["id"] for p in d["project"]["subtree"]]')" = "['$child']" ] \
    && pass "subtree_as_list lists the child the caller has a role on (not the grandchild)" \
    || fail "subtree_as_list lists the child the caller has a role on (not the grandchild)"
expect_status "GET /v3/projects/{id}?parents_as_list (200)" 200 GET "/projects/$grand?parents_as_list" "${auth[@]}"
cp "$out.b" "$out"
[ "$(json '[p["project"]["id"] for p in d["project"]["parents"]]')" = "['$child', '$admin_project']" ] \
    && pass "parents_as_list lists child-a and admin, nearest first" \
    || fail "parents_as_list lists child-a and admin, nearest first"
expect_status "GET /v3/projects/{id}?subtree_as_ids (200)" 200 GET "/projects/$admin_project?subtree_as_ids" "${auth[@]}"
cp "$out.b" "$out"
[ "$(json 'd["project"]["subtree"]')" = "{'$child': {'$grand': None}}" ] \
    && pass "subtree_as_ids nests the whole subtree" || fail "subtree_as_ids nests the whole subtree"
expect_status "GET /v3/projects/{id}?parents_as_ids (200)" 200 GET "/projects/$grand?parents_as_ids" "${auth[@]}"
cp "$out.b" "$out"
[ "$(json 'd["project"]["parents"]')" = "{'$child': {'$admin_project': {'default': None}}}" ] \
    && pass "parents_as_ids nests up to the domain" || fail "parents_as_ids nests up to the domain"
expect_status "GET ?subtree_as_list&include_limits (200)" 200 GET "/projects/$admin_project?subtree_as_list&include_limits" "${auth[@]}"
cp "$out.b" "$out"
[ "$(json '"limits" in d["project"]["subtree"][0]["project"]')" = True ] \
    && pass "include_limits adds each project's limits" || fail "include_limits adds each project's limits"
expect_status "parents_as_list with parents_as_ids (400)" 400 GET "/projects/$grand?parents_as_list&parents_as_ids" "${auth[@]}"

# --- 4. endpoint filtering -------------------------------------------------------------
check "openstack project create filtered" openstack project create filtered -f json
check "openstack role add --project filtered" openstack role add --user admin --project filtered admin
ep="$(openstack endpoint list --service identity --interface public -f value -c ID | head -n1)"
check "openstack endpoint add project" openstack endpoint add project "$ep" filtered
expect_status "HEAD OS-EP-FILTER/projects/{p}/endpoints/{e} (204)" 204 HEAD \
    "/OS-EP-FILTER/projects/$(openstack project show filtered -f value -c id)/endpoints/$ep" "${auth[@]}"
check "openstack endpoint list --project filtered" openstack endpoint list --project filtered -f json
[ "$(json '[e["ID"] for e in d]')" = "['$ep']" ] && pass "endpoint list --project shows the one endpoint" \
    || fail "endpoint list --project shows the one endpoint"
expect_status "GET OS-EP-FILTER/endpoints/{e}/projects (200)" 200 GET "/OS-EP-FILTER/endpoints/$ep/projects" "${auth[@]}"
check "a token scoped to filtered" openstack --os-project-name filtered catalog list -f json
[ "$(json 'sum(len(s["Endpoints"]) for s in d)')" = 1 ] && pass "the filtered project's catalog has just that endpoint" \
    || fail "the filtered project's catalog has just that endpoint"
check "openstack catalog list (admin: no association, the whole catalog)" openstack catalog list -f json
[ "$(json 'len(d) > 1')" = True ] && pass "admin's catalog is whole" || fail "admin's catalog is whole"
check "openstack endpoint remove project" openstack endpoint remove project "$ep" filtered
check "openstack endpoint list --project filtered (none left)" openstack endpoint list --project filtered -f json
[ "$(json 'len(d)')" = 0 ] && pass "no endpoints after the removal" || fail "no endpoints after the removal"
printf '{"interface": "public", "service_id": "%s"}' "$(openstack service show identity -f value -c id)" >"$out.f"
yunhe_on_exit "rm -f '$out.f'"
check "openstack endpoint group create" openstack endpoint group create --description "public identity" eg-identity "$out.f"
check "openstack endpoint group add project" openstack endpoint group add project eg-identity filtered
check "openstack endpoint group list" openstack endpoint group list -f json
check "openstack endpoint group list --project filtered" openstack endpoint group list --project filtered -f json
[ "$(json '[g["Name"] for g in d]')" = "['eg-identity']" ] && pass "the project's endpoint groups" \
    || fail "the project's endpoint groups"
check "openstack endpoint group list --endpointgroup eg-identity" openstack endpoint group list --endpointgroup eg-identity -f json
[ "$(json '[p["Name"] for p in d]')" = "['filtered']" ] && pass "the endpoint group's projects" \
    || fail "the endpoint group's projects"
check "openstack endpoint group show" openstack endpoint group show eg-identity
check "catalog through the endpoint group" openstack --os-project-name filtered catalog list -f json
[ "$(json '[s["Type"] for s in d]')" = "['identity']" ] && pass "the group's endpoints make the catalog" \
    || fail "the group's endpoints make the catalog"
check "openstack endpoint group remove project" openstack endpoint group remove project eg-identity filtered
check "openstack endpoint group delete" openstack endpoint group delete eg-identity

# --- 5. domain-specific configuration ------------------------------------------------
check "openstack domain create cfg" openstack domain create cfg -f json
dom="$(json 'd["id"]' 2>/dev/null)"
cfg='{"config": {"identity": {"driver": "ldap"}, "ldap": {"url": "ldap://ldap.test/", "user_tree_dn": "ou=Users"}}}'
expect_status "PUT /domains/{id}/config (201)" 201 PUT "/domains/$dom/config" "${auth[@]}" -d "$cfg"
expect_status "PUT it again (200)" 200 PUT "/domains/$dom/config" "${auth[@]}" -d "$cfg"
expect_status "GET /domains/{id}/config/ldap/url (200)" 200 GET "/domains/$dom/config/ldap/url" "${auth[@]}"
cp "$out.b" "$out"
[ "$(json 'd["config"]')" = "{'url': 'ldap://ldap.test/'}" ] && pass "the option's value" || fail "the option's value"
expect_status "PATCH /domains/{id}/config/ldap (200)" 200 PATCH "/domains/$dom/config/ldap" "${auth[@]}" \
    -d '{"config": {"ldap": {"url": "ldap://other.test/"}}}'
expect_status "PATCH a group not stored (404)" 404 PATCH "/domains/$dom/config/identity/list_limit" "${auth[@]}" \
    -d '{"config": {"list_limit": 5}}'
expect_status "PUT an unsupported group (403)" 403 PUT "/domains/$dom/config" "${auth[@]}" -d '{"config": {"catalog": {"driver": "x"}}}'
expect_status "DELETE /domains/{id}/config/ldap/user_tree_dn (204)" 204 DELETE "/domains/$dom/config/ldap/user_tree_dn" "${auth[@]}"
expect_status "GET the deleted option (404)" 404 GET "/domains/$dom/config/ldap/user_tree_dn" "${auth[@]}"
expect_status "GET /domains/config/default (200)" 200 GET /domains/config/default "${auth[@]}"
expect_status "GET /domains/config/identity/driver/default (200)" 200 GET /domains/config/identity/driver/default "${auth[@]}"
cp "$out.b" "$out"
[ "$(json 'd["config"]')" = "{'driver': 'sql'}" ] && pass "the default driver is sql" || fail "the default driver is sql"
expect_status "DELETE /domains/{id}/config (204)" 204 DELETE "/domains/$dom/config" "${auth[@]}"
expect_status "GET the deleted config (404)" 404 GET "/domains/$dom/config" "${auth[@]}"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
