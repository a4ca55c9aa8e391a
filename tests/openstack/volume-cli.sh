#!/usr/bin/env bash
# Cinder with the stock clients (issue 14): volumes, snapshots, types, QoS, quotas,
# limits, availability zones, services, backups, transfers, upload to an image (raw and qcow2), an online extend (3.42) of a volume
# attached to an echo server, swap and ephemeral disks (`server create --swap --ephemeral`) and
# the rebuild of a volume-backed server with `--reimage-boot-volume` (2.93) (these with /dev/kvm),
# and bad input, against a fresh `yunhe serve`.
#   tests/openstack/volume-cli.sh
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
work="$(mktemp -d "${TMPDIR:-/tmp}/yunhe-volume-cli.XXXXXX")"
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

# wait_status KIND ID STATUS: polls `openstack KIND show` until the status.
wait_status() {
    local i
    for i in $(seq 1 100); do
        openstack $1 show "$2" -f json >"$out" 2>&1
        json 'd["status"]' 2>/dev/null | grep -qx "$3" && return 0
        sleep 0.2
    done
    return 1
}
wait_gone() {
    local i
    for i in $(seq 1 100); do
        openstack $1 show "$2" >/dev/null 2>&1 || return 0
        sleep 0.2
    done
    return 1
}

# --- service discovery ------------------------------------------------------------
check "openstack catalog show block-storage" openstack catalog show block-storage -f json
expect "the catalog names cinder at /volume/v3" '"/volume/v3" in str(d["endpoints"])'
check "openstack versions show --service block-storage" openstack versions show --service block-storage -f json
expect "version 3.71 is current" 'any(v["max_microversion"]=="3.71" for v in d)'

# --- volumes ----------------------------------------------------------------------
check "openstack volume create --size 1" openstack volume create --size 1 --property tier=gold data -f json
vol="$(json 'd["id"]' 2>/dev/null)"
check "the volume becomes available" wait_status volume "$vol" available
expect "the volume is 1 GiB of type __DEFAULT__" 'd["size"]==1 and d["type"]=="__DEFAULT__"'
check "openstack volume list" openstack volume list -f json
expect "the list shows it" "[v[\"name\"] for v in d]==[\"data\"]"
check "openstack volume list --long --status available" openstack volume list --long --status available -f json
expect "the long list shows its properties" '"gold" in str(d[0]["properties"])'
check "openstack volume set --name --description --property" \
    openstack volume set --name data2 --description "a data disk" --property k=v "$vol"
check "openstack volume set --bootable --read-only" openstack volume set --bootable --read-only "$vol"
check "openstack volume show" openstack volume show data2 -f json
expect "bootable, read-only, renamed, with both properties" \
    'str(d["bootable"]).lower()=="true" and "readonly" in str(d["properties"]) and d["name"]=="data2" and "gold" in str(d["properties"])'
check "openstack volume set --read-write" openstack volume set --read-write "$vol"
check "openstack volume set --size 2 (extend)" openstack volume set --size 2 "$vol"
check "the extended volume is 2 GiB" wait_status volume "$vol" available
expect "size 2" 'd["size"]==2'
check "openstack volume set --image-property" openstack volume set --image-property os_type=linux "$vol"
check "openstack volume unset --image-property" openstack volume unset --image-property os_type "$vol"
check "openstack volume unset --property" openstack volume unset --property k "$vol"

# --- upload to image (os-volume_upload_image) -------------------------------------
check "openstack volume set --image-property hw_disk_bus=virtio" \
    openstack volume set --image-property hw_disk_bus=virtio "$vol"
check "openstack image create --volume" \
    openstack --os-volume-api-version 3.1 image create --volume "$vol" --disk-format raw from-vol -f json
expect "the answer is Cinder's: uploading, raw, bare, private" \
    'd["status"]=="uploading" and d["disk_format"]=="raw" and d["container_format"]=="bare" and d["visibility"]=="private" and d["volume_type"]=="__DEFAULT__"'
