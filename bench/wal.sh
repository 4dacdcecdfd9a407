#!/usr/bin/env bash
# WAL archiving benchmark: `vigil wal-push` against `pgbackrest archive-push`
# in the same run, on real WAL from pgbench. See bench/README.md ("wal.sh").
#
#   bench/wal.sh
#
# Environment (all optional):
#   RUNS=20          hyperfine runs per tool for the one-segment latency
#   SEGMENTS=200     segments pushed back to back for the sustained rate
#   PGBENCH_SECS=60  length of the full-speed pgbench run archiving with vigil
#   SCALE=30         pgbench scale of the data set that makes the WAL
#   SKIP_BUILD=1     use the vigil already in target/release
#   VIGIL_BIN=PATH   benchmark this vigil binary instead (no build)
#   BENCH_OUT=FILE   also write the Markdown report to FILE
#   KEEP_TMP=1       keep the temporary directory
#
# 1. A throwaway PostgreSQL 15 cluster (as the postgres user; fsync=off,
#    synchronous_commit=off: WAL as fast as this machine makes it) runs
#    pgbench while `archive_command = cp` collects SEGMENTS real segments.
# 2. Latency: hyperfine pushes one 16 MiB segment RUNS times with each tool,
#    the archived copy removed before every run (`--prepare`), so each run
#    is a first push: compress, hash, commit.
# 3. Sustained: each tool pushes the SEGMENTS segments one after the other,
#    as PostgreSQL's archiver does (one process per segment), twice, in the
#    order vigil, pgbackrest, pgbackrest, vigil (the archive emptied before
#    each pass); the rate is over both passes.
# 4. pgbench at full speed for PGBENCH_SECS with archive_command = vigil
#    wal-push: the `.ready` files in pg_wal/archive_status are counted every
#    second; the archiver keeps up when that count stays small.
# Both tools: zstd level 3, plaintext, fs repository on the same disk,
# everything as the postgres user (the archiver's).
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

runs=${RUNS:-20}
segments=${SEGMENTS:-200}
pgbench_secs=${PGBENCH_SECS:-60}
scale=${SCALE:-30}
vigil_bin=${VIGIL_BIN:-$repo/target/release/vigil}

