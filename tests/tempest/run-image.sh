#!/usr/bin/env bash
# Run tempest's tempest.api.image tests against a freshly started `yunhe serve`:
#   tests/tempest/run-image.sh
# The machinery is run.sh's; this sets the regex, Glance's expected-failure list
# (tests/tempest/image-expected-failures.txt), [service_available] glance = True and the
# bar: >= 90% of the tests not on the list pass (skips count as not passed), list <= 25%.
# Workspace: ${YUNHE_TEMPEST_WORK:-<repo>/tests/tempest/work-image}. Other env as run.sh.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export YUNHE_TEMPEST_SERVICE=image
export YUNHE_TEMPEST_REGEX="${YUNHE_TEMPEST_REGEX:-^tempest\.api\.image}"
export YUNHE_TEMPEST_XF="$here/image-expected-failures.txt"
export YUNHE_TEMPEST_GLANCE=True
export YUNHE_TEMPEST_GOAL=0.90
export YUNHE_TEMPEST_LIST_MAX=0.25
export YUNHE_TEMPEST_WORK="${YUNHE_TEMPEST_WORK:-$here/work-image}"
exec "$here/run.sh" "$@"
