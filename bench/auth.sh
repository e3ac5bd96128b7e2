#!/usr/bin/env bash
# The cost of frame authentication and encryption against CRC32C, on
# 127.0.0.1, in the same run, rounds alternating the three modes (one pair
# running at a time, same wait mode: the default spin-then-sleep, same
# reliability): 8 KiB block goodput (ibench throughput, 64 in flight) at
# MTU 1500 and 9000, and 64 B ping-pong round trips. Prints per-round
# ratios (auth / crc, encrypt / crc) and their medians; then the CPU each
# side spends per 8 KiB block with both sides blocking, auth against crc.
#
# Usage: bash bench/auth.sh [ROUNDS] [SECONDS] [CIPHER]
#        (defaults 5, 3 and the host's: aes-256-gcm with AES-NI)
# Client and server threads are pinned to CPUs 0 and 1 (where there are
# two), so the scheduler never puts both on one core mid-round. With RT=1
# every ibench also runs under `chrt -f 1` (SCHED_FIFO), so other work on a
# shared machine cannot take the cores (needs root; it can starve the
# kernel's softirq threads, so it is off by default).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
secs="${2:-3}"
cipher="${3:-}"
out="$(mktemp -d /tmp/icx-auth.XXXXXX)"
cargo build --release -q -p ibench
ib=target/release/ibench
key="$out/key"
head -c 32 /dev/urandom | base64 >"$key"
chmod 600 "$key"
c=()
[ -n "$cipher" ] && c=(--cipher "$cipher")
rt=()
[ "${RT:-0}" = 1 ] && rt=(chrt -f 1)
pin=()
[ "$(nproc)" -ge 2 ] && pin=(--cpus 0,1)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); ${rt[*]:-no chrt}; ${pin[*]:-not pinned}" >&2
declare -A mode=([crc]="" [auth]="--key-file $key ${c[*]}" [enc]="--key-file $key --encrypt ${c[*]}")

for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    for m in crc auth enc; do
        # shellcheck disable=SC2086
        "${rt[@]}" $ib loopback throughput -m 8K --mtu 1500 -t "$secs" -q --json "${pin[@]}" ${mode[$m]} >"$out/t15.$m.$r.json"
        # shellcheck disable=SC2086
        "${rt[@]}" $ib loopback throughput -m 8K --mtu 9000 -t "$secs" -q --json "${pin[@]}" ${mode[$m]} >"$out/t90.$m.$r.json"
        # The same blocks with both sides blocking (no spin): the CPU each
        # side spends per block, which stalls of the shared VM do not skew.
        for mtu in 1500 9000; do
            # shellcheck disable=SC2086
            "${rt[@]}" $ib loopback throughput -m 8K --mtu $mtu --spin-us 0 -t "$secs" -q --json "${pin[@]}" ${mode[$m]} >"$out/b$mtu.$m.$r.json"
        done
        # shellcheck disable=SC2086
        "${rt[@]}" $ib loopback ping-pong -m 64 -t "$secs" -q --json "${pin[@]}" ${mode[$m]} >"$out/pp.$m.$r.json"
    done
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
def js(n, m, r): return json.load(open(f"{out}/{n}.{m}.{r}.json"))
rows = []
for r in range(1, rounds + 1):
    x = {}
    for m in ("crc", "auth", "enc"):
        a, b, p = js("t15", m, r), js("t90", m, r), js("pp", m, r)
        x[m] = (a["gbit_per_sec"], b["gbit_per_sec"], p["rtt_us"]["p50"], p["rtt_us"]["p99"],
                a["cpu"]["client_pct"], a["lost"] + b["lost"] + p["lost"], a["auth"])
    rows.append(x)
print(f"modes: crc = CRC32C, auth = {rows[0]['auth'][6]}, enc = {rows[0]['enc'][6]}")
print("| round | crc: 1500 / 9000 Gbit/s, ping p50/p99 µs | auth | enc | auth/crc 1500, 9000, p50 | enc/crc 1500, 9000, p50 |")
print("|---|---|---|---|---|---|")
f = lambda v: f"{v[0]:.2f} / {v[1]:.2f}, {v[2]:.1f}/{v[3]:.1f}"
ratio = lambda x, m: (x[m][0] / x["crc"][0], x[m][1] / x["crc"][1], x[m][2] / x["crc"][2])
for k, x in enumerate(rows, 1):
    a, e = ratio(x, "auth"), ratio(x, "enc")
    print(f"| {k} | {f(x['crc'])} | {f(x['auth'])} | {f(x['enc'])} | {a[0]:.2f}, {a[1]:.2f}, {a[2]:.2f} | {e[0]:.2f}, {e[1]:.2f}, {e[2]:.2f} |")
m = lambda mm, i: med([ratio(x, mm)[i] for x in rows])
# CPU µs per block, client (sender) and server (receiver), blocking waits.
def cpu(mtu, mm, r):
    j = js(f"b{mtu}", mm, r)
    per = j["duration_s"] / max(j["received"], 1) * 1e4
    return j["cpu"]["client_pct"] * per, j["cpu"]["server_pct"] * per
print()
print("| round | CPU µs per 8 KiB block, sender / receiver, blocking: crc 1500 | auth 1500 | crc 9000 | auth 9000 | auth/crc sender, receiver: 1500 | 9000 |")
print("|---|---|---|---|---|---|---|")
cr = {mtu: [] for mtu in (1500, 9000)}
for r in range(1, rounds + 1):
    c = {(mtu, mm): cpu(mtu, mm, r) for mtu in (1500, 9000) for mm in ("crc", "auth")}
    q = {mtu: (c[(mtu, "auth")][0] / c[(mtu, "crc")][0], c[(mtu, "auth")][1] / c[(mtu, "crc")][1]) for mtu in (1500, 9000)}
    for mtu in (1500, 9000):
        cr[mtu].append(q[mtu])
    g = lambda v: f"{v[0]:.2f} / {v[1]:.2f}"
    print(f"| {r} | {g(c[(1500, 'crc')])} | {g(c[(1500, 'auth')])} | {g(c[(9000, 'crc')])} | {g(c[(9000, 'auth')])} | {g(q[1500])} | {g(q[9000])} |")
print()
print("medians of per-round CPU ratios, authenticated / CRC32C, sender, receiver: "
      + "; ".join(f"MTU {mtu} {med([a for a, _ in cr[mtu]]):.2f}, {med([b for _, b in cr[mtu]]):.2f}" for mtu in (1500, 9000)))
lost = sum(x[mm][5] for x in rows for mm in x)
print()
print(f"medians of per-round ratios over {rounds} rounds: authenticated / CRC32C: goodput 1500 {m('auth',0):.2f}, 9000 {m('auth',1):.2f}, ping p50 {m('auth',2):.2f}; "
      f"encrypted / CRC32C: goodput 1500 {m('enc',0):.2f}, 9000 {m('enc',1):.2f}, ping p50 {m('enc',2):.2f}; messages lost in all runs: {lost}")
PY
echo "raw JSON: $out" >&2