log() { printf '%s\n' "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for v in runs segments pgbench_secs scale; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
[[ $(id -u) == 0 ]] || die "run as root (the cluster and both tools run as the postgres user)"
id postgres >/dev/null 2>&1 || die "no postgres user (apt-get install postgresql)"
for tool in hyperfine pgbackrest; do
    command -v $tool >/dev/null || die "$tool not found (apt-get install $tool)"
done
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[[ -x $pgbin/initdb && -x $pgbin/pgbench ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql"

if [[ -z ${VIGIL_BIN:-} && -z ${SKIP_BUILD:-} ]]; then
    log "building vigil (release)"
    cargo build --release --quiet
fi
[[ -x $vigil_bin ]] || die "no vigil binary at $vigil_bin"

tmp=$(mktemp -d /tmp/vigil-bench-wal.XXXXXX)
chmod 755 "$tmp"
data=$tmp/data
port=$((20000 + RANDOM % 20000))
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
    as_pg "$pgbin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
    [[ -n ${KEEP_TMP:-} ]] && log "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp"/{segs,one,vigil-repo,pgbr-repo,pgbr-log,pgbr-lock}
chown -R postgres: "$tmp"
# A copy of the binary the postgres user may run wherever the tree lives.
install -m 755 "$vigil_bin" "$tmp/vigil"
vigil=$tmp/vigil

as_pg "$pgbin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
cat >>"$data/postgresql.conf" <<EOF
port = $port
unix_socket_directories = '$tmp'
listen_addresses = ''
fsync = off
synchronous_commit = off
wal_level = replica
max_wal_size = 1GB
archive_mode = on
archive_command = 'cp %p $tmp/segs/%f'
EOF
as_pg "$pgbin/pg_ctl" -D "$data" -w -l "$tmp/pg.log" start >/dev/null
psql() { as_pg "$pgbin/psql" -X -q -A -t -h "$tmp" -p "$port" -d postgres "$@"; }
pgbench() { as_pg "$pgbin/pgbench" -h "$tmp" -p "$port" "$@" postgres; }
ready() { find "$data/pg_wal/archive_status" -name '*.ready' | wc -l; }

log "making WAL: pgbench -i -s $scale, then pgbench until $segments segments are archived"
pgbench -i -q -s "$scale" >/dev/null 2>&1
while (($(find "$tmp/segs" -type f | wc -l) < segments)); do
    pgbench -n -c 4 -j 2 -T 10 >/dev/null 2>&1
    psql -c 'SELECT pg_switch_wal()' >/dev/null
done
until (($(ready) == 0)); do sleep 0.2; done
mapfile -t all < <(find "$tmp/segs" -type f -name '0*' | sort | head -n "$segments")
one_name=$(basename "${all[$((${#all[@]} / 2))]}")
cp "$tmp/segs/$one_name" "$tmp/one/$one_name"
# A tiny file: what a push costs besides the segment's bytes (start-up,
# config, commit).
printf '1\t0/3000000\tno recovery target specified\n' >"$tmp/one/00000002.history"
chown -R postgres: "$tmp/one"
raw_bytes=$(du -cb "${all[@]}" | tail -1 | cut -f1)

cat >"$tmp/vigil.toml" <<EOF
[catalog]
url = "postgres://vigil@127.0.0.1:1/vigil"
[repositories.bench]
scheme = "fs"
[repositories.bench.options]
root = "$tmp/vigil-repo"
[jobs.bench]
kind = "postgres-physical"
source = "postgres://postgres@127.0.0.1:$port/postgres"
repository = "bench"
schedule = "0 0 3 * * *"
compression_level = 3
EOF
cat >"$tmp/pgbackrest.conf" <<EOF
[global]
repo1-path=$tmp/pgbr-repo
log-path=$tmp/pgbr-log
lock-path=$tmp/pgbr-lock
log-level-console=warn
log-level-file=off
compress-type=zst
compress-level=3
archive-check=n
start-fast=y

[bench]
pg1-path=$data
pg1-port=$port
pg1-socket-path=$tmp
EOF
chmod 644 "$tmp/vigil.toml" "$tmp/pgbackrest.conf"
pgbr=(pgbackrest --config="$tmp/pgbackrest.conf" --stanza=bench)
as_pg "${pgbr[@]}" stanza-create >/dev/null

vigil_object="$tmp/vigil-repo/bench/wal/00000001/$one_name.zst"
pgbr_objects="$tmp/pgbr-repo/archive/bench/*/${one_name:0:16}/$one_name-*"
log "latency: one segment ($one_name), $runs runs each"
as_pg hyperfine -N --style basic --runs "$runs" --warmup 2 \
    --export-json "$tmp/latency.json" \
    --prepare "rm -f $vigil_object" \
    -n "vigil wal-push" "$vigil --config $tmp/vigil.toml wal-push bench $tmp/one/$one_name" \
    --prepare "sh -c 'rm -f $pgbr_objects'" \
    -n "pgbackrest archive-push" "${pgbr[*]} archive-push $tmp/one/$one_name" >&2

log "start-up: one 45-byte .history file, $runs runs each"
as_pg hyperfine -N --style basic --runs "$runs" --warmup 2 \
    --export-json "$tmp/startup.json" \
    --prepare "rm -f $tmp/vigil-repo/bench/wal/00000002/00000002.history.zst" \
    -n "vigil wal-push" "$vigil --config $tmp/vigil.toml wal-push bench $tmp/one/00000002.history" \
    --prepare "sh -c 'rm -f $tmp/pgbr-repo/archive/bench/*/00000002.history*'" \
    -n "pgbackrest archive-push" "${pgbr[*]} archive-push $tmp/one/00000002.history" >&2

# Sustained: every segment once, one process each, as the archiver runs them.
sustained() {
    local start end
    start=$EPOCHREALTIME
    for f in "${all[@]}"; do
        as_pg "$@" "$f" || die "push of $f failed"
    done
    end=$EPOCHREALTIME
    echo "$start $end"
}
vigil_pass() {
    rm -rf "$tmp/vigil-repo/bench"
    log "sustained: $segments segments, vigil"
    read -r s e < <(sustained "$vigil" --config "$tmp/vigil.toml" wal-push bench)
    vt=$(awk -v t="${vt:-0}" -v s="$s" -v e="$e" 'BEGIN {print t + e - s}')
}
pgbr_pass() {
    rm -rf "$tmp/pgbr-repo/archive/bench/"*/0*
    log "sustained: $segments segments, pgbackrest"
    read -r s e < <(sustained "${pgbr[@]}" archive-push)
    pt=$(awk -v t="${pt:-0}" -v s="$s" -v e="$e" 'BEGIN {print t + e - s}')
}
vigil_pass
pgbr_pass
pgbr_pass
vigil_pass
vigil_stored=$(du -sb "$tmp/vigil-repo/bench" | cut -f1)
pgbr_stored=$(du -cb "$tmp"/pgbr-repo/archive/bench/*/0* | tail -1 | cut -f1)

log "pgbench at full speed for ${pgbench_secs}s, archive_command = vigil wal-push"
rm -rf "$tmp/vigil-repo/bench"
psql -c "ALTER SYSTEM SET archive_command = '$vigil --config $tmp/vigil.toml wal-push bench %p'" >/dev/null
psql -c 'SELECT pg_reload_conf()' >/dev/null
psql -c 'SELECT pg_stat_reset_shared($$archiver$$)' >/dev/null
before_lsn=$(psql -c 'SELECT pg_current_wal_lsn()')
pgbench -n -c 4 -j 2 -T "$pgbench_secs" >"$tmp/pgbench.out" 2>&1 &
bench_pid=$!
max_ready=0
samples=()
while kill -0 "$bench_pid" 2>/dev/null; do
    n=$(ready)
    samples+=("$n")
    ((n > max_ready)) && max_ready=$n
    sleep 1
done
wait "$bench_pid" || die "pgbench failed: $(cat "$tmp/pgbench.out")"
tps=$(awk '/^tps/ {print $3; exit}' "$tmp/pgbench.out")
wal_mb=$(psql -c "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$before_lsn') / 1048576)")
drain_start=$EPOCHREALTIME
psql -c 'SELECT pg_switch_wal()' >/dev/null
until (($(ready) == 0)); do sleep 0.2; done
drain=$(awk -v a="$drain_start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
read -r archived failed < <(psql -F ' ' -c 'SELECT archived_count, failed_count FROM pg_stat_archiver')

report=$(
    python3 - "$tmp/latency.json" "$tmp/startup.json" "$segments" "$vt" "$pt" "$raw_bytes" \
        "$vigil_stored" "$pgbr_stored" "$pgbench_secs" "$tps" "$wal_mb" "$archived" "$failed" \
        "$max_ready" "$drain" "${samples[*]}" <<'EOF'
import json, statistics, sys
(lat, startup, n, vt, pt, raw, vst, pst, secs, tps, wal_mb, archived, failed,
 max_ready, drain, samples) = sys.argv[1:]
res = {r["command"]: r for r in json.load(open(lat))["results"]}
v, p = res["vigil wal-push"], res["pgbackrest archive-push"]
st = {r["command"]: r for r in json.load(open(startup))["results"]}
sv, sp = st["vigil wal-push"], st["pgbackrest archive-push"]
ms = lambda r, k: 1000 * r[k]
n = 2 * int(n)  # two passes each
vt, pt = float(vt), float(pt)
mib = lambda b: int(b) / 1048576
print("| measure | vigil wal-push | pgbackrest archive-push | vigil / pgbackrest |")
print("|---|---|---|---|")
print(f"| one 16 MiB segment, median of {len(v['times'])} (ms) | {ms(v,'median'):.1f} | {ms(p,'median'):.1f} | {v['median']/p['median']:.2f} |")
print(f"| same, min – max (ms) | {ms(v,'min'):.1f} – {ms(v,'max'):.1f} | {ms(p,'min'):.1f} – {ms(p,'max'):.1f} | |")
print(f"| a 45-byte .history file, median (ms): start-up and commit | {ms(sv,'median'):.1f} | {ms(sp,'median'):.1f} | {sv['median']/sp['median']:.2f} |")
print(f"| {n // 2} segments back to back, twice (s, both passes) | {vt:.1f} | {pt:.1f} | {vt/pt:.2f} |")
print(f"| sustained rate (segments/s) | {n/vt:.1f} | {n/pt:.1f} | {pt/vt:.2f}× the rate |")
print(f"| stored (MiB, {mib(raw):.0f} MiB raw) | {mib(vst):.1f} | {mib(pst):.1f} | {int(vst)/int(pst):.2f} |")
print()
print(f"pgbench -c 4 -j 2 for {secs} s at full speed (fsync=off, synchronous_commit=off), "
      f"archive_command = vigil wal-push: {float(tps):.0f} tps, {wal_mb} MiB of WAL; "
      f"archived {archived} segments, {failed} failed; `.ready` files sampled each second: "
      f"max **{max_ready}** (samples: {samples}); the last segment archived {drain} s after the switch.")
EOF
)
printf '%s\n' "$report"
if [[ -n ${BENCH_OUT:-} ]]; then
    printf '%s\n' "$report" >"$BENCH_OUT"
fi
