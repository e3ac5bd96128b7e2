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

# Runs the lab command: `up` prints the lab's variables, `down` removes it,
# `run CMD...` brings it up, runs CMD with them exported and removes the
# lab afterwards (on failure and signals too). Each script defines `up`,
# `down` and `usage`.
lab_dispatch() {
  local cmd=$1; shift
  case $cmd in
    up) up ;;
    down) down ;;
    run)
      [ $# -gt 0 ] || usage
      trap down EXIT INT TERM
      local vars
      vars=$(up)
      # shellcheck disable=SC2046
      export $(echo "$vars" | xargs)
      "$@"
      ;;
    *) usage ;;
  esac
}
