#!/usr/bin/env bash
# The icx cluster lab: N node namespaces (P-n1 .. P-nN), each with one veth
# into a bridge namespace (P-br, bridge br0), so links between any two
# nodes can be cut and restored, each way on its own, with nftables
# `bridge` rules in the bridge namespace. Root only. Addresses
# 10.98.<subnet>.<i>/24 exist only inside the namespaces. With --links 2 a
# second private network: eth1 in every node into bridge br1, addresses
# 10.98.<subnet+1>.<i>/24 (a redundant interconnect).
#
#   hw/cluster-lab.sh up   [--prefix P] [--nodes N] [--mtu M] [--subnet S] [--links 1|2]
#   hw/cluster-lab.sh down [--prefix P] [--nodes N]
#   hw/cluster-lab.sh cut  [--prefix P] A B [--oneway] [--link L]  (A->B dropped on every network,
#                                                  or on network L (0 or 1) only; both ways unless --oneway)
#   hw/cluster-lab.sh heal [--prefix P] A B [--oneway] [--link L]
#   hw/cluster-lab.sh isolate [--prefix P] A            (every frame to or from A dropped)
#   hw/cluster-lab.sh loss [--prefix P] PCT            (PCT % of UDP frames crossing the bridge dropped, at random)
#   hw/cluster-lab.sh heal-all [--prefix P]              (every cut, isolation and loss removed)
#
# `up` prints NS_<i>=.. IP_<i>=.. lines and NODES, BR. Inside each node
# namespace `lo` is up, so a node's RESP port on 127.0.0.1 is reached with
# `ip netns exec P-n<i> redis-cli -p PORT`.
set -euo pipefail
. "$(dirname "$0")/need-root.sh"

usage() { sed -n '2,19p' "$0" >&2; exit 2; }

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
PREFIX=icxc NODES=3 MTU=1500 SUBNET=0 ONEWAY=0 LINKS=1 LINK=
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) PREFIX=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --mtu) MTU=$2; shift 2 ;;
    --subnet) SUBNET=$2; shift 2 ;;
    --oneway) ONEWAY=1; shift ;;
    --links) LINKS=$2; shift 2 ;;
    --link) LINK=$2; shift 2 ;;
    -*) usage ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
need_root cluster-lab "network namespaces, veth, a bridge, nftables"
case $PREFIX in *[!a-z0-9]*|'') echo "cluster-lab: --prefix must be [a-z0-9]+" >&2; exit 2 ;; esac
[ ${#PREFIX} -le 8 ] || { echo "cluster-lab: --prefix at most 8 characters (interface names)" >&2; exit 2; }
case $NODES in ''|*[!0-9]*) usage ;; esac
[ "$NODES" -ge 1 ] && [ "$NODES" -le 32 ] || { echo "cluster-lab: --nodes 1..32" >&2; exit 2; }
case $LINKS in 1|2) ;; *) echo "cluster-lab: --links 1 or 2" >&2; exit 2 ;; esac
case $LINK in ''|0|1) ;; *) echo "cluster-lab: --link 0 or 1" >&2; exit 2 ;; esac

BR=$PREFIX-br
ns_of() { echo "$PREFIX-n$1"; }
# The bridge-side veth end of node i on network L (default 0).
port_of() { if [ "${2:-0}" = 1 ]; then echo "${PREFIX}q$1"; else echo "${PREFIX}p$1"; fi; }

down() {
  local i
  for i in $(seq 1 32); do ip netns del "$(ns_of "$i")" 2>/dev/null || true; done
  ip netns del "$BR" 2>/dev/null || true
  for i in $(seq 1 32); do
    ip link del "$(port_of "$i")" 2>/dev/null || true
    ip link del "$(port_of "$i" 1)" 2>/dev/null || true
  done
}

ns_new() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

