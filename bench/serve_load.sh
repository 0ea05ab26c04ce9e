#!/usr/bin/env bash
# trit serve under load (bench/serve_load.mjs): CLIENTS clients for SECONDS against a server
# with a small queue and a 1 MiB body limit, then SIGTERM, which must end the server cleanly.
#
#   bench/serve_load.sh [SECONDS] [CLIENTS] [MODEL] [-- trit serve options]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
trit=${TRIT:-$root/build/trit}
pos=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do pos+=("$1"); shift; done
[ $# -gt 0 ] && shift
seconds=${pos[0]:-180}
clients=${pos[1]:-64}
model=${pos[2]:-$root/models/austen-tiny.gguf}
work=$(mktemp -d)
server=""
# The server is normally reaped before this runs: a failing kill must not set the exit status.
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$trit" serve -m "$model" --port 0 --parallel 4 --queue 16 --max-body-mb 1 --timeout 60 --quiet \
  "$@" 2>"$work/serve.err" &
server=$!
for _ in $(seq 1 300); do
  grep -q 'listening on http://' "$work/serve.err" && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/serve.err")
[ -n "$url" ] || { cat "$work/serve.err"; exit 1; }
status=0
node "$root/bench/serve_load.mjs" --url "$url" --pid "$server" --clients "$clients" \
  --seconds "$seconds" --max-body-mb 1 || status=1
kill -TERM "$server"
if wait "$server"; then
  echo "server: stopped cleanly on SIGTERM"
else
  echo "server: exit status $? on SIGTERM"; tail -5 "$work/serve.err"; status=1
fi
exit $status
