#!/usr/bin/env bash
# The redundant interconnect in the two-link namespace lab (hw/links-lab.sh:
# two namespaces joined by two bridges, offloads off), io_uring both ends,
# one ibench server bound to both links, every figure measured in the same
# run, one client at a time:
#   goodput   ibench throughput -m 32K over link 0 alone vs over both links
#             (--link-mode spread), each link's egress shaped to RATE by tbf
#             in the client's namespace (veth has no speed of its own: the
#             shaping stands for two NICs). Ratio two/one per round.
#   failover  CUTS runs of ibench block (8 KiB, inflight 1) over both links
#             (active/passive, --link-timeout 300), link 0 cut by an nft
#             drop rule 1.25 s in: the run's largest block round trip is the
#             gap one block saw across the cut. Baseline: the largest round
#             trip of as many uncut runs. p50/p99 of each, and their ratio.
#   heartbeat ROUNDS pairs of ibench under-load (64 B pings on the heartbeat
#             channel, 32 KiB blocks at LOAD behind them) over both links,
#             one with link 0 cut 1.25 s in, one uncut: ping p50/p99/max, and
#             the per-round ratio cut/uncut.
# Everything stays inside the lab's namespaces, deleted on exit.
#
# Usage: sudo bash bench/links.sh [ROUNDS] [CUTS]   (defaults 5 and 20)
#        RATE=500mbit LOAD=200M to change the shaping and the load.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
cuts="${2:-20}"
export RATE="${RATE:-500mbit}" LOAD="${LOAD:-200M}" ROUNDS="$rounds" CUTS="$cuts"
cargo build --release -q -p ibench
export IBENCH="$PWD/target/release/ibench"
export OUT
OUT="$(mktemp -d /tmp/icx-links.XXXXXX)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/loadavg" >&2

hw/links-lab.sh run --prefix icxbl --subnet 91 -- bash -c '
set -euo pipefail
ip netns exec "$NS_B" "$IBENCH" server --backend uring --bind "$IP_B1:7480,$IP_B2:7480" >"$OUT/server.log" 2>&1 &
srv=$!
trap "kill $srv 2>/dev/null; wait $srv 2>/dev/null || true" EXIT
for _ in $(seq 50); do grep -q listening "$OUT/server.log" && break; sleep 0.1; done
client() { ip netns exec "$NS_A" timeout 60 "$IBENCH" "$@" --backend uring --connect-timeout 10 -q --json; }
cut() { ip netns exec "$NS_A" nft -f - <<NFT
table inet cut {
  chain o { type filter hook output priority 0; oifname "$IF_A1" drop; }
  chain i { type filter hook input priority 0; iifname "$IF_A1" drop; }
}
NFT
}
heal() { ip netns exec "$NS_A" nft delete table inet cut 2>/dev/null || true; }
both="$IP_B1:7480,$IP_B2:7480"

for ifc in "$IF_A1" "$IF_A2"; do
  ip netns exec "$NS_A" tc qdisc add dev "$ifc" root tbf rate "$RATE" burst 64k latency 20ms
done
for r in $(seq 1 "$ROUNDS"); do
  echo "goodput round $r/$ROUNDS" >&2
  if [ $((r % 2)) -eq 1 ]; then order="one two"; else order="two one"; fi
  for v in $order; do
    if [ $v = one ]; then client throughput --peer "$IP_B1:7480" -m 32K -t 3 >"$OUT/tp_one.$r.json"
    else client throughput --peer "$both" --link-mode spread -m 32K -t 3 >"$OUT/tp_two.$r.json"; fi
  done
done
for ifc in "$IF_A1" "$IF_A2"; do ip netns exec "$NS_A" tc qdisc del dev "$ifc" root; done

for r in $(seq 1 "$CUTS"); do
  echo "failover run $r/$CUTS" >&2
  ( sleep 1.25; cut ) & cutter=$!
  client block --peer "$both" --link-timeout 300 -t 2 >"$OUT/cut.$r.json"
  wait $cutter; heal
  client block --peer "$both" --link-timeout 300 -t 2 >"$OUT/uncut.$r.json"
