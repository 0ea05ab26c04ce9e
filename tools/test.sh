#!/usr/bin/env bash
# Builds trit once, with clang, AddressSanitizer and UndefinedBehaviorSanitizer (build-check/),
# runs every test through CTest on that build, then each fuzz target for 10 s (tools/fuzz.sh):
# the fuzz targets are part of the same build (libFuzzer's coverage is compiled into the
# library too), so the library is compiled once. The optimised build (GCC) is exercised by
# tools/examples.sh (CI) and by the README's first command; the numerics tests compare against
# references computed independently, so they hold at any optimisation level and with either
# compiler (-ffp-contract=off everywhere).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
start=$(date +%s)
say() { printf '== [%4d s] %s\n' "$(($(date +%s) - start))" "$*"; }
# Vulkan tests fail rather than skip when no device is found (setup.sh installs lavapipe).
export TRIT_REQUIRE_VULKAN=1

# -Og with line tables only: the sanitizers' reports keep file and line; -O1 took twice as long
# to compile with both sanitizers. The CPU backend is compiled for speed and the test code is not
# instrumented (src/CMakeLists.txt, tests/CMakeLists.txt say why).
say "build (sanitizers, fuzz targets)"
CC=clang CXX=clang++ cmake -S . -B build-check -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTRIT_SANITIZE=ON -DTRIT_FUZZ=ON -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-Og -g1 -DNDEBUG" \
  -DTRIT_BUILD_BENCH=OFF >/dev/null
cmake --build build-check -j"$jobs"
say "tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-check --output-on-failure -j"$jobs"
# Every parser of outside data under libFuzzer for a short while, from its seed corpus
# (docs/RELIABILITY.md has the long runs).
say "fuzzing (each target 10 s)"
TRIT_FUZZ_BUILD=build-check bash tools/fuzz.sh 10
say "done"
