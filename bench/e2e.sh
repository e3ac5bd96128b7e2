#!/usr/bin/env bash
# End-to-end benchmarks of the io_uring backend on 127.0.0.1 against
# baselines measured in the same run:
#   - 64 B ping-pong round trip (p50/p99/p99.9): ibench over icx (io_uring:
#     default wait (spins 100 us, then sleeps), sleeping at once (--spin-us 0),
#     and busy-poll) vs ibench's plain-UDP baseline (in-run) vs
#     `sockperf ping-pong` (whose "latency" is half the round trip: we double it);
#   - one-way goodput of reliable 8 KiB and 32 KiB blocks at MTU 1500 and
#     9000 framing, one core each side, vs ibench's plain-UDP sink (in-run) and
#     `qperf udp_bw` with 8 KiB messages (unreliable; recv_bw counted).
# Rounds alternate the tools so drifting machine load hits all of them; the
# summary reports medians over rounds and ratios of medians.
#
# Usage: bash bench/e2e.sh [ROUNDS] [SECONDS]   (defaults 3 and 4)
#        E2E_ONLY=latency|goodput bash bench/e2e.sh ...   (one half only)
# Traffic: loopback only. Installs sockperf and qperf with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
secs="${2:-4}"
only="${E2E_ONLY:-}"
out="$(mktemp -d /tmp/icx-e2e.XXXXXX)"

