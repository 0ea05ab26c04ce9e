#!/usr/bin/env bash
# The demo on a built trit: the shipped tiny model writes a little English, fails a task it was
# never taught (data/demo: names written surname first), is fine-tuned on it with LoRA, and
# passes it. Prints exact-match accuracy before and after, a few generations, and where the
# adapter, metrics and loss plot are; writes a summary JSON for tests.
#   tools/demo_run.sh [TRIT_BINARY] [OUT_DIR]      (env DEMO_STEPS: fine-tuning steps)
set -euo pipefail
cd "$(dirname "$0")/.."
trit=${1:-./build/trit}
out=${2:-out/demo}
steps=${DEMO_STEPS:-250}
model=models/austen-tiny.gguf
data=data/demo
mkdir -p "$out"

section() { printf '\n== %s\n' "$*"; }
field() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" "$1"; }

section "the shipped model: $model"
$trit info "$model" | head -n 12
section "it writes English (greedy, 40 tokens)"
$trit generate -m "$model" -p "It is a truth universally acknowledged" -n 40 --temp 0 2>/dev/null
echo

section "before fine-tuning: exact match on $data/test.jsonl"
$trit eval -m "$model" --data "$data/test.jsonl" --mask-prompt --json >"$out/eval_before.json" \
  2>"$out/eval_before.log"
echo "exact match $(field "$out/eval_before.json" exact_match), loss on the answers $(field "$out/eval_before.json" loss)"

section "fine-tuning a LoRA adapter ($steps steps)"
$trit finetune -m "$model" --data "$data" -o "$out/adapter.gguf" --steps "$steps" --batch 8 \
  --lr 3e-3 --schedule cosine --warmup 10 --rank 8 --alpha 16 -c 48 --mask-prompt --val-every 20 --save-every 1000 \
  --checkpoint-dir "$out/checkpoints" --seed 1

section "after fine-tuning: exact match on $data/test.jsonl"
$trit eval -m "$model" --lora "$out/adapter.gguf" --data "$data/test.jsonl" --mask-prompt \
  --json >"$out/eval_after.json" 2>"$out/eval_after.log"
echo "exact match $(field "$out/eval_after.json" exact_match), loss on the answers $(field "$out/eval_after.json" loss)"

section "generations (greedy) before -> after"
head -n 3 "$data/test.jsonl" | while IFS= read -r line; do
  prompt=$(printf '%s' "$line" | sed 's/.*"prompt": "\(.*\)", "completion".*/\1/; s/\\n/\n/g')
  printf '%s\n' "$prompt" | head -n 1
  printf '  before:'
  $trit generate -m "$model" -p "$prompt" -n 6 --temp 0 2>/dev/null | tail -n +2 |
    sed 's/^Answer://' | head -n 1
  printf '  after: '
  $trit generate -m "$model" --lora "$out/adapter.gguf" -p "$prompt" -n 6 --temp 0 \
    2>/dev/null | tail -n +2 | sed 's/^Answer://' | head -n 1
done

before=$(field "$out/eval_before.json" exact_match)
after=$(field "$out/eval_after.json" exact_match)
printf '{"exact_match_before": %s, "exact_match_after": %s, "metrics": "%s"}\n' \
  "$before" "$after" "$out/adapter.metrics.jsonl" >"$out/summary.json"
section "done"
echo "exact match: $before before, $after after fine-tuning"
echo "adapter: $out/adapter.gguf (load it with: $trit generate -m $model --lora $out/adapter.gguf)"
echo "metrics: $out/adapter.metrics.jsonl   loss plot: $out/adapter.loss.svg"
