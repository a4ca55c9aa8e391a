#!/usr/bin/env bash
# The lab host under VM churn (docs/lab.md, "Known problems"): a check of the lab itself, not
# of yunhe, for trying other emulator settings, QEMU builds or lab kernels (LAB_TCG_THREAD,
# LAB_QEMU, LAB_APPEND, ...). Inside the lab, a VM starts and ends every 1.7 s, ROUNDS times
# (default 150, about 270 s), while micro + tiny guests boot beside it (in/churn.sh).
#   tests/lab/churn.sh [ROUNDS]
# Exit 0 when the lab host survived every round; the lab's own status otherwise (126: the lab
# host failed, with where its CPUs were).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$root/out}
[ -f "$out/tiny/tiny.cpio.gz" ] || "$root/image-recipes/build" tiny "$out/tiny" >&2
[ -f "$out/micro/bzImage" ] || "$root/image-recipes/build" micro "$out/micro" >&2
payload=$(mktemp -d "${TMPDIR:-/tmp}/yunhe-lab-churn.XXXXXX")
trap 'rm -rf "$payload"' EXIT
cp "$out/micro/bzImage" "$out/tiny/tiny.cpio.gz" "$payload/"
rounds=${1:-150}
"$here/lab" run --payload "$payload" --timeout $((rounds * 4 + 120)) "$here/in/churn.sh" "$rounds"
