#!/usr/bin/env bash
# Uploads the guest images tempest's server tests boot and prints the tempest.conf
# settings naming them. Run by run.sh (YUNHE_TEMPEST_SETUP) with the server's
# OS_CLIENT_CONFIG_FILE / OS_CLOUD in the environment.
#
# The guest is yunhe's built-in echo guest (a PVH kernel that boots in milliseconds
# under this workplace's emulated KVM and powers off on the ACPI power button): an
# aki image, and two raw 1 MiB disk images that name it as kernel_id (tempest's
# image_ref and image_ref_alt must differ for the rebuild tests).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${YUNHE_BIN:-$repo/target/release/yunhe}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" vm guest echo -o "$tmp/echo.elf"
truncate -s 1M "$tmp/disk.raw"
kernel="$(openstack image create --public --disk-format aki --container-format aki \
    --file "$tmp/echo.elf" tempest-echo-kernel -f value -c id)"
image_id() {
    openstack image create --public --disk-format raw --container-format bare \
        --property kernel_id="$kernel" --property os_command_line=console=ttyS0 \
        --file "$tmp/disk.raw" "$1" -f value -c id
}
image="$(image_id tempest-echo)"
image_alt="$(image_id tempest-echo-alt)"
cat <<CONF

# Written by tests/tempest/compute-setup.sh.
[compute]
image_ref = $image
image_ref_alt = $image_alt
flavor_ref = 42
flavor_ref_alt = 84
min_microversion = 2.1
max_microversion = 2.96
region = RegionOne
endpoint_type = publicURL
fixed_network_name =
build_timeout = 60
CONF
