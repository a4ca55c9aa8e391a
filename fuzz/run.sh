#!/bin/sh
# Runs the disk-boot and qcow2 fuzz targets one after the other, SECONDS each (default 600),
# one libFuzzer process at a time, niced: the machine is shared.
#   fuzz/run.sh [SECONDS] [TARGET...]     (targets: diskboot boot_config qcow2, the default;
#                                          also virtqueue blk_request pci_transport)
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The working corpus
# grows in fuzz/corpus/<target>/ (not committed), starting from fuzz/seeds/<target>/;
# a crash, a timeout (10 s for one input) or an OOM (512 MiB) stops the target and leaves the
# input in fuzz/artifacts/<target>/: minimize it (`cargo +nightly fuzz tmin <target> <file>`),
# fix the parser, and commit the input to fuzz/regressions/<target>/, which the stable
# `cargo test --bin yunhe fuzzing` feeds through the same entry points.
# Exit status: non-zero if any target found something.
set -u
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-diskboot boot_config qcow2}
cd "$(dirname "$0")" || exit 1
nice -n 10 cargo +nightly fuzz build -O || exit 1
status=0
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  seeds=
  [ -d "seeds/$t" ] && seeds="seeds/$t"
  regressions=
  [ -d "regressions/$t" ] && regressions="regressions/$t"
  before=$(ls "artifacts/$t" | wc -l)
  echo "== $t: $secs s"
  nice -n 10 "target/x86_64-unknown-linux-gnu/release/$t" \
    -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -rss_limit_mb=512 -timeout=10 \
    -print_final_stats=1 "corpus/$t" $seeds $regressions 2>&1 |
    grep -E '^(#[0-9]+ +DONE|Done|stat::|==[0-9]+==|SUMMARY|INFO: seed|.*(panicked|deadly signal|timeout|out-of-memory))' 
  after=$(ls "artifacts/$t" | wc -l)
  if [ "$after" -ne "$before" ]; then
    echo "!! $t: findings in fuzz/artifacts/$t/"; status=1
  fi
done
exit $status
