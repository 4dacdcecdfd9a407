#!/usr/bin/env bash
# The Debian package, installed on this machine as a user would: build it
# with cargo-deb, `dpkg -i`, check the user, directories and modes the
# maintainer scripts make, `systemd-analyze verify` the installed unit, run
# `vigil check-config` on the installed example, `dpkg -r` (data stays),
# install again over the kept data (idempotent), then purge. The shell
# completions and man pages are generated first (deploy/generate-assets.sh)
# and must be installed, parse, and render.
#
#   bash tests/package.sh            # builds target/debian/vigil_*.deb (release)
#   DEB=path.deb bash tests/package.sh
#
# Needs root (dpkg); installs cargo-deb with `cargo install` when missing.
# Refuses to run where a vigil package is already installed, so that it
# never removes a real installation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { echo "package.sh: FAIL: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "run as root (dpkg -i)"
if dpkg-query -W -f='${Status}' vigil 2>/dev/null | grep -q "installed"; then
    fail "a vigil package is installed here already; not touching it"
fi
command -v systemd-analyze >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
}

deb=${DEB:-}
if [[ -z $deb ]]; then
    command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb
    cargo build --release --locked
    bash deploy/generate-assets.sh
    deb=$(cargo deb --locked --no-build | tail -1)
fi
[[ -f $deb ]] || fail "no package built ($deb)"
echo "package.sh: $deb"

cleanup() { dpkg -P vigil >/dev/null 2>&1 || true; }
trap cleanup EXIT

mode_of() { stat -c '%a %U:%G' "$1"; }
expect_mode() {
    local got; got=$(mode_of "$1")
    [[ $got == "$2" ]] || fail "$1 is $got, expected $2"
}

dpkg -i "$deb" >/dev/null
getent passwd vigil >/dev/null || fail "no vigil user after install"
[[ $(getent passwd vigil | cut -d: -f7) == /usr/sbin/nologin ]] || fail "vigil user has a login shell"
expect_mode /etc/vigil "750 root:vigil"
expect_mode /var/lib/vigil "750 vigil:vigil"
expect_mode /var/log/vigil "750 vigil:vigil"
expect_mode /usr/bin/vigil "755 root:root"
for f in /usr/lib/systemd/system/vigil.service /etc/logrotate.d/vigil \
         /usr/share/doc/vigil/config.toml.example /usr/share/doc/vigil/README.md \
         /usr/share/doc/vigil/postgres/catalog.sql \
         /usr/share/vigil/prometheus/vigil-rules.yml /usr/share/vigil/grafana/vigil.json; do
    [[ -f $f ]] || fail "$f not installed"
done
# Completions where each shell looks for them; the man pages render.
for f in /usr/share/bash-completion/completions/vigil /usr/share/zsh/vendor-completions/_vigil \
         /usr/share/fish/vendor_completions.d/vigil.fish /usr/share/man/man1/vigil.1.gz \
         /usr/share/man/man1/vigil-backup.1.gz /usr/share/man/man1/vigil-audit-verify.1.gz; do
    [[ -f $f ]] || fail "$f not installed"
done
bash -n /usr/share/bash-completion/completions/vigil || fail "the bash completion does not parse"
if command -v promtool >/dev/null 2>&1; then
    promtool check rules /usr/share/vigil/prometheus/vigil-rules.yml >/dev/null \
        || fail "promtool rejects the installed alert rules"
fi
page=$(zcat /usr/share/man/man1/vigil.1.gz | sed 's/\\-/-/g')
for sub in $(/usr/bin/vigil --help | sed -n '/^Commands:/,/^$/p' | awk 'NR>1 && $1 != "help" {print $1}'); do
    grep -q "vigil-$sub(1)" <<<"$page" || fail "vigil(1) does not name $sub"
done
if command -v groff >/dev/null 2>&1; then
    warnings=$(zcat /usr/share/man/man1/vigil.1.gz | groff -man -Tutf8 -ww -z 2>&1) \
        || fail "groff cannot render vigil(1)"
    [[ -z $warnings ]] || fail "groff warns on vigil(1): $warnings"
fi
if command -v man >/dev/null 2>&1; then
    man -l /usr/share/man/man1/vigil.1.gz 2>/dev/null | grep -q "check-config" \
        || fail "man -l does not show vigil(1)"
fi

systemctl is-enabled vigil.service >/dev/null 2>&1 && fail "the package enabled vigil.service before it was configured"

# The installed unit: systemd-analyze verify must say nothing about it.
out=$(systemd-analyze verify /usr/lib/systemd/system/vigil.service 2>&1 || true)
if grep -q "vigil.service" <<<"$out"; then
    echo "$out" >&2; fail "systemd-analyze verify complains about the installed unit"
fi

# The installed example, as the README's install route uses it.
install -m 0640 -g vigil /usr/share/doc/vigil/config.toml.example /etc/vigil/config.toml
install -m 0640 -g vigil /dev/null /etc/vigil/catalog.password
echo "example-password" > /etc/vigil/catalog.password
# The packaged layout (root:vigil 0640 secrets) is vigil's own group: no
# exposure warning, nothing on stderr.
err=$(runuser -u vigil -- /usr/bin/vigil --config /etc/vigil/config.toml check-config 2>&1 >/dev/null) \
    || fail "vigil check-config on the installed example: $err"
[[ -z $err ]] || fail "check-config on the packaged layout printed: $err"

# Data the daemon and the operator made must survive remove and reinstall.
echo "journal" > /var/lib/vigil/marker
chown vigil:vigil /var/lib/vigil/marker
chmod 0700 /var/lib/vigil   # an operator's tighter mode is kept too
dpkg -r vigil >/dev/null
[[ ! -e /usr/bin/vigil ]] || fail "/usr/bin/vigil left after dpkg -r"
[[ -f /var/lib/vigil/marker && -f /etc/vigil/config.toml ]] || fail "dpkg -r removed data"
getent passwd vigil >/dev/null || fail "dpkg -r removed the vigil user (its files remain)"

dpkg -i "$deb" >/dev/null
dpkg -i "$deb" >/dev/null   # an upgrade to the same version: configure runs again
expect_mode /var/lib/vigil "700 vigil:vigil"
[[ $(cat /var/lib/vigil/marker) == journal ]] || fail "reinstall touched the state directory"
[[ $(cat /etc/vigil/catalog.password) == example-password ]] || fail "reinstall touched the config"
runuser -u vigil -- /usr/bin/vigil --config /etc/vigil/config.toml check-config >/dev/null \
    || fail "check-config after reinstall"

dpkg -P vigil >/dev/null
[[ -f /var/lib/vigil/marker ]] || fail "purge removed the audit journal's directory"
[[ ! -e /var/log/vigil ]] || fail "purge left /var/log/vigil"
rm -rf /var/lib/vigil /etc/vigil
echo "package.sh: ok"
