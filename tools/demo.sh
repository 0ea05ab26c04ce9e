#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds trit, and runs a BitNet b1.58 model: a random
# model of the 2B4T layout at small size (no weights can be downloaded here), generation,
# the model summary and a throughput benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"

mkdir -p out
model=out/demo-125m.gguf
[ -f "$model" ] || ./build/trit create --preset 125m --random --type tq2_0 -o "$model"
./build/trit info "$model"
./build/trit generate -m "$model" -p "Once upon a time" -n 32 --temp 0
./build/trit bench -m "$model" -p 64 -n 32
