#!/usr/bin/env bash
# redis-benchmark against fusion-node and against redis-server on this
# machine, one system at a time, ROUNDS rounds; prints every round's
# numbers and ratios, then the medians of the per-round ratios.
#
#   bash bench/fusion.sh [ROUNDS] [REQUESTS]      (defaults: 3 rounds, 100000 requests a test)
#
# Like with like: fusion-node acknowledges a write once its redo is durable
# (fdatasync), so its SET and INCR are compared with redis-server's
# `--appendonly yes --appendfsync always` on the same filesystem; GET with
# redis-server in memory. Every test runs at `-c 50`, then at `-c 50 -P 16`.
#   single:  one fusion-node (a 1-node cluster) vs redis-server
#   own:     3 fusion-nodes, one redis-benchmark per node at once, each on
#            its own OWN_KEYS keys (n<i>:key:..., default 256): the aggregate
#            against one node on the same workload. Few keys, so few blocks
#            (256 keys over 8,192 blocks: about 6 % of a node's blocks also
#            hold another node's keys); with 100,000 keys a node, every block
#            holds every node's keys and the test measures block contention.
#   hot:     3 fusion-nodes, every client INCRs the same 16 keys: reported
#            with the gc waits that explain it (INFO gc deltas)
# Needs redis-server and redis-tools (apt-get install redis-server).
set -euo pipefail
ROUNDS=${1:-3}
N=${2:-100000}
OWN=${OWN_KEYS:-256}
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || {
  echo "fusion.sh: needs redis-server and redis-benchmark (apt-get install redis-server)" >&2; exit 1; }
. bench/fusion-common.sh

# rps PORT PIPELINE ARGS...: requests per second of one redis-benchmark test
rps() {
  local port=$1 p=$2; shift 2
  redis-benchmark -p "$port" -c 50 -n "$N" -r 100000 -P "$p" --csv "$@" 2>/dev/null \
    | awk -F'"' 'NR==2 {print $4}'
}

