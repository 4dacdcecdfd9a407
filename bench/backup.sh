#!/usr/bin/env bash
# Logical backup and restore benchmark: `vigil backup` / `vigil restore`
# against the raw pipeline they wrap (`pg_dump -Fc -Z0 | zstd -3 -T0`,
# `zstd -dc | pg_restore`). See bench/README.md.
#
#   bench/backup.sh
#
# Environment (all optional):
#   SIZE="small large"  data sets to run, in order (tiny, small, large):
#                       tiny  = pgbench scale 2   + 8 MiB of random text
#                       small = pgbench scale 30  + 120 MiB of random text
#                       large = pgbench scale 130 + 520 MiB of random text
#   SCALE=N TEXT_MB=M   override the scale / text size (one SIZE only)
#   ROUNDS=3            timed rounds per variant, backup and restore
#   VIGIL_SKIP=1        raw rounds only (C, D and the raw restore): no build,
#                       no vigil, no age key
#   SKIP_BUILD=1        use the vigil already in target/release
#   VIGIL_BIN=PATH      benchmark this vigil binary instead (no build)
#   BENCH_OUT=FILE      also write the Markdown report to FILE
#   STRICT=1            exit 1 when a target is missed
#   KEEP_TMP=1          keep the temporary directory (config, logs, files)
#
# Backup variants, alternated (the order rotates by one each round):
#   A  vigil --config CFG backup plain    fs repository, zstd level 3
#   B  vigil --config CFG backup sealed   the same, age-encrypted
#   C  pg_dump -Fc -Z0 DB | zstd -3 -T0 > FILE
#   D  pg_dump -Fc DB > FILE              (built-in gzip, for context)
# Restore, alternated: `vigil restore plain --latest --to URL --create`
# against `createdb DB && zstd -dc C-FILE | pg_restore -d DB`.
#
# Creates a throwaway PostgreSQL cluster in a temporary directory (as root it
# runs as the postgres user: initdb refuses root) with fsync=off, and removes
# it on exit. Installs zstd, time, python3, age and (for pgbench)
# postgresql-contrib with apt-get when missing and running as root.
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME, awk and sort

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

rounds=${ROUNDS:-3}
vigil_skip=${VIGIL_SKIP:-0}
read -r -a sizes <<<"${SIZE:-small large}"
vigil_bin=${VIGIL_BIN:-$repo/target/release/vigil}
rss_target_mib=64
ratio_target=1.05

log() { printf '%s\n' "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$rounds'"
((${#sizes[@]})) || die "SIZE is empty (tiny, small, large)"
for s in "${sizes[@]}"; do
    [[ $s == tiny || $s == small || $s == large ]] || die "unknown SIZE '$s' (tiny, small, large)"
done
if [[ -n ${SCALE:-}${TEXT_MB:-} && ${#sizes[@]} -gt 1 ]]; then
    die "SCALE and TEXT_MB apply to one SIZE; run the sizes separately"
fi
preset_scale() { case $1 in tiny) echo 2 ;; small) echo 30 ;; large) echo 130 ;; esac }
preset_text_mb() { case $1 in tiny) echo 8 ;; small) echo 120 ;; large) echo 520 ;; esac }

# --- PostgreSQL binaries ------------------------------------------------------
pg_bin=
for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/pg_dump ]]; then
        pg_bin=$d
        break
    fi
done
if [[ -z $pg_bin ]] && command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir)
    [[ -x $d/initdb ]] && pg_bin=$d
fi
[[ -n $pg_bin ]] || die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
export PATH=$pg_bin:$PATH

# --- tools ---------------------------------------------------------------------
packages=()
command -v zstd >/dev/null 2>&1 || packages+=(zstd)
[[ -x /usr/bin/time ]] || packages+=(time)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
[[ -x $pg_bin/pgbench ]] || command -v pgbench >/dev/null 2>&1 || packages+=(postgresql-contrib)
if [[ $vigil_skip != 1 ]]; then
    command -v age-keygen >/dev/null 2>&1 || packages+=(age)
