# Sourced by the namespace-lab scripts (hw/netns-lab.sh, hw/links-lab.sh):
# the pieces every lab builds with.

# quiet_iface NS IFACE MTU: sets the MTU, turns the offloads off (a kernel
# sender would otherwise leave UDP checksums to the "hardware" and hand
# packet sockets 64 KiB GSO super-frames, which a real NIC never puts on a
# wire) and brings the interface up.
quiet_iface() {
  ip -n "$1" link set "$2" mtu "$3"
  ip netns exec "$1" ethtool -K "$2" tx off rx off gso off tso off gro off >/dev/null 2>&1 || true
  ip -n "$1" link set "$2" up
}

# ns_new NS: a namespace with loopback up and IPv6 off.
ns_new() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}
