#!/usr/bin/env bash
# Run the image-recipe tests; prints each test's one-line result and "N passed, N failed".
# Default: the micro/tiny tests (builds micro and tiny first when out/ lacks them; micro takes
# 15+ minutes cold, seconds when cached). WITH_DEBIAN=1 adds the debian layout and boot tests
# (builds the debian image, ~5 minutes). Exits non-zero if any test failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tests=(boot-micro-tiny tiny-config-drive tiny-metadata-service boot-cloud-tiny)
[ "${WITH_DEBIAN:-0}" = 1 ] && tests+=(debian-layout debian-boot)
passed=0 failed=0
errs=$(mktemp -d "${TMPDIR:-/tmp}/yunhe-recipe-tests.XXXXXX")
trap 'rm -rf "$errs"' EXIT
for t in "${tests[@]}"; do
    if line=$("$here/$t.sh" 2>"$errs/$t.err"); then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        [ -n "$line" ] || line="FAIL $t: $(tail -n 1 "$errs/$t.err")"
    fi
    echo "$line"
done
echo "image-recipes: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
