#!/usr/bin/env bash
# Heartbeats under block load, on 127.0.0.1, every figure measured in the
# same run, rounds alternating so drifting machine load hits all of them.
# Each variant runs with the urgent lane on and off (A/B):
#   idle      ibench loopback ping-pong -m 64 --ping-channel heartbeat
#   loaded    ibench loopback under-load -m 64 --load-size 32K --bandwidth 16G
#             (pings on the heartbeat channel, 32 KiB blocks on the block
#             channel, offered beyond what loopback carries)
#   unloaded  ibench loopback throughput -m 32K (block goodput alone)
# With EXTRA=1 also, lane on: loaded with --cc off, and with --cc-target-us 50.
# Same wait mode everywhere (the default: spin up to 100 us, then sleep),
# one pair running at a time, client and server pinned to CPUs 0 and 1.
# Prints per-round ratios (loaded / idle ping p50 and p99, each against the
# idle figure of the same lane setting; goodput under load / unloaded
# goodput of the same setting), their medians, and the load average.
#
# Usage: bash bench/heartbeat.sh [ROUNDS] [SECONDS]   (defaults 5 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
secs="${2:-3}"
extra="${EXTRA:-0}"
out="$(mktemp -d /tmp/icx-hb.XXXXXX)"
cargo build --release -q -p ibench
ib=target/release/ibench
pin=(--cpus 0,1)
load=(under-load -m 64 --load-size 32K --bandwidth 16G)

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/loadavg" >&2
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    # Alternate which setting goes first, so neither always runs warm.
    if [ $((r % 2)) -eq 1 ]; then lanes=(on off); else lanes=(off on); fi
    for lane in "${lanes[@]}"; do
        l=(--urgent-lane "$lane")
        $ib loopback ping-pong -m 64 --ping-channel heartbeat -t "$secs" "${pin[@]}" "${l[@]}" -q --json >"$out/idle_$lane.$r.json"
        $ib loopback "${load[@]}" -t "$secs" "${pin[@]}" "${l[@]}" -q --json >"$out/loaded_$lane.$r.json"
        $ib loopback throughput -m 32K -t "$secs" "${pin[@]}" "${l[@]}" -q --json >"$out/tp_$lane.$r.json"
    done
    if [ "$extra" = 1 ]; then
        $ib loopback "${load[@]}" -t "$secs" "${pin[@]}" -q --cc off --json >"$out/loaded_nocc.$r.json"
        $ib loopback "${load[@]}" -t "$secs" "${pin[@]}" -q --cc-target-us 50 --json >"$out/loaded50.$r.json"
    fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/loadavg" >&2

python3 - "$out" "$rounds" "$extra" <<'PY'
import json, statistics, sys
out, rounds, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
med = statistics.median
def js(n, r): return json.load(open(f"{out}/{n}.{r}.json"))
rows = []
for r in range(1, rounds + 1):
    x = {}
    for lane in ("on", "off"):
        i, l, t = js(f"idle_{lane}", r), js(f"loaded_{lane}", r), js(f"tp_{lane}", r)
        assert l["features"]["urgent_lane"] == (lane == "on"), l["features"]
        x[lane] = dict(i50=i["rtt_us"]["p50"], i99=i["rtt_us"]["p99"],
                       l50=l["rtt_us"]["p50"], l99=l["rtt_us"]["p99"],
                       lgb=l["load"]["gbit_per_sec"], tp=t["gbit_per_sec"])
    if extra:
        for k in ("nocc", "50"):
            f = js("loaded_nocc" if k == "nocc" else "loaded50", r)
            x[k] = dict(l50=f["rtt_us"]["p50"], l99=f["rtt_us"]["p99"], lgb=f["load"]["gbit_per_sec"])
    rows.append(x)
def ratios(x, lane, base="on"):
    a, b = x[lane], x[base]
    return (a["l50"] / b["i50"], a["l99"] / b["i99"], a["lgb"] / b["tp"])
print("| round | lane | idle p50 / p99 µs | loaded p50 / p99 µs | load Gbit/s | unloaded Gbit/s | loaded/idle p50 | loaded/idle p99 | load/unloaded goodput |")
print("|---|---|---|---|---|---|---:|---:|---:|")
for k, x in enumerate(rows, 1):
    for lane in ("on", "off"):
        v = x[lane]
        p50, p99, gp = ratios(x, lane, lane)
        print(f"| {k} | {lane} | {v['i50']:.1f} / {v['i99']:.1f} | {v['l50']:.1f} / {v['l99']:.1f} | "
              f"{v['lgb']:.2f} | {v['tp']:.2f} | {p50:.2f} | {p99:.2f} | {gp:.2f} |")
m = lambda f: med([f(x) for x in rows])
print()
for lane in ("on", "off"):
    print(f"urgent lane {lane}: medians over {rounds} rounds of the per-round ratios: "
          f"loaded/idle ping p50 {m(lambda x: ratios(x, lane, lane)[0]):.2f}, "
          f"p99 {m(lambda x: ratios(x, lane, lane)[1]):.2f}; "
          f"goodput under load / unloaded {m(lambda x: ratios(x, lane, lane)[2]):.2f}; "
          f"idle p50 {m(lambda x: x[lane]['i50']):.1f} µs, p99 {m(lambda x: x[lane]['i99']):.1f} µs; "
          f"loaded p50 {m(lambda x: x[lane]['l50']):.1f} µs, p99 {m(lambda x: x[lane]['l99']):.1f} µs")
print(f"lane off / on, same round: idle p50 {m(lambda x: x['off']['i50'] / x['on']['i50']):.2f}, "
      f"loaded p50 {m(lambda x: x['off']['l50'] / x['on']['l50']):.2f}, "
      f"loaded p99 {m(lambda x: x['off']['l99'] / x['on']['l99']):.2f}, "
      f"unloaded goodput {m(lambda x: x['off']['tp'] / x['on']['tp']):.2f}")
if extra:
    for k, name in (("nocc", "--cc off"), ("50", "--cc-target-us 50")):
        print(f"lane on, {name}: loaded/idle p50 {m(lambda x: x[k]['l50'] / x['on']['i50']):.2f}, "
              f"p99 {m(lambda x: x[k]['l99'] / x['on']['i99']):.2f}, goodput {m(lambda x: x[k]['lgb'] / x['on']['tp']):.2f}")
print(open(f"{out}/loadavg").read().strip())
PY
echo "raw JSON: $out" >&2