fi
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
if [[ $vigil_skip != 1 ]]; then
    if [[ ${SKIP_BUILD:-0} != 1 && -z ${VIGIL_BIN:-} ]]; then
        cargo build --release --bin vigil
    fi
    [[ -x $vigil_bin ]] || die "$vigil_bin not built"
fi

# --- temporary directory and cleanup ---------------------------------------------
tmp=$(mktemp -d -t vigil-bench-backup.XXXXXX)
chmod 755 "$tmp" # the postgres user must reach $tmp/pg
pgdir=$tmp/pg
cluster_started=0
bg_pids=()       # running background jobs of ours (emptied once waited for)
vigil_pidfile=   # the running vigil's pid, for cleanup

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
if [[ $vigil_skip != 1 ]]; then
    mkdir -p "$tmp/state" "$tmp/repo" "$tmp/repo-sealed"
    (umask 077 && printf '%s\n' "$password" >"$tmp/pgpass")
    age-keygen -o "$tmp/age.key" 2>/dev/null
    recipient=$(awk '/^# public key: / { print $4 }' "$tmp/age.key")
    [[ $recipient == age1* ]] || die "no public key in $tmp/age.key"
    job_section() { # NAME REPOSITORY
        cat <<EOF
[jobs.$1]
kind = "postgres"
source = "postgres://postgres@127.0.0.1:$port/bench"
password_file = "$tmp/pgpass"
databases = ["bench"]
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
        job_section plain local
        job_section sealed sealed
    } >"$config"
    "$vigil_bin" --config "$config" check-config >"$tmp/check-config.log" 2>&1 ||
        die "vigil rejects the generated config $config: $(tail -n 20 "$tmp/check-config.log")"
    # Untimed: the first timed round must not pay for the catalog migrations.
    env -u PGPASSWORD "$vigil_bin" --config "$config" migrate >"$tmp/migrate.log" 2>&1 ||
        die "vigil migrate failed: $(tail -n 20 "$tmp/migrate.log")"
fi

# --- helpers -------------------------------------------------------------------------
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
    if (NR % 2) printf "%.2f", a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }'; }
maxrss_kib() { # /usr/bin/time -v output -> KiB
    local v
    v=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$1")
    [[ -n $v ]] || die "no maximum RSS in $1"
    echo "$v"
}
checkpoint() { sql postgres "CHECKPOINT" >/dev/null; }
file_bytes() { stat -c %s "$1"; }
new_bytes() { # DIR MARKER -> bytes of files under DIR newer than MARKER
    find "$1" -type f -newer "$2" -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}

# Runs vigil under /usr/bin/time -v and samples VmHWM of the vigil process
# itself: time -v reports the largest of vigil and its children (pg_dump,
# pg_restore). Sets run_wall, run_time_kib, run_hwm_kib.
run_vigil() { # LABEL ENV-ARGS... -- VIGIL-ARGS...
    local label=$1
    shift
    local envargs=()
    while [[ $1 != -- ]]; do
        envargs+=("$1")
        shift
    done
    shift
    local pidfile=$tmp/$label.pid hwmfile=$tmp/$label.hwm timefile=$tmp/$label.time
    rm -f -- "$pidfile" "$hwmfile"
    vigil_pidfile=$pidfile
    local t0 t1 tpid spid rc=0
    t0=$EPOCHREALTIME
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner sh
    env "${envargs[@]}" /usr/bin/time -v -o "$timefile" \
        sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$vigil_bin" --config "$config" "$@" \
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
    vigil_pidfile=
    ((rc == 0)) || die "vigil $* failed (status $rc): $(tail -n 20 "$tmp/$label.log")"
    run_wall=$(elapsed "$t0" "$t1")
    run_time_kib=$(maxrss_kib "$timefile")
    run_hwm_kib=$(cat "$hwmfile" 2>/dev/null || echo 0)
}

