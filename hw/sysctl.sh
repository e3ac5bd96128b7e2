#!/usr/bin/env bash
# Host sysctls for an interconnect node (seed 002, MOS 1674865.1). Root only.
#
#   hw/sysctl.sh show     print the current values
#   hw/sysctl.sh apply    set them on the running system
#   hw/sysctl.sh persist  also write /etc/sysctl.d/90-icx.conf
#
# What each is for:
# - net.core.rmem_max / wmem_max = 4 MiB (and the defaults to match):
#   cause 2, "UDP buffer socket overflow". icx's socket backends ask for
#   4 MiB buffers (SO_RCVBUFFORCE as root, else SO_RCVBUF clamped by
#   rmem_max, logged). Small buffers overflow under cache-fusion bursts:
#   `netstat -su` "receive buffer errors", `kernel_drops()` in icx.
# - net.core.netdev_max_backlog = 30000: per-CPU input queue before the
#   socket; a burst past it is dropped (/proc/net/softnet_stat column 2).
# - net.ipv4.ipfrag_high_thresh / low_thresh = 16 / 15 MiB, ipfrag_time = 30:
#   cause 3, "reassembly failures". icx never fragments at the IP layer (DF
#   set, its own fragmentation), so icx does not need these; they are for the
#   other UDP traffic on the same host (Oracle's own interconnect, NFS over
#   UDP) that does rely on IP reassembly, as the note recommends.
# Nothing here matters to the DPDK backend (it bypasses the kernel stack),
# except on the kernel-socket peers it talks to.
set -euo pipefail
. "$(dirname "$0")/need-root.sh"
SETTINGS=(
  net.core.rmem_default=4194304
  net.core.rmem_max=4194304
  net.core.wmem_default=4194304
  net.core.wmem_max=4194304
  net.core.netdev_max_backlog=30000
  net.ipv4.ipfrag_high_thresh=16777216
  net.ipv4.ipfrag_low_thresh=15728640
  net.ipv4.ipfrag_time=30
)
cmd=${1:-show}
case $cmd in
  show) for s in "${SETTINGS[@]}"; do k=${s%%=*}; echo "$k = $(sysctl -n "$k") (icx: ${s#*=})"; done ;;
  apply|persist)
    need_root sysctl
    # high before low: the kernel refuses low > high.
    for s in "${SETTINGS[@]}"; do sysctl -qw "$s"; done
    if [ "$cmd" = persist ]; then
      printf '# icx interconnect (hw/sysctl.sh)\n' > /etc/sysctl.d/90-icx.conf
      printf '%s\n' "${SETTINGS[@]}" | sed 's/=/ = /' >> /etc/sysctl.d/90-icx.conf
      echo "written /etc/sysctl.d/90-icx.conf"
    fi
    "$0" show ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
