#!/usr/bin/env bash
# Storage backends and file-tree backups. See bench/README.md.
#
#   bench/backends.sh
#
# 1. One database (pgbench scale $SCALE plus $TEXT_MB MiB of random text,
#    about 2 GB at the defaults) backed up by `vigil backup` to fs, S3
#    (moto), SFTP (OpenSSH), Azure Blob (Azurite) and GCS (fake-gcs-server)
#    on loopback, beside the raw `pg_dump -Fc -Z0 | zstd -3 -T0 > file` in
#    the same run: wall time, throughput (database bytes / s) and peak RSS.
# 2. File trees: 100,000 small files, and 4 large files, backed up by
#    `vigil backup` (kind = "files", fs repository) against
#    `tar -c | zstd -3 -T0 > file` on the same tree, and against the same
#    followed by an fsync of the file (vigil's backups are durable).
# Medians go to stdout as markdown; every run's time, peak RSS, blocks read
# and user/system CPU go to stderr.
#
# Environment (all optional):
#   SCALE=130 TEXT_MB=520   the database (smaller for a quick look)
#   BACKENDS="fs s3 sftp azblob gcs"
#   SMALL_FILES=100000 LARGE_FILES=4 LARGE_MB=256
#   ROUNDS=2                timed rounds per variant (the median is reported)
#   SKIP_BUILD=1            use target/release/vigil as it is
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
scale=${SCALE:-130}
text_mb=${TEXT_MB:-520}
read -r -a backends <<<"${BACKENDS:-fs s3 sftp azblob gcs}"
small_files=${SMALL_FILES:-100000}
large_files=${LARGE_FILES:-4}
large_mb=${LARGE_MB:-256}
rounds=${ROUNDS:-2}
vigil=$repo/target/release/vigil

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r | head -n 1)
[[ -x $pg_bin/initdb ]] || die "PostgreSQL server binaries not found (apt-get install postgresql)"
export PATH=$pg_bin:$PATH
for tool in zstd tar python3; do command -v $tool >/dev/null || die "$tool is needed"; done
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install time)"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --bin vigil >&2
fi

tmp=$(mktemp -d -t vigil-bench-backends.XXXXXX)
chmod 755 "$tmp"
servers=()
stop_servers() {
    for s in "${servers[@]}"; do
        bash tests/servers/server.sh "${s%%:*}" stop "${s#*:}" >/dev/null 2>&1 || true
    done
    servers=()
    [[ -n ${s3dir:-} ]] && bash tests/s3/server.sh stop "$s3dir" >/dev/null 2>&1 || true
    s3dir=
}
cleanup() {
    local rc=$?
    trap - EXIT
    stop_servers
    [[ -f $tmp/pg/data/postmaster.pid ]] && as_pg pg_ctl -D "$tmp/pg/data" -m immediate stop >/dev/null 2>&1
    rm -rf -- "$tmp"
    exit "$rc"
}
trap cleanup EXIT
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# --- the database -----------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -m 700 "$tmp/pg"
printf '%s\n' "$password" >"$tmp/pg/pwfile"
[[ $(id -u) -eq 0 ]] && chown -R postgres: "$tmp/pg"
as_pg initdb -D "$tmp/pg/data" -U postgres -A scram-sha-256 --locale=C --no-sync --pwfile="$tmp/pg/pwfile" >/dev/null
as_pg pg_ctl -D "$tmp/pg/data" -w -l "$tmp/pg/log" \
    -o "-p $port -k $tmp/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_wal_size=4GB" start >/dev/null
export PGPASSWORD=$password
conn=(-h 127.0.0.1 -p "$port" -U postgres)
psql "${conn[@]}" -qX -d postgres -c "CREATE DATABASE bench" -c "CREATE DATABASE vigil" >/dev/null
log "filling the database: pgbench scale $scale + $text_mb MiB of random text"
pgbench "${conn[@]}" -i -q -s "$scale" bench >/dev/null 2>&1
psql "${conn[@]}" -qX -d bench -c "CREATE TABLE notes AS SELECT g AS id,
    (SELECT string_agg(md5(random()::text || g || s), '') FROM generate_series(1, 32) s) AS body
    FROM generate_series(1, $((text_mb * 1024 * 1024 / 1024))) g" >/dev/null
