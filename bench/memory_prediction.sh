#!/usr/bin/env bash
# `trit info`'s memory estimates against what `trit bench` measures (peak resident set, CPU):
# for each model, a run at ctx 128 (pp112 + tg16) and a fine-tune at ctx 128, each estimate
# within 10% of the measurement or the script fails. Prints a table.
#
#   bench/memory_prediction.sh [BUILD_DIR] [-- MODEL.gguf ...]
#
# Without models it makes its own (random, in a temporary folder): tiny, 125m TQ1_0 and TQ2_0,
# and the 2b4t shape cut to 2 layers (its 128,256-token vocabulary). Use an optimised build: the
# sanitizers' own memory would be measured too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
shift $(($# > 0 ? 1 : 0))
[[ ${1:-} == -- ]] && shift
trit=$root/$build/trit
[ -x "$trit" ] || trit=$build/trit
[ -x "$trit" ] || { echo "memory_prediction: no trit in $build" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  "$trit" create --preset tiny --random -o "$work/tiny.gguf" >/dev/null
  "$trit" create --preset 125m --random --type tq1_0 -o "$work/125m-tq1_0.gguf" >/dev/null
  "$trit" create --preset 125m --random --type tq2_0 -o "$work/125m-tq2_0.gguf" >/dev/null
  "$trit" create --preset 2b4t --random --layers 2 -o "$work/2b4t-2-layers.gguf" >/dev/null
  models=("$work"/tiny.gguf "$work"/125m-tq1_0.gguf "$work"/125m-tq2_0.gguf
    "$work"/2b4t-2-layers.gguf)
fi
rank=8
failed=0
printf '%-22s %-9s %12s %12s %8s\n' model run "estimate" "measured" ratio
for m in "${models[@]}"; do
  info=$("$trit" info "$m" --json -c 128 --rank "$rank")
  run=$("$trit" bench -m "$m" --device cpu -t 2 -p 112 -n 16 -r 1 --json)
  train=$("$trit" bench -m "$m" --device cpu -t 2 --train -c 128 --steps 1 --rank "$rank" --json)
  while read -r what estimate measured; do
    ratio=$(awk -v e="$estimate" -v m="$measured" 'BEGIN { printf "%.3f", e / m }')
    printf '%-22s %-9s %9.1f MiB %9.1f MiB %8s\n' "$(basename "$m")" "$what" "$estimate" \
      "$measured" "$ratio"
    if awk -v r="$ratio" 'BEGIN { exit !(r < 0.9 || r > 1.1) }'; then failed=1; fi
  done < <(python3 - "$info" "$run" "$train" <<'EOF'
import json, sys
info, run, train = (json.loads(a) for a in sys.argv[1:4])
mib = 1 << 20
print("run", info["memory"]["run"]["total"] / mib, run["peak_rss_mib"])
print("fine-tune", info["memory"]["finetune"]["total"] / mib, train["peak_rss_mib"])
EOF
  )
done
if [ "$failed" != 0 ]; then
  echo "memory_prediction: an estimate is more than 10% away from the measurement" >&2
  exit 1
fi
