#!/usr/bin/env bash
# Run tempest's compute network-proxy tests (tempest.api.compute.security_groups and
# .floating_ips: os-security-groups, os-security-group-rules, os-floating-ips, the server's
# security groups, addSecurityGroup/removeSecurityGroup, addFloatingIp/removeFloatingIp) against
# a fresh `yunhe serve` with Neutron on. tempest runs them only when Neutron is available,
# which run-compute.sh's suite declares absent (its servers boot without networks); here
# tempest makes each test project its network, subnet and router, and network-setup.sh the
# external network `public` the floating IPs come from.
#   tests/tempest/run-compute-network.sh
# Same machinery, lists and env as run-compute.sh; YUNHE_TEMPEST_REGEX overrides the selection.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf="$(mktemp)"
setup="$(mktemp)"
trap 'rm -f "$conf" "$setup"' EXIT
sed 's/^neutron = False$/neutron = True/' "$here/compute.conf.in" > "$conf"
printf '\n[auth]\ncreate_isolated_networks = True\n' >> "$conf"
printf '#!/usr/bin/env bash\nset -e\n"%s/compute-setup.sh"\n"%s/network-setup.sh"\n' "$here" "$here" > "$setup"
chmod +x "$setup"
default_regex='^tempest\.api\.compute\.(security_groups|floating_ips|servers\.test_server_rescue)\.'
export YUNHE_TEMPEST_REGEX="${YUNHE_TEMPEST_REGEX:-$default_regex}"
export YUNHE_TEMPEST_SERVICE=compute
export YUNHE_TEMPEST_XF="$here/compute-expected-failures.txt"
export YUNHE_TEMPEST_NOT_APPLICABLE="$here/compute-not-applicable.txt"
export YUNHE_TEMPEST_GOAL=0.90
export YUNHE_TEMPEST_LIST_MAX=0.25
export YUNHE_TEMPEST_CONF_EXTRA="$conf"
export YUNHE_TEMPEST_SETUP="$setup"
export YUNHE_CPU_ALLOCATION_RATIO="${YUNHE_CPU_ALLOCATION_RATIO:-32}"
export YUNHE_TEMPEST_WORK="${YUNHE_TEMPEST_WORK:-$here/work/compute-network}"
"$here/run.sh"
