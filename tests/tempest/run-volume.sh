#!/usr/bin/env bash
# Run tempest's tempest.api.volume tests against a freshly started `yunhe serve`:
#   tests/tempest/run-volume.sh
# The machinery is run.sh's; this sets the regex, Cinder's expected-failure list
# (tests/tempest/volume-expected-failures.txt, each with its reason), the skip reasons that
# mean "not applicable here" (volume-not-applicable.txt: Nova-dependent tests until the
# lead enables compute with cinder), [service_available] cinder = True with the feature
# flags in volume.conf.in, and the bar: >= 90% of the rest pass, list <= 15% of the run.
# Workspace: ${YUNHE_TEMPEST_WORK:-<repo>/tests/tempest/work/volume}. Other env as run.sh.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export YUNHE_TEMPEST_SERVICE=volume
export YUNHE_TEMPEST_REGEX="${YUNHE_TEMPEST_REGEX:-^tempest\.api\.volume\.}"
export YUNHE_TEMPEST_XF="$here/volume-expected-failures.txt"
export YUNHE_TEMPEST_NOT_APPLICABLE="$here/volume-not-applicable.txt"
export YUNHE_TEMPEST_GLANCE=True
export YUNHE_TEMPEST_GOAL=0.90
export YUNHE_TEMPEST_LIST_MAX=0.15
export YUNHE_TEMPEST_CONF_EXTRA="$here/volume.conf.in"
export YUNHE_TEMPEST_SETUP="$here/volume-setup.sh"
export YUNHE_TEMPEST_WORK="${YUNHE_TEMPEST_WORK:-$here/work/volume}"
exec "$here/run.sh" "$@"
