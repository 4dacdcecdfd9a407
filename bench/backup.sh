#!/usr/bin/env bash
# Logical backup and restore benchmark: `vigil backup` / `vigil restore`
# against the raw pipelines they wrap, in interleaved pairs. See
# bench/README.md.
#
#   bench/backup.sh
#
# Environment (all optional):
#   DATA="pgbench text"  data sets to run, in order (each its own database):
#                        pgbench = pgbench -i -s PGBENCH_SCALE
#                        text    = a text-heavy table of about TEXT_MB MiB
#                                  on disk that zstd -3 shrinks about 3:1
#                        tiny    = pgbench scale 2 + 8 MiB of that text
#   PGBENCH_SCALE=50 TEXT_MB=800
#   PAIRS=5              interleaved pairs per comparison
#   SKIP_BUILD=1         use the vigil already in target/release
#   VIGIL_BIN=PATH       benchmark this vigil binary instead (no build)
#   BEFORE_BIN=PATH      also count the syscalls of this (older) vigil
#   STRACE=0             skip the syscall counts (strace -f, one backup and
#                        one raw pipeline per data set)
#   PERF=0               skip the undisturbed counts (perf stat: CPU time,
#                        context switches, syscalls) of one backup of each
#   BENCH_OUT=FILE       also write the Markdown report to FILE
#   STRICT=1             exit 1 when a target is missed
#   KEEP_TMP=1           keep the temporary directory (config, logs, traces)
#
# Comparisons, each run as PAIRS pairs whose order alternates (vigil first
# in odd pairs, the raw pipeline first in even ones); a pair's ratio is
# vigil's time over the raw pipeline's in the same pair:
#   backup            vigil backup plain-SET    vs  pg_dump -Fc -Z0 | zstd -3 -T0 -o F && sync F
#   encrypted backup  vigil backup sealed-SET   vs  pg_dump -Fc -Z0 | zstd -3 -T0 | age -r R -o F && sync F
#   restore           vigil restore plain-SET --latest --create
#                                               vs  createdb && zstd -dc F | pg_restore -d DB
#
# Creates a throwaway PostgreSQL cluster in a temporary directory (as root it
# runs as the postgres user: initdb refuses root) with fsync=off, and removes
# it on exit. Installs zstd, time, python3, age, strace and (for pgbench)
# postgresql-contrib with apt-get when missing and running as root.
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME, awk and sort

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

pairs=${PAIRS:-5}
read -r -a sets <<<"${DATA:-pgbench text}"
pgbench_scale=${PGBENCH_SCALE:-50}
text_mb=${TEXT_MB:-800}
vigil_bin=${VIGIL_BIN:-$repo/target/release/vigil}
before_bin=${BEFORE_BIN:-}
strace_on=${STRACE:-1}
perf_on=${PERF:-1}
command -v perf >/dev/null 2>&1 || perf_on=0
ratio_target=1.03
# Restore before issue 18: 0.89-0.92x of the raw pipeline.
restore_target=0.92
rss_margin_mib=16

