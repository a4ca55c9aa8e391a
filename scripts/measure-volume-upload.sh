#!/usr/bin/env bash
# Upload-to-image of a 1 GiB volume holding 10 MiB of data, as raw and as qcow2, against a
# fresh `yunhe serve` (target/release/yunhe, or YUNHE_BIN): prints, for each format, the
# time from the action's request to the image being `active` and the bytes Glance stores.
# The figures in docs/volume.md come from this script.
#   scripts/measure-volume-upload.sh [runs (default 3)]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runs="${1:-3}"
export YUNHE_TEST_TLS=0
. "$here/../tests/openstack/start-server.sh"
yunhe_start_server

api() { # METHOD PATH [BODY]
    curl -sf -X "$1" -H "X-Auth-Token: $token" -H "Content-Type: application/json" \
        -H "OpenStack-API-Version: volume 3.1" ${3:+-d "$3"} "$YUNHE_URL$2"
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

token="$(curl -sf -D - -o /dev/null -H "Content-Type: application/json" -d "{\"auth\": {\"identity\":
    {\"methods\": [\"password\"], \"password\": {\"user\": {\"name\": \"admin\", \"domain\": {\"id\":
    \"default\"}, \"password\": \"$YUNHE_ADMIN_PASSWORD\"}}}, \"scope\": {\"project\": {\"name\":
    \"admin\", \"domain\": {\"id\": \"default\"}}}}}" "$YUNHE_URL/identity/v3/auth/tokens" |
    tr -d '\r' | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p')"

vol="$(api POST /volume/v3/volumes '{"volume": {"size": 1, "name": "measure"}}' | field 'd["volume"]["id"]')"
until [ "$(api GET "/volume/v3/volumes/$vol" | field 'd["volume"]["status"]')" = available ]; do
    sleep 0.05
done
# 10 MiB of random data: 4 MiB at the start, 6 MiB in the middle.
file="$YUNHE_STATE/volumes/volume-$vol"
dd if=/dev/urandom of="$file" bs=1M count=4 conv=notrunc status=none
dd if=/dev/urandom of="$file" bs=1M count=6 seek=512 conv=notrunc status=none

for format in raw qcow2; do
    for run in $(seq 1 "$runs"); do
        start="$(date +%s.%N)"
        image="$(api POST "/volume/v3/volumes/$vol/action" \
            "{\"os-volume_upload_image\": {\"image_name\": \"m-$format-$run\", \"disk_format\": \"$format\"}}" |
            field 'd["os-volume_upload_image"]["image_id"]')"
        until [ "$(api GET "/image/v2/images/$image" | field 'd["status"]')" = active ]; do
            sleep 0.01
        done
        end="$(date +%s.%N)"
        size="$(api GET "/image/v2/images/$image" | field 'd["size"]')"
        printf '%-5s run %d: %6.3f s, %11d bytes stored\n' "$format" "$run" \
            "$(echo "$end - $start" | bc)" "$size"
        until [ "$(api GET "/volume/v3/volumes/$vol" | field 'd["volume"]["status"]')" = available ]; do
            sleep 0.01
        done
        api DELETE "/image/v2/images/$image" >/dev/null
    done
done
