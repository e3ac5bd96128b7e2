#!/usr/bin/env bash
# The icx two-link lab: two namespaces, each with two interfaces, joined by
# two bridges in a third namespace (one bridge per private network, two
# subnets: 10.81.<n>.0/24 for link 1 and 10.81.<n+1>.0/24 for link 2), the
# shape of a node with a redundant interconnect. Root only. Everything
# lives inside the namespaces this script creates.
#
#   hw/links-lab.sh up   [--prefix P] [--mtu1 N] [--mtu2 N] [--subnet N] [--rp-filter 0|1|2] [--kernel a|b|ab]
#   hw/links-lab.sh down [--prefix P]
#   hw/links-lab.sh run  [same options as up] -- CMD ARGS...   (up, run CMD with the lab's
#                                                variables in its environment, down even on failure)
#
# `up` prints the lab as KEY=VALUE lines: NS_A NS_B NS_M, IF_A1 IF_A2 IF_B1
# IF_B2 (the endpoints' interfaces of link 1 and 2), IP_A1 IP_A2 IP_B1
# IP_B2, MTU1 MTU2. --rp-filter sets net.ipv4.conf.{all,default,<each
# interface>}.rp_filter in both endpoint namespaces (default 0; 1 is strict
# reverse-path filtering, the setting that drops a reply leaving by the
# wrong interface), with arp_ignore=1 and arp_announce=2 (each interface
# answers and announces only its own address, see hw/README.md).
# --kernel (default ab) lists the sides whose interfaces get their IPs: a
# side left out is for a DPDK endpoint (af_packet ports on IF_x1 and IF_x2),
# which owns the addresses itself (were the kernel to own them too, it
# would answer ARP and reject our UDP with ICMP).
#
# A link is cut with an nftables drop rule in an endpoint's namespace:
#   ip netns exec "$NS_A" nft add table inet cut
#   ip netns exec "$NS_A" nft 'add chain inet cut o { type filter hook output priority 0; }'
#   ip netns exec "$NS_A" nft add rule inet cut o oifname "$IF_A1" drop
# (and `nft delete table inet cut` restores it). Offloads (gso, tso, gro,
# checksums) are off on every veth, so the MTU of each link is what its
# frames really are.
set -euo pipefail
. "$(dirname "$0")/need-root.sh"
. "$(dirname "$0")/lab-lib.sh"

usage() { sed -n '2,30p' "$0" >&2; exit 2; }

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
PREFIX=icxl MTU1=1500 MTU2=1500 SUBNET=1 RPF=0 KERNEL=ab
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) PREFIX=$2; shift 2 ;;
    --mtu1) MTU1=$2; shift 2 ;;
    --mtu2) MTU2=$2; shift 2 ;;
    --subnet) SUBNET=$2; shift 2 ;;
    --rp-filter) RPF=$2; shift 2 ;;
    --kernel) KERNEL=$2; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
need_root links-lab "network namespaces, veth, bridges, nftables"
case $PREFIX in *[!a-z0-9]*|'') echo "links-lab: --prefix must be [a-z0-9]+" >&2; exit 2 ;; esac
[ ${#PREFIX} -le 9 ] || { echo "links-lab: --prefix at most 9 characters (interface names)" >&2; exit 2; }
case $RPF in 0|1|2) ;; *) echo "links-lab: --rp-filter is 0, 1 or 2" >&2; exit 2 ;; esac
case $KERNEL in a|b|ab) ;; *) echo "links-lab: --kernel is a, b or ab" >&2; exit 2 ;; esac
[ "$SUBNET" -ge 0 ] && [ "$SUBNET" -le 254 ] || { echo "links-lab: --subnet 0..254" >&2; exit 2; }

NS_A=$PREFIX-a NS_B=$PREFIX-b NS_M=$PREFIX-m
IF_A1=${PREFIX}a1 IF_A2=${PREFIX}a2 IF_B1=${PREFIX}b1 IF_B2=${PREFIX}b2
S1=$SUBNET S2=$((SUBNET + 1))
IP_A1=10.81.$S1.1 IP_B1=10.81.$S1.2 IP_A2=10.81.$S2.1 IP_B2=10.81.$S2.2

down() {
  local ns i
  for ns in "$NS_A" "$NS_B" "$NS_M"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  for i in "$IF_A1" "$IF_A2" "$IF_B1" "$IF_B2" "${PREFIX}ma1" "${PREFIX}ma2" "${PREFIX}mb1" "${PREFIX}mb2"; do
    ip link del "$i" 2>/dev/null || true
  done
}

# rp_filter and ARP settings of one endpoint namespace (hw/README.md).
sysctls() { # ns iface...
  local ns=$1; shift
  local c
  for c in all default "$@"; do
    ip netns exec "$ns" sysctl -qw "net.ipv4.conf.$c.rp_filter=$RPF" \
      "net.ipv4.conf.$c.arp_ignore=1" "net.ipv4.conf.$c.arp_announce=2"
  done
}

up() {
  command -v ethtool >/dev/null || echo "links-lab: ethtool missing, offloads stay on (apt-get install ethtool)" >&2
  down
  trap 'echo "links-lab: setup failed, tearing down" >&2; down' ERR
  ns_new "$NS_A"; ns_new "$NS_B"; ns_new "$NS_M"
  local l mtu br side i
  for l in 1 2; do
    if [ $l = 1 ]; then mtu=$MTU1; else mtu=$MTU2; fi
    br=br$l
    ip -n "$NS_M" link add "$br" mtu "$mtu" type bridge stp_state 0 forward_delay 0
    ip -n "$NS_M" link set "$br" mtu "$mtu"
    for side in a b; do
      i=${PREFIX}$side$l
      ip link add "$i" mtu "$mtu" type veth peer name "${PREFIX}m$side$l" mtu "$mtu"
      ip link set "${PREFIX}m$side$l" netns "$NS_M"
      quiet_iface "$NS_M" "${PREFIX}m$side$l" "$mtu"
      ip -n "$NS_M" link set "${PREFIX}m$side$l" master "$br"
      if [ $side = a ]; then ip link set "$i" netns "$NS_A"; quiet_iface "$NS_A" "$i" "$mtu"
      else ip link set "$i" netns "$NS_B"; quiet_iface "$NS_B" "$i" "$mtu"; fi
    done
    ip -n "$NS_M" link set "$br" up
  done
  if [[ $KERNEL == *a* ]]; then
    ip -n "$NS_A" addr add "$IP_A1/24" dev "$IF_A1"
    ip -n "$NS_A" addr add "$IP_A2/24" dev "$IF_A2"
  fi
  if [[ $KERNEL == *b* ]]; then
    ip -n "$NS_B" addr add "$IP_B1/24" dev "$IF_B1"
    ip -n "$NS_B" addr add "$IP_B2/24" dev "$IF_B2"
  fi
  sysctls "$NS_A" "$IF_A1" "$IF_A2"
  sysctls "$NS_B" "$IF_B1" "$IF_B2"
  trap - ERR
  echo "NS_A=$NS_A"; echo "NS_B=$NS_B"; echo "NS_M=$NS_M"
  echo "IF_A1=$IF_A1"; echo "IF_A2=$IF_A2"; echo "IF_B1=$IF_B1"; echo "IF_B2=$IF_B2"
  echo "IP_A1=$IP_A1"; echo "IP_A2=$IP_A2"; echo "IP_B1=$IP_B1"; echo "IP_B2=$IP_B2"
  echo "MTU1=$MTU1"; echo "MTU2=$MTU2"; echo "RP_FILTER=$RPF"
}

lab_dispatch "$cmd" "$@"
