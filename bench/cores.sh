#!/usr/bin/env bash
# The per-core runtime with 1 vs 2 cores a side, on 127.0.0.1, in the same
# run, rounds alternating: 8 KiB block goodput (ibench throughput, 64 in
# flight) and 64 B ping-pong round trips, both ends on the runtime
# (`--cores N`), same wait mode (the default spin-then-sleep). Also the
# single-thread driver (no --cores) as the reference the runtime is
# compared with. Prints per-round ratios (2 cores / 1 core) and medians.
#
# Usage: bash bench/cores.sh [ROUNDS] [SECONDS]   (defaults 5 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
secs="${2:-3}"
out="$(mktemp -d /tmp/icx-cores.XXXXXX)"
cargo build --release -q -p ibench
ib=target/release/ibench

for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    for c in 1 2; do
        $ib loopback throughput -m 8K -t "$secs" --cores "$c" -q --json >"$out/tp.$c.$r.json"
        $ib loopback ping-pong -m 64 -t "$secs" --cores "$c" -q --json >"$out/pp.$c.$r.json"
    done
    $ib loopback throughput -m 8K -t "$secs" -q --json >"$out/tp.d.$r.json"
    $ib loopback ping-pong -m 64 -t "$secs" -q --json >"$out/pp.d.$r.json"
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
def js(n, c, r): return json.load(open(f"{out}/{n}.{c}.{r}.json"))
rows = []
for r in range(1, rounds + 1):
    x = {}
    for c in ("1", "2", "d"):
        t, p = js("tp", c, r), js("pp", c, r)
        x[c] = (t["gbit_per_sec"], p["rtt_us"]["p50"], p["rtt_us"]["p99"], t["cpu"]["client_pct"])
    rows.append(x)
print("| round | 1 core: Gbit/s, p50/p99 µs | 2 cores: Gbit/s, p50/p99 µs | driver: Gbit/s, p50/p99 µs | goodput 2/1 | p50 2/1 | p99 2/1 |")
print("|---|---|---|---|---|---|---|")
for k, x in enumerate(rows, 1):
    f = lambda v: f"{v[0]:.2f}, {v[1]:.1f}/{v[2]:.1f}"
    print(f"| {k} | {f(x['1'])} | {f(x['2'])} | {f(x['d'])} | {x['2'][0]/x['1'][0]:.2f} | {x['2'][1]/x['1'][1]:.2f} | {x['2'][2]/x['1'][2]:.2f} |")
m = lambda f: med([f(x) for x in rows])
print()
print(f"medians of per-round ratios over {rounds} rounds, 2 cores / 1 core: goodput {m(lambda x: x['2'][0]/x['1'][0]):.2f}, "
      f"ping p50 {m(lambda x: x['2'][1]/x['1'][1]):.2f}, p99 {m(lambda x: x['2'][2]/x['1'][2]):.2f}; "
      f"1-core runtime / driver: goodput {m(lambda x: x['1'][0]/x['d'][0]):.2f}, p50 {m(lambda x: x['1'][1]/x['d'][1]):.2f}")
PY
echo "raw JSON: $out" >&2