# Leave autovacuum nothing to do (a fresh 2 GB table is vacuumed for its
# inserts), so it does not compete with the timed runs.
psql "${conn[@]}" -qX -d bench -c "VACUUM (ANALYZE)" -c "CHECKPOINT" >/dev/null
db_bytes=$(psql "${conn[@]}" -qAtX -d bench -c "SELECT pg_database_size('bench')")
log "database: $((db_bytes / 1048576)) MiB"
printf '%s\n' "$password" >"$tmp/pgpass"

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maxrss_mib() { awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$1"; }
now() { python3 -c 'import time; print(time.monotonic())'; }

# --- the servers ------------------------------------------------------------
repo_section() { # KIND -> a [repositories.<kind>] table
    local kind=$1 line dir
    case $kind in
        fs)
            printf '[repositories.fs]\nscheme = "fs"\n[repositories.fs.options]\nroot = "%s"\n' "$tmp/fsrepo"
            return
            ;;
        s3)
            s3dir=$tmp/s3
            line=$(bash tests/s3/server.sh start "$s3dir" | tail -n 1)
            ;;
        *)
            dir=$tmp/$kind
            line=$(bash tests/servers/server.sh "$kind" start "$dir" | tail -n 1)
            servers+=("$kind:$dir")
            ;;
    esac
    printf '[repositories.%s]\nscheme = "%s"\nprefix = "bench"\n[repositories.%s.options]\n' "$kind" "$kind" "$kind"
    for kv in $line; do
        [[ $kv == pid=* ]] && continue
        printf '%s = "%s"\n' "${kv%%=*}" "${kv#*=}"
    done
    [[ $kind == s3 ]] && printf 'disable_config_load = "true"\ndisable_ec2_metadata = "true"\n'
    return 0
}

{
    printf '[daemon]\nstate_dir = "%s"\n[log]\nlevel = "warn"\n[catalog]\nurl = "postgres://postgres@127.0.0.1:%s/vigil"\npassword_file = "%s"\n' \
        "$tmp/state" "$port" "$tmp/pgpass"
    for b in "${backends[@]}"; do
        repo_section "$b"
        printf '[jobs.db-%s]\nkind = "postgres"\nsource = "postgres://postgres@127.0.0.1:%s/bench"\npassword_file = "%s"\ndatabases = ["bench"]\nrepository = "%s"\nevery = "24h"\n' \
            "$b" "$port" "$tmp/pgpass" "$b"
    done
} >"$tmp/vigil.toml"
"$vigil" --config "$tmp/vigil.toml" check-config >/dev/null || die "bad bench config: $("$vigil" --config "$tmp/vigil.toml" check-config 2>&1 | tail -n 5)"

# --- 1. one database to every backend ---------------------------------------
declare -A secs rss
run_timed() { # NAME CMD... (records secs[NAME] rounds and peak rss)
    local name=$1
    shift
    local t0 t1
    t0=$(now)
    /usr/bin/time -v -o "$tmp/$name.time" "$@" >/dev/null 2>"$tmp/$name.err" || die "$name failed: $(tail -n 5 "$tmp/$name.err")"
    t1=$(now)
    secs[$name]+="$(python3 -c "print($t1 - $t0)") "
    local r
    r=$(maxrss_mib "$tmp/$name.time")
    log "$name: $(python3 -c "print(round($t1 - $t0, 2))") s, peak RSS $r MiB, $(awk -F': ' '/File system inputs/ { print $2 }' "$tmp/$name.time") blocks read, user $(awk -F': ' '/User time/ { print $2 }' "$tmp/$name.time") s, system $(awk -F': ' '/System time/ { print $2 }' "$tmp/$name.time") s"
    if [[ -z ${rss[$name]:-} ]] || python3 -c "import sys; sys.exit(0 if $r > ${rss[$name]} else 1)"; then rss[$name]=$r; fi
}
for ((round = 1; round <= rounds; round++)); do
    log "round $round: raw pipeline"
    # A new file each round, as vigil writes a new backup. Overwriting one
    # reuses its page-cache pages, which on this VM costs half the system
    # time of writing fresh ones (tar | zstd: 1.0 s against 2.0 s).
    run_timed raw sh -c "pg_dump -h 127.0.0.1 -p $port -U postgres -Fc -Z0 bench | zstd -3 -T0 -q -c > $tmp/raw.$round.dump.zst"
    for b in "${backends[@]}"; do
        log "round $round: vigil backup to $b"
        run_timed "$b" "$vigil" --config "$tmp/vigil.toml" backup "db-$b"
    done
done
raw_median=$(tr ' ' '\n' <<<"${secs[raw]}" | grep . | median)
stored=$(stat -c %s "$tmp/raw.1.dump.zst")

