#!/usr/bin/env bash
# Runs Autobahn's fuzzingclient against the gateway itself (not the ws_echo example): starts
# `tollgate serve` with tollgate.toml (a mock echo route, WebSocket limits raised for section 9)
# on a free port, runs run.sh against it, stops it.
#
#   loadtest/autobahn/gateway.sh [path/to/tollgate] [CASES]
#
# Exit status: run.sh's (0: no case FAILED; 2: wstest missing or broken).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/tollgate}
cases=${2:-}
[ -x "$bin" ] || { echo "no tollgate binary at $bin (cargo build --release)" >&2; exit 2; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cfg=$(mktemp --suffix=.toml)
sed "s/127.0.0.1:9001/127.0.0.1:$port/" "$here/tollgate.toml" >"$cfg"
log=$(mktemp)
"$bin" serve --config "$cfg" --cores 1 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$cfg" "$log"' EXIT
for _ in $(seq 100); do
    grep -q '^tollgate ready' "$log" && break
    kill -0 $pid 2>/dev/null || { cat "$log" >&2; exit 2; }
    sleep 0.1
done
"$here/run.sh" "ws://127.0.0.1:$port" "$cases"