# rps_own PORT PIPELINE COMMAND...: requests per second of one command over
# OWN keys.
rps_own() {
  local port=$1 p=$2; shift 2
  redis-benchmark -p "$port" -c 50 -n "$N" -r "$OWN" -P "$p" --csv "$@" 2>/dev/null \
    | awk -F'"' 'NR==2 {print $4}'
}

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
declare -A R

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round ($(date -u +%FT%TZ))"
  for P in 1 16; do
    # redis-server in memory: GET.
    redis-server --port 6390 --save '' --appendonly no --daemonize no --dir "$WORK" >/dev/null &
    RP=$!; PIDS+=($RP); sleep 0.5
    redis-benchmark -p 6390 -n "$N" -r 100000 -t set -q >/dev/null 2>&1
    rget=$(rps 6390 $P -t get)
    kill $RP; wait $RP 2>/dev/null || true
    # redis-server, every write fsynced: SET, INCR.
    rm -rf "$WORK"/appendonly*
    redis-server --port 6391 --save '' --appendonly yes --appendfsync always --dir "$WORK" --daemonize no >/dev/null &
    RP=$!; PIDS+=($RP); sleep 0.5
    rset=$(rps 6391 $P -t set)
    rincr=$(rps 6391 $P -t incr)
    kill $RP; wait $RP 2>/dev/null || true

    # One fusion-node; a SET pass first, so the measured one does not read
    # every block from disk for the first time.
    start_fusion "single$round$P" 1 7101
    redis-benchmark -p 7101 -n "$N" -r 100000 -t set -q >/dev/null 2>&1
    fset=$(rps 7101 $P -t set)
    fget=$(rps 7101 $P -t get)
    fincr=$(rps 7101 $P -t incr)
    rps_own 7101 $P SET n1:key:__rand_int__ xxx >/dev/null
    fown_set=$(rps_own 7101 $P SET n1:key:__rand_int__ xxx)
    fown_get=$(rps_own 7101 $P GET n1:key:__rand_int__)
    stop_fusion 7101 1

    # Three fusion-nodes, each node's clients on their own keys, at once.
    start_fusion "own$round$P" 3 7201
    BP=()
    for i in 1 2 3; do rps_own $((7200 + i)) "$P" SET "n$i:key:__rand_int__" xxx >/dev/null & BP+=($!); done
    wait "${BP[@]}"
    own_set=0; own_get=0
    for t in SET GET; do
      tmp=$(mktemp); BP=()
      for i in 1 2 3; do
        if [ $t = SET ]; then
          rps_own $((7200 + i)) "$P" SET "n$i:key:__rand_int__" xxx >> "$tmp" &
        else
          rps_own $((7200 + i)) "$P" GET "n$i:key:__rand_int__" >> "$tmp" &
        fi
        BP+=($!)
      done
      wait "${BP[@]}"
      sum=$(awk '{s+=$1} END {printf "%.0f", s}' "$tmp"); rm -f "$tmp"
      if [ $t = SET ]; then own_set=$sum; else own_get=$sum; fi
    done
    # Hot keys: every client of every node INCRs the same 16 keys.
    before=$(for i in 1 2 3; do redis-cli -p $((7200 + i)) INFO gc; done)
    tmp=$(mktemp); BP=()
    for i in 1 2 3; do
      redis-benchmark -p $((7200 + i)) -c 50 -n $((N / 10)) -r 16 -P "$P" --csv INCR "hot:__rand_int__" 2>/dev/null | awk -F'"' 'NR==2 {print $4}' >> "$tmp" &
      BP+=($!)
    done
    wait "${BP[@]}"
    hot=$(awk '{s+=$1} END {printf "%.0f", s}' "$tmp"); rm -f "$tmp"
    after=$(for i in 1 2 3; do redis-cli -p $((7200 + i)) INFO gc; done)
    waits=$(python3 - "$before" "$after" <<'PY'
import sys
def tot(t):
    d = {}
    for l in t.splitlines():
        if ':' in l and not l.startswith('#'):
            k, v = l.strip().split(':', 1)
            if v.isdigit(): d[k] = d.get(k, 0) + int(v)
    return d
b, a = tot(sys.argv[1]), tot(sys.argv[2])
keys = ["gc_current_blocks_received", "gc_current_block_3way", "gc_buffer_busy_acquire", "gc_buffer_busy_release", "gcs_log_flush_sync", "gc_current_block_lost"]
print(" ".join(f"{k}={a.get(k,0)-b.get(k,0)}" for k in keys))
PY
)
    stop_fusion 7201 3

    echo "  -P $P  redis: GET(mem) $rget SET(fsync) $rset INCR(fsync) $rincr"
    echo "  -P $P  fusion 1 node: GET $fget SET $fset INCR $fincr  | ratios GET $(ratio "$fget" "$rget") SET $(ratio "$fset" "$rset") INCR $(ratio "$fincr" "$rincr")"
    echo "  -P $P  fusion 3 nodes own keys ($OWN a node): SET $own_set GET $own_get | 1 node on $OWN keys: SET $fown_set GET $fown_get | ratios SET $(ratio "$own_set" "$fown_set") GET $(ratio "$own_get" "$fown_get")"
    echo "  -P $P  fusion 3 nodes hot keys: INCR $hot | $waits"
    R[$P,get]+="$(ratio "$fget" "$rget") "
    R[$P,set]+="$(ratio "$fset" "$rset") "
    R[$P,incr]+="$(ratio "$fincr" "$rincr") "
    R[$P,own_set]+="$(ratio "$own_set" "$fown_set") "
    R[$P,own_get]+="$(ratio "$own_get" "$fown_get") "
  done
done

median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }
echo "== medians of per-round ratios ($ROUNDS rounds, $N requests a test)"
for P in 1 16; do
  echo "  -P $P: GET/redis-mem $(median "${R[$P,get]}")  SET/redis-fsync $(median "${R[$P,set]}")  INCR/redis-fsync $(median "${R[$P,incr]}")  3-node own SET/1-node $(median "${R[$P,own_set]}")  GET $(median "${R[$P,own_get]}")"
done