echo
echo "### Backends: one database of $((db_bytes / 1048576)) MiB ($(date -u +%FT%TZ), $rounds round(s), median)"
echo
echo "| target | median s | MiB/s (database) | ratio to raw | peak RSS MiB (vigil + pg_dump) |"
echo "|---|---|---|---|---|"
printf '| raw `pg_dump -Fc -Z0 \\| zstd -3 -T0 > file` | %.2f | %.0f | 1.00 | %s |\n' \
    "$raw_median" "$(python3 -c "print($db_bytes / 1048576 / $raw_median)")" "${rss[raw]} (zstd/pg_dump, larger)"
for b in "${backends[@]}"; do
    m=$(tr ' ' '\n' <<<"${secs[$b]}" | grep . | median)
    printf '| vigil → %s | %.2f | %.0f | %.2f | %s |\n' "$b" "$m" \
        "$(python3 -c "print($db_bytes / 1048576 / $m)")" "$(python3 -c "print($m / $raw_median)")" "${rss[$b]}"
done
echo
echo "Stored: $((stored / 1048576)) MiB per backup."

# --- 2. file trees ------------------------------------------------------------
# The storage servers hold the database runs' objects in memory: stop them,
# so the trees are timed on a quiet machine.
stop_servers
log "building $small_files small files and $large_files files of $large_mb MiB"
python3 - "$tmp/tree-small" "$small_files" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
words = [os.urandom(4).hex() for _ in range(5000)]
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}", f"e{(i // 100) % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.txt"), "w") as f:
        f.write(" ".join(random.choice(words) for _ in range(random.randint(50, 600))))
EOF
mkdir -p "$tmp/tree-large"
for ((i = 0; i < large_files; i++)); do
    # Half text-like, half random: compressible but not trivially.
    python3 -c "
import os, random, sys
random.seed($i)
words = [os.urandom(6).hex() for _ in range(20000)]
with open(sys.argv[1], 'w') as f:
    for _ in range($large_mb * 1024 * 1024 // 2 // 65536):
        f.write(' '.join(random.choice(words) for _ in range(5000))[:65536])
" "$tmp/tree-large/big$i.txt"
    head -c $((large_mb * 1024 * 1024 / 2)) /dev/urandom >>"$tmp/tree-large/big$i.txt"
done
for tree in small large; do
    printf '[jobs.files-%s]\nkind = "files"\npaths = ["%s"]\nrepository = "fs"\nevery = "24h"\n' "$tree" "$tmp/tree-$tree" >>"$tmp/vigil.toml"
done
sync
declare -A tree_bytes
for tree in small large; do
    tree_bytes[$tree]=$(du -sb "$tmp/tree-$tree" | awk '{ print $1 }')
    for ((round = 1; round <= rounds; round++)); do
        log "round $round: $tree tree"
        run_timed "tar-$tree" sh -c "tar -C / -c ${tmp#/}/tree-$tree | zstd -3 -T0 -q -c > $tmp/tree-$tree.$round.tar.zst"
        # The same, made durable as vigil makes a backup before it counts
        # (fsync of the file; vigil also fsyncs the directory).
        run_timed "tarsync-$tree" sh -c "tar -C / -c ${tmp#/}/tree-$tree | zstd -3 -T0 -q -c > $tmp/tree-$tree.$round.sync.tar.zst && sync $tmp/tree-$tree.$round.sync.tar.zst"
        run_timed "vigil-$tree" "$vigil" --config "$tmp/vigil.toml" backup "files-$tree"
    done
done
echo
echo "### File trees ($(date -u +%FT%TZ), $rounds round(s), median)"
echo
echo "| tree | tar \\| zstd -3 -T0 s | the same + fsync s | vigil s | ratio | ratio to + fsync | MiB/s vigil | peak RSS MiB: tar+zstd / vigil |"
echo "|---|---|---|---|---|---|---|---|"
for tree in small large; do
    t=$(tr ' ' '\n' <<<"${secs[tar-$tree]}" | grep . | median)
    ts=$(tr ' ' '\n' <<<"${secs[tarsync-$tree]}" | grep . | median)
    v=$(tr ' ' '\n' <<<"${secs[vigil-$tree]}" | grep . | median)
    label=$([[ $tree == small ]] && echo "$small_files small files" || echo "$large_files × $large_mb MiB")
    printf '| %s (%s MiB) | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %s / %s |\n' "$label" "$((tree_bytes[$tree] / 1048576))" "$t" "$ts" "$v" \
        "$(python3 -c "print($v / $t)")" "$(python3 -c "print($v / $ts)")" "$(python3 -c "print(${tree_bytes[$tree]} / 1048576 / $v)")" \
        "${rss[tar-$tree]}" "${rss[vigil-$tree]}"
done
