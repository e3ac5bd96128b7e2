#!/usr/bin/env bash
# End-to-end benchmarks of the io_uring backend on 127.0.0.1 against
# baselines measured in the same run, like for like (issue 16): the same
# wait mode on both sides, one pair running at a time, client on CPU 0 and
# server on CPU 1 for every tool.
#   - 64 B ping-pong and 8 KiB block request/reply round trips
#     (p50/p99/p99.9), in two pairs:
#       blocking:  ibench --spin-us 0 (sleeps at once)  vs  sockperf
#                  ping-pong / server defaults (recvfrom blocks);
#       spinning:  ibench --busy-poll  vs  sockperf ping-pong / server
#                  --nonblocked (recvfrom spins on EAGAIN);
#     icx's 8 KiB block travels as 6 reliable MTU-1500 fragments, sockperf's
#     as one unfragmented loopback datagram. And a third pair:
#       spin-then-sleep: icx's default wait (spins 100 us, then sleeps) vs
#                  ibench's in-run plain-UDP baseline (`--baseline`), which
#                  waits the same way on both ends (sockperf has no such mode).
#     sockperf reports half the round trip unless --full-rtt, which is used.
#   - one-way goodput of reliable 8 KiB and 32 KiB blocks at MTU 1500 and
#     9000 framing, one core each side, vs ibench's plain-UDP sink (in-run) and
#     `qperf udp_bw` with 8 KiB messages (unreliable; recv_bw counted).
# Rounds alternate which of a pair goes first, so drifting machine load hits
# both; the summary reports medians over rounds and medians of per-round
# ratios.
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

# sockperf_pair NAME MSG [--nonblocked]: a sockperf server on CPU 1 for this
# run only (a spinning one left running would steal the client's core),
# the ping-pong client on CPU 0.
sockperf_pair() {
    local name=$1 m=$2 mode=("${@:3}") sp
    taskset -c 1 sockperf server -i 127.0.0.1 -p 11111 "${mode[@]}" >/dev/null 2>&1 &
    sp=$!; pids+=($sp)
    sleep 0.3
    taskset -c 0 sockperf ping-pong -i 127.0.0.1 -p 11111 -m "$m" -t "$secs" --full-rtt "${mode[@]}" \
        >"$out/$name.$r.txt" 2>&1 || true
    kill "$sp" 2>/dev/null || true
    wait "$sp" 2>/dev/null || true
}
icx_pp() { $ib loopback ping-pong -m 64 -t "$secs" --cpus 0,1 "${@:2}" --json >"$out/$1.$r.json"; }
icx_blk() { $ib loopback block --block-size 8K -t "$secs" --cpus 0,1 "${@:2}" --json >"$out/$1.$r.json"; }

for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    if [ "$only" != goodput ]; then
        if [ $((r % 2)) -eq 1 ]; then
            sockperf_pair sp_block 64; icx_pp ppsleep --spin-us 0
            icx_pp ppbusy --busy-poll; sockperf_pair sp_spin 64 --nonblocked
            sockperf_pair sp8_block 8192; icx_blk blksleep --spin-us 0
            icx_blk blkbusy --busy-poll; sockperf_pair sp8_spin 8192 --nonblocked
        else
            icx_pp ppsleep --spin-us 0; sockperf_pair sp_block 64
            sockperf_pair sp_spin 64 --nonblocked; icx_pp ppbusy --busy-poll
            icx_blk blksleep --spin-us 0; sockperf_pair sp8_block 8192
            sockperf_pair sp8_spin 8192 --nonblocked; icx_blk blkbusy --busy-poll
        fi
        icx_pp pp --baseline
        icx_blk blk --baseline
    fi
    if [ "$only" != latency ]; then
        qperf --listen_port 19765 >/dev/null 2>&1 & qp=$!; pids+=($qp)
        sleep 0.5
        qperf --listen_port 19765 -t "$secs" -m 8192 127.0.0.1 udp_bw >"$out/qperf.$r.txt" 2>&1 || true
        kill "$qp" 2>/dev/null || true; wait "$qp" 2>/dev/null || true
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
    Q = ("p50", "p99", "p999")
    def icx(f): return [js(f"{out}/{f}.{r}.json") for r in R]
    def sp(f): return [sockperf(f"{out}/{f}.{r}.txt") for r in R]
    print("## Round trips like for like, µs (medians over %d rounds; client CPU %% for icx)\n" % rounds)
    print("| pair | icx p50 / p99 / p99.9 | plain UDP (sockperf) p50 / p99 / p99.9 | median per-round ratio p50 / p99 / p99.9 | icx client CPU % |")
    print("|---|---|---|---|---:|")
    for name, fi, fs in (("64 B, both blocking (--spin-us 0 / sockperf default)", "ppsleep", "sp_block"),
                         ("64 B, both spinning (--busy-poll / sockperf --nonblocked)", "ppbusy", "sp_spin"),
                         ("8 KiB, both blocking", "blksleep", "sp8_block"),
                         ("8 KiB, both spinning", "blkbusy", "sp8_spin")):
        a, b = icx(fi), sp(fs)
        if not all(b) or not all(all(q in x for q in Q) for x in b):
            print(f"| {name} | sockperf output missing: see {out}/{fs}.*.txt | | | |"); continue
        ia = {q: med(x["rtt_us"][q] for x in a) for q in Q}
        sa = {q: med(x[q] for x in b) for q in Q}
        rr = {q: med(x["rtt_us"][q] / y[q] for x, y in zip(a, b)) for q in Q}
        c = med(x["cpu"]["client_pct"] for x in a)
        f3 = lambda d, k="{:.1f}": " / ".join(k.format(d[q]) for q in Q)
        print(f"| {name} | {f3(ia)} | {f3(sa)} | {f3(rr, '{:.2f}')} | {c:.0f} |")
    for name, f in (("64 B, both spin 100 µs then sleep (icx default / ibench --baseline)", "pp"),
                    ("8 KiB, both spin 100 µs then sleep", "blk")):
        d = icx(f)
        ia = {q: med(x["rtt_us"][q] for x in d) for q in Q}
        ba = {q: med(x["baseline"]["rtt_us"][q] for x in d) for q in Q}
        rr = {q: med(x["rtt_us"][q] / x["baseline"]["rtt_us"][q] for x in d) for q in Q}
        c = med(x["cpu"]["client_pct"] for x in d)
        f3 = lambda d, k="{:.1f}": " / ".join(k.format(d[q]) for q in Q)
        print(f"| {name} | {f3(ia)} | {f3(ba)} (ibench baseline) | {f3(rr, '{:.2f}')} | {c:.0f} |")
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