upimg="$(json 'd["image_id"]' 2>/dev/null)"
# The copy and Glance's digests of 2 GiB: allow two minutes on a loaded machine.
wait_image_active() {
    local i
    for i in $(seq 1 600); do
        openstack image show "$1" -f json >"$out" 2>&1
        json 'd["status"]' 2>/dev/null | grep -qx active && return 0
        sleep 0.2
    done
    return 1
}
check "the image becomes active" wait_image_active "$upimg"
expect "the image holds the whole 2 GiB volume with its image property" \
    'd["size"]==2*1024**3 and d["disk_format"]=="raw" and len(d["checksum"])==32 and "hw_disk_bus" in str(d["properties"])'
check "the volume is available again" wait_status volume "$vol" available
check "openstack image delete from-vol" openstack image delete "$upimg"
check "openstack image create --volume --disk-format qcow2" \
    openstack image create --volume "$vol" --disk-format qcow2 from-vol-qcow2 -f json
expect "the answer says qcow2" 'd["status"]=="uploading" and d["disk_format"]=="qcow2"'
qimg="$(json 'd["image_id"]' 2>/dev/null)"
check "the qcow2 image becomes active" wait_image_active "$qimg"
expect "the qcow2 image is small (data clusters only) and its disk is the volume's 2 GiB" \
    'd["disk_format"]=="qcow2" and d["size"] < 64*1024**2 and d["virtual_size"]==2*1024**3'
check "the volume is available again (qcow2)" wait_status volume "$vol" available
refuse "a vmdk upload is refused (raw and qcow2 only)" openstack image create --volume "$vol" --disk-format vmdk q
check "openstack image delete from-vol-qcow2" openstack image delete "$qimg"

# --- snapshots and clones ---------------------------------------------------------
check "openstack volume snapshot create" openstack volume snapshot create --volume "$vol" snap1 -f json
snap="$(json 'd["id"]' 2>/dev/null)"
check "the snapshot becomes available" wait_status "volume snapshot" "$snap" available
check "openstack volume snapshot list" openstack volume snapshot list -f json
expect "the snapshot is listed" '[s["name"] for s in d]==["snap1"]'
check "openstack volume snapshot set --name --property" openstack volume snapshot set --name snap2 --property a=b "$snap"
check "openstack volume create --snapshot" openstack volume create --snapshot "$snap" --size 3 from-snap -f json
from_snap="$(json 'd["id"]' 2>/dev/null)"
check "the volume from the snapshot becomes available" wait_status volume "$from_snap" available
expect "it is 3 GiB" 'd["size"]==3'
check "openstack volume create --source" openstack volume create --source "$vol" clone -f json
clone="$(json 'd["id"]' 2>/dev/null)"
check "the clone becomes available" wait_status volume "$clone" available
refuse "deleting a volume with snapshots is refused" openstack volume delete "$vol"
check "openstack volume snapshot delete" openstack volume snapshot delete "$snap"
check "the snapshot goes" wait_gone "volume snapshot" "$snap"

# --- types, QoS -------------------------------------------------------------------
check "openstack volume type create --private --property" \
    openstack volume type create --private --property speed=high fast -f json
check "openstack volume type list --long" openstack volume type list --long -f json
expect "both types are listed" '{"__DEFAULT__", "fast"} <= {t["name"] for t in d}'
check "openstack volume type set --project admin" openstack volume type set --project admin fast
check "openstack volume type show" openstack volume type show fast -f json
expect "the private type lists its project access" 'd["is_public"] is False and len(d["access_project_ids"])==1'
check "openstack volume qos create" openstack volume qos create --consumer front-end --property read_iops_sec=100 gold -f json
check "openstack volume qos associate" openstack volume qos associate gold fast
check "openstack volume qos show" openstack volume qos show gold -f json
expect "the QoS is associated with the type" '"fast" in str(d["associations"])'
check "openstack volume create --type fast" openstack volume create --size 1 --type fast typed -f json
typed="$(json 'd["id"]' 2>/dev/null)"
check "the typed volume becomes available" wait_status volume "$typed" available
refuse "a type in use is not deleted" openstack volume type delete fast

