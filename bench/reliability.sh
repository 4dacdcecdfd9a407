#!/usr/bin/env bash
# The long reliability loops (issue 12): the standing tests of
# tests/it/reliability.rs, the failpoint matrix (tests/it/failpoints.rs,
# built with the `failpoints` feature), the storage servers killed
# mid-upload (tests/it/server_kill.rs) and the full-disk tests, with more
# rounds than CI runs. Prints each test's summary line;
# bench/RELIABILITY.md records them.
#
#   bench/reliability.sh            # 50 kill -9 rounds, 3 of each failpoint, 3 server kills
#   KILL_ROUNDS=200 FAILPOINT_ROUNDS=10 SERVER_KILL_ROUNDS=5 bench/reliability.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KILL_ROUNDS=${KILL_ROUNDS:-50}
export FAILPOINT_ROUNDS=${FAILPOINT_ROUNDS:-3}
export SERVER_KILL_ROUNDS=${SERVER_KILL_ROUNDS:-3}
cargo test --locked --features failpoints --test it -- \
    reliability:: failpoints:: server_kill:: disk_full:: aborts:: --nocapture --test-threads=1 2>&1 |
    grep -E "^kill -9 loop|^failpoint |^server kill|^disk full|^test |^test result"
