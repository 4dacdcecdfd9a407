#!/usr/bin/env bash
# Lint systemd/vigil.service with systemd-analyze.
#
#   systemd/lint.sh [BINARY]
#
# BINARY (default: target/debug/vigil under the repository root) is an existing
# executable that replaces /usr/bin/vigil in ExecStart= of a temporary copy of
# the unit, because `systemd-analyze verify` fails when the ExecStart binary
# does not exist. Any executable will do (e.g. /bin/true).
#
# Runs:
#   systemd-analyze verify                       fails on any line about vigil.service
#   systemd-analyze security --offline=true      fails above SECURITY_THRESHOLD
# SECURITY_THRESHOLD is in systemd's internal unit of tenths: 20 means an
# overall exposure of 2.0 (the unit scores 1.2 on systemd 252).
#
# Installs systemd (for systemd-analyze) with apt-get when it is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
unit_src="$here/vigil.service"
threshold=${SECURITY_THRESHOLD:-20}

bin=${1:-$repo/target/debug/vigil}
if [[ ! -x $bin ]]; then
    echo "lint.sh: $bin is not an executable file (build vigil first, or pass /bin/true)" >&2
    exit 2
fi
bin=$(realpath -- "$bin")

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "lint.sh: systemd-analyze is missing; install the systemd package (needs root)" >&2
        exit 2
    fi
    echo "lint.sh: installing systemd (for systemd-analyze)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
unit="$tmp/vigil.service"

# Copy the unit, pointing ExecStart= at $bin (plain string replacement, so any
# character in the path is safe).
found=0
while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line == ExecStart=/usr/bin/vigil* ]]; then
        line="ExecStart=$bin${line#ExecStart=/usr/bin/vigil}"
        found=1
    fi
    printf '%s\n' "$line"
done <"$unit_src" >"$unit"
if [[ $found -ne 1 ]]; then
    echo "lint.sh: no 'ExecStart=/usr/bin/vigil' line in $unit_src" >&2
    exit 1
fi

status=0

echo "== systemd-analyze verify"
# verify prints problems of every unit it loads (including unrelated units of
# the host); only lines about vigil.service count. A missing `vigil` user is
# expected on a build machine and only resolved at start, so it is tolerated.
out=$(systemd-analyze verify "$unit" 2>&1) || status=1
if [[ -n $out ]]; then
    printf '%s\n' "$out"
fi
errors=$(printf '%s\n' "$out" | grep -F 'vigil.service' |
    grep -Ev 'Failed to resolve (user|group)' || true)
if [[ -n $errors ]]; then
    echo "lint.sh: verify reported problems in vigil.service:" >&2
    printf '%s\n' "$errors" >&2
    status=1
elif [[ $status -ne 0 ]]; then
    echo "lint.sh: verify exited non-zero" >&2
else
    echo "ok"
fi

echo "== systemd-analyze security --offline=true --threshold=$threshold"
sec_rc=0
sec=$(systemd-analyze security --offline=true --no-pager --threshold="$threshold" "$unit" 2>&1) || sec_rc=$?
# The table is long; show the items that add exposure, then the verdict.
printf '%s\n' "$sec" | grep -E '^✗' || true
score_line=$(printf '%s\n' "$sec" | grep -E 'Overall exposure level' || true)
if [[ -z $score_line ]]; then
    printf '%s\n' "$sec" >&2
    echo "lint.sh: systemd-analyze security printed no exposure level" >&2
    exit 1
fi
printf '%s\n' "$score_line"
if [[ $sec_rc -ne 0 ]]; then
    echo "lint.sh: exposure above threshold $threshold (tenths), or security failed (rc=$sec_rc)" >&2
    status=1
fi

if [[ $status -eq 0 ]]; then
    echo "lint.sh: vigil.service OK"
fi
exit "$status"
