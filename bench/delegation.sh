#!/usr/bin/env bash
# Delegation throughput on one machine: a trit serve reached directly and through the tunnel
# (trit peer provide / connect on a HyperDHT testnet bound to 127.0.0.1), the same requests
# each way, alternating. Prints streamed tokens/s (`trit bench --serve-url`) and the time to
# upload a dataset (POST /v1/files), with the tunnel's share of direct.
#
#   bench/delegation.sh [MODEL] [UPLOAD_MIB] [-- trit serve options]
#
# Ends with the transport alone (bench/hyperdht_raw.mjs: one HyperDHT stream, no HTTP), the
# ceiling of any tunnel on this machine. Needs curl. Everything runs in a temporary folder that is removed at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
trit=${TRIT:-$root/build/trit}
model=${1:-$root/models/austen-tiny.gguf}
mib=${2:-10}
shift $(($# < 2 ? $# : 2))
[[ ${1:-} == -- ]] && shift
serve_opts=("$@")
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits for a line matching $2 in file $1 and prints the match of the sed expression $3.
wait_for() {
  for _ in $(seq 1 600); do
    if grep -q "$2" "$1" 2>/dev/null; then
      grep -m1 "$2" "$1" | sed -n "$3"
      return
    fi
    sleep 0.1
  done
  echo "no '$2' in $1:" >&2
  cat "$1" >&2
  exit 1
}

"$trit" peer testnet >"$work/testnet.out" 2>"$work/testnet.err" &
pids+=($!)
bootstrap=$(wait_for "$work/testnet.out" '^bootstrap ' 's/^bootstrap //p')
provider=$("$trit" peer key --key-file "$work/provider.key")
consumer=$("$trit" peer key --key-file "$work/consumer.key")
echo "$consumer" >"$work/allow"

"$trit" serve -m "$model" --port 0 --parallel 8 "${serve_opts[@]}" 2>"$work/serve.err" &
pids+=($!)
direct=$(wait_for "$work/serve.err" 'listening on http://' 's/.*listening on \(http:[^ ]*\).*/\1/p')
"$trit" peer provide --serve "$direct" --allow "$work/allow" --key-file "$work/provider.key" \
  --bootstrap "$bootstrap" >"$work/provide.out" 2>"$work/provide.err" &
pids+=($!)
wait_for "$work/provide.out" '^providing ' 'p' >/dev/null
"$trit" peer connect "$provider" --listen 127.0.0.1:0 --key-file "$work/consumer.key" \
  --bootstrap "$bootstrap" >"$work/connect.out" 2>"$work/connect.err" &
pids+=($!)
tunnel=$(wait_for "$work/connect.out" '^listening on ' 's/^listening on \(http:[^ ]*\).*/\1/p')
wait_for "$work/connect.out" '^provider ' 'p'

echo "== streamed generation, trit bench --serve 1,4 -p 32 -n 128"
for round in 1 2; do
  for way in direct tunnel; do
    url=${!way}
    echo "-- $way ($url), round $round"
    "$trit" bench -m "$model" --device cpu --serve 1,4 -p 32 -n 128 --serve-url "$url" | tail -2
  done
done

echo "== upload of a ${mib} MiB JSONL dataset, POST /v1/files (3 times each way)"
python3 - "$work/data.jsonl" "$mib" <<'EOF'
import json, sys
path, mib = sys.argv[1], int(sys.argv[2])
row = json.dumps({"text": "It is a truth universally acknowledged, " * 20}) + "\n"
with open(path, "w") as f:
    f.write(row * (mib * 1024 * 1024 // len(row) + 1))
EOF
for way in direct tunnel direct tunnel direct tunnel; do
  url=${!way}
  curl -s -o /dev/null -w "$way %{time_total} s %{speed_upload} B/s\n" -F "file=@$work/data.jsonl" \
    "$url/v1/files"
done | awk '{ print; t[$1] += $2; n[$1]++ }
  END { printf "mean: direct %.3f s, tunnel %.3f s: tunnel at %.0f%% of direct\n",
        t["direct"] / n["direct"], t["tunnel"] / n["tunnel"],
        100 * (t["direct"] / n["direct"]) / (t["tunnel"] / n["tunnel"]) }'

echo "== the transport alone: one HyperDHT stream between two processes, ${mib} MiB (3 times)"
node "$root/bench/hyperdht_raw.mjs" "$mib" 3
