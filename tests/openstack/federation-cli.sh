#!/usr/bin/env bash
# OS-FEDERATION with OpenID Connect, through the stock `openstack` CLI and keystoneauth's
# v3oidcpassword / v3oidcaccesstoken plugins, against a freshly started `yunhe serve` and a
# small OpenID provider of our own on 127.0.0.1 (tests/openstack/oidc_provider.py).
#   tests/openstack/federation-cli.sh
# Prints one line per check and ends with `N passed, M failed`; exits non-zero on failure.
# Env: YUNHE_BIN, YUNHE_VENV, YUNHE_CLI_LOG (as identity-cli.sh).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$("$here/venv.sh" | tail -n1)" || { echo "venv setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$venv/bin:$PATH"
py="$venv/bin/python"

. "$here/start-server.sh"
. "$here/lib.sh"

passed=0 failed=0
out="$(mktemp "${TMPDIR:-/tmp}/yunhe-fed.XXXXXX")"
yunhe_on_exit "rm -f '$out' '$out.h' '$out.b' '$out.port' '$out.rules'"
log="${YUNHE_CLI_LOG:-}"

pass() { passed=$((passed+1)); echo "PASS $1"; }
fail() {
    failed=$((failed+1)); echo "FAIL $1"
    if [ -s "$out" ]; then { cat "$out"; echo; } | sed -e '/^\r\?$/d' -e 's/^/    | /' | tail -n 15; fi
}
check() {
    local name="$1"; shift
    if "$@" >"$out" 2>&1; then pass "$name"; else fail "$name"; fi
    [ -n "$log" ] && { echo "== $name: $*"; cat "$out"; } >>"$log"
    return 0
}
json() { "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$out" "$1"; }
# is NAME EXPR: EXPR (Python on the JSON in $out, as `d`) must print True.
is() { if json "$2" 2>/dev/null | grep -qx True; then pass "$1"; else fail "$1"; fi; }
http() {
    local m="$1" p="$2"; shift 2
    curl -s -o "$out.b" -D "$out.h" -w '%{http_code}' --max-time 20 -X "$m" \
        -H 'Content-Type: application/json' "$@" "$KS$p"
}
expect_status() {
    local name="$1" want="$2"; shift 2
    local got; got="$(http "$@")"
    { echo "HTTP $got (want $want): $1 $2"; cat "$out.h" "$out.b" 2>/dev/null; } >"$out"
    if [ "$got" = "$want" ]; then pass "$name"; else fail "$name"; fi
    [ -n "$log" ] && { echo "== $name"; cat "$out"; echo; } >>"$log"
    return 0
}

# --- the OpenID provider (loopback only) -------------------------------------------
"$py" "$here/oidc_provider.py" --port-file "$out.port" --client-id yunhe --client-secret oidc-secret \
    --user alice:alice-pw:dev,ops --user carol:carol-pw:hr &
oidc_pid=$!
yunhe_on_exit "kill $oidc_pid 2>/dev/null; wait $oidc_pid 2>/dev/null"
for _ in $(seq 100); do [ -s "$out.port" ] && break; sleep 0.1; done
[ -s "$out.port" ] || { echo "FAIL OpenID provider start"; echo "0 passed, 1 failed"; exit 1; }
ISS="http://127.0.0.1:$(cat "$out.port")"
echo "# OpenID provider at $ISS"

if ! yunhe_start_server; then
    echo "FAIL server start"; echo "0 passed, 1 failed"; exit 1
fi
KS="$(yunhe_keystone_v3 "$(yunhe_openrc_get "$YUNHE_STATE/admin-openrc.sh" OS_AUTH_URL)")"
case "$KS" in http://127.0.0.1:*) ;; *) KS="$YUNHE_URL/identity/v3" ;; esac
echo "# keystone at $KS"
admin_token="$(openstack token issue -f value -c id 2>/dev/null)"

# --- the resources, as admin ---------------------------------------------------------
check "openstack group create devs" openstack group create --domain default devs -f json
check "openstack project create fedproj" openstack project create fedproj -f json
fedproj_id="$(json 'd["id"]' 2>/dev/null)"
check "openstack role add --group devs --project fedproj member" \
    openstack role add --group devs --group-domain default --project fedproj member

