#!/usr/bin/env bash
# Glance with the stock clients (issue 16): the tasks API, the image cache API,
# metadef tags and resource types, against a freshly started `yunhe serve`.
#   tests/openstack/image-cli.sh
# Prints one line per check and ends with `N passed, M failed`; exits non-zero on failure.
# Env: YUNHE_BIN (server binary), YUNHE_VENV (venv path), YUNHE_CLI_LOG (keep the
# commands' output there).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$("$here/venv.sh" | tail -n1)" || { echo "venv setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$venv/bin:$PATH"
py="$venv/bin/python"

. "$here/start-server.sh"
. "$here/lib.sh"

passed=0 failed=0
out="$(mktemp "${TMPDIR:-/tmp}/yunhe-cli.XXXXXX")"
work="$(mktemp -d "${TMPDIR:-/tmp}/yunhe-image-cli.XXXXXX")"
yunhe_on_exit "rm -rf '$out' '$work'"
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
# refuse NAME CMD...: the command must fail.
refuse() {
    local name="$1"; shift
    if "$@" >"$out" 2>&1; then fail "$name"; else pass "$name"; fi
    return 0
}
# json EXPR: a Python expression on the JSON in $out (as `d`), keys lower-cased.
json() { "$py" -c 'import json,sys
def low(x):
    if isinstance(x, dict): return {k.lower().replace(" ", "_"): low(v) for k, v in x.items()}
    if isinstance(x, list): return [low(v) for v in x]
    return x
d=low(json.load(open(sys.argv[1]))); print(eval(sys.argv[2]))' "$out" "$1"; }
# expect NAME EXPR: EXPR (on $out) must print True.
expect() { if json "$2" 2>/dev/null | grep -qx True; then pass "$1"; else fail "$1"; fi; }

if ! yunhe_start_server; then
    echo "FAIL server start"; echo "0 passed, 1 failed"; exit 1
fi

head -c 1048576 /dev/urandom >"$work/data.raw"

# --- tasks: an interoperable import makes one; /v2/tasks lists and shows it ------
check "openstack image create --import (glance-direct)" \
    openstack image create --import --disk-format raw --container-format bare \
    --file "$work/data.raw" imported -f json
image_id="$(json 'd["id"]' 2>/dev/null)"
for _ in $(seq 1 50); do
    openstack image show "$image_id" -f json >"$out" 2>&1
    json 'd["status"]' 2>/dev/null | grep -qx active && break
    sleep 0.2
done
expect "the imported image becomes active" 'd["status"]=="active"'
check "openstack image task list" openstack image task list -f json
expect "task list shows the import task" 'len(d) >= 1 and d[0]["type"]=="api_image_import" and d[0]["status"]=="success"'
task_id="$(json 'd[0]["id"]' 2>/dev/null)"
check "openstack image task show" openstack image task show "$task_id" -f json
expect "task show names the image" "d[\"result\"][\"image_id\"]==\"$image_id\" and d[\"status\"]==\"success\""
check "openstack image task list --status failure (none)" openstack image task list --status failure -f json
expect "no failed tasks" 'len(d)==0'
check "SDK: create_task answers 400 (no URL import)" "$py" - <<'PY'
import openstack
from openstack import exceptions
c = openstack.connect()
try:
    c.image.create_task(type="import", input={"import_from": "http://example.invalid/x.qcow2",
                                             "import_from_format": "qcow2",
                                             "image_properties": {"disk_format": "qcow2",
                                                                  "container_format": "bare"}})
except exceptions.BadRequestException:
    raise SystemExit(0)
raise SystemExit("POST /v2/tasks did not answer 400")
PY

# --- the image cache: queue, cached, hits on download, delete, clear -------------
check "openstack cached image list (empty)" openstack cached image list -f json
expect "nothing cached yet" 'len(d)==0'
check "openstack cached image queue" openstack cached image queue "$image_id"
cached=no
for _ in $(seq 1 50); do
    openstack cached image list -f json >"$out" 2>&1
    if json "any(i[\"id\"]==\"$image_id\" and i[\"state\"]==\"cached\" for i in d)" 2>/dev/null | grep -qx True; then
        cached=yes; break
    fi
    sleep 0.2
done
if [ "$cached" = yes ]; then pass "the queued image is cached"; else fail "the queued image is cached"; fi
check "openstack image save (served from the cache)" openstack image save --file "$work/back.raw" "$image_id"
if cmp -s "$work/data.raw" "$work/back.raw"; then pass "the cached copy is the image's data"
else fail "the cached copy is the image's data"; fi
check "openstack cached image list (a hit)" openstack cached image list -f json
expect "the download counted one hit" "[i[\"hits\"] for i in d if i[\"id\"]==\"$image_id\"]==[1]"
check "SDK: queueing an image without data answers 400" "$py" - <<'PY'
import openstack
from openstack import exceptions
c = openstack.connect()
queued = c.image.post("/images", json={"name": "no-data"}).json()
assert queued["status"] == "queued", queued
try:
    c.image.queue_image(queued["id"])
except exceptions.BadRequestException:
    raise SystemExit(0)
raise SystemExit("PUT /v2/cache/{id} of a queued image did not answer 400")
PY
check "openstack cached image delete" openstack cached image delete "$image_id"
check "openstack cached image list (after delete)" openstack cached image list -f json
expect "the image left the cache" 'len(d)==0'
check "openstack cached image queue (again)" openstack cached image queue "$image_id"
check "openstack cached image clear" openstack cached image clear
check "openstack cached image list (after clear)" openstack cached image list -f json
expect "the cache and queue are empty" 'len(d)==0'

# --- metadefs: tags as objects with names, resource types ------------------------
check "openstack image metadef namespace create" \
    openstack image metadef namespace create --public yunhe-cli-ns -f json
# (openstackclient's `set` PUTs the namespace, so it names --public again.)
check "openstack image metadef namespace set --public --tag alpha --tag beta" \
    openstack image metadef namespace set --public --tag alpha --tag beta yunhe-cli-ns
check "openstack image metadef namespace show" openstack image metadef namespace show yunhe-cli-ns -f json
expect "namespace show lists the tags and keeps it public" \
    '"alpha" in str(d["tags"]) and "beta" in str(d["tags"]) and d["visibility"]=="public"'
check "SDK: the namespace's tags are objects with a name" "$py" - <<'PY'
import openstack
c = openstack.connect()
tags = c.image.get("/metadefs/namespaces/yunhe-cli-ns/tags").json()["tags"]
assert sorted(t["name"] for t in tags) == ["alpha", "beta"], tags
ns = c.image.get_metadef_namespace("yunhe-cli-ns")
assert sorted(t["name"] for t in ns.tags) == ["alpha", "beta"], ns.tags
ns.add_tag(c.image, "gamma")
tags = c.image.get("/metadefs/namespaces/yunhe-cli-ns/tags/gamma").json()
assert tags["name"] == "gamma", tags
PY
check "openstack image metadef resource type list" openstack image metadef resource type list -f json
expect "resource types include OS::Glance::Image and OS::Nova::Flavor" \
    '{"OS::Glance::Image", "OS::Nova::Flavor"} <= {r["name"] for r in d}'
check "openstack image metadef resource type association create" \
    openstack image metadef resource type association create yunhe-cli-ns OS::Nova::Flavor -f json
check "openstack image metadef resource type association list" \
    openstack image metadef resource type association list yunhe-cli-ns -f json
expect "the association is listed" '[r["name"] for r in d]==["OS::Nova::Flavor"]'
check "openstack image metadef namespace delete" openstack image metadef namespace delete yunhe-cli-ns

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