up() {
  command -v nft >/dev/null || { echo "cluster-lab: needs nft (apt-get install nftables)" >&2; exit 1; }
  down
  trap 'echo "cluster-lab: setup failed, tearing down" >&2; down' ERR
  ns_new "$BR"
  ip -n "$BR" link add br0 mtu "$MTU" type bridge stp_state 0 forward_delay 0
  local i ns port
  for i in $(seq 1 "$NODES"); do
    ns=$(ns_of "$i"); port=$(port_of "$i")
    ns_new "$ns"
    ip link add "$port" mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns "$ns"
    ip link set "$port" netns "$BR"
    ip -n "$BR" link set "$port" master br0
    ip -n "$BR" link set "$port" up
    ip netns exec "$ns" ethtool -K eth0 gso off tso off gro off >/dev/null 2>&1 || true
    ip -n "$ns" addr add "10.98.$SUBNET.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    if [ "$LINKS" = 2 ]; then
      [ "$i" = 1 ] && ip -n "$BR" link add br1 mtu "$MTU" type bridge stp_state 0 forward_delay 0
      port=$(port_of "$i" 1)
      ip link add "$port" mtu "$MTU" type veth peer name eth1 mtu "$MTU" netns "$ns"
      ip link set "$port" netns "$BR"
      ip -n "$BR" link set "$port" master br1
      ip -n "$BR" link set "$port" up
      ip netns exec "$ns" ethtool -K eth1 gso off tso off gro off >/dev/null 2>&1 || true
      ip -n "$ns" addr add "10.98.$((SUBNET + 1)).$i/24" dev eth1
      ip -n "$ns" link set eth1 up
    fi
  done
  ip -n "$BR" link set br0 up
  [ "$LINKS" = 1 ] || ip -n "$BR" link set br1 up
  # Cuts are rules in one chain, matched on bridge ports: the forward hook
  # sees every frame crossing the bridge, ARP included.
  ip netns exec "$BR" nft -f - <<NFT
table bridge icxcut {
  chain forward {
    type filter hook forward priority 0; policy accept;
  }
}
NFT
  trap - ERR
  echo "NODES=$NODES"; echo "BR=$BR"
  for i in $(seq 1 "$NODES"); do
    echo "NS_$i=$(ns_of "$i")"; echo "IP_$i=10.98.$SUBNET.$i"
    [ "$LINKS" = 1 ] || echo "IP2_$i=10.98.$((SUBNET + 1)).$i"
  done
}

# The networks a cut or heal touches: --link L, or every one.
links_sel() { if [ -n "$LINK" ]; then echo "$LINK"; else echo 0 1; fi; }

rule() { # add|del A B (on the networks links_sel names)
  local a b h l
  for l in $(links_sel); do
    a=$(port_of "$2" "$l"); b=$(port_of "$3" "$l")
    if [ "$1" = add ]; then
      ip netns exec "$BR" nft add rule bridge icxcut forward iifname "$a" oifname "$b" drop comment "\"cut $2 $3 $l\""
    else
      # Every rule cutting A->B there (a cut given twice is healed at once).
      for h in $(ip netns exec "$BR" nft -a list chain bridge icxcut forward \
          | sed -n "s/.*comment \"cut $2 $3 $l\" # handle \([0-9]*\).*/\1/p"); do
        ip netns exec "$BR" nft delete rule bridge icxcut forward handle "$h"
      done
    fi
  done
}

pair() { # add|del
  [ ${#ARGS[@]} -eq 2 ] || usage
  rule "$1" "${ARGS[0]}" "${ARGS[1]}"
  [ "$ONEWAY" = 1 ] || rule "$1" "${ARGS[1]}" "${ARGS[0]}"
}

case $cmd in
  up) up ;;
  down) down ;;
  cut) pair add ;;
  heal) pair del ;;
  isolate)
    [ ${#ARGS[@]} -eq 1 ] || usage
    for l in 0 1; do
      p=$(port_of "${ARGS[0]}" "$l")
      ip netns exec "$BR" nft add rule bridge icxcut forward iifname "$p" drop comment "\"isolate ${ARGS[0]}\""
      ip netns exec "$BR" nft add rule bridge icxcut forward oifname "$p" drop comment "\"isolate ${ARGS[0]}\""
    done
    ;;
  loss)
    [ ${#ARGS[@]} -eq 1 ] || usage
    case ${ARGS[0]} in ''|*[!0-9]*) usage ;; esac
    [ "${ARGS[0]}" -le 100 ] || usage
    ip netns exec "$BR" nft add rule bridge icxcut forward meta l4proto udp numgen random mod 100 \< "${ARGS[0]}" drop comment "\"loss ${ARGS[0]}\""
    ;;
  heal-all) ip netns exec "$BR" nft flush chain bridge icxcut forward ;;
  *) usage ;;
esac
