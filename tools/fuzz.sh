#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/: libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer,
# clang) in build-fuzz and runs each for SECONDS (default 20), two at a time, starting from its
# committed seed corpus. Fails on the first target that crashes, leaks, trips a sanitizer or
# times out on one input, printing the input that did it and the command that replays it.
#
#   tools/fuzz.sh [SECONDS] [--keep DIR] [--only TARGET[,TARGET...]]
#
# --keep DIR keeps each target's grown corpus and log in DIR/<target>/ (long runs: the inputs
# found are worth starting from next time); otherwise they go to a temporary folder.
# TRIT_FUZZ_BUILD names another build folder (a long run beside the tests). A folder already
# configured with TRIT_FUZZ=ON (tools/test.sh's build) is used as it is: only the targets are
# built, with that folder's flags.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=20
keep=""
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) seconds=$1; shift ;;
  esac
done
build=${TRIT_FUZZ_BUILD:-build-fuzz}
if ! grep -qx 'TRIT_FUZZ:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DTRIT_FUZZ=ON -DTRIT_BUILD_TESTS=OFF \
    -DTRIT_BUILD_BENCH=OFF >/dev/null
fi
targets=()
for src in fuzz/*_fuzz.cpp; do
  t=$(basename "$src" .cpp)
  [ -z "$only" ] || [[ ",$only," == *",$t,"* ]] && targets+=("$t")
done
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"

work=${keep:-$(mktemp -d)}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT
# One target: its own corpus folder (seeded from fuzz/corpus, never written back) and log.
run_one() {
  local t=$1 dir="$work/$1"
  mkdir -p "$dir/corpus" "$dir/crashes"
  cp -n fuzz/corpus/"$t"/* "$dir/corpus/" 2>/dev/null || true
  # -timeout: one input may take 10 s; -rss_limit_mb: a parser may not take 2 GiB; a refused
  # allocation above 1 GiB (-malloc_limit_mb) counts as a finding.
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$build/fuzz/$t" "$dir/corpus" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -artifact_prefix="$dir/crashes/" \
    -print_final_stats=1 >"$dir/log" 2>&1; then
    echo "$t: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" |
      grep -o '[0-9]*$') inputs in ${seconds} s, $(ls "$dir/corpus" | wc -l) in its corpus"
  else
    echo "$t: FAILED"
    grep -E "ERROR|SUMMARY|came back|^  " "$dir/log" | head -20
    for c in "$dir"/crashes/*; do
      [ -e "$c" ] && echo "  input: $c (replay: $build/fuzz/$t $c)"
    done
    return 1
  fi
}
export -f run_one
export work seconds build
status=0
printf '%s\n' "${targets[@]}" | xargs -P 2 -I{} bash -c 'run_one {}' || status=1
exit $status