log() { printf '%s\n' "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ $pairs =~ ^[1-9][0-9]*$ ]] || die "PAIRS must be a positive integer, not '$pairs'"
((${#sets[@]})) || die "DATA is empty (pgbench, text, tiny)"
for s in "${sets[@]}"; do
    [[ $s == pgbench || $s == text || $s == tiny ]] || die "unknown data set '$s' (pgbench, text, tiny)"
done
[[ $pgbench_scale =~ ^[1-9][0-9]*$ ]] || die "PGBENCH_SCALE must be a positive integer"
[[ $text_mb =~ ^[1-9][0-9]*$ ]] || die "TEXT_MB must be a positive integer"
[[ -z $before_bin || -x $before_bin ]] || die "BEFORE_BIN=$before_bin is not executable"

# --- PostgreSQL binaries ------------------------------------------------------
pg_bin=
for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/pg_dump ]]; then
        pg_bin=$d
        break
    fi
done
[[ -n $pg_bin ]] || die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
export PATH=$pg_bin:$PATH

# --- tools ---------------------------------------------------------------------
packages=()
command -v zstd >/dev/null 2>&1 || packages+=(zstd)
[[ -x /usr/bin/time ]] || packages+=(time)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
command -v age-keygen >/dev/null 2>&1 || packages+=(age)
[[ $strace_on == 0 ]] || command -v strace >/dev/null 2>&1 || packages+=(strace)
[[ -x $pg_bin/pgbench ]] || command -v pgbench >/dev/null 2>&1 || packages+=(postgresql-contrib)
if ((${#packages[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${packages[*]}; install them (needs root)"
    log "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
pgbench_bin=$pg_bin/pgbench
[[ -x $pgbench_bin ]] || pgbench_bin=$(command -v pgbench) || die "pgbench not found"
as_root=0
if [[ $(id -u) -eq 0 ]]; then
    as_root=1
    id postgres >/dev/null 2>&1 ||
        die "running as root, but there is no postgres user to run the cluster as (apt-get install postgresql)"
fi
as_pg() { # run as the cluster's owner
    if [[ $as_root == 1 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# --- build ---------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 && -z ${VIGIL_BIN:-} ]]; then
    cargo build --release --bin vigil
fi
[[ -x $vigil_bin ]] || die "$vigil_bin not built"

# --- temporary directory and cleanup ---------------------------------------------
tmp=$(mktemp -d -t vigil-bench-backup.XXXXXX)
chmod 755 "$tmp" # the postgres user must reach $tmp/pg
pgdir=$tmp/pg
cluster_started=0
bg_pids=()     # running background jobs of ours (emptied once waited for)
vigil_pidfile= # the running vigil's pid, for cleanup

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    if [[ -n $vigil_pidfile && -s $vigil_pidfile ]]; then
        read -r p <"$vigil_pidfile" || true
        if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then
            log "stopping vigil (pid $p)"
            kill -TERM "$p" 2>/dev/null || true
        fi
    fi
    for p in "${bg_pids[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    if [[ $cluster_started == 1 && -f $pgdir/data/postmaster.pid ]]; then
        as_pg pg_ctl -D "$pgdir/data" -w -m immediate stop >/dev/null 2>&1 ||
            log "could not stop the cluster in $pgdir"
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        log "kept $tmp"
    else
        rm -rf -- "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- cluster ---------------------------------------------------------------------
port=$(python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
')
password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -m 700 "$pgdir"
printf '%s\n' "$password" >"$pgdir/pwfile"
if [[ $as_root == 1 ]]; then
    chown -R postgres: "$pgdir"
fi
pg_version=$(pg_ctl --version | awk '{ print $3 }')
pg_options="-c fsync=off -c max_wal_size=4GB"
log "initdb (PostgreSQL $pg_version, $pg_bin) in $pgdir"
as_pg initdb -D "$pgdir/data" -U postgres -A scram-sha-256 -E UTF8 --locale=C \
    --no-sync --no-instructions --pwfile="$pgdir/pwfile" >"$tmp/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 20 "$tmp/initdb.log")"
rm -f -- "$pgdir/pwfile"
log "starting PostgreSQL on 127.0.0.1:$port ($pg_options)"
cluster_started=1
as_pg pg_ctl -D "$pgdir/data" -w -t 60 -l "$pgdir/postgres.log" \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 $pg_options" start >/dev/null ||
    die "PostgreSQL did not start: $(tail -n 20 "$pgdir/postgres.log" 2>/dev/null)"

export PGPASSWORD=$password
conn=(-h 127.0.0.1 -p "$port" -U postgres)
sql() { # DB SQL -> unaligned, tuples-only output
    PGOPTIONS='-c client_min_messages=warning' \
        psql "${conn[@]}" -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}
sql postgres "CREATE DATABASE vigil" >/dev/null

# --- vigil config ------------------------------------------------------------------
config=$tmp/vigil.toml
mkdir -p "$tmp/state" "$tmp/repo" "$tmp/repo-sealed"
(umask 077 && printf '%s\n' "$password" >"$tmp/pgpass")
age-keygen -o "$tmp/age.key" 2>/dev/null
recipient=$(awk '/^# public key: / { print $4 }' "$tmp/age.key")
[[ $recipient == age1* ]] || die "no public key in $tmp/age.key"
job_section() { # NAME REPOSITORY DATABASE
    cat <<EOF
[jobs.$1]
kind = "postgres"
source = "postgres://postgres@127.0.0.1:$port/$3"
password_file = "$tmp/pgpass"
databases = ["$3"]
repository = "$2"
every = "24h"
compression = "zstd"
compression_level = 3

EOF
}
{
    cat <<EOF
[daemon]
state_dir = "$tmp/state"

[log]
level = "warn"

[admin]
listen = "127.0.0.1:0"

[catalog]
url = "postgres://postgres@127.0.0.1:$port/vigil"
password_file = "$tmp/pgpass"

[repositories.local]
scheme = "fs"

[repositories.local.options]
root = "$tmp/repo"

[repositories.sealed]
scheme = "fs"

[repositories.sealed.options]
root = "$tmp/repo-sealed"

[repositories.sealed.encryption]
recipients = ["$recipient"]
identity_file = "$tmp/age.key"

EOF
    for s in "${sets[@]}"; do
        job_section "plain-$s" local "bench_$s"
        job_section "sealed-$s" sealed "bench_$s"
    done
} >"$config"
"$vigil_bin" --config "$config" check-config >"$tmp/check-config.log" 2>&1 ||
    die "vigil rejects the generated config $config: $(tail -n 20 "$tmp/check-config.log")"
# Untimed: the first timed run must not pay for the catalog migrations.
env -u PGPASSWORD "$vigil_bin" --config "$config" migrate >"$tmp/migrate.log" 2>&1 ||
    die "vigil migrate failed: $(tail -n 20 "$tmp/migrate.log")"

# --- helpers -------------------------------------------------------------------------
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
    if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }
min_of() { printf '%s\n' "$@" | sort -g | head -n 1; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }'; }
maxrss_kib() { # /usr/bin/time -v output -> KiB
    local v
    v=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$1")
    [[ -n $v ]] || die "no maximum RSS in $1"
    echo "$v"
}
cpu_s() { # /usr/bin/time -v outputs -> their user + system seconds
    awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { s += $2 } END { printf "%.2f", s }' "$@"
}
checkpoint() { sql postgres "CHECKPOINT" >/dev/null; }
file_bytes() { stat -c %s "$1"; }

# Runs vigil under /usr/bin/time -v. Sets run_wall, run_cpu (user + system
# of vigil and its children) and run_rss_kib (GNU time's figure: the
# largest of vigil and its children, pg_dump/pg_restore).
run_vigil() { # LABEL VIGIL-ARGS...
    local label=$1
    shift
    local pidfile=$tmp/$label.pid timefile=$tmp/$label.time t0 t1 tpid rc=0
    rm -f -- "$pidfile"
    vigil_pidfile=$pidfile
    t0=$EPOCHREALTIME
    # A backup reads its password from the job's file; a restore's --to URL
    # has none (PGPASSWORD in vigil's environment).
    local envargs=()
    [[ $1 == backup ]] && envargs=(-u PGPASSWORD)
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner sh
    env "${envargs[@]}" /usr/bin/time -v -o "$timefile" \
        sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$vigil_bin" --config "$config" "$@" \
        >"$tmp/$label.log" 2>&1 &
    tpid=$!
    bg_pids+=("$tpid")
    wait "$tpid" || rc=$?
    t1=$EPOCHREALTIME
    bg_pids=()
    vigil_pidfile=
    ((rc == 0)) || die "vigil $* failed (status $rc): $(tail -n 20 "$tmp/$label.log")"
    run_wall=$(elapsed "$t0" "$t1")
    run_rss_kib=$(maxrss_kib "$timefile")
    run_cpu=$(cpu_s "$timefile")
}

# --- data ------------------------------------------------------------------------------
# Three random md5s, the last repeated three times: 160 characters of which
# 96 are random hex, ~200 bytes a row on disk; zstd -3 takes the dump ~3:1.
text_rows_per_mib=5200
text_row="md5(random()::text) || md5(random()::text) || repeat(md5(random()::text), 3)"

count_tables() { # SET -> the tables whose row counts check a restore
    case $1 in
    pgbench) echo pgbench_accounts ;;
    text) echo notes ;;
    tiny) echo pgbench_accounts notes ;;
    esac
}

prepare_data() { # SET
    local set=$1 db=bench_$1 scale=0 mb=0 t0
    case $set in
    pgbench) scale=$pgbench_scale ;;
    text) mb=$text_mb ;;
    tiny) scale=2 mb=8 ;;
    esac
    local avail_mb
    avail_mb=$(df -Pm "$tmp" | awk 'NR == 2 { print $4 }')
    ((avail_mb > (scale * 16 + mb) * 5)) ||
        die "$set: $avail_mb MiB free in $tmp, want about $(((scale * 16 + mb) * 5)) MiB (database, restore copy, WAL, dumps)"
    sql postgres "CREATE DATABASE $db" >/dev/null
    t0=$EPOCHREALTIME
    if ((scale)); then
        log "$set: pgbench -i -s $scale"
        "$pgbench_bin" "${conn[@]}" -i -q -s "$scale" "$db" >"$tmp/pgbench-$set.log" 2>&1 ||
            die "pgbench -i failed: $(tail -n 20 "$tmp/pgbench-$set.log")"
    fi
    if ((mb)); then
        log "$set: text-heavy table, $((mb * text_rows_per_mib)) rows (~$mb MiB)"
        sql "$db" "CREATE TABLE notes AS SELECT g AS id, $text_row AS t
                   FROM generate_series(1, $((mb * text_rows_per_mib))) g" >/dev/null
        sql "$db" "VACUUM (FREEZE, ANALYZE) notes" >/dev/null
    fi
    log "$set: data ready in $(elapsed "$t0" "$EPOCHREALTIME") s"
    db_bytes=$(sql "$db" "SELECT pg_database_size('$db')")
    expected_counts=()
    local t
    for t in $(count_tables "$set"); do
        expected_counts+=("$(sql "$db" "SELECT count(*) FROM $t")")
    done
    # Untimed warm-up (page cache, hint bits); also the raw dump size.
    log "$set: warm-up pg_dump -Fc -Z0"
    raw_dump_bytes=$(pg_dump "${conn[@]}" -Fc -Z0 "$db" | wc -c)
}

check_restored() { # SET LABEL: the restored database holds every row
    local i=0 t n
    for t in $(count_tables "$1"); do
        n=$(sql restored "SELECT count(*) FROM $t")
        [[ $n == "${expected_counts[i]}" ]] ||
            die "$2: restored $n rows of $t, expected ${expected_counts[i]}"
        i=$((i + 1))
    done
}

# --- the raw pipelines -------------------------------------------------------------------
# Each sets raw_wall, raw_cpu (user + system of its processes) and
# raw_rss_kib (the largest process of the pipeline).
raw_backup() { # DB FILE
    local t0 t1
    t0=$EPOCHREALTIME
    /usr/bin/time -v -o "$tmp/raw-pg_dump.time" pg_dump "${conn[@]}" -Fc -Z0 "$1" |
        /usr/bin/time -v -o "$tmp/raw-zstd.time" zstd -3 -T0 -q -f -o "$2"
    sync "$2"
    t1=$EPOCHREALTIME
    raw_wall=$(elapsed "$t0" "$t1")
    raw_rss_kib=$(max_of "$(maxrss_kib "$tmp/raw-pg_dump.time")" "$(maxrss_kib "$tmp/raw-zstd.time")")
    raw_cpu=$(cpu_s "$tmp/raw-pg_dump.time" "$tmp/raw-zstd.time")
}

raw_sealed_backup() { # DB FILE
    local t0 t1
    t0=$EPOCHREALTIME
    /usr/bin/time -v -o "$tmp/raw-pg_dump.time" pg_dump "${conn[@]}" -Fc -Z0 "$1" |
        /usr/bin/time -v -o "$tmp/raw-zstd.time" zstd -3 -T0 -q -c |
        /usr/bin/time -v -o "$tmp/raw-age.time" age -r "$recipient" -o "$2"
    sync "$2"
    t1=$EPOCHREALTIME
    raw_wall=$(elapsed "$t0" "$t1")
    raw_rss_kib=$(max_of "$(maxrss_kib "$tmp/raw-pg_dump.time")" "$(maxrss_kib "$tmp/raw-zstd.time")" \
        "$(maxrss_kib "$tmp/raw-age.time")")
    raw_cpu=$(cpu_s "$tmp/raw-pg_dump.time" "$tmp/raw-zstd.time" "$tmp/raw-age.time")
}

raw_restore() { # FILE
    local t0 t1
    t0=$EPOCHREALTIME
    createdb "${conn[@]}" restored
    /usr/bin/time -v -o "$tmp/raw-zstd-d.time" zstd -dc -q "$1" |
        /usr/bin/time -v -o "$tmp/raw-pg_restore.time" pg_restore "${conn[@]}" -d restored
    t1=$EPOCHREALTIME
    raw_wall=$(elapsed "$t0" "$t1")
    raw_rss_kib=$(max_of "$(maxrss_kib "$tmp/raw-zstd-d.time")" "$(maxrss_kib "$tmp/raw-pg_restore.time")")
    raw_cpu=$(cpu_s "$tmp/raw-zstd-d.time" "$tmp/raw-pg_restore.time")
}

# --- syscall counts ------------------------------------------------------------------------
# Counts a `strace -f` trace's calls by process (its last execve, else its
# creator's; the traced command counts as ROOT), and the reads that returned
# data in the process that reads the source pipe (vigil, or zstd).
# Prints: group futex epoll_wait poll read write total data-reads avg-read-bytes
count_trace() { # TRACE READER ROOT
    awk -v reader="$2" -v root="$3" '
    function group(pid) { return (pid in name) ? name[pid] : root }
    {
        pid = $1
        if ($2 ~ /^execve\(/) {
            p = $2; sub(/^execve\("/, "", p); sub(/".*/, "", p); n = split(p, parts, "/")
            # The first execve is the traced command itself.
            name[pid] = (!execs++) ? root : parts[n]
        }
        if ($2 ~ /^<\.\.\./) { # a resumed call: its result
            if ($3 == "read" && pending[pid] && $NF ~ /^[0-9]+$/ && $NF > 0) {
                g = group(pid); if (g == reader) { dr++; db += $NF }
            }
            if ($3 ~ /^(clone|clone3|fork|vfork)$/ && $NF ~ /^[0-9]+$/ && !($NF in name)) name[$NF] = group(pid)
            pending[pid] = 0
            next
        }
        if (match($2, /^[a-z_0-9]+\(/) == 0) next
        sc = substr($2, 1, RLENGTH - 1)
        # A new thread or process belongs to its creator until it execs.
        if (sc ~ /^(clone|clone3|fork|vfork)$/ && $NF ~ /^[0-9]+$/ && !($NF in name)) name[$NF] = group(pid)
        g = group(pid)
        calls[g, sc]++; total[g]++; groups[g] = 1
        if (sc == "read") {
            if ($0 ~ /<unfinished \.\.\.>$/) pending[pid] = 1
            else if (g == reader && $NF ~ /^[0-9]+$/ && $NF > 0) { dr++; db += $NF }
        }
    }
    END {
        for (g in groups)
            printf "%s %d %d %d %d %d %d %d %d\n", g, calls[g, "futex"], calls[g, "epoll_wait"],
                calls[g, "poll"], calls[g, "read"], calls[g, "write"], total[g],
                (g == reader) ? dr : 0, (g == reader && dr) ? db / dr : 0
    }' "$1"
}

syscall_rows=() # Markdown rows, per data set
strace_vigil() { # SET LABEL BINARY
    local trace=$tmp/strace-$1-$2.txt
    log "$1: strace -f $2"
    env -u PGPASSWORD strace -f -qq -s 64 -o "$trace" "$3" --config "$config" backup "plain-$1" \
        >"$tmp/strace-$1-$2.log" 2>&1 || die "strace'd vigil backup failed: $(tail -n 5 "$tmp/strace-$1-$2.log")"
    add_syscall_rows "$1" "$2" "$trace" vigil vigil
}
strace_raw() { # SET
    local trace=$tmp/strace-$1-raw.txt
    log "$1: strace -f raw pipeline"
    strace -f -qq -s 64 -o "$trace" sh -c \
        "pg_dump -h 127.0.0.1 -p $port -U postgres -Fc -Z0 bench_$1 | zstd -3 -T0 -q -f -o $tmp/strace.zst && sync $tmp/strace.zst"
    rm -f -- "$tmp/strace.zst"
    add_syscall_rows "$1" "raw pipeline" "$trace" zstd sh
}
add_syscall_rows() { # SET LABEL TRACE READER ROOT
    local g futex epoll poll reads writes total dr avg
    while read -r g futex epoll poll reads writes total dr avg; do
        [[ $g == pg_dump || $g == "$4" ]] || continue
        local who=$g
        [[ $g == "$4" ]] && who="$g (reads the dump)"
        syscall_rows+=("| $1 | $2 | $who | $futex | $epoll | $poll | $reads | $dr | $avg | $writes | $total |")
    done < <(count_trace "$3" "$4" "$5" | sort)
    [[ ${KEEP_TMP:-0} == 1 ]] || rm -f -- "$3"
}

# perf stat over the whole process tree: nothing is slowed down, unlike
# under strace, so these are the counts of a normal run.
perf_events=task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_futex
perf_events+=,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read
perf_rows=()
perf_run() { # SET LABEL COMMAND...
    local set=$1 label=$2 out=$tmp/perf.csv
    shift 2
    log "$set: perf stat $label"
    perf stat -x, -o "$out" -e "$perf_events" -- "$@" >"$tmp/perf.log" 2>&1 ||
        die "perf stat $label failed: $(tail -n 5 "$tmp/perf.log")"
    perf_rows+=("$(awk -F, -v set="$set" -v label="$label" '
        $3 == "task-clock" { v["cpu"] = sprintf("%.2f", $1 / 1000) }
        $3 ~ /context-switches/ { v["cs"] = $1 }
        $3 ~ /sys_enter$/ { v["all"] = $1 }
        $3 ~ /futex/ { v["futex"] = $1 }
        $3 ~ /epoll_wait/ { v["epoll"] = $1 }
        $3 ~ /sys_enter_read/ { v["read"] = $1 }
        END { printf "| %s | %s | %s | %s | %s | %s | %s | %s |", set, label, v["cpu"], v["cs"],
            v["all"], v["futex"], v["epoll"], v["read"] }' "$out")")
}
perf_set() { # SET
    local set=$1
    [[ -z $before_bin ]] || perf_run "$set" "vigil before (BEFORE_BIN)" \
        env -u PGPASSWORD "$before_bin" --config "$config" backup "plain-$set"
    perf_run "$set" "vigil" env -u PGPASSWORD "$vigil_bin" --config "$config" backup "plain-$set"
    perf_run "$set" "raw pipeline" sh -c \
        "pg_dump -h 127.0.0.1 -p $port -U postgres -Fc -Z0 bench_$set | zstd -3 -T0 -q -f -o $tmp/perf.zst && sync $tmp/perf.zst"
    rm -f -- "$tmp/perf.zst"
}

# --- one data set ------------------------------------------------------------------------
report_body=$tmp/body.md
: >"$report_body"
missed=0
verdict() { if [[ $1 == 1 ]]; then echo "met"; else echo "**missed**"; fi; }
targets=()
target() { # TEXT RESULT OK
    targets+=("| $1 | $2 | $(verdict "$3") |")
    [[ $3 == 1 ]] || missed=1
}

# One comparison's summary row; sets summary_ratio, summary_vrss,
# summary_rrss and pairs_out (each pair's times and ratio).
summarize() { # NAME VIGIL-WALLS RAW-WALLS VIGIL-RSS RAW-RSS VIGIL-CPU RAW-CPU
    local name=$1 i
    local -a sv sw cv cw rs=() cs=()
    read -r -a sv <<<"$2"
    read -r -a sw <<<"$3"
    read -r -a cv <<<"$6"
    read -r -a cw <<<"$7"
    pairs_out=
    for i in "${!sv[@]}"; do
        rs+=("$(ratio "${sv[i]}" "${sw[i]}")")
        cs+=("$(ratio "${cv[i]}" "${cw[i]}")")
        pairs_out+="${pairs_out:+, }${sv[i]}/${sw[i]} s = ${rs[i]}"
    done
    local med lo hi
    med=$(median "${rs[@]}")
    lo=$(min_of "${rs[@]}")
    hi=$(max_of "${rs[@]}")
    # shellcheck disable=SC2086 # word splitting is the point
    summary_vrss=$(kib_mib "$(max_of $4)")
    # shellcheck disable=SC2086
    summary_rrss=$(kib_mib "$(max_of $5)")
    summary_ratio=$med
    echo "| $name | ${#sv[@]} | $(median "${sv[@]}") | $(median "${sw[@]}") | **$med** | $lo–$hi |" \
        "$(median "${cv[@]}") / $(median "${cw[@]}") | $(median "${cs[@]}") | $summary_vrss | $summary_rrss |"
}

run_set() { # SET
    local set=$1 db=bench_$1 p
    prepare_data "$set"
    local cfile=$tmp/raw.dump.zst efile=$tmp/raw.dump.zst.age
    local aw="" cw="" ar="" cr="" bw="" ew="" br="" er="" vw="" rw="" vr="" rr=""
    local ac="" cc="" bc="" ec="" vc="" rc=""
    for ((p = 1; p <= pairs; p++)); do
        local order=(vigil raw)
        ((p % 2)) || order=(raw vigil)
        local who
        for who in "${order[@]}"; do
            checkpoint
            log "$set: backup pair $p/$pairs, $who"
            if [[ $who == vigil ]]; then
                run_vigil "backup-$set" backup "plain-$set"
                aw+="$run_wall " ar+="$run_rss_kib " ac+="$run_cpu "
            else
                raw_backup "$db" "$cfile"
                cw+="$raw_wall " cr+="$raw_rss_kib " cc+="$raw_cpu "
            fi
        done
        for who in "${order[@]}"; do
            checkpoint
            log "$set: encrypted backup pair $p/$pairs, $who"
            if [[ $who == vigil ]]; then
                run_vigil "sealed-$set" backup "sealed-$set"
                bw+="$run_wall " br+="$run_rss_kib " bc+="$run_cpu "
            else
                raw_sealed_backup "$db" "$efile"
                ew+="$raw_wall " er+="$raw_rss_kib " ec+="$raw_cpu "
            fi
        done
    done
    local stored_c stored_e
    stored_c=$(file_bytes "$cfile")
    stored_e=$(file_bytes "$efile")
    rm -f -- "$efile"

    local url="postgres://postgres@127.0.0.1:$port/restored"
    for ((p = 1; p <= pairs; p++)); do
        local order=(vigil raw)
        ((p % 2)) || order=(raw vigil)
        for who in "${order[@]}"; do
            sql postgres "DROP DATABASE IF EXISTS restored" >/dev/null
            checkpoint
            log "$set: restore pair $p/$pairs, $who"
            if [[ $who == vigil ]]; then
                run_vigil "restore-$set" restore "plain-$set" --latest --to "$url" --create
                vw+="$run_wall " vr+="$run_rss_kib " vc+="$run_cpu "
                check_restored "$set" "vigil restore"
            else
                raw_restore "$cfile"
                rw+="$raw_wall " rr+="$raw_rss_kib " rc+="$raw_cpu "
                check_restored "$set" "raw restore"
            fi
        done
    done
    sql postgres "DROP DATABASE IF EXISTS restored" >/dev/null
    rm -f -- "$cfile"

    [[ $perf_on == 0 ]] || perf_set "$set"
    if [[ $strace_on != 0 ]]; then
        [[ -z $before_bin ]] || strace_vigil "$set" "vigil before (BEFORE_BIN)" "$before_bin"
        strace_vigil "$set" "vigil" "$vigil_bin"
        strace_raw "$set"
    fi

    local desc
    case $set in
    pgbench) desc="pgbench scale $pgbench_scale" ;;
    text) desc="text-heavy table, TEXT_MB=$text_mb" ;;
    tiny) desc="pgbench scale 2 + 8 MiB of text" ;;
    esac
    local pairs_a pairs_b pairs_r
    {
        echo "#### $set: $desc ($(mib "$db_bytes") MiB database, $(mib "$raw_dump_bytes") MiB \`pg_dump -Fc -Z0\` output)"
        echo
        echo "Stored by the raw pipeline: $(mib "$stored_c") MiB" \
            "($(awk -v r="$raw_dump_bytes" -v s="$stored_c" 'BEGIN { printf "%.1f:1", r / s }')), $(mib "$stored_e") MiB with age."
        echo
        echo "| comparison | pairs | vigil median s | raw median s | median pair ratio | pair ratios min–max |" \
            "CPU s vigil / raw (medians) | CPU median pair ratio | vigil peak RSS MiB | raw pipeline peak RSS MiB |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        summarize "backup" "$aw" "$cw" "$ar" "$cr" "$ac" "$cc"
        pairs_a=$pairs_out
        target "$set: backup ≤ ${ratio_target}×" "$summary_ratio" "$(le "$summary_ratio" "$ratio_target")"
        target "$set: backup peak RSS ≤ raw + $rss_margin_mib MiB" "$summary_vrss MiB vs $summary_rrss MiB" \
            "$(le "$summary_vrss" "$(awk -v r="$summary_rrss" -v m="$rss_margin_mib" 'BEGIN { print r + m }')")"
        summarize "encrypted backup" "$bw" "$ew" "$br" "$er" "$bc" "$ec"
        pairs_b=$pairs_out
        target "$set: encrypted backup ≤ ${ratio_target}×" "$summary_ratio" "$(le "$summary_ratio" "$ratio_target")"
        target "$set: encrypted backup peak RSS ≤ raw + $rss_margin_mib MiB" "$summary_vrss MiB vs $summary_rrss MiB" \
            "$(le "$summary_vrss" "$(awk -v r="$summary_rrss" -v m="$rss_margin_mib" 'BEGIN { print r + m }')")"
        summarize "restore" "$vw" "$rw" "$vr" "$rr" "$vc" "$rc"
        pairs_r=$pairs_out
        target "$set: restore ≤ ${restore_target}× (as before issue 18)" "$summary_ratio" "$(le "$summary_ratio" "$restore_target")"
        echo
        echo "Pairs in order (vigil / raw wall time = ratio): backup $pairs_a; encrypted $pairs_b; restore $pairs_r."
        echo
    } >>"$report_body"
    log "$set: done"
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
zstd_threads=$(echo | zstd -T0 -vv -c 2>&1 >/dev/null | sed -n 's/.*--threads=\([0-9]*\).*/\1/p')
for s in "${sets[@]}"; do
    run_set "$s"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report --------------------------------------------------------------------------------
report=$tmp/report.md
{
    echo "### Logical backup and restore benchmark ($started)"
    echo
    echo "Machine: $(nproc) CPUs, $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo);" \
        "load average (1, 5, 15 min) $load_before before and $load_after after."
    echo "PostgreSQL $pg_version on the same machine: a throwaway cluster with \`$pg_options\`."
    echo "$pairs interleaved pairs per comparison (vigil first in odd pairs, the raw pipeline first in even ones)," \
        "after an untimed \`pg_dump -Fc -Z0\` warm-up; a CHECKPOINT precedes every timed run; restores go" \
        "into a database dropped before each run and are checked by row count."
    echo "\`zstd -T0\` ($(zstd -V | grep -o 'v[0-9.]*[0-9]')): $zstd_threads worker threads. vigil: \`$vigil_bin\`," \
        "fs repositories in the temporary directory, zstd level 3, the shipped defaults otherwise" \
        "(\`compression_workers\` = CPUs); the encrypted job adds an age x25519 recipient."
    echo "Peak RSS is GNU time's \"Maximum resident set size\": for vigil the largest of vigil and its" \
        "pg_dump/pg_restore, for the raw pipeline the largest of its processes."
    echo
    cat "$report_body"
    if ((${#perf_rows[@]})); then
        echo "One backup of job \`plain-SET\` and one raw pipeline under \`perf stat\` (the whole process tree:" \
            "vigil or the shell with pg_dump, zstd, sync; CPU = task-clock):"
        echo
        echo "| data | run | CPU s | context switches | syscalls | futex | epoll_wait | read |"
        echo "|---|---|---|---|---|---|---|---|"
        printf '%s\n' "${perf_rows[@]}"
        echo
    fi
    if ((${#syscall_rows[@]})); then
        echo "Syscalls of one backup of job \`plain-SET\` under \`strace -f\` (calls per process group;" \
            "data reads = reads that returned bytes in the process reading pg_dump's pipe):"
        echo
        echo "| data | run | process | futex | epoll_wait | poll | read | data reads | avg read bytes | write | all syscalls |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|"
        printf '%s\n' "${syscall_rows[@]}"
        echo
    fi
    if ((${#targets[@]})); then
        echo "| target | result | verdict |"
        echo "|---|---|---|"
        printf '%s\n' "${targets[@]}"
    fi
} >"$report"
cat "$report"
if [[ -n ${BENCH_OUT:-} ]]; then
    cp -- "$report" "$BENCH_OUT"
fi
if [[ ${STRICT:-0} == 1 && $missed == 1 ]]; then
    exit 1
fi
