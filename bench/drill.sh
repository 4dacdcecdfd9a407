#!/usr/bin/env bash
# A restore drill's RTO against the same restore done by hand (issue 16).
# See bench/README.md.
#
#   bench/drill.sh                       # SCALE=30 ROUNDS=3, release build
#   SKIP_BUILD=1 SCALE=50 bench/drill.sh
#
# A throwaway PostgreSQL cluster (fsync=off; as root it runs as the postgres
# user) gets `pgbench -i -s SCALE`; one backup (zstd, no encryption) is
# taken. Then ROUNDS pairs, alternating which goes first:
#   vigil:   `vigil drill bench --json` (create the scratch database, stream
#            the object through hash + zstd into pg_restore, the check,
#            drop): its recorded RTO and the command's wall time;
#   by hand: createdb; zstd -dc OBJECT | pg_restore --single-transaction
#            --exit-on-error -d DB; the same check with psql; dropdb.
# The RTO is compared with the by-hand time up to the check's answer, the
# wall time with the whole by-hand line including dropdb.
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rounds=${ROUNDS:-3}
scale=${SCALE:-30}
vigil_bin=${VIGIL_BIN:-$repo/target/release/vigil}
check="SELECT count(*) = $((scale * 100000)) FROM pgbench_accounts"
log() { printf '%s\n' "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }
command -v zstd >/dev/null || die "zstd is missing (apt-get install zstd)"
pg_bin=
for d in /usr/lib/postgresql/*/bin; do [[ -x $d/initdb ]] && pg_bin=$d; done
[[ -n $pg_bin ]] || die "no PostgreSQL server binaries (apt-get install postgresql)"
export PATH=$pg_bin:$PATH
[[ ${SKIP_BUILD:-0} == 1 || -n ${VIGIL_BIN:-} ]] || cargo build --release --locked >&2
[[ -x $vigil_bin ]] || die "no vigil binary at $vigil_bin"

tmp=$(mktemp -d /tmp/vigil-bench-drill.XXXXXX)
chmod 755 "$tmp"
pgdir=$tmp/pg
as_root=0; [[ $(id -u) == 0 ]] && as_root=1
as_pg() { if [[ $as_root == 1 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    [[ -d $pgdir/data ]] && as_pg pg_ctl -D "$pgdir/data" -w -m immediate stop >/dev/null 2>&1 || true
    [[ ${KEEP_TMP:-0} == 1 ]] || rm -rf -- "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -m 700 "$pgdir"
[[ $as_root == 1 ]] && chown postgres: "$pgdir"
as_pg initdb -D "$pgdir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync --no-instructions >"$tmp/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 20 "$tmp/initdb.log")"
as_pg pg_ctl -D "$pgdir/data" -w -t 60 -l "$pgdir/postgres.log" \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off -c max_wal_size=4GB" start >/dev/null ||
    die "PostgreSQL did not start"
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
sql postgres "CREATE DATABASE vigil" >/dev/null
sql postgres "CREATE DATABASE bench" >/dev/null
log "pgbench -i -s $scale"
pgbench -i -q -s "$scale" bench >"$tmp/pgbench.log" 2>&1 || die "pgbench -i failed: $(tail -n 5 "$tmp/pgbench.log")"
db_mib=$(sql bench "SELECT pg_database_size('bench') / 1048576")

mkdir -p "$tmp/state" "$tmp/repo"
cat >"$tmp/vigil.toml" <<EOF
[daemon]
state_dir = "$tmp/state"
[log]
level = "warn"
[catalog]
url = "postgres://postgres@127.0.0.1:$port/vigil"
[repositories.local]
scheme = "fs"
[repositories.local.options]
root = "$tmp/repo"
[jobs.bench]
kind = "postgres"
source = "postgres://postgres@127.0.0.1:$port/bench"
databases = ["bench"]
repository = "local"
every = "24h"
[jobs.bench.drill]
every = "1day"
target = "postgres://postgres@127.0.0.1:$port/drill_scratch"
check_sql = ["$check"]
EOF
vigil() { "$vigil_bin" --config "$tmp/vigil.toml" "$@"; }
vigil migrate >/dev/null
log "backup"
vigil backup bench >/dev/null
object=$(find "$tmp/repo/bench/backups" -name '*.dump.zst')
[[ -f $object ]] || die "no backup object in $tmp/repo"
stored_mib=$(($(stat -c %s "$object") / 1048576))
cat "$object" >/dev/null # page cache warm

now() { printf '%s\n' "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
declare -a rto wall hand_rto hand_all
for ((r = 1; r <= rounds; r++)); do
    order=(vigil hand)
    ((r % 2)) || order=(hand vigil) # alternate which runs first
    for variant in "${order[@]}"; do
        start=$(now)
        if [[ $variant == vigil ]]; then
            vigil drill bench --json >"$tmp/drill.json" || die "the drill failed: $(cat "$tmp/drill.json")"
            end=$(now)
            rto+=("$(python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["rtoSeconds"])' "$tmp/drill.json")")
            wall+=("$(secs "$start" "$end")")
            log "round $r vigil: RTO ${rto[-1]} s, wall ${wall[-1]} s"
        else
            createdb hand_scratch
            zstd -q -dc "$object" | pg_restore --single-transaction --exit-on-error -d hand_scratch
            [[ $(sql hand_scratch "$check") == t ]] || die "the by-hand check failed"
            checked=$(now)
            dropdb hand_scratch
            end=$(now)
            hand_rto+=("$(secs "$start" "$checked")")
            hand_all+=("$(secs "$start" "$end")")
            log "round $r by hand: ${hand_rto[-1]} s to the check, ${hand_all[-1]} s with dropdb"
        fi
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
m_rto=$(median "${rto[@]}"); m_wall=$(median "${wall[@]}")
m_hand=$(median "${hand_rto[@]}"); m_all=$(median "${hand_all[@]}")
declare -a pair_rto pair_wall
for ((i = 0; i < rounds; i++)); do
    pair_rto+=("$(ratio "${rto[i]}" "${hand_rto[i]}")")
    pair_wall+=("$(ratio "${wall[i]}" "${hand_all[i]}")")
done
echo "Run $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg); pgbench scale $scale, database ${db_mib} MiB, stored object ${stored_mib} MiB (zstd 3)."
echo
echo "| measure | rounds (s) | median s | pair ratios | median ratio |"
echo "|---|---|---|---|---|"
echo "| vigil drill: RTO (create, restore, check) | ${rto[*]} | $m_rto | ${pair_rto[*]} | $(median "${pair_rto[@]}") |"
echo "| by hand: createdb + zstd -dc \\| pg_restore + check | ${hand_rto[*]} | $m_hand | | 1.000 |"
echo "| vigil drill: wall time (also lock, records, dropdb) | ${wall[*]} | $m_wall | ${pair_wall[*]} | $(median "${pair_wall[@]}") |"
echo "| by hand: the same + dropdb | ${hand_all[*]} | $m_all | | 1.000 |"
