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
# As root the lab can run, so a lab test that cannot is a failure, not a
# skip (crates/testkit/src/lab.rs, hw/need-root.sh).
if [ "$(id -u)" = 0 ]; then SUDO=; export ICX_REQUIRE_LAB=1; else SUDO=sudo; fi
if ((${#need[@]})); then
    log "installing ${need[*]}"
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

# The sans-IO crates' clippy.toml (no clocks, threads, sockets or files) is
# one file, linked into each; a protocol crate without the link would lint
# with no such rule.
log "sans-IO crates link lints/clippy-sans-io.toml"
for c in crates/wire crates/transport crates/sim crates/membership crates/fusion; do
    [ -d "$c" ] || continue
    if [ "$(readlink "$c/clippy.toml")" != ../../lints/clippy-sans-io.toml ]; then
        echo "$c/clippy.toml must be a symlink to ../../lints/clippy-sans-io.toml" >&2
        exit 1
    fi
done

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# The DPDK backend (cargo feature `dpdk`, not in default builds) needs the
# system DPDK, libclang for bindgen, and the lab tools; its lab tests run in
# network namespaces as root and skip, saying why, otherwise (as root, with
# ICX_REQUIRE_LAB=1, a missing prerequisite fails them).
# icx-dpdk-peer is the lab's endpoint binary with the lab tests that run it.
dpdk_feat=icx-dpdk/dpdk,icx-dpdk-sys/dpdk,icx-dpdk-peer/dpdk
need=()
pkg-config --exists libdpdk 2>/dev/null || need+=(libdpdk-dev)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ethtool >/dev/null 2>&1 || need+=(ethtool)
# fusion-node's lab tests read INFO as an operator does, with redis-cli.
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
log "DPDK backend: clippy and tests (feature dpdk)"
cargo clippy -p icx-dpdk -p icx-dpdk-sys -p icx-dpdk-peer --all-targets --features "$dpdk_feat" -- -D warnings
cargo test -p icx-dpdk-sys -p icx-dpdk -p icx-dpdk-peer --features "$dpdk_feat" --no-fail-fast
# ibench --backend dpdk server in one namespace, io_uring client in the other.
cargo test -p ibench --features dpdk --test dpdk_lab -- --test-threads 1

log "fuzz targets: build and smoke-run"
bash tests/fuzz/smoke.sh

log "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.log
