#!/usr/bin/env bash
# A fine-tune of a model larger than the memory it is given completes: `trit finetune
# --mem-budget B` of a 24-layer TQ1_0 model (1b widths, 8,000-token vocabulary: a 250 MB file)
# runs in a memory cgroup limited to B (page cache included: the kernel must reclaim the
# model's pages) and ends with its adapter written; its peak RSS is at most B. Without a memory
# cgroup to use (not root, no cgroup v1 memory controller) it checks the peak RSS alone. Then
# runs under address-space limits too small for them are refused, naming the limit.
#
#   bench/memory_limit.sh [BUILD_DIR] [BUDGET_MIB]     (default: build, 200)
#
# Use an optimised build: the sanitizers' own memory would be counted too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
budget=${2:-200}
trit=$root/$build/trit
[ -x "$trit" ] || trit=$build/trit
[ -x "$trit" ] || { echo "memory_limit: no trit in $build" >&2; exit 1; }
work=$(mktemp -d)
cg=/sys/fs/cgroup/memory/trit-memory-limit-$$
cleanup() {
  [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
model=$work/1b-24-layers-v8000-tq1_0.gguf
"$trit" create --preset 1b --random --type tq1_0 --vocab 8000 -o "$model" >/dev/null
size_mib=$(($(stat -c %s "$model") >> 20))
echo "model: $size_mib MiB; budget: $budget MiB"
[ "$size_mib" -gt "$budget" ] || { echo "memory_limit: the model fits the budget" >&2; exit 1; }

# Runs the fine-tune; prints its peak RSS in MiB (the kernel's count for the child).
run() {
  python3 - "$@" <<'EOF'
import resource, subprocess, sys
rc = subprocess.run(sys.argv[1:]).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{peak:.1f}")
sys.exit(rc)
EOF
}
cmd=("$trit" finetune -m "$model" --data "$root/data/demo" -o "$work/adapter.gguf" --device cpu
  -t 2 -c 128 --rank 4 --steps 2 --batch 1 --val-examples 2 --mem-budget "$budget")
limited=no
if [ "$(id -u)" = 0 ] && [ -d /sys/fs/cgroup/memory ] && mkdir "$cg" 2>/dev/null; then
  echo $((budget << 20)) >"$cg/memory.limit_in_bytes"
  # Swap would let the limit pass without holding: the memory and swap limit too, where the
  # kernel accounts swap.
  [ -f "$cg/memory.memsw.limit_in_bytes" ] && echo $((budget << 20)) >"$cg/memory.memsw.limit_in_bytes"
  limited=yes
  peak=$(sh -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' sh "$cg" \
    bash -c "$(declare -f run); run \"\$@\"" run "${cmd[@]}" | tail -1)
  echo "in a memory cgroup of $budget MiB: most used $(($(cat "$cg/memory.max_usage_in_bytes") >> 20)) MiB (page cache included)"
else
  peak=$(run "${cmd[@]}" | tail -1)
fi
[ -s "$work/adapter.gguf" ] || { echo "memory_limit: no adapter written" >&2; exit 1; }
echo "fine-tune completed (cgroup: $limited); peak RSS $peak MiB, budget $budget MiB"
awk -v p="$peak" -v b="$budget" 'BEGIN { exit !(p <= b) }' ||
  { echo "memory_limit: peak RSS $peak MiB is over the budget" >&2; exit 1; }

# An address-space limit (ulimit -v) too small for the run: refused with the limit named (exit
# 1), never killed by a signal or stopped without a reason. The shipped model (10 MiB) under 25
# MiB (on this machine its mapping fails), 30 MiB (its threads do not start) and a fine-tune
# under 50 MiB (its first allocations fail).
small=$root/models/austen-tiny.gguf
expect_refused() {
  local as=$1 want=$2
  shift 2
  local rc=0
  (ulimit -v $((as << 10)) && exec "$@") >/dev/null 2>"$work/as.err" || rc=$?
  if [ "$rc" != 1 ] || ! grep -q "$want" "$work/as.err"; then
    echo "memory_limit: under ulimit -v $as MiB: exit $rc, expected 1 and '$want':" >&2
    cat "$work/as.err" >&2
    exit 1
  fi
  echo "ulimit -v $as MiB: $(tail -1 "$work/as.err")"
}
expect_refused 25 "the address space is limited to 25 MiB" \
  "$trit" generate -m "$small" -p "It is" -n 4 --device cpu -t 2
expect_refused 30 "the address space is limited to 30 MiB" \
  "$trit" generate -m "$small" -p "It is" -n 4 --device cpu -t 2
expect_refused 50 "the address space is limited to 50 MiB" \
  "$trit" finetune -m "$small" --data "$root/data/demo" -o "$work/as.gguf" --steps 2 -c 64 \
  --rank 16 -t 2 --device cpu
