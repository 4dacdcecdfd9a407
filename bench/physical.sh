#!/usr/bin/env bash
# Physical backup benchmark (issue 15): `vigil backup` of a postgres-physical
# job against `pgbackrest --type=full backup` and the server-zstd stream of
# `pg_basebackup` alone (the floor); `vigil restore --to-dir` against
# `pgbackrest restore`; vigil's peak RSS during base backups of a 2 GB and a
# 4 GB cluster. See bench/README.md.
#
#   bench/physical.sh
#
# Environment (all optional):
#   BENCH_CACHE=DIR     where the clusters are built once and kept
#                       (default target/bench-physical; about 11 GB)
#   REBUILD=1           rebuild the cached clusters
#   ROUNDS=3            timed rounds per variant (backup and restore)
#   RSS_SIZES="2g 4g"   clusters whose base backup's peak RSS is measured
#                       ("" for none)
#   VIGIL_SKIP=1        pgBackRest and the floor only: no build, no vigil
#   SKIP_BUILD=1        use the vigil already in target/release
#   VIGIL_BIN=PATH      benchmark this vigil binary instead (no build)
#   BENCH_OUT=FILE      also write the Markdown report to FILE
#   KEEP_TMP=1          keep the temporary directory (configs, logs, repos)
#
# Clusters (PostgreSQL 15, built as the postgres user, cached under
# BENCH_CACHE; each adds random text to a copy of the one before):
#   ref  pgbench scale 50 + 1 GiB of random text  (~1.8 GB: the timed runs)
#   2g   ref + 0.25 GiB more                      (~2 GB: RSS)
#   4g   2g  + 2 GiB more                         (~4 GB: RSS)
# Every run starts the cluster with archive_mode = on and
#   archive_command = '<vigil> --config <cfg> wal-push <job> %p'
# so vigil's and pg_basebackup's archive waits are real; pgBackRest runs with
# archive-check=n (it archives nowhere here), as TESTING.md describes.
#
# Backup variants, alternated (the order rotates by one each round), after an
# untimed warm-up (the floor once) and a CHECKPOINT, a sync and an idle
# archiver before every run:
#   V  vigil --config CFG backup ref            (postgres-physical, fs repo)
#   P  pgbackrest --stanza=bench --type=full backup
#      (compress-type=zst, compress-level=3, process-max=2, start-fast=y)
#   F  pg_basebackup -Ft -D - --compress=server-zstd:level=3,workers=2
#      --no-manifest -X none --checkpoint=fast > /dev/null
# Restore, alternated, into an empty directory removed before every round:
#   vigil restore ref --latest --to-dir DIR  against
#   pgbackrest --stanza=bench --pg1-path=DIR restore
# timed alone and followed by `sync` (what is not yet on disk is not restored).
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME, awk and sort

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

rounds=${ROUNDS:-3}
vigil_skip=${VIGIL_SKIP:-0}
cache=${BENCH_CACHE:-$repo/target/bench-physical}
read -r -a rss_sizes <<<"${RSS_SIZES-2g 4g}"
vigil_bin=${VIGIL_BIN:-$repo/target/release/vigil}
scale=50
cache_version=1 # bump when the way clusters are built changes

log() { printf '%s\n' "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$rounds'"
for s in "${rss_sizes[@]}"; do
    [[ $s == 2g || $s == 4g ]] || die "unknown RSS size '$s' (2g, 4g)"
done
# Random text of each cluster in MiB, cumulative (see the header).
text_mb_of() { case $1 in ref) echo 1024 ;; 2g) echo 1280 ;; 4g) echo 3328 ;; esac }
parent_of() { case $1 in ref) echo "" ;; 2g) echo ref ;; 4g) echo 2g ;; esac }

# --- tools ------------------------------------------------------------------------
pg_bin=/usr/lib/postgresql/15/bin
[[ -x $pg_bin/initdb && -x $pg_bin/pg_basebackup ]] ||
    die "PostgreSQL 15 server binaries not found in $pg_bin (apt-get install postgresql-15)"
