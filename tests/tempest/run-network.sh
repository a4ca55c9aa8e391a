#!/usr/bin/env bash
# Run tempest's tempest.api.network tests against a fresh `yunhe serve`:
#   tests/tempest/run-network.sh
# The machinery is run.sh's; this sets the regex, Neutron's expected-failure list
# (tests/tempest/network-expected-failures.txt, each entry with its reason),
# [service_available] neutron = True and [network-feature-enabled] api_extensions =
# exactly the extensions /v2.0/extensions lists (network.conf.in), and network-setup.sh
# makes the external network `public` tempest's floating IP and router tests need.
# Bar: >= 90% of the tests not on the list pass, list <= 15% of the run. Tests tempest
# skips because an extension is absent (network-not-applicable.txt) are reported apart.
# Workspace: ${YUNHE_TEMPEST_WORK:-<repo>/tests/tempest/work-network}. Other env as run.sh.
# Dataplane: as root, where network and mount namespaces can be made, the run happens inside
# a fresh pair of them (as tests/network-dataplane.sh does) with `serve --dataplane`
# (YUNHE_DATAPLANE=true), so router interfaces and ports go ACTIVE as under Neutron's agents;
# nothing of the host's network is touched and all of it goes when the run ends. Elsewhere,
# or with YUNHE_TEMPEST_DATAPLANE=0, serve runs without it and the entries of the list
# marked "[no dataplane]" (tests that wait for a port to go ACTIVE) are excluded too.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${YH_TN_INNER:-}" ] && [ "${YUNHE_TEMPEST_DATAPLANE:-1}" = 1 ] && [ "$(id -u)" = 0 ] \
    && unshare -m -n --propagation private true 2>/dev/null; then
    exec env YH_TN_INNER=1 unshare -m -n --propagation private bash "$0" "$@"
fi
xf_all="$here/network-expected-failures.txt"
if [ -n "${YH_TN_INNER:-}" ]; then
    # Inside our own namespaces: named namespaces on a private tmpfs, loopback up.
    mkdir -p /run/netns
    mount -t tmpfs -o size=1m yhtempest /run/netns
    ip link set lo up
    export YUNHE_DATAPLANE=true
    xf_run="$(mktemp "${TMPDIR:-/tmp}/yunhe-tempest-xf.XXXXXX")"
    trap 'rm -f "$xf_run"' EXIT
    grep -v '\[no dataplane\]' "$xf_all" > "$xf_run"
    echo "# serve --dataplane in a network namespace of this run's own"
else
    xf_run="$xf_all"
    export YUNHE_DATAPLANE=false
    echo "# serve without the dataplane: the list's [no dataplane] entries are excluded too"
fi
export YUNHE_TEMPEST_SERVICE=network
export YUNHE_TEMPEST_REGEX="${YUNHE_TEMPEST_REGEX:-^tempest\.api\.network}"
export YUNHE_TEMPEST_XF="$xf_run"
export YUNHE_TEMPEST_NOT_APPLICABLE="$here/network-not-applicable.txt"
export YUNHE_TEMPEST_CONF_EXTRA="$here/network.conf.in"
export YUNHE_TEMPEST_SETUP="$here/network-setup.sh"
export YUNHE_TEMPEST_GOAL=0.90
export YUNHE_TEMPEST_LIST_MAX=0.15
export YUNHE_TEMPEST_WORK="${YUNHE_TEMPEST_WORK:-$here/work-network}"
"$here/run.sh" "$@"
