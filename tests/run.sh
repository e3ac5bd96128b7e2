#!/usr/bin/env bash
# Runs every check and test of the workspace. Installs the system packages it
# needs first, so a fresh machine with only Rust on it passes.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n=== %s\n' "$*"; }

# System packages: a C/C++ toolchain (crc32c and libfuzzer-sys build C/C++)
# and pkg-config. apt-get only runs when something is missing.
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$c"
    fi
done

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

log "fuzz targets: build and smoke-run"
bash tests/fuzz/smoke.sh

log "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.log