export PATH=$pg_bin:$PATH
packages=()
command -v pgbackrest >/dev/null 2>&1 || packages+=(pgbackrest)
[[ -x /usr/bin/time ]] || packages+=(time)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
[[ -x $pg_bin/pgbench ]] || packages+=(postgresql-contrib)
if ((${#packages[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${packages[*]}; install them (needs root)"
    log "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
# pgBackRest, PostgreSQL, archive_command and restore_command all run as the
# postgres OS user (initdb refuses root); so does vigil, which shares the
# repository with its wal-push.
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user (apt-get install postgresql)"
    as_pg() { runuser -u postgres -- "$@"; }
    pg_owner() { chown postgres: "$@"; }
else
    as_pg() { "$@"; }
    pg_owner() { :; }
fi

# --- build -------------------------------------------------------------------------
if [[ $vigil_skip != 1 ]]; then
    if [[ ${SKIP_BUILD:-0} != 1 && -z ${VIGIL_BIN:-} ]]; then
        cargo build --release --bin vigil
    fi
    [[ -x $vigil_bin ]] || die "$vigil_bin not built"
    as_pg test -x "$vigil_bin" || die "the postgres user cannot run $vigil_bin (archive_command runs as postgres)"
fi

# --- helpers -----------------------------------------------------------------------
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
gib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1073741824 }'; }
kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
    if (NR % 2) printf "%.2f", a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
verdict() { if [[ $1 == 1 ]]; then echo "met"; else echo "**missed**"; fi; }
max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }'; }
maxrss_kib() { # /usr/bin/time -v output -> KiB
    local v
    v=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$1")
    [[ -n $v ]] || die "no maximum RSS in $1"
    echo "$v"
}
cpu_s() { # /usr/bin/time -v output -> user + system seconds (process and children)
    awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { s += $2 } END { printf "%.2f", s }' "$1"
}
# CPU seconds of the server's exited backends and walsenders: the
# postmaster's cutime + cstime (the server-side zstd threads live in the
# walsender, which exits when its backup ends).
server_cpu_ticks() { # DATA-DIR
    local pid
    read -r pid <"$1/postmaster.pid"
    awk '{ print $16 + $17 }' "/proc/$pid/stat"
}
# Phases of a `vigil -v backup` from its log's timestamps: to the start of
# BASE_BACKUP (lock, catalog, connection, checkpoint), the stream, and the
# wait for the stop segment plus the commit.
vigil_phases() { # LOG -> "SETUP STREAM WAIT" seconds
    awk '
        function t(ts) { split(substr(ts, 12, 15), a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
        /backup started job=/ && !s0 { s0 = t($1) }
        /base backup started/ { s1 = t($1) }
        /base backup streamed/ { s2 = t($1) }
        /backup committed/ { s3 = t($1) }
        END { printf "%.2f %.2f %.2f\n", s1 - s0, s2 - s1, s3 - s2 }' "$1"
}
dir_bytes() { du -sb "$1" | awk '{ print $1 }'; }
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- temporary directory and cleanup ---------------------------------------------------
tmp=$(mktemp -d -t vigil-bench-physical.XXXXXX)
chmod 755 "$tmp" # the postgres user works in here
sock=$tmp/sock
mkdir -p "$sock" "$tmp/pids" "$tmp/pglog"
pg_owner "$sock" "$tmp/pids" "$tmp/pglog"
pglog=$tmp/pglog/postgres.log
running_data= # data directory of the cluster we started, for cleanup
bg_pids=()

stop_cluster() {
    [[ -n $running_data && -f $running_data/postmaster.pid ]] || return 0
    as_pg pg_ctl -D "$running_data" -w -t 120 -m fast stop >/dev/null ||
        log "could not stop the cluster in $running_data"
    running_data=
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${bg_pids[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
        wait "$p" 2>/dev/null || true
    done
    stop_cluster
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

port=$(free_port)
conn=(-h "$sock" -p "$port" -U postgres)
sql() { # DB SQL -> unaligned, tuples-only output
    PGOPTIONS='-c client_min_messages=warning' \
        psql "${conn[@]}" -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}
start_cluster() { # DATA-DIR EXTRA-OPTIONS
    local data=$1 opts=$2
    log "starting PostgreSQL on $sock:$port ($data)"
    running_data=$data
    as_pg pg_ctl -D "$data" -w -t 300 -l "$pglog" \
        -o "-p $port -k $sock -c listen_addresses=127.0.0.1 $opts" start >/dev/null ||
        die "PostgreSQL did not start: $(tail -n 20 "$pglog" 2>/dev/null)"
}

# --- cached clusters -------------------------------------------------------------------
# Built with wal_level=minimal (CREATE TABLE AS and pgbench -i write no WAL for
# their data) and fsync=off; benchmarked with the defaults plus archiving.
build_opts="-c wal_level=minimal -c max_wal_senders=0 -c archive_mode=off -c fsync=off -c max_wal_size=4GB"
# 'md5 || repeat(md5, 8)': 288 characters, 64 of them random hex; a row takes
# ~327 bytes on disk (25 to an 8 KiB page), as in backup.sh.
text_rows_per_mib=3200

cluster_want() { echo "v$cache_version scale=$scale text_mb=$(text_mb_of "$1") $(pg_ctl --version)"; }
cluster_ready() { [[ ${REBUILD:-0} != 1 && -f $cache/$1/ready && $(cat "$cache/$1/ready") == "$(cluster_want "$1")" ]]; }

build_cluster() { # NAME
    local name=$1 parent dir=$cache/$1 t0
    cluster_ready "$name" && return 0
    parent=$(parent_of "$name")
    [[ -z $parent ]] || build_cluster "$parent"
    local parent_mb=0
    [[ -z $parent ]] || parent_mb=$(text_mb_of "$parent")
    local text_mb=$(($(text_mb_of "$name") - parent_mb))
    local avail_mb
    avail_mb=$(df -Pm "$cache/.." 2>/dev/null | awk 'NR == 2 { print $4 }')
    t0=$EPOCHREALTIME
    rm -rf -- "$dir"
    mkdir -p "$dir"
    chmod 755 "$cache" "$dir"
    pg_owner "$dir"
    if [[ -z $parent ]]; then
        log "$name: initdb in $dir/data"
        as_pg initdb -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync --no-instructions \
            >"$tmp/initdb.log" 2>&1 || die "initdb failed: $(tail -n 20 "$tmp/initdb.log")"
    else
        log "$name: copying $parent ($avail_mb MiB free)"
        cp -a "$cache/$parent/data" "$dir/data"
    fi
    start_cluster "$dir/data" "$build_opts"
    if [[ -z $parent ]]; then
        sql postgres "CREATE DATABASE bench" >/dev/null
        log "$name: pgbench -i -s $scale"
        pgbench "${conn[@]}" -i -q -s "$scale" bench >"$tmp/pgbench.log" 2>&1 ||
            die "pgbench -i failed: $(tail -n 20 "$tmp/pgbench.log")"
    fi
    local table=blob_$name rows=$((text_mb * text_rows_per_mib))
    log "$name: random text, $rows rows (~$text_mb MiB) into bench.$table"
    sql bench "CREATE TABLE $table AS SELECT md5(random()::text) || repeat(md5(random()::text), 8) AS t
               FROM generate_series(1, $rows)" >/dev/null
    sql bench "VACUUM (FREEZE, ANALYZE) $table" >/dev/null
    sql postgres "CHECKPOINT" >/dev/null
    stop_cluster
    cluster_want "$name" >"$dir/ready"
    log "$name: built in $(elapsed "$t0" "$EPOCHREALTIME") s"
}

mkdir -p "$cache"
build_cluster ref
for s in "${rss_sizes[@]}"; do build_cluster "$s"; done

# --- vigil and pgBackRest configuration ---------------------------------------------------
config=$tmp/vigil.toml
vrepo=$tmp/vigil-repo
brepo=$tmp/pgbackrest
mkdir -p "$vrepo" "$tmp/state" "$brepo/repo" "$brepo/log" "$brepo/lock" "$brepo/spool"
pg_owner "$vrepo" "$tmp/state" "$brepo" "$brepo/repo" "$brepo/log" "$brepo/lock" "$brepo/spool"
all_clusters=(ref "${rss_sizes[@]}")
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

[repositories.local]
scheme = "fs"

[repositories.local.options]
root = "$vrepo"

EOF
    for c in "${all_clusters[@]}"; do
        # One job per cluster: each has its own system identifier and WAL.
        cat <<EOF
[jobs.c$c]
kind = "postgres-physical"
source = "postgres://postgres@127.0.0.1:$port/postgres"
repository = "local"
every = "24h"
compression_level = 3

EOF
    done
} >"$config"
chmod 644 "$config"

pgbr_conf=$tmp/pgbackrest.conf
cat >"$pgbr_conf" <<EOF
[global]
repo1-path=$brepo/repo
repo1-retention-full=99
compress-type=zst
compress-level=3
process-max=2
archive-check=n
start-fast=y
log-path=$brepo/log
lock-path=$brepo/lock
spool-path=$brepo/spool
log-level-console=warn
log-level-file=off

[bench]
pg1-path=$cache/ref/data
pg1-port=$port
pg1-socket-path=$sock
pg1-user=postgres
EOF
chmod 644 "$pgbr_conf"
pgbr() { as_pg pgbackrest --config="$pgbr_conf" --stanza=bench "$@"; }

# Starts cluster NAME archiving into vigil job cNAME (or nowhere with VIGIL_SKIP).
start_bench_cluster() { # NAME
    local data=$cache/$1/data archive_command="true"
    if [[ $vigil_skip != 1 ]]; then
        archive_command="'$vigil_bin' --config '$config' wal-push c$1 %p"
    fi
    # Written before the start, not with ALTER SYSTEM: an archive_command left
    # by an earlier run names a config that is gone.
    sed -i '/^archive_command/d' "$data/postgresql.auto.conf"
    printf "archive_command = '%s'\n" "${archive_command//\'/\'\'}" >>"$data/postgresql.auto.conf"
    start_cluster "$data" "-c archive_mode=on"
    sql postgres "SELECT 1 FROM pg_database WHERE datname = 'vigil'" | grep -q 1 ||
        sql postgres "CREATE DATABASE vigil" >/dev/null
}

# Waits until the archiver has nothing left to push, so that no variant pays
# for the one before.
archiver_idle() { # DATA-DIR
    local i ready
    for ((i = 0; i < 600; i++)); do
        ready=$(find "$1/pg_wal/archive_status" -name '*.ready' | wc -l)
        ((ready == 0)) && return 0
        sleep 0.1
    done
    die "the archiver still has $ready segments to push after 60 s: $(tail -n 5 "$pglog")"
}
settle() { # DATA-DIR: before every timed run
    sql postgres "CHECKPOINT" >/dev/null
    sync
    archiver_idle "$1"
}

# Runs CMD... as the postgres user under /usr/bin/time -v and samples the
# VmHWM of CMD's own process. Sets run_wall, run_time_kib, run_hwm_kib.
run_timed() { # LABEL CMD...
    local label=$1
    shift
    local pidfile=$tmp/pids/$label.pid hwmfile=$tmp/$label.hwm timefile=$tmp/$label.time
    rm -f -- "$pidfile" "$hwmfile"
    local t0 t1 tpid spid rc=0
    t0=$EPOCHREALTIME
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner sh
    /usr/bin/time -v -o "$timefile" \
        runuser -u postgres -- sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
        >"$tmp/$label.log" 2>&1 &
    tpid=$!
    bg_pids+=("$tpid")
    (
        # VmHWM only grows: the last reading before exit is the peak.
        while [[ ! -s $pidfile ]]; do
            kill -0 "$tpid" 2>/dev/null || exit 0
            sleep 0.02
        done
        read -r vpid <"$pidfile"
        while kill -0 "$vpid" 2>/dev/null; do
            while read -r k v _; do
                [[ $k == VmHWM: ]] && echo "$v" >"$hwmfile"
            done 2>/dev/null <"/proc/$vpid/status" || true
            sleep 0.1
        done
    ) &
    spid=$!
    bg_pids+=("$spid")
    wait "$tpid" || rc=$?
    t1=$EPOCHREALTIME
    wait "$spid" 2>/dev/null || true
    bg_pids=()
    ((rc == 0)) || die "$label: $* failed (status $rc): $(tail -n 20 "$tmp/$label.log")"
    run_wall=$(elapsed "$t0" "$t1")
    run_time_kib=$(maxrss_kib "$timefile")
    run_hwm_kib=$(cat "$hwmfile" 2>/dev/null || echo 0)
    run_cpu=$(cpu_s "$timefile")
}

floor_cmd=(sh -c 'exec pg_basebackup -h "$0" -p "$1" -U postgres -Ft -D - \
    --compress=server-zstd:level=3,workers=2 --no-manifest -X none --checkpoint=fast >/dev/null'
    "$sock" "$port")
[[ $(id -u) -eq 0 ]] || run_timed() { die "run as root (runuser -u postgres)"; }

# --- the reference cluster: backup ---------------------------------------------------------------
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
ref_data=$cache/ref/data
start_bench_cluster ref
if [[ $vigil_skip != 1 ]]; then
    as_pg "$vigil_bin" --config "$config" check-config >"$tmp/check-config.log" 2>&1 ||
        die "vigil rejects the generated config $config: $(tail -n 20 "$tmp/check-config.log")"
    # Untimed: no timed run pays for the catalog migrations.
    as_pg "$vigil_bin" --config "$config" migrate >"$tmp/migrate.log" 2>&1 ||
        die "vigil migrate failed: $(tail -n 20 "$tmp/migrate.log")"
fi
cluster_bytes=$(sql postgres "SELECT sum(pg_database_size(oid)) FROM pg_database")
data_bytes=$(($(dir_bytes "$ref_data") - $(dir_bytes "$ref_data/pg_wal")))
log "ref: $(gib "$cluster_bytes") GiB in databases, $(gib "$data_bytes") GiB data directory without pg_wal"
pgbr stanza-create >"$tmp/stanza-create.log" 2>&1 || die "pgbackrest stanza-create failed: $(cat "$tmp/stanza-create.log")"
log "warm-up: the floor once (page cache, server)"
settle "$ref_data"
run_timed warmup "${floor_cmd[@]}"

variants=(V P F)
[[ $vigil_skip == 1 ]] && variants=(P F)
declare -A wall=() rss=() hwm=() cpu=() scpu=()
phase_setup= phase_stream= phase_wait=
hz=$(getconf CLK_TCK)
n=${#variants[@]}
for ((r = 1; r <= rounds; r++)); do
    order=()
    for ((i = 0; i < n; i++)); do order+=("${variants[(i + r - 1) % n]}"); done
    for v in "${order[@]}"; do
        settle "$ref_data"
        log "backup round $r/$rounds: $v"
        ticks0=$(server_cpu_ticks "$ref_data")
        case $v in
        V)
            # -v: the INFO lines' timestamps split the run into its phases.
            run_timed "backup-V-$r" "$vigil_bin" -v --config "$config" backup cref
            read -r p_setup p_stream p_wait <<<"$(vigil_phases "$tmp/backup-V-$r.log")"
            phase_setup+="$p_setup " phase_stream+="$p_stream " phase_wait+="$p_wait "
            ;;
        P) run_timed "backup-P-$r" pgbackrest --config="$pgbr_conf" --stanza=bench --type=full backup ;;
        F) run_timed "backup-F-$r" "${floor_cmd[@]}" ;;
        esac
        wall[$v]+="$run_wall "
        rss[$v]+="$run_time_kib "
        hwm[$v]+="$run_hwm_kib "
        cpu[$v]+="$run_cpu "
        # The backends of this run have exited once its archive wait is over.
        settle "$ref_data"
        scpu[$v]+="$(awk -v a="$ticks0" -v b="$(server_cpu_ticks "$ref_data")" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }') "
    done
done
settle "$ref_data"
pgbr_repo_bytes=$(dir_bytes "$brepo/repo/backup")
vigil_repo_bytes=0
[[ $vigil_skip == 1 ]] || vigil_repo_bytes=$(($(dir_bytes "$vrepo/cref") - $(dir_bytes "$vrepo/cref/wal" 2>/dev/null || echo 0)))

# --- the reference cluster: restore --------------------------------------------------------------
rvariants=(V P)
[[ $vigil_skip == 1 ]] && rvariants=(P)
declare -A rwall=() rsync=() rrss=() rbytes=()
rn=${#rvariants[@]}
for ((r = 1; r <= rounds; r++)); do
    order=()
    for ((i = 0; i < rn; i++)); do order+=("${rvariants[(i + r - 1) % rn]}"); done
    for v in "${order[@]}"; do
        dest=$tmp/restore-$v
        rm -rf -- "$dest"
        mkdir -m 700 "$dest"
        pg_owner "$dest"
        sync
        log "restore round $r/$rounds: $v"
        t0=$EPOCHREALTIME
        case $v in
        V) run_timed "restore-V-$r" "$vigil_bin" --config "$config" restore cref --latest --to-dir "$dest" ;;
        P) run_timed "restore-P-$r" pgbackrest --config="$pgbr_conf" --stanza=bench --pg1-path="$dest" restore ;;
        esac
        sync
        t1=$EPOCHREALTIME
        [[ -f $dest/PG_VERSION && -f $dest/global/pg_control ]] || die "restore $v: no cluster in $dest"
        rwall[$v]+="$run_wall "
        rsync[$v]+="$(elapsed "$t0" "$t1") "
        rrss[$v]+="$run_time_kib "
        rbytes[$v]=$(dir_bytes "$dest")
    done
done
for v in "${rvariants[@]}"; do rm -rf -- "$tmp/restore-$v"; done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_cluster

# --- RSS: base backups of the 2 GB and the 4 GB clusters ---------------------------------------
declare -A rss_wall=() rss_floor=() rss_time=() rss_hwm=() rss_bytes=()
if [[ $vigil_skip != 1 ]]; then
    for s in "${rss_sizes[@]}"; do
        data=$cache/$s/data
        start_bench_cluster "$s"
        rss_bytes[$s]=$(($(dir_bytes "$data") - $(dir_bytes "$data/pg_wal")))
        settle "$data"
        run_timed "warmup-$s" "${floor_cmd[@]}"
        settle "$data"
        run_timed "floor-$s" "${floor_cmd[@]}"
        rss_floor[$s]=$run_wall
        settle "$data"
        log "$s: vigil backup"
        run_timed "rss-$s" "$vigil_bin" --config "$config" backup "c$s"
        rss_wall[$s]=$run_wall
        rss_time[$s]=$run_time_kib
        rss_hwm[$s]=$run_hwm_kib
        settle "$data"
        stop_cluster
    done
fi

# --- report ------------------------------------------------------------------------------------
declare -A med=()
for v in "${variants[@]}"; do
    # shellcheck disable=SC2086 # word splitting is the point
    med[$v]=$(median ${wall[$v]})
    # shellcheck disable=SC2086
    med[c$v]=$(median ${cpu[$v]})
    # shellcheck disable=SC2086
    med[sc$v]=$(median ${scpu[$v]})
done
for v in "${rvariants[@]}"; do
    # shellcheck disable=SC2086
    med[r$v]=$(median ${rwall[$v]})
    # shellcheck disable=SC2086
    med[s$v]=$(median ${rsync[$v]})
done
declare -A vname=([V]="vigil backup" [P]="pgbackrest --type=full backup" [F]="floor: pg_basebackup server-zstd to /dev/null")
report=$tmp/report.md
{
    echo "### Physical backup benchmark ($started)"
    echo
    echo "Machine: $(nproc) CPUs, $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo);" \
        "load average $load_before before, $load_after after the timed runs."
    echo "PostgreSQL $(pg_ctl --version | awk '{ print $3 }'), $(pgbackrest version), cluster \`ref\`:" \
        "pgbench scale $scale + $(text_mb_of ref) MiB of random text, $(gib "$cluster_bytes") GiB in databases," \
        "$(gib "$data_bytes") GiB of data directory without pg_wal; page cache warm (an untimed floor run first)."
    echo "$rounds rounds; variants alternate with the order rotating each round; a CHECKPOINT, a \`sync\` and an" \
        "idle archiver (\`archive_command = vigil wal-push\`) precede every timed run. Peak RSS is GNU time's" \
        "(process and children); VmHWM is the command's own process, sampled every 0.1 s. Client CPU is" \
        "user + system time of the command and its children; server CPU that of the backends and walsenders" \
        "that exited during the run (the postmaster's cutime + cstime: the server-side zstd threads are in it;" \
        "the archiver's wal-push and the checkpointer are not)."
    echo
    head="| round |" sep="|---|"
    for v in "${variants[@]}"; do
        head+=" ${vname[$v]} s |"
        sep+="---|"
    done
    echo "$head"
    echo "$sep"
    for ((r = 1; r <= rounds; r++)); do
        row="| $r |"
        for v in "${variants[@]}"; do
            read -r -a w <<<"${wall[$v]}"
            row+=" ${w[r - 1]} |"
        done
        echo "$row"
    done
    echo
    echo "| backup | median s | / pgBackRest | / floor | client CPU s | server CPU s | stored MiB | peak RSS MiB (time -v) | VmHWM MiB |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for v in "${variants[@]}"; do
        stored="–"
        [[ $v == P ]] && stored=$(mib $((pgbr_repo_bytes / rounds)))
        [[ $v == V ]] && stored=$(mib $((vigil_repo_bytes / rounds)))
        # shellcheck disable=SC2086
        echo "| ${vname[$v]} | ${med[$v]} | $(ratio "${med[$v]}" "${med[P]}") | $(ratio "${med[$v]}" "${med[F]}") |" \
            "${med[c$v]} | ${med[sc$v]} | $stored | $(kib_mib "$(max_of ${rss[$v]})") | $(kib_mib "$(max_of ${hwm[$v]})") |"
    done
    if [[ $vigil_skip != 1 ]]; then
        echo
        # shellcheck disable=SC2086
        echo "vigil backup's phases (medians, from its \`-v\` log): $(median $phase_setup) s to BASE_BACKUP's start" \
            "(lock, catalog, connection, fast checkpoint), $(median $phase_stream) s streaming," \
            "$(median $phase_wait) s waiting for the stop segment in the archive and committing."
    fi
    echo
    echo "| restore round |$([[ $vigil_skip == 1 ]] || echo " vigil restore s (+ sync) |") pgbackrest restore s (+ sync) |"
    echo "|---|$([[ $vigil_skip == 1 ]] || echo "---|")---|"
    for ((r = 1; r <= rounds; r++)); do
        row="| $r |"
        for v in "${rvariants[@]}"; do
            read -r -a w <<<"${rwall[$v]}"
            read -r -a ws <<<"${rsync[$v]}"
            row+=" ${w[r - 1]} (${ws[r - 1]}) |"
        done
        echo "$row"
    done
    echo
    echo "| restore | median s | with sync s | / pgBackRest (with sync) | restored GiB | peak RSS MiB (time -v) |"
    echo "|---|---|---|---|---|---|"
    declare -A rname=([V]="vigil restore cref --latest --to-dir" [P]="pgbackrest restore --pg1-path")
    for v in "${rvariants[@]}"; do
        # shellcheck disable=SC2086
        echo "| ${rname[$v]} | ${med[r$v]} | ${med[s$v]} | $(ratio "${med[r$v]}" "${med[rP]}") ($(ratio "${med[s$v]}" "${med[sP]}")) |" \
            "$(gib "${rbytes[$v]}") | $(kib_mib "$(max_of ${rrss[$v]})") |"
    done
    if [[ $vigil_skip != 1 && ${#rss_sizes[@]} -gt 0 ]]; then
        echo
        echo "| cluster | data directory GiB (no pg_wal) | vigil backup s | floor s | vigil / floor | peak RSS MiB (time -v) | VmHWM MiB |"
        echo "|---|---|---|---|---|---|---|"
        for s in "${rss_sizes[@]}"; do
            echo "| $s | $(gib "${rss_bytes[$s]}") | ${rss_wall[$s]} | ${rss_floor[$s]} | $(ratio "${rss_wall[$s]}" "${rss_floor[$s]}") |" \
                "$(kib_mib "${rss_time[$s]}") | $(kib_mib "${rss_hwm[$s]}") |"
        done
    fi
    if [[ $vigil_skip != 1 ]]; then
        rv=$(ratio "${med[V]}" "${med[P]}")
        echo
        echo "| target | result | verdict |"
        echo "|---|---|---|"
        echo "| backup never slower than pgBackRest | $rv (${med[V]} s / ${med[P]} s) | $(verdict "$(le "$rv" 1)") |"
        echo "| backup ≤ 0.5× pgBackRest | $rv; the floor alone: $(ratio "${med[F]}" "${med[P]}") | $(verdict "$(le "$rv" 0.5)") |"
        rr=$(ratio "${med[sV]}" "${med[sP]}")
        echo "| restore (with sync) never slower than pgBackRest | $rr (${med[sV]} s / ${med[sP]} s) | $(verdict "$(le "$rr" 1)") |"
        if ((${#rss_sizes[@]} > 1)); then
            # Flat: at most 4 MiB or 10 % more from the smallest to the largest cluster.
            a=$(kib_mib "${rss_time[${rss_sizes[0]}]}") b=$(kib_mib "${rss_time[${rss_sizes[-1]}]}")
            ok=$(awk -v a="$a" -v b="$b" 'BEGIN { m = a * 0.1; if (m < 4) m = 4; print (b - a <= m) ? 1 : 0 }')
            echo "| backup peak RSS flat (≤ +max(4 MiB, 10 %)) | ${rss_sizes[0]} $a MiB, ${rss_sizes[-1]} $b MiB | $(verdict "$ok") |"
        fi
    fi
} >"$report"
cat "$report"
if [[ -n ${BENCH_OUT:-} ]]; then
    cp -- "$report" "$BENCH_OUT"
fi