need=()
command -v sockperf >/dev/null || need+=(sockperf)
command -v qperf >/dev/null || need+=(qperf)
if ((${#need[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p ibench
ib=target/release/ibench

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
sockperf server -i 127.0.0.1 -p 11111 >/dev/null 2>&1 & pids+=($!)
qperf --listen_port 19765 >/dev/null 2>&1 & pids+=($!)
sleep 0.5

for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    if [ "$only" != goodput ]; then
        sockperf ping-pong -i 127.0.0.1 -p 11111 -m 64 -t "$secs" --full-rtt >"$out/sockperf.$r.txt" 2>&1 || true
        $ib loopback ping-pong -m 64 -t "$secs" --cpus 0,1 --baseline --json >"$out/pp.$r.json"
        $ib loopback ping-pong -m 64 -t "$secs" --cpus 0,1 --spin-us 0 --json >"$out/ppsleep.$r.json"
        $ib loopback ping-pong -m 64 -t "$secs" --cpus 0,1 --busy-poll --json >"$out/ppbusy.$r.json"
    fi
    if [ "$only" != latency ]; then
        qperf --listen_port 19765 -t "$secs" -m 8192 127.0.0.1 udp_bw >"$out/qperf.$r.txt" 2>&1 || true
        for mtu in 1500 9000; do
            for m in 8192 32768; do
                $ib loopback throughput -m "$m" --mtu "$mtu" -t "$secs" --cpus 0,1 --baseline --json \
                    >"$out/tp.$mtu.$m.$r.json"
            done
        done
    fi
done

python3 - "$out" "$rounds" "$only" <<'PY'
import json, re, statistics, sys, glob, os
out, rounds, only = sys.argv[1], int(sys.argv[2]), sys.argv[3]
med = statistics.median
def js(p): return json.load(open(p))
def sockperf(p):
    t = open(p).read()
    v = {}
    for q, k in (("50.000", "p50"), ("99.000", "p99"), ("99.900", "p999")):
        m = re.search(r"percentile %s =\s+([\d.]+)" % re.escape(q), t)
        if m: v[k] = float(m.group(1))
    return v
def qperf(p):
    m = re.search(r"recv_bw\s*=\s*([\d.]+)\s*(\w+)/sec", open(p).read())
    if not m: return None
    x, unit = float(m.group(1)), m.group(2)
    return x * {"GB": 8.0, "MB": 8e-3, "KB": 8e-6}[unit]
R = range(1, rounds + 1)
if only != "goodput":
    print("## ping-pong, 64 B, round trip in µs (median over %d rounds)\n" % rounds)
    print("| what | p50 | p99 | p99.9 | client CPU % |\n|---|---:|---:|---:|---:|")
    rows, cpu = {}, {}
    def icx_row(name, f, sub=None):
        d = [js(f"{out}/{f}.{r}.json") for r in R]
        if sub: d = [x[sub] for x in d]
        rows[name] = [x["rtt_us"] for x in d]
        cpu[name] = med(x["cpu"]["client_pct"] for x in d)
    icx_row("icx io_uring (default: spin 100 us, then sleep)", "pp")
    icx_row("icx io_uring --spin-us 0 (sleep at once)", "ppsleep")
    icx_row("icx io_uring --busy-poll", "ppbusy")
    icx_row("plain UDP (ibench baseline, in-run, blocking)", "pp", "baseline")
    sp = [sockperf(f"{out}/sockperf.{r}.txt") for r in R]
    if all(sp): rows["sockperf ping-pong (--full-rtt)"] = sp
    agg = {k: {q: med(x[q] for x in v) for q in ("p50", "p99", "p999")} for k, v in rows.items()}
    for k, v in agg.items():
        c = f"{cpu[k]:.0f}" if k in cpu else "n/a"
        print(f"| {k} | {v['p50']:.1f} | {v['p99']:.1f} | {v['p999']:.1f} | {c} |")
    if "sockperf ping-pong (--full-rtt)" in agg:
        s = agg["sockperf ping-pong (--full-rtt)"]
        print("\nratio to sockperf (lower is better; target <= 0.8):\n")
        for k in ("icx io_uring (default: spin 100 us, then sleep)", "icx io_uring --spin-us 0 (sleep at once)", "icx io_uring --busy-poll"):
            v = agg[k]
            print(f"- {k}: p50 {v['p50']/s['p50']:.2f}x, p99 {v['p99']/s['p99']:.2f}x, p99.9 {v['p999']/s['p999']:.2f}x")
        # Tails move with the host from one round to the next; the ratio
        # within each round (same minute) is the steadier figure.
        print("\nmedian of per-round ratios (each round's icx run over the same round's sockperf):\n")
        spr = rows["sockperf ping-pong (--full-rtt)"]
        for k in ("icx io_uring (default: spin 100 us, then sleep)", "icx io_uring --spin-us 0 (sleep at once)", "icx io_uring --busy-poll"):
            rr = {q: med(x[q] / y[q] for x, y in zip(rows[k], spr)) for q in ("p50", "p99", "p999")}
            print(f"- {k}: p50 {rr['p50']:.2f}x, p99 {rr['p99']:.2f}x, p99.9 {rr['p999']:.2f}x")
if only != "latency":
    print("\n## one-way goodput of reliable blocks, Gbit/s (median over %d rounds)\n" % rounds)
    print("| block | MTU framing | icx io_uring | plain UDP sink (in-run) | icx / UDP | retransmitted | lost |\n|---:|---:|---:|---:|---:|---:|---:|")
    for mtu in (1500, 9000):
        for m in (8192, 32768):
            d = [js(f"{out}/tp.{mtu}.{m}.{r}.json") for r in R]
            g = med(x["gbit_per_sec"] for x in d); b = med(x["baseline"]["gbit_per_sec"] for x in d)
            print(f"| {m} | {mtu} | {g:.2f} | {b:.2f} | {g/b:.2f} | {sum(x['retransmitted'] for x in d)} | {sum(x['lost'] for x in d)} |")
    q = [qperf(f"{out}/qperf.{r}.txt") for r in R]
    q = [x for x in q if x]
    if q:
        qm = med(q)
        g = med(js(f"{out}/tp.1500.8192.{r}.json")["gbit_per_sec"] for r in R)
        print(f"\nqperf udp_bw 8 KiB (recv_bw): {qm:.2f} Gbit/s; icx 8 KiB blocks at MTU 1500 framing: {g:.2f} Gbit/s = {g/qm:.2f}x (target >= 1.2)")
print(f"\nraw results: {out}")
PY
