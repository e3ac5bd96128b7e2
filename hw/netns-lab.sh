#!/usr/bin/env bash
# The icx network-namespace lab: two namespaces joined by a veth pair, or
# (with --loss) through a third namespace whose bridge drops a share of the
# frames with an nftables `bridge` forward rule. Root only. Everything lives
# inside the namespaces this script creates: the private addresses
# (10.99.<subnet>.0/24) are never configured in the caller's namespace.
#
#   hw/netns-lab.sh up   [--prefix P] [--mtu N] [--loss PCT] [--subnet N] [--kernel a|b|ab|none]
#   hw/netns-lab.sh down [--prefix P]
#   hw/netns-lab.sh run  [same options as up] -- CMD ARGS...   (up, run CMD with the lab's
#                                                variables in its environment, down even on failure)
#
# `up` prints the lab as KEY=VALUE lines (NS_A NS_B NS_M IF_A IF_B IP_A IP_B
# MAC_A MAC_B MTU LOSS). A side listed in --kernel (default: ab) gets its IP
# on the interface, so a kernel-socket endpoint (io_uring) can bind it; a
# side not listed is left without an IP, for a DPDK endpoint over
# net_af_packet, which owns the IP itself (answers ARP for it): were the
# kernel to own it too, it would answer ARP and reject our UDP with ICMP.
#
# Offloads are off on every veth (ethtool -K ... tx off rx off gso off tso
# off gro off): a kernel sender would otherwise leave UDP checksums to the
# "hardware" and hand af_packet 64 KiB GSO super-frames, which a real NIC
# never puts on a wire. IPv6 is off inside the namespaces, so the only
# foreign frames the endpoints see are the ones tests send on purpose.
set -euo pipefail
. "$(dirname "$0")/need-root.sh"
. "$(dirname "$0")/lab-lib.sh"

usage() { sed -n '2,16p' "$0" >&2; exit 2; }

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
PREFIX=icx MTU=9000 LOSS=0 SUBNET=0 KERNEL=ab
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) PREFIX=$2; shift 2 ;;
    --mtu) MTU=$2; shift 2 ;;
    --loss) LOSS=$2; shift 2 ;;
    --subnet) SUBNET=$2; shift 2 ;;
    --kernel) KERNEL=$2; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
need_root netns-lab "network namespaces, veth, nftables"
case $PREFIX in *[!a-z0-9]*|'') echo "netns-lab: --prefix must be [a-z0-9]+" >&2; exit 2 ;; esac
[ ${#PREFIX} -le 10 ] || { echo "netns-lab: --prefix at most 10 characters (interface names)" >&2; exit 2; }

NS_A=$PREFIX-a NS_B=$PREFIX-b NS_M=$PREFIX-m
IF_A=${PREFIX}a0 IF_B=${PREFIX}b0 IF_MA=${PREFIX}ma IF_MB=${PREFIX}mb
IP_A=10.99.$SUBNET.1 IP_B=10.99.$SUBNET.2
MAC_A=$(printf '02:99:%02x:00:00:01' "$SUBNET") MAC_B=$(printf '02:99:%02x:00:00:02' "$SUBNET")

down() {
  local ns
  for ns in "$NS_A" "$NS_B" "$NS_M"; do
    # Deleting a namespace destroys the veth ends inside it (and their peers).
    ip netns del "$ns" 2>/dev/null || true
  done
  # A veth end left in the caller's namespace by a half-done `up`.
  for ns in "$IF_A" "$IF_B" "$IF_MA" "$IF_MB"; do
    ip link del "$ns" 2>/dev/null || true
  done
}

up() {
  command -v ethtool >/dev/null || echo "netns-lab: ethtool missing, offloads stay on (apt-get install ethtool)" >&2
  down
  trap 'echo "netns-lab: setup failed, tearing down" >&2; down' ERR
  ns_new "$NS_A"; ns_new "$NS_B"
  if [ "$LOSS" != 0 ]; then
    command -v nft >/dev/null || { echo "netns-lab: --loss needs nft (apt-get install nftables)" >&2; false; }
    ns_new "$NS_M"
    ip link add "$IF_A" mtu "$MTU" type veth peer name "$IF_MA" mtu "$MTU"
    ip link add "$IF_B" mtu "$MTU" type veth peer name "$IF_MB" mtu "$MTU"
    ip link set "$IF_MA" netns "$NS_M"; ip link set "$IF_MB" netns "$NS_M"
    ip -n "$NS_M" link add br0 mtu "$MTU" type bridge stp_state 0 forward_delay 0
    ip -n "$NS_M" link set br0 mtu "$MTU"
    for i in "$IF_MA" "$IF_MB"; do
      quiet_iface "$NS_M" "$i" "$MTU"
      ip -n "$NS_M" link set "$i" master br0
    done
    ip -n "$NS_M" link set br0 up
    # Endpoint-side rules cannot touch frames a DPDK af_packet endpoint sends
    # or receives (packet sockets sit below netfilter), so the loss is done
    # by the bridge in the middle: the bridge family's forward hook sees
    # every frame crossing it, in both directions, ARP included.
    ip netns exec "$NS_M" nft -f - <<NFT
table bridge icxloss {
  counter dropped { }
  chain forward {
    type filter hook forward priority 0; policy accept;
    numgen random mod 100 < $LOSS counter name dropped drop
  }
}
NFT
  else
    ip link add "$IF_A" mtu "$MTU" type veth peer name "$IF_B" mtu "$MTU"
  fi
  ip link set "$IF_A" netns "$NS_A" address "$MAC_A"
  ip link set "$IF_B" netns "$NS_B" address "$MAC_B"
  quiet_iface "$NS_A" "$IF_A" "$MTU"
  quiet_iface "$NS_B" "$IF_B" "$MTU"
  case $KERNEL in *a*) ip -n "$NS_A" addr add "$IP_A/24" dev "$IF_A" ;; esac
  case $KERNEL in *b*) ip -n "$NS_B" addr add "$IP_B/24" dev "$IF_B" ;; esac
  trap - ERR
  echo "NS_A=$NS_A"; echo "NS_B=$NS_B"
  if [ "$LOSS" != 0 ]; then echo "NS_M=$NS_M"; else echo "NS_M="; fi
  echo "IF_A=$IF_A"; echo "IF_B=$IF_B"
  echo "IP_A=$IP_A"; echo "IP_B=$IP_B"
  echo "MAC_A=$MAC_A"; echo "MAC_B=$MAC_B"
  echo "MTU=$MTU"; echo "LOSS=$LOSS"
}

lab_dispatch "$cmd" "$@"
