#!/usr/bin/env bash
# Builds trit and runs the test suite twice: every test on an optimised build, then the tests of
# host code (parsers, files, tokenizers, data, the API, the trainer, the CLI; not the numerics of
# the Vulkan parity tests, whose time goes to the CPU Vulkan driver, which is not instrumented)
# on a build with AddressSanitizer and UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
start=$(date +%s)
say() { printf '== [%4d s] %s\n' "$(($(date +%s) - start))" "$*"; }
# Vulkan tests fail rather than skip when no device is found (setup.sh installs lavapipe).
export TRIT_REQUIRE_VULKAN=1

say "optimised build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
say "tests"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${TRIT_SKIP_SANITIZERS:-0}" != 1 ]; then
  # -Og with line tables only: the sanitizers' reports keep file and line; -O1 took twice as
  # long to compile with both sanitizers.
  say "sanitizer build"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRIT_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-Og -g1 -DNDEBUG" -DTRIT_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan -j"$jobs"
  # Left out under the sanitizers, run above: the reduced demo (a 120-step fine-tune), the
  # Vulkan parity tables (ops, training ops and whole models at every binding limit) and the
  # Vulkan fine-tunes through the CLI. Their host code runs under the sanitizers in the other
  # Vulkan tests (device, tiling, queued writes, decoding fusions, the CLI on Vulkan).
  say "tests under the sanitizers"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" \
    -E '^Demo\.|VulkanOps\.|VulkanTrainOps\.|VulkanModel\.|^VulkanFinetune$'
fi
say "done"
