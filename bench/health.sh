#!/usr/bin/env bash
# /health benchmark: vigil's admin server against a minimal hyper hello-world
# (examples/hello_health.rs) built the same way. See bench/README.md.
#
#   bench/health.sh
#
# Environment (all optional):
#   IDLE_SECONDS=60      idle CPU measurement window
#   WRK_THREADS=2 WRK_CONNECTIONS=64 WRK_DURATION=10s   wrk load shape
#   HELLO_ONLY=1         measure the hello-world baseline only (no vigil)
#   SKIP_BUILD=1         use the binaries already in target/release
#   BENCH_OUT=FILE       also write the Markdown report to FILE
#   STRICT=1             exit 1 when a target is missed
#   IDLE_CPU_MAX_PCT=0.1 what "idle CPU ≈ 0" means, in % of one core
#   PIN_CPUS=1           servers on CPU 1, wrk on CPU 0 (taskset); use with
#                        WRK_THREADS=1, or wrk's own threads preempt each other
#                        and their scheduling delay shows up as server p99
#
# Needs cargo, curl, wrk, python3 (to pick free ports); installs wrk and curl
# with apt-get when missing. `vigil demo` creates a throwaway PostgreSQL
# cluster (as root, it runs it as the postgres user) and removes it on SIGTERM.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

idle_seconds=${IDLE_SECONDS:-60}
wrk_threads=${WRK_THREADS:-2}
wrk_connections=${WRK_CONNECTIONS:-64}
wrk_duration=${WRK_DURATION:-10s}
hello_only=${HELLO_ONLY:-0}
idle_cpu_max_pct=${IDLE_CPU_MAX_PCT:-0.1}
ready_timeout=60

pin_cpus=${PIN_CPUS:-0}
server_cmd=()
wrk_cmd=(wrk)
if [[ $pin_cpus == 1 ]]; then
    server_cmd=(taskset -c 1)
    wrk_cmd=(taskset -c 0 wrk)
fi

vigil_bin=target/release/vigil
hello_bin=target/release/examples/hello_health

log() { printf '%s\n' "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- tools -----------------------------------------------------------------
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; install them (needs root)"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
clk_tck=$(getconf CLK_TCK)

# --- build -----------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    if [[ $hello_only == 1 ]]; then
        cargo build --release --example hello_health
    else
        cargo build --release --bin vigil --example hello_health
    fi
fi
[[ -x $hello_bin ]] || die "$hello_bin not built"
[[ $hello_only == 1 || -x $vigil_bin ]] || die "$vigil_bin not built"

# --- processes and cleanup ---------------------------------------------------
tmp=$(mktemp -d)
vigil_pid=
hello_pid=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $hello_pid ]] && kill -0 "$hello_pid" 2>/dev/null; then
        kill -TERM "$hello_pid" 2>/dev/null || true
        wait "$hello_pid" 2>/dev/null || true
    fi
    if [[ -n $vigil_pid ]] && kill -0 "$vigil_pid" 2>/dev/null; then
        # SIGTERM, not SIGKILL: vigil demo stops and removes its cluster.
        log "stopping vigil (pid $vigil_pid)"
        kill -TERM "$vigil_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 600; i++)); do
            kill -0 "$vigil_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$vigil_pid" 2>/dev/null; then
            log "vigil did not exit within 60 s of SIGTERM; killing it (its cluster may be left behind)"
            kill -KILL "$vigil_pid" 2>/dev/null || true
        fi
        local vrc=0
        wait "$vigil_pid" 2>/dev/null || vrc=$?
        if ((vrc != 0)); then
            log "vigil exited with status $vrc; last lines of its output:"
            tail -n 20 "$tmp/vigil.log" >&2 || true
        fi
    fi
    rm -rf -- "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Two distinct free ports, both held open while choosing.
read -r port_vigil port_hello < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])
')

if [[ $hello_only != 1 ]]; then
    log "starting vigil demo on 127.0.0.1:$port_vigil"
    "${server_cmd[@]}" "$vigil_bin" demo --listen "127.0.0.1:$port_vigil" >"$tmp/vigil.log" 2>&1 &
    vigil_pid=$!
    deadline=$((SECONDS + ready_timeout))
    until curl -fsS -o /dev/null "http://127.0.0.1:$port_vigil/health/ready" 2>/dev/null; do
        if ! kill -0 "$vigil_pid" 2>/dev/null; then
            tail -n 40 "$tmp/vigil.log" >&2 || true
            die "vigil demo exited before becoming ready"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 40 "$tmp/vigil.log" >&2 || true
            die "vigil not ready within ${ready_timeout}s"
        fi
        sleep 0.2
    done
    log "vigil ready"
