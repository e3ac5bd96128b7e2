#!/usr/bin/env bash
# Checks the reverse-path and ARP settings of the interconnect interfaces
# (the rp_filter pitfall of several private networks on one host, Doc
# 1286796.1). With strict reverse-path filtering (rp_filter = 1) a packet is
# dropped when the reply to its source would leave by another interface;
# with two interconnect interfaces whose subnets overlap (or share one
# subnet), the kernel routes both links' replies by one of them, and the
# other link's traffic is dropped at the receiver. icx binds each link's
# sockets to its own interface (SO_BINDTODEVICE), so its own replies leave
# by the right link; other traffic (ping, ssh, a plain UDP echo) does not.
#
#   hw/rp-filter-check.sh [IFACE...]    (default: every IPv4 interface but lo)
#
# Prints one line per interface (its subnet, effective rp_filter = max(all,
# iface), arp_ignore, arp_announce) and a verdict: FAIL (exit 1) for strict
# rp_filter on two interfaces whose subnets overlap; WARN (exit 0) for
# several interfaces with arp_ignore 0 or arp_announce 0 (a host answers ARP
# for any of its addresses on any interface, so a peer may send one link's
# traffic to the other NIC); OK otherwise. Needs no root.
set -euo pipefail

ifaces=("$@")
if [ ${#ifaces[@]} -eq 0 ]; then
  mapfile -t ifaces < <(ip -o -4 addr show | awk '$2 != "lo" {print $2}' | sort -u)
fi
conf() { cat "/proc/sys/net/ipv4/conf/$1/$2" 2>/dev/null || echo "?"; }
all_rpf=$(conf all rp_filter)

# Subnet of an interface's first IPv4 address as "network/prefix" with the
# network as a 32-bit number.
net_of() {
  local cidr ip p a b c d n
  cidr=$(ip -o -4 addr show dev "$1" | awk '{print $4; exit}')
  [ -n "$cidr" ] || { echo ""; return; }
  ip=${cidr%/*} p=${cidr#*/}
  IFS=. read -r a b c d <<<"$ip"
  n=$(( (a << 24) | (b << 16) | (c << 8) | d ))
  if [ "$p" -eq 0 ]; then n=0; else n=$(( n & (0xffffffff << (32 - p)) & 0xffffffff )); fi
  echo "$n/$p/$cidr"
}

verdict=OK
declare -a nets strict
for i in "${ifaces[@]}"; do
  rpf=$(conf "$i" rp_filter)
  eff=$rpf
  [ "$all_rpf" != "?" ] && [ "$rpf" != "?" ] && [ "$all_rpf" -gt "$rpf" ] && eff=$all_rpf
  n=$(net_of "$i")
  printf '%-12s %-20s rp_filter=%s (all=%s, effective %s) arp_ignore=%s arp_announce=%s\n' \
    "$i" "$(echo "$n" | cut -d/ -f3-)" "$rpf" "$all_rpf" "$eff" "$(conf "$i" arp_ignore)" "$(conf "$i" arp_announce)"
  nets+=("$n"); strict+=("$eff")
  if [ ${#ifaces[@]} -gt 1 ] && { [ "$(conf "$i" arp_ignore)" = 0 ] || [ "$(conf "$i" arp_announce)" = 0 ]; }; then
    [ $verdict = OK ] && verdict=WARN
  fi
done
for ((x = 0; x < ${#ifaces[@]}; x++)); do
  for ((y = x + 1; y < ${#ifaces[@]}; y++)); do
    [ -n "${nets[x]}" ] && [ -n "${nets[y]}" ] || continue
    IFS=/ read -r nx px _ <<<"${nets[x]}"; IFS=/ read -r ny py _ <<<"${nets[y]}"
    p=$(( px < py ? px : py ))
    m=$(( p == 0 ? 0 : (0xffffffff << (32 - p)) & 0xffffffff ))
    if [ $(( nx & m )) -eq $(( ny & m )) ] && { [ "${strict[x]}" = 1 ] || [ "${strict[y]}" = 1 ]; }; then
      echo "FAIL: ${ifaces[x]} and ${ifaces[y]} share a subnet under strict rp_filter: replies for one leave by the other and are dropped; give each link its own subnet, or set rp_filter=2 (loose)"
      verdict=FAIL
    fi
  done
done
case $verdict in
  FAIL) exit 1 ;;
  WARN) echo "WARN: several interfaces answer ARP for each other's addresses: set net.ipv4.conf.<iface>.arp_ignore=1 and arp_announce=2 on each interconnect interface"; exit 0 ;;
  *) echo "OK: each interconnect interface has its own subnet (strict rp_filter is safe for icx, which binds each link to its interface)"; exit 0 ;;
esac
