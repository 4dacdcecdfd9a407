#!/usr/bin/env bash
# `vigil verify` of a logical backup against the by-hand check of the same
# object: `sha256sum` + `age -d | zstd -t` (issue 16). See bench/README.md.
#
#   bench/verify.sh                      # TEXT_MB=1024 ROUNDS=3, release build
#   SKIP_BUILD=1 TEXT_MB=256 bench/verify.sh
#
# A throwaway PostgreSQL cluster (fsync=off; as root it runs as the postgres
# user) gets TEXT_MB of random text; one encrypted backup is taken, then the
# two checks run ROUNDS times each, alternating which goes first, with the
# page cache warm. vigil does more than the by-hand line: it also feeds the
# decoded dump to `pg_restore --list` (the archive's table of contents) and
# decodes whatever pg_restore leaves unread to the end.
set -euo pipefail
export LC_ALL=C
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rounds=${ROUNDS:-3}
text_mb=${TEXT_MB:-1024}
vigil_bin=${VIGIL_BIN:-$repo/target/release/vigil}
log() { printf '%s\n' "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in age age-keygen zstd sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install age zstd coreutils)"
done
pg_bin=
for d in /usr/lib/postgresql/*/bin; do [[ -x $d/initdb ]] && pg_bin=$d; done
[[ -n $pg_bin ]] || die "no PostgreSQL server binaries (apt-get install postgresql)"
export PATH=$pg_bin:$PATH
[[ ${SKIP_BUILD:-0} == 1 || -n ${VIGIL_BIN:-} ]] || cargo build --release --locked >&2
[[ -x $vigil_bin ]] || die "no vigil binary at $vigil_bin"

tmp=$(mktemp -d /tmp/vigil-bench-verify.XXXXXX)
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
sql() { psql -h 127.0.0.1 -p "$port" -U postgres -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
sql postgres "CREATE DATABASE vigil" >/dev/null
sql postgres "CREATE DATABASE bench" >/dev/null
# 288 characters a row, 64 of them random hex (as bench/backup.sh).
rows=$((text_mb * 1024 * 1024 / 330))
log "random text: $rows rows (~$text_mb MiB)"
sql bench "CREATE TABLE blob AS SELECT md5(random()::text) || repeat(md5(random()::text), 8) AS t
           FROM generate_series(1, $rows)" >/dev/null
db_mib=$(sql bench "SELECT pg_database_size('bench') / 1048576")

mkdir -p "$tmp/state" "$tmp/repo"
age-keygen -o "$tmp/age.key" 2>/dev/null
recipient=$(awk '/^# public key: / { print $4 }' "$tmp/age.key")
cat >"$tmp/vigil.toml" <<EOF
[daemon]
state_dir = "$tmp/state"
[log]
level = "warn"
[catalog]
url = "postgres://postgres@127.0.0.1:$port/vigil"
[repositories.sealed]
scheme = "fs"
[repositories.sealed.options]
root = "$tmp/repo"
[repositories.sealed.encryption]
recipients = ["$recipient"]
identity_file = "$tmp/age.key"
[jobs.bench]
kind = "postgres"
source = "postgres://postgres@127.0.0.1:$port/bench"
databases = ["bench"]
repository = "sealed"
every = "24h"
EOF
vigil() { "$vigil_bin" --config "$tmp/vigil.toml" "$@"; }
vigil migrate >/dev/null
log "backup"
vigil backup bench >/dev/null
object=$(find "$tmp/repo/bench/backups" -name '*.dump.zst.age')
[[ -f $object ]] || die "no backup object in $tmp/repo"
stored_mib=$(($(stat -c %s "$object") / 1048576))
cat "$object" >/dev/null # page cache warm

now() { printf '%s\n' "$EPOCHREALTIME"; }
declare -a t_vigil t_hand rss_vigil
for ((r = 1; r <= rounds; r++)); do
    order=(vigil hand)
    ((r % 2)) || order=(hand vigil) # alternate which runs first
    for variant in "${order[@]}"; do
        start=$(now)
        if [[ $variant == vigil ]]; then
            /usr/bin/time -f '%M' -o "$tmp/rss" "$vigil_bin" --config "$tmp/vigil.toml" verify bench >/dev/null
            rss_vigil+=("$(($(<"$tmp/rss") / 1024))")
        else
            sha256sum "$object" >/dev/null
            age -d -i "$tmp/age.key" "$object" | zstd -q -t
        fi
        end=$(now)
        s=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
        if [[ $variant == vigil ]]; then t_vigil+=("$s"); else t_hand+=("$s"); fi
        log "round $r $variant: $s s"
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mv=$(median "${t_vigil[@]}"); mh=$(median "${t_hand[@]}")
echo "Run $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg); database ${db_mib} MiB, stored object ${stored_mib} MiB (zstd 3, age)."
echo
echo "| check | rounds (s) | median s | ratio |"
echo "|---|---|---|---|"
echo "| vigil verify bench (hash, decrypt, decompress, pg_restore --list) | ${t_vigil[*]} | $mv | $(awk -v a="$mv" -v b="$mh" 'BEGIN { printf "%.3f", a / b }') |"
echo "| sha256sum + age -d \\| zstd -t | ${t_hand[*]} | $mh | 1.000 |"
echo
echo "vigil's peak RSS per round: ${rss_vigil[*]} MiB."