fi

log "starting hello_health on 127.0.0.1:$port_hello"
"${server_cmd[@]}" "$hello_bin" "127.0.0.1:$port_hello" >"$tmp/hello.log" 2>&1 &
hello_pid=$!
for ((i = 0; i < 100; i++)); do
    grep -q '^listening on ' "$tmp/hello.log" && break
    kill -0 "$hello_pid" 2>/dev/null || die "hello_health exited: $(cat "$tmp/hello.log")"
    sleep 0.1
done
grep -q '^listening on ' "$tmp/hello.log" || die "hello_health did not start"

# Both must answer /health with 200 before they are measured; a 503 would
# benchmark the error path.
check_health() {
    local name=$1 port=$2 code
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")
    [[ $code == 200 ]] || die "$name: GET /health answered $code, not 200"
}
[[ $hello_only == 1 ]] || check_health vigil "$port_vigil"
check_health hello "$port_hello"

# --- helpers -------------------------------------------------------------------
status_kib() { # PID FIELD -> value in KiB from /proc/PID/status
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
cpu_ticks() { # utime + stime (fields 14 and 15 of /proc/PID/stat)
    local stat rest
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) } # drop "pid (comm) ": comm may contain spaces
    # shellcheck disable=SC2206 # word splitting is the point
    local f=($rest)
    echo $((f[11] + f[12]))
}

# --- idle ----------------------------------------------------------------------
sleep 5
pids=("$hello_pid")
names=(hello)
if [[ $hello_only != 1 ]]; then
    pids=("$vigil_pid" "$hello_pid")
    names=(vigil hello)
fi
declare -A idle_rss idle_cpu_s idle_cpu_pct peak_rss
declare -A t0
for i in "${!pids[@]}"; do
    idle_rss[${names[i]}]=$(kib_to_mib "$(status_kib "${pids[i]}" VmRSS)")
    t0[${names[i]}]=$(cpu_ticks "${pids[i]}")
done
log "measuring idle CPU over ${idle_seconds}s"
sleep "$idle_seconds"
for i in "${!pids[@]}"; do
    n=${names[i]}
    ticks=$(($(cpu_ticks "${pids[i]}") - t0[$n]))
    idle_cpu_s[$n]=$(awk -v t="$ticks" -v hz="$clk_tck" 'BEGIN { printf "%.2f", t / hz }')
    idle_cpu_pct[$n]=$(awk -v t="$ticks" -v hz="$clk_tck" -v s="$idle_seconds" \
        'BEGIN { printf "%.3f", t / hz / s * 100 }')
done

# --- load ----------------------------------------------------------------------
# wrk prints times as 303.00us / 4.27ms / 1.02s / 1.00m; convert to ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000
        else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000
        printf "%.3f", n }'
}
rows=()
declare -A rps_sum runs worst_p99
run_wrk() { # NAME PORT RUN
    local name=$1 port=$2 run=$3 out="$tmp/wrk-$1-$3.txt"
    log "wrk -t$wrk_threads -c$wrk_connections -d$wrk_duration against $name (run $run)"
    "${wrk_cmd[@]}" -t"$wrk_threads" -c"$wrk_connections" -d"$wrk_duration" --latency \
        "http://127.0.0.1:$port/health" >"$out"
    local rps p50 p99 non2xx errors
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    # "Socket errors: connect 0, read 0, write 0, timeout 0" (only when non-zero)
    errors=$(awk '/Socket errors:/ { s = 0; for (i = 3; i <= NF; i++) s += $i; print s }' "$out")
    [[ -n $rps && -n $p50 && -n $p99 ]] || die "could not parse wrk output: $(cat "$out")"
    rows+=("| $name | $run | $(printf '%.0f' "$rps") | $p50 | $p99 | ${non2xx:-0} | ${errors:-0} |")
    rps_sum[$name]=$(awk -v a="${rps_sum[$name]:-0}" -v b="$rps" 'BEGIN { print a + b }')
    runs[$name]=$((${runs[$name]:-0} + 1))
    worst_p99[$name]=$(awk -v a="${worst_p99[$name]:-0}" -v b="$p99" 'BEGIN { print (b > a ? b : a) }')
}
for run in 1 2; do
    [[ $hello_only == 1 ]] || run_wrk vigil "$port_vigil" "$run"
    run_wrk hello "$port_hello" "$run"
