#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz preset: clang, ASan, UBSan) and runs each for SECONDS
# (default 60) on a scratch copy of its seed corpus in fuzz/corpus/<name>/ (the committed corpus
# is never modified). A crash, leak or timeout fails the run and leaves the input in build/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
status=0
for target in build/fuzz/fuzz/torchless_*_fuzz; do
  [ -x "$target" ] || continue
  name=$(basename "$target"); name=${name#torchless_}; name=${name%_fuzz}
  work=build/fuzz/corpus-work/$name
  rm -rf "$work" && mkdir -p "$work"
  [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$work/"
  echo "fuzz: $name for ${seconds}s ($(ls "$work" | wc -l) seeds)"
  if ! "$target" "$work" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -max_len=1048576 -artifact_prefix=build/fuzz/"$name"- -print_final_stats=0 2> build/fuzz/"$name".log; then
    echo "fuzz: $name FAILED; see build/fuzz/$name.log"; tail -40 build/fuzz/"$name".log; status=1
  fi
done
exit $status