check "openstack identity provider create acme" \
    openstack identity provider create --remote-id "$ISS" --description "test OP" --enable acme -f json
is "the identity provider has its remote id and a domain of its own" \
    "d['remote_ids'] in (['$ISS'], '$ISS') and len(d['domain_id']) == 32 and d['enabled'] is True"
check "openstack identity provider list" openstack identity provider list -f json
is "identity provider list shows acme" "any(i['ID']=='acme' for i in d)"
check "openstack identity provider set --description" openstack identity provider set --description "ours" acme
check "openstack identity provider show acme" openstack identity provider show acme -f json
is "identity provider show reflects the set" "d['description']=='ours'"

# The OP's group "dev" gives the local group devs.
cat >"$out.rules" <<'RULES'
[{"local": [{"user": {"name": "{0}", "email": "{1}"}}],
  "remote": [{"type": "preferred_username"}, {"type": "email"}]},
 {"local": [{"group": {"name": "devs", "domain": {"id": "default"}}}],
  "remote": [{"type": "groups", "any_one_of": ["dev"]}]}]
RULES
check "openstack mapping create" openstack mapping create --rules "$out.rules" acme-map -f json
check "openstack mapping list" openstack mapping list -f json
is "mapping list shows acme-map" "any(m['ID']=='acme-map' for m in d)"
check "openstack mapping show" openstack mapping show acme-map -f json
check "openstack mapping set --rules" openstack mapping set --rules "$out.rules" acme-map
echo '[{"local": [], "remote": []}]' >"$out.b"
if openstack mapping create --rules "$out.b" bad-map >"$out" 2>&1; then
    fail "a mapping against Keystone's schema is refused"
else pass "a mapping against Keystone's schema is refused"; fi

check "openstack federation protocol create openid" \
    openstack federation protocol create --identity-provider acme --mapping acme-map openid -f json
check "openstack federation protocol list" openstack federation protocol list --identity-provider acme -f json
is "protocol list shows openid" "any(p['id']=='openid' for p in d)"
check "openstack federation protocol show" openstack federation protocol show --identity-provider acme openid -f json
# openstackclient's `federation protocol set` prints the protocol and then exits 1 (it
# returns the row from a plain Command, against Keystone too): judge it by the show after.
openstack federation protocol set --identity-provider acme --mapping acme-map openid >"$out" 2>&1
check "openstack federation protocol show after set" \
    openstack federation protocol show --identity-provider acme openid -f json
is "protocol set kept the mapping" "d['mapping']=='acme-map'"

check "openstack service provider create" openstack service provider create \
    --auth-url https://sp.example/identity/v3/OS-FEDERATION/identity_providers/us/protocols/saml2/auth \
    --service-provider-url https://sp.example/Shibboleth.sso/SAML2/ECP --enable sp1 -f json
check "openstack service provider list" openstack service provider list -f json
is "service provider list shows sp1" "any(s['ID']=='sp1' for s in d)"
check "openstack service provider set --disable" openstack service provider set --disable sp1
check "openstack service provider show" openstack service provider show sp1 -f json
is "service provider show reflects the set" "d['enabled'] is False and d['relay_state_prefix']=='ss:mem:'"

# --- OpenID Connect logins through keystoneauth --------------------------------------
oidc_env=(env -u OS_CLOUD -u OS_CLIENT_CONFIG_FILE OS_AUTH_URL="$KS" OS_IDENTITY_API_VERSION=3
    OS_IDENTITY_PROVIDER=acme OS_PROTOCOL=openid)
check "openstack --os-auth-type v3oidcpassword token issue (project fedproj)" "${oidc_env[@]}" \
    openstack --os-auth-type v3oidcpassword --os-client-id yunhe --os-client-secret oidc-secret \
    --os-discovery-endpoint "$ISS/.well-known/openid-configuration" --os-openid-scope openid \
    --os-username alice --os-password alice-pw \
    --os-project-name fedproj --os-project-domain-name Default token issue -f json
