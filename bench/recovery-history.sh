#!/usr/bin/env bash
# Instance recovery against the redo history (issue 12, redo checkpoint):
# 3 fusion-nodes on 127.0.0.1. Per round node 3 writes a history of H SETs
# over 2000 keys (redo far larger than any dirty set), a full checkpoint
# passes (`checkpoint_interval` 2 s: every dirty block written), then node
# 3 dirties D fresh keys and is killed with SIGKILL; node 1 is asked for
# the victim's value of its first fresh key until it answers.
#
# The baseline is FUSION_BASE_BIN, a build from before the redo checkpoint
# (c8454cf: the logs were never truncated, recovery scanned each whole),
# run alternately with this tree's build, one cluster at a time. Reported
# per history size: the redo the survivors read and the phases' times
# (from the survivors' INFO recovery), medians over the rounds, and the
# medians of the per-round ratios baseline / this build.
#
#   FUSION_BASE_BIN=/path/to/old/fusion-node bash bench/recovery-history.sh [ROUNDS] [HISTORIES] [D]
#   FUSION_BASE_BIN=... bash bench/recovery-history.sh 3 "0 100000 400000" 1000
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
HISTORIES=${2:-"0 100000 400000"}
D=${3:-1000}
source bench/fusion-common.sh
NEW=$BIN
OLD=${FUSION_BASE_BIN:?set FUSION_BASE_BIN to a fusion-node built before the redo checkpoint (c8454cf)}
BASE=7720
FUSION_EXTRA='checkpoint_interval = "2s"'

# SETs of PREFIX:(i % MOD) = VTAG-i for i in 1..N, pipelined, every reply
# read and checked. Not `redis-cli --pipe`: the baseline build's ECHO (which
# --pipe ends with) was not binary-safe. At most 255 outstanding: the
# baseline's RESP loop could stall on a pipeline past its in-flight bound
# (256), fixed since.
pipe_sets() { # PORT N MOD PREFIX VTAG
  python3 - "$@" <<'PY' || { echo "SETs to $1 failed" >&2; exit 1; }
import socket, sys
port, n, mod, p, t = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.create_connection(("127.0.0.1", port), timeout=60)
def cmd(i):
    k, v = f"{p}:{i % mod if mod else i}".encode(), f"{t}-{i}".encode()
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v)
got, buf, sent, window = 0, b"", 1, 128
while got < n:
    if sent <= n and sent - 1 - got < window:
        s.sendall(b"".join(cmd(i) for i in range(sent, min(n, sent + window - 1) + 1)))
        sent = min(n, sent + window - 1) + 1
    buf += s.recv(1 << 16)
    while b"\r\n" in buf:
        line, buf = buf.split(b"\r\n", 1)
        if line != b"+OK":
            sys.exit(f"reply {got + 1}: {line!r}")
        got += 1
PY
}

max_of() { awk -v a="$1" -v b="$2" 'BEGIN {print (b > a) ? b : a}'; }

run_round() { # BUILD HISTORY ROUND
  local build=$1 h=$2 r=$3 name="h-$1-$2-$3" d p1=$BASE p3=$((BASE + 2)) t0 t_hist
  if [ "$build" = base ]; then BIN=$OLD; else BIN=$NEW; fi
  start_fusion "$name" 3 "$BASE"
  d="$WORK/$name"
  t0=$(now_ms)
  if [ "$h" -gt 0 ]; then pipe_sets $p3 "$h" 2000 hist h; fi
  t_hist=$(( $(now_ms) - t0 ))
  # A full checkpoint (2 s) and the redo checkpoint's tick after it.
  sleep 4
  local ckpt
  ckpt=$(info $p3 redo redo_checkpoint_lsn); ckpt=${ckpt:-0}
  pipe_sets $p3 "$D" 0 key three
  local dirty log t_kill t_serve
  dirty=$(info $p3 cache cache_dirty_blocks)
  log=$(stat -c %s "$d/data/redo_3.log")
  t_kill=$(now_ms)
  kill -9 "${NODE_PID[3]}"; wait "${NODE_PID[3]}" 2>/dev/null || true
  for _ in $(seq 1 6000); do
    [ "$(redis-cli -p $p1 GET key:1 2>/dev/null)" = three-1 ] && break
    sleep 0.01
  done
  t_serve=$(now_ms)
  for _ in $(seq 1 1000); do
    [ "$(info $p1 recovery recovery_state)" = idle ] && [ "$(info $((BASE + 1)) recovery recovery_state)" = idle ] && break
    sleep 0.01
  done
  local s1 s2 detect scan=0 recover=0 rec=0 read=0 i p
  s1=$(started_ms "$d/n1.log"); s2=$(started_ms "$d/n2.log")
  detect=$(( (s1 > s2 ? s1 : s2) - t_kill ))
  for i in 1 2; do
    p=$((BASE + i - 1))
    scan=$(max_of "$scan" "$(info $p recovery last_scanned_ms)")
    recover=$(max_of "$recover" "$(info $p recovery last_recovered_ms)")
    read=$(max_of "$read" "$(info $p recovery last_redo_bytes_read)")
    rec=$(max_of "$rec" "$(info $p recovery last_blocks_recovered)")
  done
  echo "$build $h $r hist_ms=$t_hist log_kb=$((log / 1024)) ckpt_kb=$((ckpt / 1024)) dirty=$dirty read_kb=$((read / 1024)) detect=$detect scan=$scan recover=$recover serve=$((t_serve - t_kill)) added=$((t_serve - t_kill - detect)) recovered=$rec"
  kill -9 "${NODE_PID[1]}" "${NODE_PID[2]}" 2>/dev/null || true
  wait "${NODE_PID[1]}" "${NODE_PID[2]}" "${NODE_PID[3]}" 2>/dev/null || true
  rm -rf "$d"
}

echo "# bench/recovery-history.sh $ROUNDS \"$HISTORIES\" $D on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; misscount 6s, heartbeat 200ms, checkpoint_interval 2s"
OUT="$WORK/rounds.txt"
for h in $HISTORIES; do
  for r in $(seq 1 "$ROUNDS"); do
    for build in new base; do
      # Not in a pipe: a failed round must end the script (and its trap
      # must see every node started).
      run_round "$build" "$h" "$r" >> "$OUT"
      tail -1 "$OUT"
    done
  done
done

kv() { echo "$1" | sed -n "s/.* $2=\([0-9.-]*\).*/\1/p"; }
echo
echo "| history SETs | build | redo log (KB) | checkpoint (KB) | redo read (KB) | scan (ms) | recover (ms) | detect (ms) | serve again (ms) | serve − detect (ms) | blocks recovered |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for h in $HISTORIES; do
  for build in new base; do
    rows=$(grep "^$build $h " "$OUT")
    m() { while read -r line; do kv "$line" "$1"; done <<< "$rows" | median_of; }
    echo "| $h | $build | $(m log_kb) | $(m ckpt_kb) | $(m read_kb) | $(m scan) | $(m recover) | $(m detect) | $(m serve) | $(m added) | $(m recovered) |"
  done
done
echo
# Per-round ratios base / new (round r of each build ran back to back).
for h in $HISTORIES; do
  ratio() {
    paste -d'#' <(grep "^new $h " "$OUT") <(grep "^base $h " "$OUT") | while IFS='#' read -r a b; do
      awk -v x="$(kv "$b" "$1")" -v y="$(kv "$a" "$1")" 'BEGIN {if (y > 0) print x / y}'
    done | median_of
  }
  echo "history $h: median per-round ratio base/new: redo read $(ratio read_kb), scan $(ratio scan), serve − detect $(ratio added)"
done
