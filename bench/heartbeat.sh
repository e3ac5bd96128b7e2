#!/usr/bin/env bash
# Heartbeats under block load, on 127.0.0.1, every figure measured in the
# same run, rounds alternating so drifting machine load hits all of them:
#   idle      ibench loopback ping-pong -m 64 --ping-channel heartbeat
#   loaded    ibench loopback under-load -m 64 --load-size 32K --bandwidth 16G
#             (pings on the heartbeat channel, 32 KiB blocks on the block
#             channel, offered beyond what loopback carries)
#   loaded, --cc off   the same without the block channel's congestion control
#   loaded, --cc-target-us 50   the same with a 50 us controller target
#   unloaded  ibench loopback throughput -m 32K (block goodput alone)
# Same wait mode everywhere (the default: spin up to 100 us, then sleep),
# one pair running at a time, client and server pinned to CPUs 0 and 1.
# Prints per-round ratios (loaded / idle ping p50 and p99; goodput under load
# / unloaded goodput) and their medians.
#
# Usage: bash bench/heartbeat.sh [ROUNDS] [SECONDS]   (defaults 5 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
secs="${2:-3}"
out="$(mktemp -d /tmp/icx-hb.XXXXXX)"
cargo build --release -q -p ibench
ib=target/release/ibench
pin=(--cpus 0,1)

for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    $ib loopback ping-pong -m 64 --ping-channel heartbeat -t "$secs" "${pin[@]}" -q --json >"$out/idle.$r.json"
    $ib loopback under-load -m 64 --load-size 32K --bandwidth 16G -t "$secs" "${pin[@]}" -q --json >"$out/loaded.$r.json"
    $ib loopback under-load -m 64 --load-size 32K --bandwidth 16G -t "$secs" "${pin[@]}" -q --cc off --json >"$out/loaded_nocc.$r.json"
    $ib loopback under-load -m 64 --load-size 32K --bandwidth 16G -t "$secs" "${pin[@]}" -q --cc-target-us 50 --json >"$out/loaded50.$r.json"
    $ib loopback throughput -m 32K -t "$secs" "${pin[@]}" -q --json >"$out/tp.$r.json"
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
def js(n, r): return json.load(open(f"{out}/{n}.{r}.json"))
rows = []
for r in range(1, rounds + 1):
    i, l, n, t = js("idle", r), js("loaded", r), js("loaded_nocc", r), js("tp", r)
    f = js("loaded50", r)
    rows.append(dict(
        f50=f["rtt_us"]["p50"], f99=f["rtt_us"]["p99"], fgb=f["load"]["gbit_per_sec"],
        idle50=i["rtt_us"]["p50"], idle99=i["rtt_us"]["p99"],
        l50=l["rtt_us"]["p50"], l99=l["rtt_us"]["p99"], lgb=l["load"]["gbit_per_sec"],
        n50=n["rtt_us"]["p50"], n99=n["rtt_us"]["p99"], ngb=n["load"]["gbit_per_sec"],
        tp=t["gbit_per_sec"]))
print("| round | idle p50 / p99 µs | loaded p50 / p99 µs | load Gbit/s | --cc off p50 / p99 µs | load Gbit/s | target 50 µs: p50 / p99 µs | load Gbit/s | unloaded Gbit/s | loaded/idle p50 | loaded/idle p99 | load/unloaded goodput |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for k, x in enumerate(rows, 1):
    print(f"| {k} | {x['idle50']:.1f} / {x['idle99']:.1f} | {x['l50']:.1f} / {x['l99']:.1f} | {x['lgb']:.2f} | "
          f"{x['n50']:.1f} / {x['n99']:.1f} | {x['ngb']:.2f} | {x['f50']:.1f} / {x['f99']:.1f} | {x['fgb']:.2f} | {x['tp']:.2f} | "
          f"{x['l50']/x['idle50']:.2f} | {x['l99']/x['idle99']:.2f} | {x['lgb']/x['tp']:.2f} |")
m = lambda f: med([f(x) for x in rows])
print()
print(f"medians of per-round ratios over {rounds} rounds: loaded/idle ping p50 {m(lambda x: x['l50']/x['idle50']):.2f}, "
      f"p99 {m(lambda x: x['l99']/x['idle99']):.2f}; goodput under load / unloaded {m(lambda x: x['lgb']/x['tp']):.2f}; "
      f"with --cc off: p50 {m(lambda x: x['n50']/x['idle50']):.2f}, p99 {m(lambda x: x['n99']/x['idle99']):.2f}, "
      f"goodput {m(lambda x: x['ngb']/x['tp']):.2f}; with a 50 us target: p50 {m(lambda x: x['f50']/x['idle50']):.2f}, "
      f"p99 {m(lambda x: x['f99']/x['idle99']):.2f}, goodput {m(lambda x: x['fgb']/x['tp']):.2f}")
PY
echo "raw JSON: $out" >&2
