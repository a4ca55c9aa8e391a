#!/usr/bin/env bash
# Run tempest's compute tests that need Cinder (boot from volume, volume-backed resize, a
# resize with a volume attached, volume-backed rebuild, attach and detach) against a fresh
# `yunhe serve` with Cinder and Neutron on. run-compute.sh's suite declares Cinder absent, so tempest skips these there.
#   tests/tempest/run-compute-volumes.sh
# Same machinery, lists and env as run-compute.sh; YUNHE_TEMPEST_REGEX overrides the selection.
# Also the attach and detach tests (running, shelved and shelved-offloaded servers; the echo
# guest answers the ACPI eject as Linux does) and Cinder's extend of an attached volume.
# Also Nova's os-volumes/os-snapshots proxies below 2.36 (tempest.api.compute.volumes:
# test_volumes_get, test_volumes_list, test_volumes_negative, test_volume_snapshots).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf="$(mktemp)"
setup="$(mktemp)"
trap 'rm -f "$conf" "$setup"' EXIT
# Neutron on as in run-compute-network.sh: tempest's attach tests (and the volume extend test
# below) boot their servers on a network of their test project.
sed -e 's/^cinder = False$/cinder = True/' -e 's/^neutron = False$/neutron = True/' \
  "$here/compute.conf.in" > "$conf"
printf '\n[auth]\ncreate_isolated_networks = True\n' >> "$conf"
printf '#!/usr/bin/env bash\nset -e\n"%s/compute-setup.sh"\n"%s/network-setup.sh"\n' "$here" "$here" > "$setup"
chmod +x "$setup"
# Cinder as tests/tempest/volume.conf.in describes it.
sed -n '/^\[volume\]$/,/^disk_format/p' "$here/volume.conf.in" >> "$conf"
# Online extend of an attached volume (Cinder 3.42, Nova's volume-extended): its tempest test
# is a volume test that boots a server, so it runs here, where compute is on.
printf '\n[volume-feature-enabled]\nextend_attached_volume = True\n' >> "$conf"
default_regex='^tempest\.api\.(compute\.servers\.(test_create_server\.ServersTestBootFromVolume|test_server_actions\.ServerActionsTestOtherA\.test_(resize_volume_backed|rebuild_server_with_volume)|test_server_actions\.ServerActionsTestOtherB\.test_resize_server_revert_with_volume|test_server_actions\.ServerActionsV293)|compute\.volumes\.test_attach_volume\.(AttachVolumeTestJSON|AttachVolumeShelveTestJSON)|compute\.volumes\.(test_volumes_get|test_volumes_list|test_volumes_negative|test_volume_snapshots)|volume\.test_volumes_extend\.VolumesExtendAttachedTest)'
export YUNHE_TEMPEST_REGEX="${YUNHE_TEMPEST_REGEX:-$default_regex}"
export YUNHE_TEMPEST_SERVICE=compute
export YUNHE_TEMPEST_XF="$here/compute-expected-failures.txt"
export YUNHE_TEMPEST_NOT_APPLICABLE="$here/compute-not-applicable.txt"
export YUNHE_TEMPEST_GOAL=0.90
export YUNHE_TEMPEST_LIST_MAX=0.40
export YUNHE_TEMPEST_CONF_EXTRA="$conf"
export YUNHE_TEMPEST_SETUP="$setup"
export YUNHE_CPU_ALLOCATION_RATIO="${YUNHE_CPU_ALLOCATION_RATIO:-32}"
export YUNHE_TEMPEST_WORK="${YUNHE_TEMPEST_WORK:-$here/work/compute-volumes}"
"$here/run.sh"
