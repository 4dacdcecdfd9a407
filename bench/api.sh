#!/usr/bin/env bash
# Operator API latency: `GET /api/v1/jobs` with a valid bearer token under
# wrk, against `GET /health` on the same daemon in the same run (the ratio
# is what counts on these shared machines). Also runs the journal benchmark
# (examples/journal_bench.rs): appends/s with group commit and with a sync
# per event, and the catalog shipping rate. See bench/README.md.
#
#   bench/api.sh
#
# Environment (all optional):
#   WRK_THREADS=2 WRK_CONNECTIONS=16 WRK_DURATION=10s   wrk load shape
#   JOURNAL_EVENTS=100000   events for the append benchmark
#   SKIP_BUILD=1            use the binaries already in target/release
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
threads=${WRK_THREADS:-2}
connections=${WRK_CONNECTIONS:-16}
duration=${WRK_DURATION:-10s}

log() { echo "bench/api.sh: $*" >&2; }
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get install -y -q "${missing[@]}" >/dev/null
fi
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --locked --bin vigil --example journal_bench >&2
fi

log "journal benchmark"
./target/release/examples/journal_bench "${JOURNAL_EVENTS:-100000}"

tmp=$(mktemp -d)
chmod 755 "$tmp"   # the demo cluster runs as postgres when we are root
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
vigil_pid=""
cleanup() {
    if [[ -n $vigil_pid ]] && kill -0 "$vigil_pid" 2>/dev/null; then
        # SIGTERM: the demo stops and removes its cluster.
        kill -TERM "$vigil_pid" 2>/dev/null || true
        wait "$vigil_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
./target/release/vigil demo --listen "127.0.0.1:$port" --dir "$tmp/demo" >"$tmp/vigil.log" 2>&1 &
vigil_pid=$!
deadline=$((SECONDS + 90))
until curl -fsS -o /dev/null "http://127.0.0.1:$port/health/ready" 2>/dev/null; do
    kill -0 "$vigil_pid" 2>/dev/null || { cat "$tmp/vigil.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { log "vigil not ready within 90 s"; exit 1; }
    sleep 0.5
done
token=$(cat "$tmp/demo/admin.token")
curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/jobs" >/dev/null

run() { # label, path, [header]
    local out
    if [[ $# -eq 3 ]]; then
        out=$(wrk -t"$threads" -c"$connections" -d"$duration" --latency -H "$3" "http://127.0.0.1:$port$2")
    else
        out=$(wrk -t"$threads" -c"$connections" -d"$duration" --latency "http://127.0.0.1:$port$2")
    fi
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "$1|$rps|$p50|$p99"
}
health=$(run "GET /health" /health)
api=$(run "GET /api/v1/jobs (token)" /api/v1/jobs "Authorization: Bearer $token")
echo
echo "| endpoint | requests/s | p50 | p99 |"
echo "|---|---|---|---|"
for row in "$health" "$api"; do
    IFS='|' read -r label rps p50 p99 <<<"$row"
    echo "| $label | $rps | $p50 | $p99 |"
done
ratio=$(awk -v a="${api#*|}" -v h="${health#*|}" 'BEGIN { split(a, x, "|"); split(h, y, "|"); printf "%.2f", x[1] / y[1] }')
echo
echo "API requests/s ÷ /health requests/s in the same run: $ratio"
journal_lines=$(cat "$tmp"/demo/state/journal/*.jsonl | wc -l)
echo "journal records after the run (every API call is one): $journal_lines"
