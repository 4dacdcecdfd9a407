#!/usr/bin/env bash
# The shell completions and man pages the Debian package ships, generated
# from the clap definitions by the binary itself (cargo-deb cannot run
# commands, so this runs before `cargo deb --no-build`):
#
#   cargo build --release --locked
#   bash deploy/generate-assets.sh            # VIGIL=path/to/vigil to choose the binary
#   cargo deb --locked --no-build
#
# Writes target/assets/completions/{vigil.bash,_vigil,vigil.fish} and
# target/assets/man/*.1.gz (vigil.1 and one page per subcommand).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

vigil=${VIGIL:-target/release/vigil}
[[ -x $vigil ]] || { echo "generate-assets.sh: no binary at $vigil (cargo build --release first)" >&2; exit 1; }
out=target/assets
rm -rf "$out"
mkdir -p "$out/completions" "$out/man"
"$vigil" completions bash > "$out/completions/vigil.bash"
"$vigil" completions zsh > "$out/completions/_vigil"
"$vigil" completions fish > "$out/completions/vigil.fish"
bash -n "$out/completions/vigil.bash"
"$vigil" man --dir "$out/man"
# -n: no name or time stamp inside, so the package is reproducible.
gzip -9 -n "$out"/man/*.1
echo "generate-assets.sh: $(ls "$out/man" | wc -l) man pages, 3 completion scripts in $out"
