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
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export YUNHE_TEMPEST_SERVICE=network
export YUNHE_TEMPEST_REGEX="${YUNHE_TEMPEST_REGEX:-^tempest\.api\.network}"
export YUNHE_TEMPEST_XF="$here/network-expected-failures.txt"
export YUNHE_TEMPEST_NOT_APPLICABLE="$here/network-not-applicable.txt"
export YUNHE_TEMPEST_CONF_EXTRA="$here/network.conf.in"
export YUNHE_TEMPEST_SETUP="$here/network-setup.sh"
export YUNHE_TEMPEST_GOAL=0.90
export YUNHE_TEMPEST_LIST_MAX=0.15
export YUNHE_TEMPEST_WORK="${YUNHE_TEMPEST_WORK:-$here/work-network}"
exec "$here/run.sh" "$@"