# --- quotas, limits, zones, services, pools ---------------------------------------
check "openstack quota set --volumes 5 --gigabytes 50" openstack quota set --volumes 5 --gigabytes 50 admin
check "openstack quota show" openstack quota show admin -f json
expect "the volume quotas are set" 'any(r.get("resource")=="volumes" and r.get("limit")==5 for r in d) if isinstance(d, list) else d.get("volumes")==5'
check "openstack limits show --absolute" openstack limits show --absolute -f json
expect "totalVolumesUsed counts 4 volumes" 'any(r["name"] in ("totalVolumesUsed", "total_volumes_used") and r["value"]==4 for r in d)'
refuse "a sixth, too big volume breaks the gigabytes quota" openstack volume create --size 60 toobig
check "openstack availability zone list --volume" openstack availability zone list --volume -f json
expect "zone nova is available" 'd[0]["zone_name"]=="nova"'
check "openstack volume service list" openstack volume service list -f json
expect "scheduler, volume and backup services are up" \
    'sorted(s["binary"] for s in d)==["cinder-backup", "cinder-scheduler", "cinder-volume"] and all(s["state"]=="up" for s in d)'
check "openstack volume backend pool list --long" openstack volume backend pool list --long -f json
expect "the pool reports capacity" '"yunhe@file#file" in str(d) and "total_capacity_gb" in str(d) and "provisioned_capacity_gb" in str(d)'

# --- bad input --------------------------------------------------------------------
refuse "size 0 is refused" openstack volume create --size 0 zero
refuse "an unknown type is refused" openstack volume create --size 1 --type nosuch bad
refuse "an unknown availability zone is refused" openstack volume create --size 1 --availability-zone mars bad
refuse "shrinking is refused" openstack volume set --size 1 "$vol"
refuse "an unknown volume is not shown" openstack volume show 00000000-0000-0000-0000-000000000000

# --- backups ----------------------------------------------------------------------
check "openstack volume backup create" openstack volume backup create --name full "$typed" -f json
full="$(json 'd["id"]' 2>/dev/null)"
check "the backup becomes available" wait_status "volume backup" "$full" available
check "the volume is available again" wait_status volume "$typed" available
check "openstack volume backup create --incremental" \
    openstack volume backup create --incremental --name incr "$typed" -f json
incr="$(json 'd["id"]' 2>/dev/null)"
check "the incremental backup becomes available" wait_status "volume backup" "$incr" available
expect "it is incremental" 'str(d["is_incremental"]).lower()=="true"'
check "openstack volume backup list" openstack volume backup list -f json
expect "both backups are listed" '{"full", "incr"} <= {b["name"] for b in d}'
refuse "a backup with an incremental on it is not deleted" openstack volume backup delete "$full"
check "openstack volume backup restore (to a new volume)" openstack volume backup restore "$incr" restored -f json
check "the restored volume becomes available" wait_status volume restored available
expect "it has the backup's size" 'd["size"]==1'
check "openstack volume backup restore --force (over an existing volume)" \
    openstack volume backup restore --force "$full" restored -f json
check "the backup is available after the restore" wait_status "volume backup" "$full" available
check "the volume is available after the restore" wait_status volume restored available
check "openstack volume backup record export" openstack volume backup record export "$full" -f json
expect "the record names the posix driver" '"posix" in str(d)'
check "openstack volume backup set --name (3.9)" \
    openstack --os-volume-api-version 3.9 volume backup set --name incr2 "$incr"
check "openstack volume backup show" openstack volume backup show "$incr" -f json
expect "it is renamed" 'd["name"]=="incr2"'
check "openstack volume backup delete (the incremental)" openstack volume backup delete "$incr"
check "the incremental goes" wait_gone "volume backup" "$incr"
check "openstack volume backup delete (the full one)" openstack volume backup delete "$full"
check "the full backup goes" wait_gone "volume backup" "$full"
check "openstack volume delete (the restored volume)" openstack volume delete restored

# --- transfers --------------------------------------------------------------------
check "openstack volume transfer request create" openstack volume transfer request create --name tr1 "$from_snap" -f json
tr="$(json 'd["id"]' 2>/dev/null)"
key="$(json 'd["auth_key"]' 2>/dev/null)"
check "the volume awaits the transfer" wait_status volume "$from_snap" awaiting-transfer
check "openstack volume transfer request list" openstack volume transfer request list -f json
expect "the request is listed" '[t["name"] for t in d]==["tr1"]'
check "openstack volume transfer request show" openstack volume transfer request show "$tr" -f json
refuse "a wrong auth key is refused" openstack volume transfer request accept --auth-key 0000000000000000 "$tr"
check "openstack volume transfer request accept" openstack volume transfer request accept --auth-key "$key" "$tr" -f json
check "the accepted volume is available" wait_status volume "$from_snap" available
check "openstack --os-volume-api-version 3.55 volume transfer request create" \
    openstack --os-volume-api-version 3.55 volume transfer request create --no-snapshots "$from_snap" -f json
