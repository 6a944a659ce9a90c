#!/usr/bin/env bash
# Builds the driftless .deb: the release binary, its man page (generated from
# the command line's definition by agent/examples/manpage.rs), then cargo-deb
# with the [package.metadata.deb] section of agent/Cargo.toml.
#
#   packaging/build-deb.sh            # prints the .deb's path last
#   packaging/build-deb.sh --fast     # extra flags go to cargo deb
#
# Needs the build dependencies of the README (pkg-config, libssl-dev) and
# dpkg-dev (dpkg-shlibdeps, for the package's Depends); installs cargo-deb
# with `cargo install --locked` when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb" >&2
  cargo install cargo-deb --locked >&2
fi

target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
[ -n "$target_dir" ] || { echo "error: cannot find cargo's target directory" >&2; exit 1; }

echo "== cargo build --release" >&2
cargo build --release --locked -p driftless >&2

echo "== man page" >&2
mkdir -p "$target_dir/release"
cargo run --release --locked -q -p driftless --example manpage -- "$target_dir/release/driftless.1" >&2
# Compressed here: cargo-deb compresses man pages, but not files it finds in
# the target directory. -n: no name or time stamp, so the same page gives
# the same bytes.
gzip -9nf "$target_dir/release/driftless.1"

echo "== cargo deb" >&2
# --no-build: the binary above is the one packaged (cargo-deb strips it).
out=$(cargo deb -p driftless --no-build --locked "$@" | tail -n 1)
[ -f "$out" ] || { echo "error: cargo deb did not report a package: $out" >&2; exit 1; }
echo "$out"
