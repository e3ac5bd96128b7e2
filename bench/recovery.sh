#!/usr/bin/env bash
# Instance recovery on fusion-node (issue 12): 3 nodes on 127.0.0.1, node 3
# writes D keys (its blocks X and dirty), is killed with SIGKILL, and node 1
# is asked until it serves again. Per round:
#   detect   kill to the last survivor's "Reconfiguration started"
#            (misscount; `skew`: how much later than the first)
#   rebuild  to the directory rebuilt from every member's report
#   scan     to every redo log read (blocks outside the recovery set back)
#   recover  to the recovery set rebuilt (the slowest survivor)
#   serve    kill to node 1 reading the victim's value of its first key
# against the dirty set D and the redo the survivors read, with the base of
# each block recovered: a survivor's past image (`pi`: node 1 wrote the keys
# before node 3) or the disk (`disk`: node 3 alone wrote them).
#
#   bash bench/recovery.sh [ROUNDS] [DIRTY_SETS]
#   bash bench/recovery.sh 3 "1 1000 4000"
#
# The membership's detection is the baseline the rest is measured against:
# misscount is 6 s here (fusion-common.sh). Medians over the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SETS=${2:-"1 1000 4000"}
source bench/fusion-common.sh
BASE=7700

run_round() { # BASEKIND D ROUND
  local kind=$1 n=$2 r=$3 name="r-$1-$2-$3" d p1=$BASE p3=$((BASE + 2))
  start_fusion "$name" 3 "$BASE"
  d="$WORK/$name"
  if [ "$kind" = pi ]; then
    seq 1 "$n" | awk '{print "SET key:" $1 " one-" $1}' | redis-cli -p $p1 >/dev/null
  fi
  seq 1 "$n" | awk '{print "SET key:" $1 " three-" $1}' | redis-cli -p $p3 >/dev/null
  local dirty redo
  dirty=$(info $p3 cache cache_dirty_blocks)
  redo=$(stat -c %s "$d/data/redo_3.log")
  local t_kill t_serve
  t_kill=$(now_ms)
  kill -9 "${NODE_PID[3]}"
  # key:1's block is the victim's, X and dirty: node 1 reads it once the
  # survivors have detected, rebuilt and recovered it.
  for _ in $(seq 1 3000); do
    [ "$(redis-cli -p $p1 GET key:1 2>/dev/null)" = three-1 ] && break
    sleep 0.01
  done
  t_serve=$(now_ms)
  if [ -n "${RECOVERY_DEBUG:-}" ]; then
    echo "kill $t_kill serve $t_serve waits $(info $p1 cache db_recovery_waits) master $(redis-cli -p $p1 BLOCK.GET 1 $(python3 -c 'import sys; h=0xcbf29ce484222325
for b in b"key:1": h^=b; h=(h*0x100000001b3)%(1<<64)
print(h%8192)') | tail -1)"
    for i in 1 2; do echo "node $i:"; grep 'alert' "$d/n$i.log" | tail -6; done
  fi
  # Both survivors done (recovery_state idle), then read their reports.
  for _ in $(seq 1 500); do
    [ "$(info $p1 recovery recovery_state)" = idle ] && [ "$(info $((BASE + 1)) recovery recovery_state)" = idle ] && break
    sleep 0.01
  done
  local s1 s2 detect skew rebuild=0 scan=0 recover=0 rec=0 pi=0 disk=0 redo_read=0 i p x
  s1=$(started_ms "$d/n1.log"); s2=$(started_ms "$d/n2.log")
  detect=$(( (s1 > s2 ? s1 : s2) - t_kill ))
  skew=$(( s1 > s2 ? s1 - s2 : s2 - s1 ))
  for i in 1 2; do
    p=$((BASE + i - 1))
    x=$(info $p recovery last_rebuilt_ms); rebuild=$(awk -v a="$rebuild" -v b="$x" 'BEGIN {print (b > a) ? b : a}')
    x=$(info $p recovery last_scanned_ms); scan=$(awk -v a="$scan" -v b="$x" 'BEGIN {print (b > a) ? b : a}')
    x=$(info $p recovery last_recovered_ms); recover=$(awk -v a="$recover" -v b="$x" 'BEGIN {print (b > a) ? b : a}')
    rec=$((rec + $(info $p recovery last_blocks_recovered)))
    [ "$i" = 1 ] && redo_read=$(info $p recovery last_redo_bytes_read)
    pi=$((pi + $(info $p gc recovery_blocks_from_pi)))
    disk=$((disk + $(info $p gc recovery_blocks_read)))
  done
  echo "$kind $n $r dirty=$dirty redo_kb=$((redo / 1024)) redo_read_kb=$((redo_read / 1024)) detect=$detect skew=$skew rebuild=$rebuild scan=$scan recover=$recover serve=$((t_serve - t_kill)) recovered=$rec from_pi=$pi from_disk=$disk"
  # The round's cluster is thrown away: its survivors go the same way.
  kill -9 "${NODE_PID[1]}" "${NODE_PID[2]}" 2>/dev/null || true
  wait "${NODE_PID[1]}" "${NODE_PID[2]}" "${NODE_PID[3]}" 2>/dev/null || true
}

echo "# bench/recovery.sh $ROUNDS \"$SETS\" on $(date -u +%Y-%m-%d), $(nproc) cores; misscount 6s, heartbeat 200ms"
OUT="$WORK/rounds.txt"
for kind in pi disk; do
  for n in $SETS; do
    for r in $(seq 1 "$ROUNDS"); do
      run_round "$kind" "$n" "$r" | tee -a "$OUT"
    done
  done
done
echo
echo "| base | keys written by the victim | its dirty blocks | redo read (KB) | detect (ms) | view skew (ms) | rebuild (ms) | scan (ms) | recover (ms) | serve again (ms) | (serve - detect) / detect | blocks recovered | from PI | from disk |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for kind in pi disk; do
  for n in $SETS; do
    rows=$(grep "^$kind $n " "$OUT")
    m() { echo "$rows" | sed -n "s/.* $1=\([0-9.]*\).*/\1/p" | median_of; }
    ratio=$(echo "$rows" | awk '{for (i=4;i<=NF;i++) {split($i,kv,"="); v[kv[1]]=kv[2]} if (v["detect"] > 0) print (v["serve"]-v["detect"])/v["detect"]}' | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}')
    echo "| $kind | $n | $(m dirty) | $(m redo_read_kb) | $(m detect) | $(m skew) | $(m rebuild) | $(m scan) | $(m recover) | $(m serve) | $ratio | $(m recovered) | $(m from_pi) | $(m from_disk) |"
  done
done