tr="$(json 'd["id"]' 2>/dev/null)"
check "openstack volume transfer request delete" openstack volume transfer request delete "$tr"
check "the volume is available again" wait_status volume "$from_snap" available

# --- attachments API (3.27; attaching to a server needs Nova's hotplug: later) -------
check "openstack --os-volume-api-version 3.27 volume attachment list" \
    openstack --os-volume-api-version 3.27 volume attachment list -f json
expect "no attachments yet" 'd==[]'

# --- online extend (3.42) of a volume attached to a running echo server ------------
if { : <>/dev/kvm; } 2>/dev/null; then
    bin="${YUNHE_BIN:-$_yunhe_repo/target/release/yunhe}"
    check "yunhe vm guest echo -o echo.elf" "$bin" vm guest echo -o "$work/echo.elf"
    check "a 1 MiB raw disk" truncate -s 1M "$work/disk.raw"
    check "openstack image create --disk-format aki echo-k" \
        openstack image create --disk-format aki --container-format aki --file "$work/echo.elf" echo-k -f json
    echo_k="$(json 'd["id"]' 2>/dev/null)"
    check "openstack image create --property kernel_id=<echo-k> echo-img" \
        openstack image create --disk-format raw --container-format bare --property "kernel_id=$echo_k" \
        --file "$work/disk.raw" echo-img -f json
    check "openstack server create --nic none --wait ext-vm" \
        openstack server create --image echo-img --flavor m1.nano --nic none --wait ext-vm -f json
    check "openstack volume create --size 1 grow" openstack volume create --size 1 grow -f json
    grow="$(json 'd["id"]' 2>/dev/null)"
    check "grow is available" wait_status volume "$grow" available
    check "openstack server add volume ext-vm grow" openstack server add volume ext-vm "$grow"
    check "grow is in-use" wait_status volume "$grow" in-use
    # (Without --os-volume-api-version the client takes the newest both sides know; the
    # client refuses below 3.42 before asking, Cinder's own 400 is in tests/compute_volumes.rs.)
    refuse "openstack --os-volume-api-version 3.41 volume set --size 2 of an in-use volume" \
        openstack --os-volume-api-version 3.41 volume set --size 2 "$grow"
    check "grow stays 1 GiB" openstack volume show "$grow" -f json
    expect "size 1" 'd["size"]==1'
    check "openstack --os-volume-api-version 3.42 volume set --size 2 (online extend)" \
        openstack --os-volume-api-version 3.42 volume set --size 2 "$grow"
    check "grow is in-use again" wait_status volume "$grow" in-use
    expect "grow is 2 GiB" 'd["size"]==2'
    # wait_action SERVER ACTION: until the server's instance actions have ACTION.
    wait_action() {
        local i
        for i in $(seq 1 50); do
            openstack server event list "$1" -f json >"$out" 2>&1
            json "'$2' in [e['action'] for e in d]" 2>/dev/null | grep -qx True && return 0
            sleep 0.2
        done
        return 1
    }
    check "Nova recorded extend_volume for ext-vm" wait_action ext-vm extend_volume

    # --- swap and ephemeral disks; rebuild of a volume-backed server at 2.93 --------
    nano_ram="$(openstack flavor show m1.nano -f value -c ram 2>/dev/null)"
    check "openstack flavor create --ephemeral 1 --swap 16 local-disks" \
        openstack flavor create --ram "${nano_ram:-128}" --disk 1 --vcpus 1 --ephemeral 1 --swap 16 \
        local-disks -f json
    expect "the flavor has 16 MiB of swap and a 1 GiB ephemeral disk" \
        'd["swap"]==16 and d.get("os-flv-ext-data:ephemeral", d.get("ephemeral"))==1'
    refuse "openstack server create --swap 32 (more than the flavor's 16)" \
        openstack server create --image echo-img --flavor local-disks --swap 32 --nic none local-bad
    refuse "openstack server create --ephemeral size=2 (more than the flavor's 1)" \
        openstack server create --image echo-img --flavor local-disks --ephemeral size=2 --nic none local-bad
    check "openstack server create --swap 8 --ephemeral size=1 --wait local-vm" \
        openstack server create --image echo-img --flavor local-disks --swap 8 --ephemeral size=1 \
        --nic none --wait local-vm -f json
    expect "local-vm is ACTIVE" 'd["status"]=="ACTIVE"'
    check "openstack --os-compute-api-version 2.48 server show --diagnostics local-vm" \
        openstack --os-compute-api-version 2.48 server show --diagnostics local-vm -f json
    expect "the VMM has the root, ephemeral and swap disks" 'd["num_disks"]>=3'
    check "openstack server delete --wait local-vm" openstack server delete --wait local-vm
    check "openstack flavor delete local-disks" openstack flavor delete local-disks

    check "openstack server delete --wait ext-vm" openstack server delete --wait ext-vm
    check "grow is available once ext-vm is gone" wait_status volume "$grow" available
    check "openstack volume delete grow" openstack volume delete "$grow"
    check "grow goes" wait_gone volume "$grow"
    # (After grow: the quota set above allows 5 volumes.)
    check "openstack volume create --image echo-img --size 1 bfv-root" \
        openstack volume create --image echo-img --size 1 bfv-root -f json
    bfv_root="$(json 'd["id"]' 2>/dev/null)"
    check "bfv-root is available" wait_status volume "$bfv_root" available
    check "openstack server create --volume bfv-root --wait bfv-vm" \
        openstack server create --volume "$bfv_root" --flavor m1.nano --nic none --wait bfv-vm -f json
    { printf 'REIMAGED'; } >"$work/disk2.raw"
    check "a second 1 MiB raw disk" truncate -s 1M "$work/disk2.raw"
    check "openstack image create echo-img2" \
        openstack image create --disk-format raw --container-format bare --property "kernel_id=$echo_k" \
        --file "$work/disk2.raw" echo-img2 -f json
    img2="$(json 'd["id"]' 2>/dev/null)"
    refuse "openstack --os-compute-api-version 2.92 server rebuild --image echo-img2 (another image)" \
        openstack --os-compute-api-version 2.92 server rebuild --image echo-img2 --wait bfv-vm
    refuse "openstack --os-compute-api-version 2.93 server rebuild without --reimage-boot-volume" \
        openstack --os-compute-api-version 2.93 server rebuild --image echo-img2 --wait bfv-vm
    check "openstack --os-compute-api-version 2.93 server rebuild --reimage-boot-volume --wait bfv-vm" \
        openstack --os-compute-api-version 2.93 server rebuild --image echo-img2 --reimage-boot-volume \
        --wait bfv-vm -f json
    check "openstack server show bfv-vm" openstack server show bfv-vm -f json
    expect "bfv-vm is ACTIVE" 'd["status"]=="ACTIVE"'
    check "openstack volume show bfv-root" openstack volume show "$bfv_root" -f json
    expect "bfv-root is in-use and came from echo-img2" \
        'd["status"]=="in-use" and "'"$img2"'" in str(d["volume_image_metadata"])'
    check "openstack server delete --wait bfv-vm" openstack server delete --wait bfv-vm
    check "bfv-root is available once bfv-vm is gone" wait_status volume "$bfv_root" available
    check "openstack volume delete bfv-root" openstack volume delete "$bfv_root"
    check "openstack image delete echo-img2" openstack image delete echo-img2
    check "openstack image delete echo-img echo-k" openstack image delete echo-img echo-k
else
    echo "SKIP online extend: /dev/kvm is missing or not accessible"
fi

# --- admin actions and delete -----------------------------------------------------
check "openstack volume set --state error (reset-status)" openstack volume set --state error "$clone"
check "openstack volume delete --force" openstack volume delete --force "$clone"
check "openstack volume delete" openstack volume delete "$vol" "$from_snap" "$typed"
for v in "$vol" "$from_snap" "$typed" "$clone"; do
    check "volume $v goes" wait_gone volume "$v"
done
check "openstack volume type delete" openstack volume type delete fast
check "openstack volume qos delete" openstack volume qos delete gold

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
