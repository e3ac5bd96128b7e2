#!/usr/bin/env bash
# Block read latency through cache fusion on 3 fusion-nodes on 127.0.0.1,
# 2-way and 3-way, against `ibench loopback block` round trips (the same
# path: icx over io_uring UDP on loopback, 8 KiB blocks, the node's wait
# mode: sleeping, --spin-us 0), ROUNDS rounds; and CPU per block served.
#
#   bash bench/fusion-latency.sh [ROUNDS] [BLOCKS]   (defaults: 3 rounds, 3000 blocks)
#
# The CPU baseline is ibench's block server: its CPU over blocks served.
#
# Each round, on a fresh cluster: node 1 reads BLOCKS blocks (BLOCK.GET:
# cold, so grants and disk reads) and then holds them; node 2 reads the
# same blocks, one at a time, in two phases sorted by the master BLOCK.GET
# names: mastered by node 1 or 2 (2-way: one message to the holder, the
# block back) and by node 3 (3-way: node 2 -> master 3 -> holder 1 ->
# node 2). Latencies are node 2's `gc_cr_block_receive_time` (request sent
# to block received, in the node), zeroed by CONFIG RESETSTAT before each
# phase; the counters show every read went the way it was sorted. CPU per
# block served is node 1's CPU time over both phases (every thread, from
# schedstat), less its idle rate measured just before (heartbeats, timers),
# divided by its gc_cr_blocks_served + gc_current_blocks_served delta: it
# serves every block.
set -euo pipefail
ROUNDS=${1:-3}
BLOCKS=${2:-3000}
cd "$(dirname "$0")/.."
command -v redis-cli >/dev/null || { echo "fusion-latency.sh: needs redis-cli (apt-get install redis-tools)" >&2; exit 1; }
cargo build --release -q -p ibench
. bench/fusion-common.sh
IBENCH=$PWD/target/release/ibench

# resp PORT: RESP commands from stdin (one per line, space-separated), one
# at a time; prints each reply as one line (arrays as space-joined).
cat > "$WORK/resp.py" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
def read():
    l = f.readline().rstrip(b"\r\n"); t, r = l[:1], l[1:]
    if t in (b"+", b"-", b":"): return r.decode()
    if t == b"$":
        n = int(r)
        if n < 0: return "nil"
        return f.read(n + 2)[:-2].decode(errors="replace")
    if t == b"*": return " ".join(read() for _ in range(int(r)))
    raise SystemExit(f"bad reply {l!r}")
for line in sys.stdin.read().split("\n"):
    if not line.strip(): continue
    a = line.split()
    s.sendall(b"".join([f"*{len(a)}\r\n".encode()] + [f"${len(x)}\r\n{x}\r\n".encode() for x in a]))
    print(read())
