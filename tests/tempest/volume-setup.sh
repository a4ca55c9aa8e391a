#!/usr/bin/env bash
# Uploads the small raw image tempest.api.volume makes volumes from, and prints the
# tempest.conf settings naming it (run.sh appends them; YUNHE_TEMPEST_SETUP).
set -euo pipefail
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
head -c 1048576 /dev/urandom > "$tmp/disk.raw"
image="$(openstack image create --public --disk-format raw --container-format bare \
    --file "$tmp/disk.raw" tempest-volume-source -f value -c id)"
cat <<CONF

[compute]
image_ref = $image
image_ref_alt = $image
CONF
