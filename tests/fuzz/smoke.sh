#!/usr/bin/env bash
# Fuzz smoke test for CI, on the stable toolchain: builds the fuzz targets and
# runs each for a bounded number of inputs, exiting non-zero on a crash (the
# crashing input is left in tests/fuzz/artifacts/<target>/).
#
# Default mode: coverage-guided. cargo-fuzz's SanitizerCoverage flags
# (-Cpasses=sancov-module and -Cllvm-args) are stable rustc options, so a
# stable `cargo build --target <host>` with them in RUSTFLAGS gives libFuzzer
# real coverage feedback; only the sanitizers (-Zsanitizer) need nightly.
# --target keeps the flags off build scripts and puts the binaries in
# target/<host>/debug, apart from the plain build. The corpus grows in
# tests/fuzz/corpus/<target>/ (git-ignored) and is reused by later runs.
#
# FUZZ_PLAIN=1: plain `cargo build` with no instrumentation. libFuzzer then
# only feeds short random mutations of an empty input; the targets still
# steer those towards valid frames, but coverage-guided runs go much deeper.
#
# Env: FUZZ_RUNS (default 50000; frame_decode, ~50x cheaper per input, gets
#      ten times as many), FUZZ_MAX_LEN (12000), FUZZ_LEN_CONTROL (10: input
#      lengths grow quickly towards max_len), FUZZ_TARGETS (all), FUZZ_PLAIN.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runs="${FUZZ_RUNS:-50000}"
# A fixed seed makes a CI run repeatable; FUZZ_SEED=0 lets libFuzzer pick one.
seed="${FUZZ_SEED:-1}"
max_len="${FUZZ_MAX_LEN:-12000}"
len_control="${FUZZ_LEN_CONTROL:-10}"
targets="${FUZZ_TARGETS:-frame_decode auth_frame reassembly ack_decode membership_decode resp_decode gcs_decode kv_page redo_scan config_parse}"
target_dir="${CARGO_TARGET_DIR:-$here/target}"

if [ -n "${FUZZ_PLAIN:-}" ]; then
    cargo build --manifest-path "$here/Cargo.toml" --bins
    bin="$target_dir/debug"
    corpus_root=""
else
    host="$(rustc -vV | sed -n 's/^host: //p')"
    export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
    cargo build --manifest-path "$here/Cargo.toml" --bins --target "$host"
    bin="$target_dir/$host/debug"
    corpus_root="$here/corpus"
fi

log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT

failed=0
for t in $targets; do
    mkdir -p "$here/artifacts/$t"
    corpus=()
    if [ -n "$corpus_root" ]; then
        mkdir -p "$corpus_root/$t"
        corpus=("$corpus_root/$t")
    fi
    n="$runs"
    [ "$t" = frame_decode ] && n=$((runs * 10))
    echo "== fuzz smoke: $t ($n runs, max_len $max_len${FUZZ_PLAIN:+, uninstrumented})"
    start=$(date +%s%N)
    if "$bin/$t" -seed="$seed" -runs="$n" -max_len="$max_len" -len_control="$len_control" -print_final_stats=1 \
        -artifact_prefix="$here/artifacts/$t/" "${corpus[@]}" >"$log/$t" 2>&1; then
        ms=$(( ($(date +%s%N) - start) / 1000000 ))
        echo "   ok in ${ms} ms"
        grep -E 'DONE|stat::number_of_executed_units' "$log/$t" | sed 's/^/   /'
    else
        failed=1
        echo "   CRASH in $t; log tail:"
        grep -vE '^ +[0-9]+: |^ +at ' "$log/$t" | tail -25 | sed 's/^/   /'
        ls -1 "$here/artifacts/$t/" | sed 's/^/   artifact: /'
    fi
done
if [ "$failed" -ne 0 ]; then
    echo "fuzz smoke: FAILED (reproduce: $bin/<target> <artifact>)"
    exit 1
fi
echo "fuzz smoke: all targets passed"
