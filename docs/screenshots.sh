#!/usr/bin/env bash
# Regenerates the README's status page screenshots from the real daemon:
# docs/status-page-{healthy,failing}.png (1280 px wide) and their -phone
# variants (390 px), taken by tests/it/page.rs in headless Chromium.
#
#   bash docs/screenshots.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v chromium >/dev/null 2>&1; then
    echo "docs/screenshots.sh: needs Debian's chromium: apt-get install -y chromium" >&2
    exit 1
fi
VIGIL_SCREENSHOTS="$PWD/docs" cargo test --test it page:: -- --test-threads=1
ls -l docs/status-page-*.png
