#!/usr/bin/env bash
# Membership in the namespace lab (root): 3 fusion-node processes, rounds of
# isolating node 3 (cut -> eviction decision, decision -> CRS-1601, from the
# survivors' alert logs) and of SIGTERM to node 3 (signal -> CRS-1601).
#
#   bash bench/membership-lab.sh [ROUNDS] [MISSCOUNT] [HEARTBEAT]
#   (defaults 5, 3s, 100ms; Oracle's defaults are 30s and 1s)
set -euo pipefail
cd "$(dirname "$0")/.."
. hw/need-root.sh
need_root membership-lab "network namespaces"
export ICX_BENCH_ROUNDS=${1:-5} ICX_BENCH_MISSCOUNT=${2:-3s} ICX_BENCH_HEARTBEAT=${3:-100ms}
echo "# $(date -u '+%F %T') UTC, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
cargo test --release -q -p icx-node --test lab -- --ignored --nocapture bench_detection_and_reconfiguration
