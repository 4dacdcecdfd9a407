#!/usr/bin/env bash
# Listing benchmark: `vigil list JOB --json` over N committed backups, on an fs
# repository and on an S3 repository (moto, tests/s3/server.sh). See
# bench/README.md.
#
#   bench/listing.sh
#
# Environment (all optional):
#   N=10000             backups per job (one manifest.json + one data object each)
#   ROUNDS=3            timed runs per repository
#   UPLOAD_THREADS=16   boto3 threads for the S3 upload
#   SKIP_BUILD=1        use the vigil already in target/release
#   VIGIL_BIN=PATH      benchmark this vigil binary instead (no build)
#   BENCH_OUT=FILE      also write the Markdown report to FILE
#   KEEP_TMP=1          keep the temporary directory (config, logs, traces)
#
# What it does: writes a config with an fs repository and an S3 repository
# (prefix `bench`) and one job on each (`onfs`, `ons3`); generates N backups
# per job (fs: files written directly; S3: uploaded with boto3 from moto's
# venv); runs `vigil --config CFG list JOB --json` twice untimed per job (the
# first writes the job's listing index, `JOB/index.json.zst`; check: N backups,
# nothing on stderr, both outputs identical), then ROUNDS timed rounds, each
# listing fs and S3 twice: `cold` (the index deleted just before, untimed: every
# manifest is read and the index written back) and `warm` (the index the cold
# run wrote). Each run under `/usr/bin/time -v` (wall time from $EPOCHREALTIME,
# peak RSS and CPU from time -v), output to /dev/null. Requests: on S3, moto's
# request log lines for each timed run (ListObjectsV2, manifest GETs, index GET
# and PUT); on fs, one extra untimed warm run under strace, counting the
# syscalls on the repository's paths. On exit (also Ctrl-C) moto is stopped and
# the temporary directory removed.
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME, awk and sort

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

n=${N:-10000}
rounds=${ROUNDS:-3}
upload_threads=${UPLOAD_THREADS:-16}
vigil_bin=${VIGIL_BIN:-$repo/target/release/vigil}
venv=${VIGIL_S3_VENV:-$repo/target/s3venv}