PY
resp() { python3 "$WORK/resp.py" "$1"; }
gc() { redis-cli -p "$1" INFO gc | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}'; }
# cpu_ns PID: CPU time of every thread of PID so far, in ns (schedstat;
# %.0f, as awk's %d stops at 2^31).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
now_ns() { date +%s%N; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }
declare -A R b

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round ($(date -u +%FT%TZ))"
  # The baseline first, alone on the machine.
  ib=$("$IBENCH" loopback block --block-size 8K --spin-us 0 -t 3 --json 2>/dev/null \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["rtt_us"]; print(r["p50"], r["p99"], round(d["cpu"]["server_pct"] / 100 / d["msgs_per_sec"] * 1e6, 1))')
  ib3=$("$IBENCH" loopback block --three-way --block-size 8K --spin-us 0 -t 3 --json 2>/dev/null \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["rtt_us"]; print(r["p50"], r["p99"])')
  read -r ib50 ib99 ibcpu <<<"$ib"; read -r ib3_50 ib3_99 <<<"$ib3"
  start_fusion "lat$round" 3 7401
  masters=$(seq 0 $((BLOCKS - 1)) | sed 's/^/BLOCK.GET 1 /' | resp 7401 | awk '{print $NF}')
  two=$(paste <(seq 0 $((BLOCKS - 1))) <(echo "$masters") | awk '$2 != 3 {print "BLOCK.GET 1 " $1}')
  three=$(paste <(seq 0 $((BLOCKS - 1))) <(echo "$masters") | awk '$2 == 3 {print "BLOCK.GET 1 " $1}')
  # Node 1's CPU while idle (heartbeats, timers), to take off.
  i0=$(cpu_ns "${NODE_PID[1]}"); t0=$(now_ns); sleep 3; i1=$(cpu_ns "${NODE_PID[1]}"); t1=$(now_ns)
  served0=$(( $(gc 7401 gc_cr_blocks_served) + $(gc 7401 gc_current_blocks_served) ))
  cpu0=$(cpu_ns "${NODE_PID[1]}"); t2=$(now_ns)
  line=""
  for phase in 2way 3way; do
    redis-cli -p 7402 CONFIG RESETSTAT >/dev/null
    if [ $phase = 2way ]; then echo "$two" | resp 7402 >/dev/null; else echo "$three" | resp 7402 >/dev/null; fi
    n=$(gc 7402 gc_cr_block_receive_time_count)
    p50=$(gc 7402 gc_cr_block_receive_time_p50_us); p99=$(gc 7402 gc_cr_block_receive_time_p99_us)
    w2=$(gc 7402 gc_cr_block_2way); w3=$(gc 7402 gc_cr_block_3way); pr=$(gc 7402 physical_reads)
    line+="  $phase: $n blocks (2-way $w2, 3-way $w3, physical reads $pr) p50 $p50 p99 $p99 us"$'\n'
    R[$phase,p50]+="$(ratio "$p50" "$ib50") "; R[$phase,p99]+="$(ratio "$p99" "$ib99") "
    R[$phase,abs]+="$p50 "
  done
  cpu1=$(cpu_ns "${NODE_PID[1]}"); t3=$(now_ns)
  served1=$(( $(gc 7401 gc_cr_blocks_served) + $(gc 7401 gc_current_blocks_served) ))
  cpb=$(python3 -c "
idle = ($i1 - $i0) / ($t1 - $t0)
busy = ($cpu1 - $cpu0) - idle * ($t3 - $t2)
print(f'{busy / 1e3 / max(1, $served1 - $served0):.1f}')")
  R[cpu]+="$cpb "; R[cpu_ratio]+="$(ratio "$cpb" "$ibcpu") "
  stop_fusion 7401 3
  echo "  ibench block 2-way p50 $ib50 p99 $ib99 us, server CPU $ibcpu us per block; 3-way p50 $ib3_50 p99 $ib3_99 us"
  printf '%s' "$line"
  echo "  node 1: $((served1 - served0)) blocks served, $cpb us CPU per block served ($(ratio "$cpb" "$ibcpu")x ibench's server)"
done
# The seeds' scan (001/004): node 1 scans a cold table of SCAN blocks from
# disk, then node 2 scans it: how many of node 2's blocks come over the
# interconnect, and how many disk reads that avoids.
SCAN=${SCAN:-4096}
start_fusion scan 3 7501
t0=$(now_ns); s1=$(echo "BLOCK.SCAN 1 0 $SCAN" | resp 7501); t1=$(now_ns)
for k in physical_reads gc_cr_multi_block_request gc_cr_blocks_received gc_current_blocks_received gc_cr_grant_2way physical_reads_avoided; do b[$k]=$(gc 7502 $k); done
t2=$(now_ns); s2=$(echo "BLOCK.SCAN 1 0 $SCAN" | resp 7502); t3=$(now_ns)
echo "== the seeds' scan of $SCAN blocks: node 1 (cold, from disk) $(( (t1 - t0) / 1000000 )) ms [$s1], then node 2 $(( (t3 - t2) / 1000000 )) ms [$s2]"
line="  node 2:"
for k in physical_reads gc_cr_multi_block_request gc_cr_blocks_received gc_current_blocks_received gc_cr_grant_2way physical_reads_avoided; do
  line+=" $k $(( $(gc 7502 $k) - ${b[$k]} ))"
done
echo "$line"
stop_fusion 7501 3

echo "== medians of per-round ratios ($ROUNDS rounds, $BLOCKS blocks; baseline ibench loopback block 2-way, --spin-us 0)"
echo "  2-way: p50 $(median "${R[2way,p50]}")x p99 $(median "${R[2way,p99]}")x (p50 $(median "${R[2way,abs]}") us)"
echo "  3-way: p50 $(median "${R[3way,p50]}")x p99 $(median "${R[3way,p99]}")x (p50 $(median "${R[3way,abs]}") us)"
echo "  CPU per block served: $(median "${R[cpu]}") us, $(median "${R[cpu_ratio]}")x ibench's block server"
