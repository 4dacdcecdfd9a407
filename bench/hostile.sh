#!/usr/bin/env bash
# The admin port under hostile clients: /health latency and vigil's RSS while
# idle and slowloris connections from one address (127.0.0.1) press on it.
# See bench/README.md.
#
#   bench/hostile.sh
#
# Environment (all optional):
#   IDLE_COUNTS="1000 5000"   idle-connection attacks to run, one per count
#   SLOW_CONNECTIONS=1000     slowloris connections (one header byte a second)
#   SLOW_SECONDS=30           how long the slowloris attack is sustained
#   PROBES=200                sequential /health requests per idle attack
#   SKIP_BUILD=1              use target/release/vigil as it is
#   VIGIL_BIN=PATH            measure another binary (implies SKIP_BUILD=1)
#   BENCH_OUT=FILE            also write the Markdown table to FILE
#
# Needs cargo, curl and python3. `vigil demo` creates a throwaway PostgreSQL
# cluster (as root, run as the postgres user) and removes it on SIGTERM.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

idle_counts=${IDLE_COUNTS:-"1000 5000"}
slow_connections=${SLOW_CONNECTIONS:-1000}
slow_seconds=${SLOW_SECONDS:-30}
probes=${PROBES:-200}
ready_timeout=60
vigil_bin=${VIGIL_BIN:-target/release/vigil}

log() { printf '%s\n' "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is missing"
command -v curl >/dev/null 2>&1 || die "curl is missing"
# Each attack holds its sockets in this process; vigil inherits the limit.
max_count=$slow_connections
for n in $idle_counts; do ((n > max_count)) && max_count=$n; done
want=$((max_count * 2 + 1024))
if (($(ulimit -n) < want)); then
    ulimit -n "$want" 2>/dev/null || die "cannot raise ulimit -n to $want (hard limit $(ulimit -Hn))"
fi

if [[ ${SKIP_BUILD:-0} != 1 && -z ${VIGIL_BIN:-} ]]; then
    cargo build --release --bin vigil
fi
[[ -x $vigil_bin ]] || die "$vigil_bin not built"

tmp=$(mktemp -d)
vigil_pid=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $vigil_pid ]] && kill -0 "$vigil_pid" 2>/dev/null; then
        # SIGTERM, not SIGKILL: vigil demo stops and removes its cluster.
        kill -TERM "$vigil_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 600; i++)); do
            kill -0 "$vigil_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$vigil_pid" 2>/dev/null && kill -KILL "$vigil_pid" 2>/dev/null
        wait "$vigil_pid" 2>/dev/null || true
    fi
    rm -rf -- "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$(python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
')
log "starting vigil demo on 127.0.0.1:$port"
"$vigil_bin" demo --listen "127.0.0.1:$port" >"$tmp/vigil.log" 2>&1 &
vigil_pid=$!
deadline=$((SECONDS + ready_timeout))
until curl -fsS -o /dev/null "http://127.0.0.1:$port/health/ready" 2>/dev/null; do
    kill -0 "$vigil_pid" 2>/dev/null || {
        tail -n 40 "$tmp/vigil.log" >&2
        die "vigil demo exited before becoming ready"
    }
    ((SECONDS < deadline)) || die "vigil not ready within ${ready_timeout}s"
    sleep 0.2
done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")
[[ $code == 200 ]] || die "GET /health answered $code before any attack, not 200"

# One attack: hold COUNT connections (reopening those vigil closes; with
# trickle, each sends one header byte a second) while /health is asked
# sequentially, PROBES times or for SECONDS. Prints one Markdown row.
cat >"$tmp/attack.py" <<'PY'
import socket, sys, threading, time

port, label, count, trickle, probes, seconds, pid = sys.argv[1:8]
port, count, probes, seconds, pid = int(port), int(count), int(probes), float(seconds), int(pid)
trickle = trickle == "1"
addr = ("127.0.0.1", port)
stop = threading.Event()
peak = [0]
rss_peak = [0]
HEADER = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def attacker():
    conns = []  # [socket, bytes sent]
    last = time.monotonic()
    while not stop.is_set():
        while len(conns) < count and not stop.is_set():
            s = socket.socket()
            s.settimeout(0.2)
            try:
                s.connect(addr)
            except OSError:
                s.close()
                break
            s.setblocking(False)
            conns.append([s, 0])
        peak[0] = max(peak[0], len(conns))
        rss_peak[0] = max(rss_peak[0], rss_kib())
        send = trickle and time.monotonic() - last >= 1.0
        if send:
            last = time.monotonic()
        alive = []
        for c in conns:
            s = c[0]
            try:
                if send:
                    s.send(HEADER[c[1] % len(HEADER):][:1])
                    c[1] += 1
                if s.recv(512) == b"":
                    s.close()
                    continue
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                continue
            alive.append(c)
        conns = alive
        time.sleep(0.2)
    for c in conns:
        c[0].close()

def health():
    started = time.monotonic()
    s = socket.create_connection(addr, timeout=15)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    elapsed = time.monotonic() - started
    return data.startswith(b"HTTP/1.1 200"), elapsed

thread = threading.Thread(target=attacker, daemon=True)
thread.start()
time.sleep(3)  # let the attack reach its size
latencies, failed = [], 0
deadline = time.monotonic() + seconds
while (seconds > 0 and time.monotonic() < deadline) or (seconds == 0 and len(latencies) + failed < probes):
    try:
        ok, elapsed = health()
    except OSError:
        ok, elapsed = False, 0
    if ok:
        latencies.append(elapsed)
    else:
        failed += 1
    if seconds > 0:
        time.sleep(0.05)
stop.set()
thread.join()
latencies.sort()
def pct(p):
    if not latencies:
        return float("nan")
    return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000
print(f"| {label} | {peak[0]} | {len(latencies)} | {failed} | {pct(0.5):.2f} | {pct(0.99):.2f} | {latencies[-1]*1000 if latencies else float('nan'):.2f} | {rss_peak[0]/1024:.1f} |")
PY

rss_mib() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$vigil_pid/status"; }
table="$tmp/table.md"
{
    echo "| attack | connections held (peak) | /health 200 | failed | p50 ms | p99 ms | max ms | vigil RSS peak MiB |"
    echo "|---|---|---|---|---|---|---|---|"
} >"$table"
log "baseline: vigil RSS $(rss_mib) MiB"
python3 "$tmp/attack.py" "$port" "none (baseline)" 0 0 "$probes" 0 "$vigil_pid" >>"$table"
for n in $idle_counts; do
    log "idle attack: $n connections"
    python3 "$tmp/attack.py" "$port" "$n idle" "$n" 0 "$probes" 0 "$vigil_pid" >>"$table"
    sleep 6 # let vigil close what the attack left
done
log "slowloris: $slow_connections connections for ${slow_seconds}s"
python3 "$tmp/attack.py" "$port" "$slow_connections slowloris, ${slow_seconds} s" \
    "$slow_connections" 1 "$probes" "$slow_seconds" "$vigil_pid" >>"$table"
log "after the attacks: vigil RSS $(rss_mib) MiB"
cat "$table"
if [[ -n ${BENCH_OUT:-} ]]; then
    cp "$table" "$BENCH_OUT"
fi
