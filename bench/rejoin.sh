#!/usr/bin/env bash
# A node rejoining fusion-node under load (issue 12, rejoin): 3 nodes on
# 127.0.0.1, K keys written from nodes 1 and 2, node 3 killed with SIGKILL
# and recovered. Then per round, two windows of W seconds with one client
# per survivor doing GET and SET (1:1) on random keys, one request at a
# time:
#   steady   node 3 stays down (a baseline, measured in the same round)
#   rejoin   node 3 is started at the window's start and rejoins in it
#   after    node 3 back, nothing changing (the other baseline: with node 3
#            mastering its chunks again, some requests are 2- or 3-way)
# and per window the operations done, the error replies (TRYAGAIN,
# CLUSTERDOWN, ...), and the latency p50/p99/max. Ratios are rejoin over
# each baseline per round; medians over the rounds. From INFO: the survivors'
# reconfigurations during the rejoin (0: no freeze), chunks handed to the
# joiner, the joiner's time to its share of the directory, and the
# requests it held meanwhile.
#
#   bash bench/rejoin.sh [ROUNDS] [KEYS] [WINDOW_S]
#   bash bench/rejoin.sh 3 2000 10
#   REJOIN_OLD_BIN=/path/to/fusion-node bash bench/rejoin.sh 3 2000 8
# With REJOIN_OLD_BIN (a build of an older commit, whose rejoin froze the
# whole directory), each round runs that build too, right after, and the
# table compares the two rejoin windows.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
KEYS=${2:-2000}
WINDOW=${3:-10}
source bench/fusion-common.sh
BASE=7750


# client PORT SECONDS KEYS SEED: one request at a time for SECONDS; prints
# "ops=N errors=E p50=.. p99=.. max=.." (latencies in ms).
client() {
  python3 - "$@" <<'EOF'
import random, socket, sys, time
port, secs, keys, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile("rb")
def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
    line = f.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        if n >= 0:
            f.read(n + 2)
    return line
lat, errors, end = [], 0, time.monotonic() + secs
while time.monotonic() < end:
    k = "key:%d" % rng.randrange(1, keys + 1)
    t = time.monotonic()
    r = cmd("GET", k) if rng.random() < 0.5 else cmd("SET", k, "v%d" % rng.randrange(1 << 30))
    lat.append((time.monotonic() - t) * 1e3)
    if lat[-1] > 100:
        sys.stderr.write("slow %s %.1f ms at %.3f (port %d)\n" % (r[:20], lat[-1], time.time(), port))
    if r[:1] == b"-":
        errors += 1
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0
print("ops=%d errors=%d p50=%.3f p99=%.3f max=%.3f" % (len(lat), errors, q(0.5), q(0.99), lat[-1] if lat else 0))
EOF
}

# window NAME PORT_A PORT_B SEED: both survivors' clients for WINDOW s,
# summed ops and errors, the worse p99 and max.
window() {
  local a b
  client "$2" "$WINDOW" "$KEYS" "$4" > "$WORK/$1.a" &
  local pa=$!
  client "$3" "$WINDOW" "$KEYS" "$(($4 + 1))" > "$WORK/$1.b" &
  local pb=$!
  wait $pa $pb
  a=$(cat "$WORK/$1.a"); b=$(cat "$WORK/$1.b")
  echo "$a $b" | awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] += 0; if (kv[1] == "ops" || kv[1] == "errors") s[kv[1]] += kv[2]; else if (kv[2] > m[kv[1]]) m[kv[1]] = kv[2]}}
    END {printf "ops=%d errors=%d p50=%s p99=%s max=%s\n", s["ops"], s["errors"], m["p50"], m["p99"], m["max"]}'
}

kv() { echo "$1" | sed -n "s/.*\b$2=\([0-9.]*\).*/\1/p"; }

run_round() { # ROUND [TAG]
  local r=$1 name="j-$1${2:-}" d p1=$BASE p2=$((BASE + 1)) p3=$((BASE + 2))
  start_fusion "$name" 3 "$BASE"
  d="$WORK/$name"
  seq 1 "$KEYS" | awk '$1 % 2 {print "SET key:" $1 " a-" $1}' | redis-cli -p $p1 >/dev/null
  seq 1 "$KEYS" | awk '!($1 % 2) {print "SET key:" $1 " b-" $1}' | redis-cli -p $p2 >/dev/null
  kill -9 "${NODE_PID[3]}"
  wait "${NODE_PID[3]}" 2>/dev/null || true
  for _ in $(seq 1 3000); do
    [ "$(info $p1 recovery last_departed)" = 3 ] && [ "$(info $p1 recovery recovery_state)" = idle ] &&
      [ "$(info $p2 recovery recovery_state)" = idle ] && break
    sleep 0.01
  done
  local steady rejoin after rc1 rc2 t0 ready held chunks joins
  steady=$(window "$name-steady" $p1 $p2 $((r * 10)))
  rc1=$(info $p1 recovery reconfigurations); rc2=$(info $p2 recovery reconfigurations)
  joins=$(info $p1 recovery joins)
  # Node 3 back at the window's start; the load runs through its rejoin.
  "$BIN" --config "$d/c.toml" --node 3 2>>"$d/n3.log" &
  PIDS+=($!); NODE_PID[3]=$!
  rejoin=$(window "$name-rejoin" $p1 $p2 $((r * 10 + 5)))
  after=$(window "$name-after" $p1 $p2 $((r * 10 + 7)))
  # A join (this build) or a reconfiguration for it (an older one).
  [ "$(info $p1 recovery joins)" != "$joins" ] || [ "$(info $p1 recovery reconfigurations)" != "$rc1" ] ||
    { echo "round $r: node 3 did not rejoin within ${WINDOW}s" >&2; tail "$d/n3.log" >&2; exit 1; }
  ready=$(info $p3 recovery last_join_ready_ms); held=$(info $p3 recovery last_join_requests_held)
  local h1 h2
  h1=$(info $p1 recovery last_join_chunks_handed); h2=$(info $p2 recovery last_join_chunks_handed)
  chunks=$(( ${h1:-0} + ${h2:-0} ))
  local recon=$(( $(info $p1 recovery reconfigurations) - rc1 + $(info $p2 recovery reconfigurations) - rc2 ))
  if [ -n "${REJOIN_DEBUG:-}" ]; then
    for i in 1 2 3; do
      echo "node $i: $(redis-cli -p $((BASE + i - 1)) INFO gc | tr -d '\r' | grep -E '_lost|stale_epoch|redirects|join|domain|failed' | tr '\n' ' ')"
    done >&2
  fi
  echo "round $r steady $steady | rejoin $rejoin | after $after | recon=$recon chunks=$chunks ready=${ready:--} held=${held:--}"
  if [ -n "${REJOIN_DEBUG:-}" ]; then
    for i in 1 2 3; do grep -v '^\s*$' "$d/n$i.log" | tail -25 | sed "s/^/n$i: /"; done >&2
  fi
  stop_fusion $BASE 3
}

