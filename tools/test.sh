#!/usr/bin/env bash
# Builds trit and runs the whole test suite twice: an optimised build, then a build with
# AddressSanitizer and UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# Vulkan tests fail rather than skip when no device is found (setup.sh installs lavapipe).
export TRIT_REQUIRE_VULKAN=1

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${TRIT_SKIP_SANITIZERS:-0}" != 1 ]; then
  # -O1 with line tables only: the sanitizers' reports keep file and line, and the build takes
  # about 40% less time than -O2 -g (it dominated CI's time).
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRIT_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DTRIT_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan -j"$jobs"
  # Runs that repeat work under the sanitizers only cost time: the reduced demo (a 120-step
  # fine-tune), the Vulkan forward ops at the 8 MiB, 128 MiB and unlimited limits (the 1 MiB
  # runs tile the most), whole-model Vulkan runs and Vulkan fine-tunes through the CLI (their
  # ops and the trainer are covered by the other tests), and the largest training-op shapes
  # (300-token attention and linear backward, all but one head_loss case with dh: the smaller
  # cases run the same host code). The optimised build runs them all.
  # (CTest names of parameterised tests end in "  # GetParam() = ...", hence "( |$)".)
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" \
    -E '^Demo\.|VulkanOps\.[^ ]*_(8MiB|128MiB|unlimited)( |$)|VulkanModel|VulkanFinetune|VulkanTrainOps\.[^ ]*(_n300_|_300x2048x4096|f16_chunk32_dh|chunk512_dh|chunk77_r4_r16_dh|chunk7_r4_dh)'
fi
