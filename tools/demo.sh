#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds trit, and shows it working end to end on models it
# makes itself (no weights can be downloaded here): a random model of the BitNet b1.58 2B4T
# layout at 125M parameters (summary, generation, speed), then a LoRA fine-tune of a small
# model on a task it cannot do before, with generations before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
trit=./build/trit

mkdir -p out
model=out/demo-125m.gguf
[ -f "$model" ] || $trit create --preset 125m --random --type tq2_0 -o "$model"
$trit info "$model"
$trit generate -m "$model" -p "Once upon a time" -n 16 --temp 0
$trit bench -m "$model" -p 64 -n 32

echo
echo "== fine-tuning: answer ' yes!' to 'Is <word> a word?'"
tiny=out/demo-tiny.gguf
[ -f "$tiny" ] || $trit create --preset tiny --random -o "$tiny" --seed 4
data=out/demo-data
mkdir -p "$data"
words() { LC_ALL=C tr -dc 'a-z' </dev/urandom | fold -w 6 | head -n "$1"; }
for split in train:64 valid:16 test:8; do
  name=${split%%:*}
  : >"$data/$name.jsonl"
  for w in $(words "${split##*:}"); do
    printf '{"prompt": "Is %s a word?", "completion": " yes!"}\n' "$w" >>"$data/$name.jsonl"
  done
done
$trit finetune -m "$tiny" --data "$data" -o out/demo-adapter.gguf --steps 40 --batch 4 \
  --lr 3e-3 --rank 8 -c 64 --mask-prompt --val-every 10
for w in $(words 3); do
  printf 'before: '; $trit generate -m "$tiny" -p "Is $w a word?" -n 5 --temp 0 2>/dev/null
  printf 'after:  '; $trit generate -m "$tiny" --lora out/demo-adapter.gguf \
    -p "Is $w a word?" -n 5 --temp 0 2>/dev/null
done
echo "adapter, metrics and loss plot: out/demo-adapter.gguf, out/demo-adapter.metrics.jsonl, out/demo-adapter.loss.svg"
