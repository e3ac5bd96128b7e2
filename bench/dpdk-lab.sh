#!/usr/bin/env bash
# DPDK (net_af_packet) vs io_uring across the namespace pair of hw/netns-lab.sh:
# an `ibench server` in namespace A (DPDK, or io_uring on the kernel stack)
# answering an io_uring `ibench` client in namespace B, for 64 B ping-pong and
# one-way 8 KiB blocks, at MTU 1500 and 9000. Root only; traffic stays inside
# the namespaces the lab creates. af_packet is not a real NIC: it copies each
# frame through a kernel ring, so this measures interoperability and the
# software path, not what DPDK does on hardware.
#
# Usage: bash bench/dpdk-lab.sh [SECONDS] [ROUNDS]   (defaults 3 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-3}"
rounds="${2:-3}"
cargo build --release -q -p ibench --features dpdk
export IBENCH="$PWD/target/release/ibench"
out="$(mktemp -d /tmp/icx-dpdk-lab.XXXXXX)"
export out secs

for mtu in 1500 9000; do
    for server in dpdk uring; do
        kernel=ab
        [ "$server" = dpdk ] && kernel=b
        for r in $(seq 1 "$rounds"); do
            echo "mtu $mtu server $server round $r" >&2
            export mtu server r
            bash hw/netns-lab.sh run --prefix ibb --mtu "$mtu" --kernel "$kernel" -- bash -c '
                set -e
                jumbo=""; [ "$mtu" -gt 1500 ] && jumbo=",framesz=16384,blocksz=16384"
                if [ "$server" = dpdk ]; then
                    ip netns exec "$NS_A" "$IBENCH" server --backend dpdk --mtu "$mtu" --bind "$IP_A:7470" \
                        --eal "--no-huge --no-pci -m 256 --file-prefix ibb --vdev=net_af_packet0,iface=$IF_A$jumbo" \
                        >/dev/null 2>&1 &
                else
                    ip netns exec "$NS_A" "$IBENCH" server --backend uring --mtu "$mtu" --bind "$IP_A:7470" >/dev/null 2>&1 &
                fi
                srv=$!
                trap "kill $srv 2>/dev/null; wait $srv 2>/dev/null || true" EXIT
                ip netns exec "$NS_B" "$IBENCH" ping-pong --peer "$IP_A:7470" --backend uring --mtu "$mtu" \
                    -m 64 -t "$secs" --json -q --connect-timeout 15 >"$out/pp.$mtu.$server.$r.json"
                ip netns exec "$NS_B" "$IBENCH" throughput --peer "$IP_A:7470" --backend uring --mtu "$mtu" \
                    -m 8K -t "$secs" --json -q --connect-timeout 15 >"$out/tp.$mtu.$server.$r.json"
            '
        done
    done
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
print(f"| MTU | server in ns A | ping-pong p50 µs | p99 µs | 8 KiB blocks Gbit/s | retransmitted | lost |")
print("|---:|---|---:|---:|---:|---:|---:|")
for mtu in (1500, 9000):
    for srv in ("dpdk", "uring"):
        pp = [json.load(open(f"{out}/pp.{mtu}.{srv}.{r}.json")) for r in range(1, rounds + 1)]
        tp = [json.load(open(f"{out}/tp.{mtu}.{srv}.{r}.json")) for r in range(1, rounds + 1)]
        print(f"| {mtu} | {srv} | {med(p['rtt_us']['p50'] for p in pp):.1f} | {med(p['rtt_us']['p99'] for p in pp):.1f} | "
              f"{med(t['gbit_per_sec'] for t in tp):.2f} | {sum(t['retransmitted'] for t in tp)} | {sum(t['lost'] + p['lost'] for t, p in zip(tp, pp))} |")
print(f"\nraw results: {out}")
PY
