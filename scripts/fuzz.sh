#!/usr/bin/env bash
# Builds the libFuzzer targets (sanitize preset: clang, ASan, UBSan) and runs each for SECONDS
# (default 60) on a scratch copy of its seed corpus in fuzz/corpus/<name>/ (the committed corpus
# is never modified). A crash, leak or timeout fails the run and leaves the input in build/sanitize/fuzz-runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/sanitize/fuzz-runs
seconds=${1:-60}
cmake --preset sanitize >/dev/null
targets=$(for f in fuzz/*_fuzz.cc; do n=$(basename "$f" .cc); echo "torchless_$n"; done)
# shellcheck disable=SC2086
cmake --build --preset sanitize --target $targets
status=0
for target in build/sanitize/fuzz/torchless_*_fuzz; do
  [ -x "$target" ] || continue
  name=$(basename "$target"); name=${name#torchless_}; name=${name%_fuzz}
  work=build/sanitize/fuzz-runs/corpus-work/$name
  rm -rf "$work" && mkdir -p "$work"
  [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$work/"
  echo "fuzz: $name for ${seconds}s ($(ls "$work" | wc -l) seeds)"
  if ! "$target" "$work" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -max_len=1048576 -artifact_prefix=build/sanitize/fuzz-runs/"$name"- -print_final_stats=0 2> build/sanitize/fuzz-runs/"$name".log; then
    echo "fuzz: $name FAILED; see build/sanitize/fuzz-runs/$name.log"; tail -40 build/sanitize/fuzz-runs/"$name".log; status=1
  fi
done
exit $status