log() { printf '%s\n' "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ $n =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, not '$n'"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$rounds'"
[[ $upload_threads =~ ^[1-9][0-9]*$ ]] || die "UPLOAD_THREADS must be a positive integer"

# --- tools ---------------------------------------------------------------------
packages=()
[[ -x /usr/bin/time ]] || packages+=(time)
command -v strace >/dev/null 2>&1 || packages+=(strace)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
if ((${#packages[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${packages[*]}; install them (needs root)"
    log "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# --- build ---------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 && -z ${VIGIL_BIN:-} ]]; then
    cargo build --release --bin vigil
fi
[[ -x $vigil_bin ]] || die "$vigil_bin not built"

# --- temporary directory and cleanup ---------------------------------------------
tmp=$(mktemp -d -t vigil-bench-listing.XXXXXX)
s3dir=$tmp/s3
s3_started=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $s3_started == 1 ]]; then
        bash "$repo/tests/s3/server.sh" stop "$s3dir" || log "could not stop moto in $s3dir"
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

# --- S3 server (moto) ------------------------------------------------------------
log "starting moto (tests/s3/server.sh)"
s3_started=1
line=$(bash "$repo/tests/s3/server.sh" start "$s3dir") || die "moto did not start"
field() { # NAME -> value from the server line
    local kv
    for kv in $line; do
        [[ $kv == "$1="* ]] && { printf '%s\n' "${kv#*=}"; return 0; }
    done
    die "no $1= in the server line: $line"
}
endpoint=$(field endpoint)
bucket=$(field bucket)
key_id=$(field access_key_id)
secret=$(field secret_access_key)
region=$(field region)
moto_log=$s3dir/server.log
moto_pid=$(<"$s3dir/server.pid")
# moto's CPU seconds so far (utime + stime): what the S3 side of a listing
# costs, apart from the machine's load and from vigil's own work.
moto_cpu() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' "/proc/$moto_pid/stat"; }
python=$venv/bin/python
[[ -x $python ]] || die "no python in $venv"

# --- vigil config ------------------------------------------------------------------
config=$tmp/vigil.toml
mkdir -p "$tmp/state" "$tmp/fsrepo"
job_section() { # NAME REPOSITORY
    cat <<EOF
[jobs.$1]
kind = "postgres"
source = "postgres://x@127.0.0.1:1/x"
databases = ["x"]
repository = "$2"
every = "1h"
EOF
}
{
    cat <<EOF
[daemon]
state_dir = "$tmp/state"

[log]
level = "warn"

[catalog]
# never contacted by \`list\`
url = "postgres://vigil@127.0.0.1:1/vigil"

[repositories.fsrepo]
scheme = "fs"
options = { root = "$tmp/fsrepo" }

[repositories.s3repo]
scheme = "s3"
prefix = "bench"
part_size_mib = 8

[repositories.s3repo.options]
endpoint = "$endpoint"
bucket = "$bucket"
region = "$region"
access_key_id = "$key_id"
secret_access_key = "$secret"
disable_config_load = "true"
disable_ec2_metadata = "true"

EOF
    job_section onfs fsrepo
    echo
    job_section ons3 s3repo
} >"$config"
"$vigil_bin" --config "$config" check-config >"$tmp/check-config.out" 2>&1 ||
    die "vigil check-config failed: $(cat "$tmp/check-config.out")"
vigil_version=$("$vigil_bin" --version | awk '{ print $2 }')

# --- data ------------------------------------------------------------------------------
# One manifest per backup, as manifest.rs serialises it (serde_json pretty,
# camelCase, trailing newline), and one 1 KiB data object whose sha256 and
# size the manifest records. Ids: 2025-01-01T00:00Z plus i minutes.
cat >"$tmp/gen.py" <<'EOF'
import concurrent.futures as cf
import datetime as dt
import hashlib
import json
import os
import random
import sys
import time

mode, job, n, version = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
base = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def backup(i):
    rnd = random.Random(i)
    started = base + dt.timedelta(minutes=i, microseconds=rnd.randrange(1_000_000))
    finished = started + dt.timedelta(milliseconds=rnd.randrange(2_000, 30_000))
    backup_id = started.strftime("%Y%m%dT%H%M%SZ")
    data = rnd.randbytes(1024)
    manifest = {
        "formatVersion": 1,
        "job": job,
        "backupId": backup_id,
        "kind": "logical",
        "startedAt": stamp(started),
        "finishedAt": stamp(finished),
        "source": {
            "serverVersion": "15.18 (Debian 15.18-0+deb12u1)",
            "serverVersionNum": 150018,
            "pgDumpVersion": "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)",
            "host": "127.0.0.1:1",
        },
        "compression": {"algorithm": "zstd", "level": 3},
        "encryption": None,
        "objects": [
            {
                "name": "x.dump.zst",
                "database": "x",
                "format": "pg_dump-custom",
                "storedBytes": len(data),
                "rawBytes": 9 * len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ],
        "journalHead": None,
        "vigilVersion": version,
    }
    body = (json.dumps(manifest, indent=2) + "\n").encode()
    return backup_id, body, data


t0 = time.monotonic()
if mode == "fs":
    root = sys.argv[5]
    total = 0
    for i in range(n):
        backup_id, body, data = backup(i)
        d = os.path.join(root, job, "backups", backup_id)
        os.makedirs(d)
        with open(os.path.join(d, "x.dump.zst"), "wb") as f:
            f.write(data)
        with open(os.path.join(d, "manifest.json"), "wb") as f:
            f.write(body)
        total += len(body)
else:
    import boto3
    from botocore.config import Config

    endpoint, bucket, key_id, secret, region, prefix, threads = sys.argv[5:12]
    threads = int(threads)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=threads,
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )

    def upload(i):
        backup_id, body, data = backup(i)
        d = f"{prefix}/{job}/backups/{backup_id}"
        s3.put_object(Bucket=bucket, Key=f"{d}/x.dump.zst", Body=data)
        s3.put_object(Bucket=bucket, Key=f"{d}/manifest.json", Body=body)
        return len(body)

    with cf.ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(upload, range(n), chunksize=64))
print(f"{total} {time.monotonic() - t0:.1f}")
EOF

log "generating $n backups on fs"
read -r fs_manifest_bytes fs_gen_s < <("$python" "$tmp/gen.py" fs onfs "$n" "$vigil_version" "$tmp/fsrepo")
log "  $fs_gen_s s"
log "uploading $n backups to S3 ($upload_threads threads)"
read -r _ s3_gen_s < <("$python" "$tmp/gen.py" s3 ons3 "$n" "$vigil_version" \
    "$endpoint" "$bucket" "$key_id" "$secret" "$region" bench "$upload_threads")
log "  $s3_gen_s s"
manifest_avg=$((fs_manifest_bytes / n))

# --- helpers -------------------------------------------------------------------------------
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
    if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# The moto log's line count once it has stopped growing (werkzeug logs a
# request after answering it).
log_lines() {
    local a b i
    a=$(wc -l <"$moto_log")
    for ((i = 0; i < 30; i++)); do
        sleep 0.2
        b=$(wc -l <"$moto_log")
        [[ $a == "$b" ]] && break
        a=$b
    done
    echo "$a"
}
# Request lines FROM..TO of the moto log -> "lists manifest_gets index_gets
# index_puts other" (werkzeug colours 404 lines, so no anchor on the quote)
count_requests() {
    sed -n "$(($1 + 1)),$2p" "$moto_log" | awk -v b="$bucket" '
        match($0, /[A-Z]+ \/[^ ]* HTTP\/[0-9.]+/) {
            split(substr($0, RSTART, RLENGTH), r, " ")
            m = r[1]; p = r[2]
            if (m == "GET" && (index(p, "/" b "?") == 1 || index(p, "/" b "/?") == 1) && p ~ /list-type=2/) l++
            else if (m == "GET" && p ~ /\/manifest\.json$/) g++
            else if (m == "GET" && p ~ /\/index\.json\.zst$/) ig++
            else if (m == "PUT" && p ~ /\/index\.json\.zst$/) ip++
            else o++
        }
        END { printf "%d %d %d %d %d\n", l, g, ig, ip, o }'
}
# Pages of one ListObjectsV2 listing: the query parameters of the first.
first_list_request() {
    sed -n "$(($1 + 1)),$2p" "$moto_log" | grep -m1 -o "\"GET /${bucket}[/]*?[^ ]*list-type=2[^ ]*" | cut -c2- || true
}
time_field() { # FILE LABEL -> value
    awk -F': ' -v k="$2" 'index($0, k) { print $NF; exit }' "$1"
}

# Deletes JOB's listing index, so the next listing reads every manifest.
drop_index() { # JOB
    if [[ $1 == onfs ]]; then
        rm -f -- "$tmp/fsrepo/onfs/index.json.zst"
    else
        "$python" -c 'import boto3, sys
endpoint, bucket, key_id, secret, region, key = sys.argv[1:7]
boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
             region_name=region).delete_object(Bucket=bucket, Key=key)' \
            "$endpoint" "$bucket" "$key_id" "$secret" "$region" bench/ons3/index.json.zst
    fi
}