# --- data ------------------------------------------------------------------------------
# 'md5 || repeat(md5, 8)': 288 characters, 64 of them random hex; a row takes
# ~327 bytes on disk (25 to an 8 KiB page).
text_rows_per_mib=3200

prepare_data() { # SIZE SCALE TEXT_MB
    local size=$1 scale=$2 text_mb=$3 rows=$(($3 * text_rows_per_mib))
    local want_mb=$((scale * 16 + text_mb))
    local avail_mb
    avail_mb=$(df -Pm "$tmp" | awk 'NR == 2 { print $4 }')
    ((avail_mb > want_mb * 4)) ||
        die "$size: $avail_mb MiB free in $tmp, want about $((want_mb * 4)) MiB (database, restore copy, WAL, dumps)"
    sql postgres "DROP DATABASE IF EXISTS bench" >/dev/null
    sql postgres "CREATE DATABASE bench" >/dev/null
    log "$size: pgbench -i -s $scale"
    local t0
    t0=$EPOCHREALTIME
    "$pgbench_bin" "${conn[@]}" -i -q -s "$scale" bench >"$tmp/pgbench-$size.log" 2>&1 ||
        die "pgbench -i failed: $(tail -n 20 "$tmp/pgbench-$size.log")"
    log "$size: random text, $rows rows (~$text_mb MiB)"
    sql bench "CREATE TABLE blob AS SELECT md5(random()::text) || repeat(md5(random()::text), 8) AS t
               FROM generate_series(1, $rows)" >/dev/null
    sql bench "VACUUM (FREEZE, ANALYZE) blob" >/dev/null
    log "$size: data ready in $(elapsed "$t0" "$EPOCHREALTIME") s"
    db_bytes=$(sql bench "SELECT pg_database_size('bench')")
    blob_bytes=$(sql bench "SELECT pg_total_relation_size('blob')")
    accounts_rows=$(sql bench "SELECT count(*) FROM pgbench_accounts")
    blob_rows=$(sql bench "SELECT count(*) FROM blob")
    # Untimed warm-up (page cache, hint bits); also the raw dump size.
    log "$size: warm-up pg_dump -Fc -Z0"
    raw_dump_bytes=$(pg_dump "${conn[@]}" -Fc -Z0 bench | wc -c)
}

check_restored() { # LABEL: the restored database holds every row
    local a b
    a=$(sql restored "SELECT count(*) FROM pgbench_accounts")
    b=$(sql restored "SELECT count(*) FROM blob")
    [[ $a == "$accounts_rows" && $b == "$blob_rows" ]] ||
        die "$1: restored $a accounts and $b blob rows, expected $accounts_rows and $blob_rows"
}

# --- one size ----------------------------------------------------------------------------
report_body=$tmp/body.md
: >"$report_body"
missed=0
declare -A peak_vigil_kib # size -> largest time -v figure of any vigil run
verdict() { if [[ $1 == 1 ]]; then echo "met"; else echo "**missed**"; fi; }
targets=()
target() { # TEXT RESULT OK
    targets+=("| $1 | $2 | $(verdict "$3") |")
    [[ $3 == 1 ]] || missed=1
}

