#!/usr/bin/env bash
# The long reliability loops (issue 12): the standing tests of
# tests/it/reliability.rs (and the outage tests) with more rounds than CI
# runs. Prints each test's summary line; bench/RELIABILITY.md records them.
#
#   bench/reliability.sh            # 50 kill -9 rounds
#   KILL_ROUNDS=200 bench/reliability.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KILL_ROUNDS=${KILL_ROUNDS:-50}
cargo test --locked --test it -- reliability:: disk_full:: aborts:: --nocapture --test-threads=1 2>&1 |
    grep -E "^kill -9 loop|^disk full|^test |^test result"