is "the OIDC token is scoped to fedproj" "d['project_id']=='$fedproj_id'"
fed_user="$(json 'd["user_id"]' 2>/dev/null)"

access_token="$(curl -s --max-time 10 "$ISS/mint?kind=good&user=alice" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
check "openstack --os-auth-type v3oidcaccesstoken token issue (project fedproj)" "${oidc_env[@]}" \
    openstack --os-auth-type v3oidcaccesstoken --os-access-token "$access_token" \
    --os-project-name fedproj --os-project-domain-name Default token issue -f json
is "the access-token login is the same shadow user" "d['user_id']=='$fed_user'"
check "the federated user can use its project (openstack project show)" "${oidc_env[@]}" \
    openstack --os-auth-type v3oidcaccesstoken --os-access-token "$access_token" \
    --os-project-name fedproj --os-project-domain-name Default project show "$fedproj_id" -f json

expect_status "POST .../protocols/openid/auth with a good token (201)" 201 \
    POST /OS-FEDERATION/identity_providers/acme/protocols/openid/auth -H "Authorization: Bearer $access_token"
cp "$out.b" "$out"
is "the unscoped token names the IdP, protocol and groups (OS-FEDERATION)" \
    "d['token']['user']['OS-FEDERATION']['identity_provider']['id']=='acme' and d['token']['user']['OS-FEDERATION']['protocol']['id']=='openid' and len(d['token']['user']['OS-FEDERATION']['groups'])==1"
unscoped="$(sed -n 's/^x-subject-token: *//Ip' "$out.h" | tr -d '\r')"
expect_status "GET /v3/OS-FEDERATION/projects with the federated token (200)" 200 \
    GET /OS-FEDERATION/projects -H "X-Auth-Token: $unscoped"
cp "$out.b" "$out"
is "OS-FEDERATION/projects lists fedproj" "[p['id'] for p in d['projects']]==['$fedproj_id']"
expect_status "GET /v3/OS-FEDERATION/domains with the federated token (200)" 200 \
    GET /OS-FEDERATION/domains -H "X-Auth-Token: $unscoped"

for kind in bad-signature wrong-issuer wrong-audience expired; do
    bad="$(curl -s --max-time 10 "$ISS/mint?kind=$kind&user=alice" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
    expect_status "a token with $kind is refused (401)" 401 \
        POST /OS-FEDERATION/identity_providers/acme/protocols/openid/auth -H "Authorization: Bearer $bad"
    if ! "${oidc_env[@]}" openstack --os-auth-type v3oidcaccesstoken --os-access-token "$bad" \
        --os-project-name fedproj --os-project-domain-name Default token issue >"$out" 2>&1 \
        && grep -Eq '401|Unauthorized|authenticat' "$out"; then
        pass "openstack v3oidcaccesstoken with $kind fails with 401"
    else fail "openstack v3oidcaccesstoken with $kind fails with 401"; fi
done
expect_status "no Authorization header is refused (401)" 401 \
    POST /OS-FEDERATION/identity_providers/acme/protocols/openid/auth
if ! "${oidc_env[@]}" openstack --os-auth-type v3oidcpassword --os-client-id yunhe \
    --os-client-secret oidc-secret --os-discovery-endpoint "$ISS/.well-known/openid-configuration" \
    --os-openid-scope openid --os-username carol --os-password carol-pw \
    --os-project-name fedproj --os-project-domain-name Default token issue >"$out" 2>&1; then
    pass "carol (not in dev) gets no token for fedproj"
else fail "carol (not in dev) gets no token for fedproj"; fi

# --- clean up through the CLI --------------------------------------------------------
check "openstack federation protocol delete" openstack federation protocol delete --identity-provider acme openid
check "openstack mapping delete" openstack mapping delete acme-map
check "openstack service provider delete" openstack service provider delete sp1
check "openstack identity provider delete" openstack identity provider delete acme
expect_status "the shadow user went with its identity provider (404)" 404 \
    GET "/users/$fed_user" -H "X-Auth-Token: $admin_token"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