done

for r in $(seq 1 "$ROUNDS"); do
  echo "heartbeat round $r/$ROUNDS" >&2
  ( sleep 1.25; cut ) & cutter=$!
  client under-load --peer "$both" --link-timeout 300 -m 64 --load-size 32K --bandwidth "$LOAD" -t 3 >"$OUT/hb_cut.$r.json"
  wait $cutter; heal
  client under-load --peer "$both" --link-timeout 300 -m 64 --load-size 32K --bandwidth "$LOAD" -t 3 >"$OUT/hb_uncut.$r.json"
done
'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/loadavg" >&2

python3 - "$OUT" "$rounds" "$cuts" <<'PY'
import json, statistics, sys
out, rounds, cuts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
med = statistics.median
def js(n, r): return json.load(open(f"{out}/{n}.{r}.json"))
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

print("### Goodput, one link vs two (spread), each link shaped\n")
print("| round | one link Gbit/s | two links Gbit/s | two/one | lost (one, two) | link 0 / link 1 frames (two) |")
print("|---|---:|---:|---:|---|---|")
ratios = []
for r in range(1, rounds + 1):
    a, b = js("tp_one", r), js("tp_two", r)
    ratio = b["gbit_per_sec"] / a["gbit_per_sec"]
    ratios.append(ratio)
    fr = "/".join(str(l["frames_sent"]) for l in b["links"])
    print(f"| {r} | {a['gbit_per_sec']:.3f} | {b['gbit_per_sec']:.3f} | {ratio:.2f} | {a['lost']}, {b['lost']} | {fr} |")
print(f"\nmedian two/one: **{med(ratios):.2f}**\n")

print("### Failover gap: largest 8 KiB block round trip of a run with link 0 cut, vs uncut runs\n")
gaps = [js("cut", r)["rtt_us"]["max"] for r in range(1, cuts + 1)]
base = [js("uncut", r)["rtt_us"]["max"] for r in range(1, cuts + 1)]
lost = sum(js("cut", r)["lost"] for r in range(1, cuts + 1))
downs = sum(js("cut", r)["links"][0]["downs"] for r in range(1, cuts + 1))
print("| | p50 ms | p99 ms | max ms |")
print("|---|---:|---:|---:|")
print(f"| cut ({cuts} runs) | {pct(gaps, .5)/1e3:.1f} | {pct(gaps, .99)/1e3:.1f} | {max(gaps)/1e3:.1f} |")
print(f"| uncut ({cuts} runs) | {pct(base, .5)/1e3:.2f} | {pct(base, .99)/1e3:.2f} | {max(base)/1e3:.2f} |")
print(f"\ncut/uncut p50: **{pct(gaps, .5)/pct(base, .5):.1f}**; messages lost over the cut runs: {lost}; link 0 taken down in {downs} of {cuts} runs\n")

print("### Heartbeat round trip under block load, link 0 cut 1.25 s in vs uncut\n")
print("| round | cut p50 / p99 / max µs | uncut p50 / p99 / max µs | p99 cut/uncut | lost (cut) |")
print("|---|---|---|---:|---|")
hr = []
for r in range(1, rounds + 1):
    c, u = js("hb_cut", r), js("hb_uncut", r)
    cr, ur = c["rtt_us"], u["rtt_us"]
    hr.append(cr["p99"] / ur["p99"])
    print(f"| {r} | {cr['p50']:.0f} / {cr['p99']:.0f} / {cr['max']:.0f} | {ur['p50']:.0f} / {ur['p99']:.0f} / {ur['max']:.0f} | {hr[-1]:.2f} | {c['lost']} |")
print(f"\nmedian p99 cut/uncut: **{med(hr):.2f}**")
PY
echo "raw results in $OUT" >&2
