#!/usr/bin/env bash
# S3-compatible test server for vigil's tests and CI: moto's standalone server
# (see tests/s3/README.md for why moto and what it does not do like S3).
#
#   tests/s3/server.sh start DIR   install moto if missing, start it on
#                                  127.0.0.1 on a free port, create the bucket
#                                  `vigil-test`, print one line:
#     endpoint=http://127.0.0.1:PORT bucket=vigil-test access_key_id=... secret_access_key=... region=us-east-1 pid=PID
#   tests/s3/server.sh stop DIR    stop the server started in DIR
#
# DIR holds server.pid, server.line (the printed line), server.log (install and
# server output) and tmp/ (moto keeps objects in memory and spills objects
# larger than about 5 MiB to temporary files there).  Starting again while the
# server in DIR runs prints the same line.  The install goes to a venv at
# ${VIGIL_S3_VENV:-REPO/target/s3venv}; it is reused when it holds the pinned
# versions, so later runs need no network.
set -euo pipefail

readonly BUCKET=vigil-test
readonly ACCESS_KEY_ID=vigil-test-key
readonly SECRET_ACCESS_KEY=vigil-test-secret
readonly REGION=us-east-1
# moto's S3 backend plus what its standalone server needs (not moto[server],
# which pulls in every AWS service's dependencies: 320 MB instead of 140 MB).
readonly SPEC=('moto[s3]==5.2.5' 'flask==3.1.3' 'flask-cors==6.0.5')

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VIGIL_S3_VENV:-$repo/target/s3venv}

die() {
    echo "tests/s3/server.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
}

# Create or update the venv; serialised so that parallel test processes can
# all call `start`.
install_moto() {
    local log=$1 stamp=$venv/.vigil-s3-spec
    mkdir -p "$(dirname "$venv")"
    exec 9>"$venv.lock"
    flock 9
    if [[ -x $venv/bin/moto_server && -f $stamp && $(<"$stamp") == "${SPEC[*]}" ]]; then
        exec 9>&-
        return 0
    fi
    echo "tests/s3/server.sh: installing ${SPEC[*]} into $venv" >&2
    if [[ ! -x $venv/bin/python ]]; then
        "${PYTHON:-python3}" -m venv "$venv" >>"$log" 2>&1 ||
            die "cannot create a venv at $venv (python3 with the venv module is needed); see $log"
    fi
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        "${SPEC[@]}" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "pip install failed; see $log"
    fi
    printf '%s' "${SPEC[*]}" >"$stamp"
    exec 9>&-
}

# True when PID is alive and is a moto server.
is_moto() {
    local pid=$1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q moto_server
}

free_port() {
    "$venv/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Wait until the server on PORT answers (or PID dies), then create the bucket.
wait_and_create_bucket() {
    local port=$1 pid=$2
    "$venv/bin/python" - "$port" "$pid" "$BUCKET" <<'EOF'
import os, sys, time, urllib.error, urllib.request

port, pid, bucket = sys.argv[1], int(sys.argv[2]), sys.argv[3]
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 30
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(3)  # the server died (port taken, or a broken install)
    try:
        urllib.request.urlopen(base + "/", timeout=2).close()
        break
    except urllib.error.HTTPError:
        break  # any HTTP answer means it is up
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(4)
        time.sleep(0.05)
req = urllib.request.Request(f"{base}/{bucket}", method="PUT", data=b"")
with urllib.request.urlopen(req, timeout=10) as r:
    if r.status != 200:
        sys.exit(5)
EOF
}

cmd_start() {
    local dir=$1 log pidfile linefile port pid rc attempt
    mkdir -p "$dir/tmp"
    dir=$(cd "$dir" && pwd)
    log=$dir/server.log pidfile=$dir/server.pid linefile=$dir/server.line

    if [[ -f $pidfile ]] && is_moto "$(<"$pidfile")" && [[ -f $linefile ]]; then
        cat "$linefile"
        return 0
    fi
    rm -f "$pidfile" "$linefile"

    install_moto "$log"

    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        echo "tests/s3/server.sh: starting moto_server on 127.0.0.1:$port (attempt $attempt)" >>"$log"
        TMPDIR=$dir/tmp nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" \
            </dev/null >>"$log" 2>&1 &
        pid=$!
        echo "$pid" >"$pidfile"
        rc=0
        wait_and_create_bucket "$port" "$pid" || rc=$?
        case $rc in
            0)
                echo "endpoint=http://127.0.0.1:$port bucket=$BUCKET access_key_id=$ACCESS_KEY_ID secret_access_key=$SECRET_ACCESS_KEY region=$REGION pid=$pid" |
                    tee "$linefile"
                return 0
                ;;
            3) ;; # died before answering: most likely the port was taken meanwhile; retry
            *)
                kill "$pid" 2>/dev/null || true
                rm -f "$pidfile"
                tail -n 20 "$log" >&2
                die "moto_server did not come up on port $port (code $rc); see $log"
                ;;
        esac
    done
    rm -f "$pidfile"
    tail -n 20 "$log" >&2
    die "moto_server would not start; see $log"
}

cmd_stop() {
    local dir=$1 pidfile pid i
    pidfile=$dir/server.pid
    [[ -f $pidfile ]] || return 0
    pid=$(<"$pidfile")
    if is_moto "$pid"; then
        kill "$pid"
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile" "$dir/server.line"
}

(($# == 2)) || usage
[[ -n $2 ]] || usage
case $1 in
    start) cmd_start "$2" ;;
    stop) cmd_stop "$2" ;;
    *) usage ;;
esac
