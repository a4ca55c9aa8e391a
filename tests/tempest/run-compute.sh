#!/usr/bin/env bash
# Run tempest's tempest.api.compute tests (servers on the echo guest included) against a
# fresh `yunhe serve`; compute-setup.sh uploads the guest images tempest boots.
#   tests/tempest/run-compute.sh
# Same machinery as run.sh (workspace, venv, summary); tests listed in
# tests/tempest/compute-expected-failures.txt are excluded.
# Env: as run.sh; YUNHE_TEMPEST_REGEX overrides the test selection.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
default_regex='^tempest\.api\.compute\.'
export YUNHE_TEMPEST_REGEX="${YUNHE_TEMPEST_REGEX:-$default_regex}"
export YUNHE_TEMPEST_SERVICE=compute
export YUNHE_TEMPEST_XF="$here/compute-expected-failures.txt"
export YUNHE_TEMPEST_NOT_APPLICABLE="$here/compute-not-applicable.txt"
export YUNHE_TEMPEST_GOAL=0.90
export YUNHE_TEMPEST_LIST_MAX=0.25
export YUNHE_TEMPEST_CONF_EXTRA="$here/compute.conf.in"
export YUNHE_TEMPEST_SETUP="$here/compute-setup.sh"
# Two CPUs x 4.0 hold only 8 one-vCPU servers; tempest runs more than that at once.
export YUNHE_CPU_ALLOCATION_RATIO="${YUNHE_CPU_ALLOCATION_RATIO:-32}"
export YUNHE_TEMPEST_WORK="${YUNHE_TEMPEST_WORK:-$here/work/compute}"
exec "$here/run.sh"