run_list() { # JOB OUT ERR [wrapper...] -> runs vigil list JOB --json
    local job=$1 out=$2 err=$3
    shift 3
    "$@" "$vigil_bin" --config "$config" list "$job" --json >"$out" 2>"$err"
}

# --- warm-up and check ------------------------------------------------------------------
for job in onfs ons3; do
    log "untimed check run: list $job"
    run_list "$job" "$tmp/check.$job.json" "$tmp/check.$job.err" ||
        die "vigil list $job failed: $(cat "$tmp/check.$job.err")"
    [[ ! -s $tmp/check.$job.err ]] || die "vigil list $job wrote to stderr: $(head -n 5 "$tmp/check.$job.err")"
    got=$("$python" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$tmp/check.$job.json")
    [[ $got == "$n" ]] || die "vigil list $job returned $got backups, expected $n"
    run_list "$job" "$tmp/check2.$job.json" "$tmp/check2.$job.err" ||
        die "vigil list $job (with its index) failed: $(cat "$tmp/check2.$job.err")"
    cmp -s "$tmp/check.$job.json" "$tmp/check2.$job.json" ||
        die "vigil list $job: the listing with the index differs from the one without"
done
json_bytes=$(wc -c <"$tmp/check.onfs.json")

# --- fs syscalls (untimed, under strace) ---------------------------------------------------
log "untimed strace run: list onfs"
strace -f -qq -o "$tmp/strace.onfs" -e trace=openat,getdents64,statx,newfstatat,pread64,read,futex \
    "$vigil_bin" --config "$config" list onfs --json >/dev/null 2>"$tmp/strace.onfs.err" ||
    die "vigil list onfs under strace failed: $(cat "$tmp/strace.onfs.err")"
backups_path=$tmp/fsrepo/onfs/backups
# dir opens, getdents64, stats of backup directories (by name, relative to the
# listing's fd), manifest opens, manifest stats by path, pread64, futex
read -r fs_dir_opens fs_getdents fs_entry_stats fs_manifest_opens fs_manifest_stats fs_preads fs_futex < <(
    awk -v dir="\"$backups_path\"" '
        / openat\(/ && index($0, dir) && /O_DIRECTORY/ { d++ }
        / getdents64\(/ { g++ }
        /(statx|newfstatat)\([0-9]+, "[0-9]+T[0-9]+Z[^"\/]*"/ { e++ }
        / openat\(/ && /\/manifest\.json"/ { m++ }
        /(statx|newfstatat)\(/ && /\/manifest\.json"/ { s++ }
        / pread64\(/ { p++ }
        / futex\(/ { f++ }
        END { printf "%d %d %d %d %d %d %d\n", d, g, e, m, s, p, f }' "$tmp/strace.onfs"
)
fs_threads=$(awk '{ print $1 }' "$tmp/strace.onfs" | sort -u | wc -l)

# --- timed runs ----------------------------------------------------------------------------
declare -A wall rss user sys lists gets igets iputs other mcpu
modes=(cold warm)
for ((r = 1; r <= rounds; r++)); do
    for job in onfs ons3; do
        for mode in "${modes[@]}"; do
            [[ $mode == cold ]] && drop_index "$job"
            k=$job.$mode.$r
            before=$(log_lines)
            cpu_before=$(moto_cpu)
            t=$tmp/time.$k
            start=$EPOCHREALTIME
            run_list "$job" /dev/null "$tmp/err.$k" /usr/bin/time -v -o "$t" ||
                die "vigil list $job ($mode) failed: $(cat "$tmp/err.$k")"
            end=$EPOCHREALTIME
            wall[$k]=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
            rss[$k]=$(awk -v k="$(time_field "$t" "Maximum resident set size")" 'BEGIN { printf "%.1f", k / 1024 }')
            user[$k]=$(time_field "$t" "User time (seconds)")
            sys[$k]=$(time_field "$t" "System time (seconds)")
            after=$(log_lines)
            mcpu[$k]=$(awk -v a="$cpu_before" -v b="$(moto_cpu)" 'BEGIN { printf "%.2f", b - a }')
            read -r "lists[$k]" "gets[$k]" "igets[$k]" "iputs[$k]" "other[$k]" < <(count_requests "$before" "$after")
            if [[ $job == ons3 && -z ${s3_first_list:-} ]]; then
                s3_first_list=$(first_list_request "$before" "$after")
            fi
            log "run $r $job $mode: ${wall[$k]} s, ${rss[$k]} MiB, requests: ${lists[$k]} list, ${gets[$k]} manifest GET, ${igets[$k]}/${iputs[$k]} index GET/PUT, ${other[$k]} other, moto CPU ${mcpu[$k]} s"
        done
    done
done

# --- report --------------------------------------------------------------------------------
report=$tmp/report.md
walls() { # JOB MODE -> the walls of every round
    local r
    for ((r = 1; r <= rounds; r++)); do echo "${wall[$1.$2.$r]}"; done
}
max_rss() { # JOB MODE
    local r m=0
    for ((r = 1; r <= rounds; r++)); do m=$(awk -v a="$m" -v b="${rss[$1.$2.$r]}" 'BEGIN { print (b > a ? b : a) }'); done
    echo "$m"
}
per_ms() { awk -v s="$1" -v n="$n" 'BEGIN { printf "%.3f", s * 1000 / n }'; }
mem_kib=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
{
    echo "### Run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Machine: $(nproc) CPUs, $(uname -r), $mem_kib GiB RAM. vigil $vigil_version ($vigil_bin)."
    echo "Load average before the timed runs: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)."
    echo "$n backups per job, each a manifest.json (${manifest_avg} bytes on average) and a 1 KiB data object;"
    echo "generated in ${fs_gen_s} s on fs (python, direct writes) and ${s3_gen_s} s on S3 (boto3, $upload_threads threads, $((2 * n)) PUTs to moto)."
    echo "\`vigil --config CFG list JOB --json\` returned all $n backups ($json_bytes bytes of JSON) with nothing on stderr in an untimed run per job, and the same bytes in a second one with the index the first wrote."
    echo "$rounds timed rounds, each listing fs cold, fs warm, S3 cold, S3 warm (cold: the index deleted just before, untimed), output to /dev/null; wall time from \$EPOCHREALTIME, CPU and peak RSS from \`/usr/bin/time -v\`."
    echo
    echo "| job (repository) | index | run | wall s | user s | sys s | peak RSS MiB | list requests | manifest GETs | index GET / PUT | other requests | moto CPU s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for job in onfs ons3; do
        for mode in "${modes[@]}"; do
            for ((r = 1; r <= rounds; r++)); do
                k=$job.$mode.$r
                if [[ $job == onfs ]]; then
                    rq="– | – | – | – | –"
                else
                    rq="${lists[$k]} | ${gets[$k]} | ${igets[$k]} / ${iputs[$k]} | ${other[$k]} | ${mcpu[$k]}"
                fi
                echo "| $job ($([[ $job == onfs ]] && echo fs || echo S3, moto)) | $mode | $r | ${wall[$k]} | ${user[$k]} | ${sys[$k]} | ${rss[$k]} | $rq |"
            done
        done
    done
    echo
    echo "| repository | index | median wall s | per backup ms | peak RSS MiB (max of runs) | storage operations per listing |"
    echo "|---|---|---|---|---|---|"
    for mode in "${modes[@]}"; do
        med=$(median $(walls onfs "$mode"))
        if [[ $mode == warm ]]; then
            ops="1 directory listing ($fs_dir_opens directory open, $fs_getdents getdents64, $fs_entry_stats statx of its entries) + $fs_manifest_stats manifest stats by path, $fs_manifest_opens manifest opens, $fs_preads pread64 (strace, warm)"
        else
            ops="1 directory listing + $n manifest stats and reads + 1 index write"
        fi
        echo "| fs | $mode | $med | $(per_ms "$med") | $(max_rss onfs "$mode") | $ops |"
    done
    for mode in "${modes[@]}"; do
        med=$(median $(walls ons3 "$mode"))
        k=ons3.$mode.1
        echo "| S3 (moto) | $mode | $med | $(per_ms "$med") | $(max_rss ons3 "$mode") | ${lists[$k]} ListObjectsV2 page(s) + ${gets[$k]} manifest GETs + ${igets[$k]} index GET / ${iputs[$k]} PUT (${other[$k]} other); moto CPU ${mcpu[$k]} s |"
    done
    echo
    echo "fs counts: one extra untimed warm run under \`strace -f -e trace=openat,getdents64,statx,newfstatat,pread64,read,futex\`:"
    echo "\`openat\` of \`…/onfs/backups\` with O_DIRECTORY, every \`getdents64\`, \`statx\` of a backup directory by name, \`openat\` and"
    echo "\`statx\`/\`newfstatat\` of a \`…/manifest.json\` path, every \`pread64\`; the same run made $fs_futex \`futex\` calls"
    echo "($(awk -v f="$fs_futex" -v n="$n" 'BEGIN { printf "%.1f", f / n }') per backup: each opendal fs operation is a hop to tokio's blocking pool; $fs_threads threads seen)."
    echo "S3 counts: request lines in moto's log (\`DIR/server.log\`) during each timed run: \`GET /$bucket?list-type=2…\` (ListObjectsV2), \`GET …/manifest.json\`, \`GET\`/\`PUT …/index.json.zst\`."
    echo "moto CPU: the utime + stime moto's server process (\`/proc/PID/stat\`) spent during each S3 run; moto answers on one core (Python's GIL), so a listing cannot take less wall time than that."
    if [[ -n ${s3_first_list:-} ]]; then
        echo "First list request: \`${s3_first_list}\`."
    fi
} >"$report"
cat "$report"
if [[ -n ${BENCH_OUT:-} ]]; then
    cp -- "$report" "$BENCH_OUT"
fi