echo "# bench/rejoin.sh $ROUNDS $KEYS $WINDOW on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; misscount 6s, heartbeat 200ms"
OUT="$WORK/rounds.txt"
for r in $(seq 1 "$ROUNDS"); do
  run_round "$r" | tee -a "$OUT"
  if [ -n "${REJOIN_OLD_BIN:-}" ]; then
    (BIN=$REJOIN_OLD_BIN; run_round "$r" old | sed 's/^round/old/') | tee -a "$WORK/old.txt"
  fi
done
echo
# field WINDOW KEY LINE: a window's value in a round's line.
field() { local w=${3#*$1 }; w=${w%%|*}; kv "$w" "$2"; }
echo "| round | ops steady / rejoin / after | rejoin ÷ steady | rejoin ÷ after | errors (rejoin) | p99 ms steady / rejoin / after | max ms steady / rejoin / after | survivors' reconfigurations | chunks handed | joiner ready (ms) | requests held |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
while read -r line; do
  t=${line##*|}
  printf '| %s | %s / %s / %s | %.3f | %.3f | %s | %s / %s / %s | %s / %s / %s | %s | %s | %s | %s |\n' \
    "$(echo "$line" | awk '{print $2}')" "$(field steady ops "$line")" "$(field rejoin ops "$line")" "$(field after ops "$line")" \
    "$(awk -v a="$(field rejoin ops "$line")" -v b="$(field steady ops "$line")" 'BEGIN {print a / b}')" \
    "$(awk -v a="$(field rejoin ops "$line")" -v b="$(field after ops "$line")" 'BEGIN {print a / b}')" \
    "$(field rejoin errors "$line")" \
    "$(field steady p99 "$line")" "$(field rejoin p99 "$line")" "$(field after p99 "$line")" \
    "$(field steady max "$line")" "$(field rejoin max "$line")" "$(field after max "$line")" \
    "$(kv "$t" recon)" "$(kv "$t" chunks)" "$(kv "$t" ready)" "$(kv "$t" held)"
done < "$OUT"
ratio() { while read -r line; do awk -v a="$(field "$1" "$3" "$line")" -v b="$(field "$2" "$3" "$line")" 'BEGIN {print a / b}'; done < "$OUT" | median_of; }
echo
echo "medians of per-round ratios: ops rejoin/steady $(ratio rejoin steady ops), rejoin/after $(ratio rejoin after ops); p99 rejoin/steady $(ratio rejoin steady p99), rejoin/after $(ratio rejoin after p99)"
if [ -n "${REJOIN_OLD_BIN:-}" ]; then
  echo
  echo "| round | rejoin ops this / old | ratio | errors this / old | p99 ms this / old | max ms this / old | survivors' reconfigurations this / old |"
  echo "|---|---|---|---|---|---|---|"
  paste -d'#' "$OUT" "$WORK/old.txt" | while IFS='#' read -r a b; do
    printf '| %s | %s / %s | %.3f | %s / %s | %s / %s | %s / %s | %s / %s |\n' "$(echo "$a" | awk '{print $2}')" \
      "$(field rejoin ops "$a")" "$(field rejoin ops "$b")" \
      "$(awk -v x="$(field rejoin ops "$a")" -v y="$(field rejoin ops "$b")" 'BEGIN {print x / y}')" \
      "$(field rejoin errors "$a")" "$(field rejoin errors "$b")" "$(field rejoin p99 "$a")" "$(field rejoin p99 "$b")" \
      "$(field rejoin max "$a")" "$(field rejoin max "$b")" "$(kv "${a##*|}" recon)" "$(kv "${b##*|}" recon)"
  done
  echo
  echo "median rejoin ops ratio this/old: $(paste -d'#' "$OUT" "$WORK/old.txt" | while IFS='#' read -r a b; do awk -v x="$(field rejoin ops "$a")" -v y="$(field rejoin ops "$b")" 'BEGIN {print x / y}'; done | median_of)"
fi
