#!/usr/bin/env bash
# The README's first command: sets up a fresh Debian 12 machine (apt-get only), builds trit,
# and runs the demo (tools/demo_run.sh) on the shipped tiny model: it writes a little English,
# fails a task it was never taught, learns it with a LoRA fine-tune, and passes it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target trit_cli
exec bash tools/demo_run.sh ./build/trit out/demo