done
for i in "${!pids[@]}"; do
    peak_rss[${names[i]}]=$(kib_to_mib "$(status_kib "${pids[i]}" VmHWM)")
done
declare -A mean_rps
for n in "${names[@]}"; do
    mean_rps[$n]=$(awk -v s="${rps_sum[$n]}" -v r="${runs[$n]}" 'BEGIN { printf "%.0f", s / r }')
done

# --- report ----------------------------------------------------------------------
report="$tmp/report.md"
verdict() { if [[ $1 == 1 ]]; then echo "met"; else echo "**missed**"; fi; }
missed=0
{
    echo "### /health benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    echo "Machine: $(nproc) CPUs, $(uname -r); load generator on the same machine."
    echo "wrk -t$wrk_threads -c$wrk_connections -d$wrk_duration --latency, order:" \
        "$([[ $hello_only == 1 ]] && echo "hello, hello" || echo "vigil, hello, vigil, hello")."
    if [[ $pin_cpus == 1 ]]; then
        echo "PIN_CPUS=1: servers pinned to CPU 1, wrk to CPU 0."
    fi
    echo
    echo "| server | run | requests/s | p50 ms | p99 ms | non-2xx | socket errors |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "| server | mean requests/s | worst p99 ms | idle RSS MiB | idle CPU over ${idle_seconds}s | peak RSS (VmHWM) MiB |"
    echo "|---|---|---|---|---|---|"
    for n in "${names[@]}"; do
        echo "| $n | ${mean_rps[$n]} | ${worst_p99[$n]} | ${idle_rss[$n]} |" \
            "${idle_cpu_s[$n]} CPU-s (${idle_cpu_pct[$n]} % of a core) | ${peak_rss[$n]} |"
    done
    echo
    if [[ $hello_only == 1 ]]; then
        echo "Hello-world baseline only (HELLO_ONLY=1): no vigil figures, no targets checked."
    else
        ratio=$(awk -v v="${mean_rps[vigil]}" -v h="${mean_rps[hello]}" 'BEGIN { printf "%.2f", v / h }')
        ok_ratio=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8) }')
        ok_p99=$(awk -v p="${worst_p99[vigil]}" 'BEGIN { print (p < 1) }')
        ok_rss=$(awk -v m="${idle_rss[vigil]}" 'BEGIN { print (m <= 20) }')
        ok_cpu=$(awk -v c="${idle_cpu_pct[vigil]}" -v max="$idle_cpu_max_pct" 'BEGIN { print (c <= max) }')
        echo "| target | vigil | verdict |"
        echo "|---|---|---|"
        echo "| requests/s ≥ 0.8 × hello-world | ratio $ratio | $(verdict "$ok_ratio") |"
        echo "| p99 < 1 ms (worst run) | ${worst_p99[vigil]} ms | $(verdict "$ok_p99") |"
        echo "| idle RSS ≤ 20 MiB | ${idle_rss[vigil]} MiB | $(verdict "$ok_rss") |"
        echo "| idle CPU ≈ 0 (≤ ${idle_cpu_max_pct} % of a core) | ${idle_cpu_pct[vigil]} % | $(verdict "$ok_cpu") |"
        echo
        echo "Idle CPU counts the vigil process only, not the demo's PostgreSQL" \
            "processes. VmHWM is the peak since start, start-up included."
        for ok in "$ok_ratio" "$ok_p99" "$ok_rss" "$ok_cpu"; do
            [[ $ok == 1 ]] || missed=1
        done
    fi
} >"$report"
cat "$report"
if [[ -n ${BENCH_OUT:-} ]]; then
    cp -- "$report" "$BENCH_OUT"
fi
if [[ ${STRICT:-0} == 1 && $missed == 1 ]]; then
    exit 1
fi
