#!/usr/bin/env bash
# Reserve 2 MiB hugepages and mount hugetlbfs, for DPDK's memory (EAL) and
# icx's buffer pool (`HugePages::Try` uses them when present). Root only.
#
#   hw/hugepages.sh [PAGES]      reserve PAGES x 2 MiB (default 256 = 512 MiB)
#   hw/hugepages.sh --release    give them back and unmount
#
# Pages are reserved on the running system only (not persistent); for boot
# time add `default_hugepagesz=2M hugepagesz=2M hugepages=N` to the kernel
# command line (1 GiB pages need it). With hugepages, always start DPDK with
# `--huge-unlink` (EalArgs::pci does), so a crashed process leaves no
# hugepage files holding memory.
set -euo pipefail
. "$(dirname "$0")/need-root.sh"
need_root hugepages
MNT=/dev/hugepages
if [ "${1:-}" = "--release" ]; then
  echo 0 > /proc/sys/vm/nr_hugepages
  mountpoint -q "$MNT" && umount "$MNT" || true
  grep -E 'HugePages_(Total|Free)' /proc/meminfo
  exit 0
fi
PAGES=${1:-256}
echo "$PAGES" > /proc/sys/vm/nr_hugepages
got=$(cat /proc/sys/vm/nr_hugepages)
if [ "$got" -lt "$PAGES" ]; then
  echo "hugepages: asked for $PAGES, the kernel found $got (memory fragmented: retry, or reserve at boot)" >&2
fi
mkdir -p "$MNT"
mountpoint -q "$MNT" || mount -t hugetlbfs -o pagesize=2M nodev "$MNT"
grep -E 'HugePages_(Total|Free)|Hugepagesize' /proc/meminfo
