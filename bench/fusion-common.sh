# Sourced by bench/fusion*.sh: builds fusion-node, and starts and stops
# clusters of it on 127.0.0.1 in a temporary directory removed on exit
# (every process started is killed by PID).
cargo build --release -q -p icx-node
# FUSION_BIN: another build to run (an older commit's, as a baseline).
BIN=${FUSION_BIN:-$PWD/target/release/fusion-node}
WORK=$(mktemp -d /tmp/icx-fusion-bench.XXXXXX)
PIDS=()
declare -A NODE_PID   # node number -> PID, of the cluster started last
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_fusion NAME NODES BASEPORT: a cluster in $WORK/NAME, RESP on BASEPORT..
start_fusion() {
  local name=$1 nodes=$2 base=$3 d="$WORK/$1" i
  mkdir -p "$d"
  {
    echo "cluster_name = \"bench\""; echo "cluster_id = $((RANDOM + 1))"
    echo 'heartbeat_interval = "200ms"'; echo 'misscount = "6s"'; echo 'disktimeout = "12s"'
    echo "voting_files = [\"$d/v1\", \"$d/v2\", \"$d/v3\"]"
    echo "datafiles = \"$d/data\""
    # FUSION_EXTRA: more top-level keys (a bench's own settings).
    if [ -n "${FUSION_EXTRA:-}" ]; then echo "$FUSION_EXTRA"; fi
    for i in $(seq 1 "$nodes"); do
      printf '\n[[node]]\nid = %d\nname = "n%d"\ninterconnect = ["127.0.0.1:%d"]\nclient = "127.0.0.1:%d"\n' \
        "$i" "$i" "$(free_port)" $((base + i - 1))
    done
  } > "$d/c.toml"
  for i in $(seq 1 "$nodes"); do
    "$BIN" --config "$d/c.toml" --node "$i" 2>"$d/n$i.log" &
    PIDS+=($!); NODE_PID[$i]=$!
  done
  for i in $(seq 1 "$nodes"); do
    for _ in $(seq 1 300); do
      redis-cli -p $((base + i - 1)) INFO gc 2>/dev/null | grep -q '^gc_state:open' && break
      sleep 0.1
    done
    redis-cli -p $((base + i - 1)) INFO gc | grep -q '^gc_state:open' || { echo "node $i of $name never opened" >&2; tail "$d/n$i.log" >&2; exit 1; }
  done
}

stop_fusion() { # BASEPORT NODES
  local i
  for i in $(seq 1 "$2"); do redis-cli -p $(($1 + i - 1)) SHUTDOWN >/dev/null 2>&1 || true; done
  for i in $(seq 1 "$2"); do
    for _ in $(seq 1 200); do
      redis-cli -p $(($1 + i - 1)) PING >/dev/null 2>&1 || break
      sleep 0.1
    done
  done
}


now_ms() { date +%s%3N; }

# The time (epoch ms) of the last "Reconfiguration started" in a node's log.
started_ms() {
  local line
  line=$(grep 'Reconfiguration started' "$1" | tail -1 | awk '{print $1}')
  [ -n "$line" ] && date -d "$line" +%s%3N || echo 0
}

# info PORT SECTION FIELD: one INFO field's value.
info() { redis-cli -p "$1" INFO "$2" | tr -d '\r' | awk -F: -v k="$3" '$1 == k {print $2}'; }

# The median of the numbers on stdin ("-" if none; the mean of the middle two).
median_of() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else printf "%g\n", (a[NR/2]+a[NR/2+1])/2}'; }