run_size() { # SIZE
    local size=$1 scale=${SCALE:-$(preset_scale "$1")} text_mb=${TEXT_MB:-$(preset_text_mb "$1")}
    prepare_data "$size" "$scale" "$text_mb"
    local variants=(A B C D)
    [[ $vigil_skip == 1 ]] && variants=(C D)
    local n=${#variants[@]} r i v
    declare -A wall=() stored=() rss=() hwm=()
    local pgdump_rss=()
    local cfile=$tmp/raw.dump.zst dfile=$tmp/plain.dump
    for ((r = 1; r <= rounds; r++)); do
        local order=()
        for ((i = 0; i < n; i++)); do order+=("${variants[(i + r - 1) % n]}"); done
        for v in "${order[@]}"; do
            checkpoint
            log "$size: backup round $r/$rounds, $v"
            local t0 t1 marker=$tmp/marker
            case $v in
            A | B)
                local job=plain repo_dir=$tmp/repo
                [[ $v == B ]] && job=sealed repo_dir=$tmp/repo-sealed
                touch "$marker"
                run_vigil "backup-$job" -u PGPASSWORD -- backup "$job"
                wall[$v]+="$run_wall "
                rss[$v]+="$run_time_kib "
                hwm[$v]+="$run_hwm_kib "
                stored[$v]=$(new_bytes "$repo_dir" "$marker")
                ((stored[$v] > 0)) || die "vigil backup $job wrote nothing under $repo_dir"
                ;;
            C)
                t0=$EPOCHREALTIME
                /usr/bin/time -v -o "$tmp/c-pg_dump.time" pg_dump "${conn[@]}" -Fc -Z0 bench |
                    /usr/bin/time -v -o "$tmp/c-zstd.time" zstd -3 -T0 -q -c >"$cfile"
                t1=$EPOCHREALTIME
                wall[C]+="$(elapsed "$t0" "$t1") "
                rss[C]+="$(maxrss_kib "$tmp/c-zstd.time") "
                pgdump_rss+=("$(maxrss_kib "$tmp/c-pg_dump.time")")
                stored[C]=$(file_bytes "$cfile")
                ;;
            D)
                t0=$EPOCHREALTIME
                /usr/bin/time -v -o "$tmp/d-pg_dump.time" pg_dump "${conn[@]}" -Fc bench >"$dfile"
                t1=$EPOCHREALTIME
                wall[D]+="$(elapsed "$t0" "$t1") "
                rss[D]+="$(maxrss_kib "$tmp/d-pg_dump.time") "
                stored[D]=$(file_bytes "$dfile")
                ;;
            esac
        done
    done
    rm -f -- "$dfile"

    # Restore: vigil (latest backup of job plain) against zstd -dc | pg_restore
    # of the last C file, into a database dropped before every round.
    local rvariants=(V R)
    [[ $vigil_skip == 1 ]] && rvariants=(R)
    local rn=${#rvariants[@]}
    declare -A rwall=() rrss=() rhwm=()
    local url="postgres://postgres@127.0.0.1:$port/restored"
    for ((r = 1; r <= rounds; r++)); do
        local order=()
        for ((i = 0; i < rn; i++)); do order+=("${rvariants[(i + r - 1) % rn]}"); done
        for v in "${order[@]}"; do
            sql postgres "DROP DATABASE IF EXISTS restored" >/dev/null
            checkpoint
            log "$size: restore round $r/$rounds, $([[ $v == V ]] && echo vigil || echo raw)"
            case $v in
            V)
                run_vigil restore -- restore plain --latest --to "$url" --create
                rwall[V]+="$run_wall "
                rrss[V]+="$run_time_kib "
                rhwm[V]+="$run_hwm_kib "
                check_restored "vigil restore"
                ;;
            R)
                t0=$EPOCHREALTIME
                createdb "${conn[@]}" restored
                zstd -dc -q "$cfile" |
                    /usr/bin/time -v -o "$tmp/r-pg_restore.time" pg_restore "${conn[@]}" -d restored
                t1=$EPOCHREALTIME
                rwall[R]+="$(elapsed "$t0" "$t1") "
                rrss[R]+="$(maxrss_kib "$tmp/r-pg_restore.time") "
                check_restored "raw restore"
                ;;
            esac
        done
    done
    sql postgres "DROP DATABASE IF EXISTS restored" >/dev/null
    rm -f -- "$cfile"

    # --- this size's report ---
    declare -A med=()
    local w
    for v in "${variants[@]}"; do
        # shellcheck disable=SC2086 # word splitting is the point
        med[$v]=$(median ${wall[$v]})
    done
    for v in "${rvariants[@]}"; do
        # shellcheck disable=SC2086
        med[r$v]=$(median ${rwall[$v]})
    done
    local -A vname=([A]="A vigil backup (zstd 3)" [B]="B vigil backup (zstd 3 + age)"
        [C]="C pg_dump -Fc -Z0 \| zstd -3 -T0" [D]="D pg_dump -Fc (gzip)")
    {
        echo "#### $size: pgbench scale $scale + random text ($(mib "$db_bytes") MiB database)"
        echo
        echo "Database \`bench\`: $(mib "$db_bytes") MiB ($accounts_rows pgbench_accounts rows;" \
            "\`blob\`: $blob_rows rows, $(mib "$blob_bytes") MiB). \`pg_dump -Fc -Z0\` output:" \
            "$(mib "$raw_dump_bytes") MiB."
        echo
        local head="| round |" sep="|---|"
        for v in "${variants[@]}"; do
            head+=" ${vname[$v]} s |"
            sep+="---|"
        done
        echo "$head"
        echo "$sep"
        for ((r = 1; r <= rounds; r++)); do
            local row="| $r |"
            for v in "${variants[@]}"; do
                read -r -a w <<<"${wall[$v]}"
                row+=" ${w[r - 1]} |"
            done
            echo "$row"
        done
        echo
        echo "| variant | median s | ratio to C | stored MiB | compression | peak RSS MiB (time -v) | vigil process VmHWM MiB |"
        echo "|---|---|---|---|---|---|---|"
        for v in "${variants[@]}"; do
            local peak vm="–"
            # shellcheck disable=SC2086
            peak=$(kib_mib "$(max_of ${rss[$v]})")
            if [[ $v == A || $v == B ]]; then
                # shellcheck disable=SC2086
                vm=$(kib_mib "$(max_of ${hwm[$v]})")
            elif [[ $v == C ]]; then
                peak="$peak (zstd; pg_dump $(kib_mib "$(max_of "${pgdump_rss[@]}")"))"
            else
                peak="$peak (pg_dump)"
            fi
            echo "| ${vname[$v]} | ${med[$v]} | $(ratio "${med[$v]}" "${med[C]}") | $(mib "${stored[$v]}") |" \
                "$(awk -v r="$raw_dump_bytes" -v s="${stored[$v]}" 'BEGIN { printf "%.1f:1", r / s }') |" \
                "$peak | $vm |"
        done
        echo
        echo "| restore round |$([[ $vigil_skip == 1 ]] || echo " vigil restore s |") zstd -dc \| pg_restore s |"
        echo "|---|$([[ $vigil_skip == 1 ]] || echo "---|")---|"
        for ((r = 1; r <= rounds; r++)); do
            local row="| $r |"
            for v in V R; do
                [[ $v == V && $vigil_skip == 1 ]] && continue
                read -r -a w <<<"${rwall[$v]}"
                row+=" ${w[r - 1]} |"
            done
            echo "$row"
        done
        echo
        echo "| restore | median s | ratio to raw | peak RSS MiB (time -v) | vigil process VmHWM MiB |"
        echo "|---|---|---|---|---|"
        if [[ $vigil_skip != 1 ]]; then
            # shellcheck disable=SC2086
            echo "| vigil restore plain --latest --create | ${med[rV]} | $(ratio "${med[rV]}" "${med[rR]}") |" \
                "$(kib_mib "$(max_of ${rrss[V]})") | $(kib_mib "$(max_of ${rhwm[V]})") |"
        fi
        # shellcheck disable=SC2086
        echo "| createdb + zstd -dc \| pg_restore | ${med[rR]} | 1.000 |" \
            "$(kib_mib "$(max_of ${rrss[R]})") (pg_restore) | – |"
        echo
    } >>"$report_body"

    if [[ $vigil_skip != 1 ]]; then
        local ra rb rr
        ra=$(ratio "${med[A]}" "${med[C]}")
        rb=$(ratio "${med[B]}" "${med[C]}")
        rr=$(ratio "${med[rV]}" "${med[rR]}")
        target "$size: backup A/C ≤ $ratio_target" "$ra (${med[A]} s / ${med[C]} s)" "$(le "$ra" "$ratio_target")"
        target "$size: encrypted backup B/C ≤ $ratio_target" "$rb (${med[B]} s / ${med[C]} s)" "$(le "$rb" "$ratio_target")"
        target "$size: restore vigil/raw ≤ $ratio_target" "$rr (${med[rV]} s / ${med[rR]} s)" "$(le "$rr" "$ratio_target")"
        # shellcheck disable=SC2086
        peak_vigil_kib[$size]=$(max_of ${rss[A]} ${rss[B]} ${rrss[V]})
        local pk
        pk=$(kib_mib "${peak_vigil_kib[$size]}")
        target "$size: vigil peak RSS ≤ $rss_target_mib MiB" "$pk MiB" "$(le "$pk" "$rss_target_mib")"
    fi
    log "$size: done"
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
zstd_threads=$(echo | zstd -T0 -vv -c 2>&1 >/dev/null | sed -n 's/.*--threads=\([0-9]*\).*/\1/p')
for s in "${sizes[@]}"; do
    run_size "$s"
