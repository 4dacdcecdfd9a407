#!/usr/bin/env bash
# Runs each fuzz target (fuzz/, cargo-fuzz) for a set time and reports its
# executions and crashes. See bench/README.md and bench/RELIABILITY.md.
#
#   bench/fuzz.sh [TARGET...]        default: config manifest journal admin
#
# Environment (all optional):
#   FUZZ_SECONDS=60        time per target
#   FUZZ_SANITIZER=none    none (fastest) or address
#   FUZZ_RELEASE=1         optimised binaries (a much longer build)
#   BENCH_OUT=FILE         also write the Markdown table to FILE
#
# Runs on the stable toolchain: cargo-fuzz needs nightly flags, which
# RUSTC_BOOTSTRAP=1 unlocks (no nightly download). Install the runner once
# with `cargo install cargo-fuzz`. Debug assertions and overflow checks are
# on, so an arithmetic overflow is a crash. A crash stops its target: its
# input is in fuzz/artifacts/<target>/; once fixed, copy it into
# fuzz/regressions/<target>/, where tests/it/fuzz_regressions.rs replays it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo/fuzz"

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
# --dev (no optimisation, still instrumented, overflow checks on) builds
# far sooner than cargo-fuzz's default optimised build, which had not
# finished after 37 min on a loaded 2-core VM; FUZZ_RELEASE=1 for that one.
profile=--dev
if [ -n "${FUZZ_RELEASE:-}" ]; then
    profile=""
fi
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(config manifest journal admin)
fi

log() { printf '%s\n' "fuzz: $*" >&2; }
command -v cargo-fuzz >/dev/null 2>&1 || {
    log "error: cargo-fuzz is missing: cargo install cargo-fuzz"
    exit 1
}
export RUSTC_BOOTSTRAP=1

log "building ${targets[*]} (sanitizer: $sanitizer)"
cargo fuzz build $profile -s "$sanitizer" >&2

table="| target | seconds | executions | exec/s | crashes | corpus | notes |
|---|---|---|---|---|---|---|"
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    before=$(find "artifacts/$target" -type f | wc -l)
    log "running $target for ${seconds} s"
    out=$(mktemp)
    mkdir -p "regressions/$target"
    # Seeds and past crashers are read only; new inputs go to corpus/<target>.
    cargo fuzz run $profile -s "$sanitizer" "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
        >"$out" 2>&1 || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -n 1)
    after=$(find "artifacts/$target" -type f | wc -l)
    crashes=$((after - before))
    corpus=$(find "corpus/$target" -type f | wc -l)
    note=""
    if [ "$crashes" -gt 0 ]; then
        status=1
        note=$(grep -m1 -E "panicked at|ERROR: libFuzzer" "$out" | cut -c1-160 || true)
        log "$target: crash; input in fuzz/artifacts/$target, log $out"
    elif [ -z "$execs" ]; then
        status=1
        note="no final stats; log $out"
        log "$target: did not run; log $out"
    else
        rm -f "$out"
    fi
    table="$table
| $target | $seconds | ${execs:-?} | ${rate:-?} | $crashes | $corpus | $note |"
done
printf '%s\n' "$table"
if [ -n "${BENCH_OUT:-}" ]; then
    printf '%s\n' "$table" >"$BENCH_OUT"
fi
exit "$status"