done

if [[ $vigil_skip != 1 && ${#sizes[@]} -gt 1 ]]; then
    # Growth across sizes: at most 4 MiB or 10 % of the smallest set's peak,
    # whichever is larger (the data grows about fourfold from small to large).
    first=${sizes[0]} last=${sizes[-1]}
    a=$(kib_mib "${peak_vigil_kib[$first]}")
    b=$(kib_mib "${peak_vigil_kib[$last]}")
    ok=$(awk -v a="$a" -v b="$b" 'BEGIN { m = a * 0.1; if (m < 4) m = 4; print (b - a <= m) ? 1 : 0 }')
    target "vigil peak RSS flat in database size (≤ +max(4 MiB, 10 %))" "$first $a MiB, $last $b MiB" "$ok"
fi

# --- report --------------------------------------------------------------------------------
report=$tmp/report.md
{
    echo "### Logical backup and restore benchmark ($started)"
    echo
    echo "Machine: $(nproc) CPUs, $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)." \
        "PostgreSQL $pg_version on the same machine: a throwaway cluster with" \
        "\`$pg_options\` (fsync off: no flushes to disk, for the backups' reads and the restores' writes alike)."
    echo "$rounds rounds per variant; backup variants alternate with the order rotating each round" \
        "($([[ $vigil_skip == 1 ]] && echo "C D, D C, …" || echo "A B C D, B C D A, …"))," \
        "an untimed \`pg_dump -Fc -Z0\` warms the page cache first, and a CHECKPOINT precedes every timed run."
    echo "Restores go into a database dropped before each round and are checked by row count."
    echo "\`zstd -T0\` ($(zstd -V | grep -o 'v[0-9.]*[0-9]')): $zstd_threads worker threads (the physical cores zstd detects)."
    if [[ $vigil_skip == 1 ]]; then
        echo
        echo "VIGIL_SKIP=1: the raw pipelines only; no vigil figures, no targets checked."
    else
        echo "vigil: \`$vigil_bin\`, repositories on the local filesystem (in the temporary directory), zstd level 3;" \
            "B adds an age x25519 recipient. The restore reads job \`plain\`'s latest backup;" \
            "its \`--to\` URL has no password (PGPASSWORD in vigil's environment)."
        echo "Peak RSS (time -v) is GNU time's \"Maximum resident set size\": the largest of the process" \
            "and its children (vigil's pg_dump / pg_restore). VmHWM is the vigil process alone, sampled every 0.1 s."
    fi
    echo
    cat "$report_body"
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
