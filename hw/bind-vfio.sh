#!/usr/bin/env bash
# Bind a NIC to vfio-pci so DPDK can drive it, or give it back to its
# kernel driver. Root only. THE INTERFACE DISAPPEARS FROM THE KERNEL while
# bound: never bind the NIC you are logged in through.
#
#   hw/bind-vfio.sh status                 list NICs, their drivers and IOMMU groups
#   hw/bind-vfio.sh bind   0000:3b:00.0    unbind from its driver, bind to vfio-pci
#   hw/bind-vfio.sh unbind 0000:3b:00.0 [DRIVER]   back to DRIVER (default: the one
#                                          recorded at bind time, else the kernel's pick)
#
# Needs the IOMMU on (intel_iommu=on / amd_iommu=on on the kernel command
# line; /sys/kernel/iommu_groups non-empty). Without an IOMMU,
# `echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode` works
# but gives the device unrestricted DMA (labs only). Every device in the
# NIC's IOMMU group must be bound to vfio-pci (or no driver) too.
# Mellanox/NVIDIA ConnectX (mlx5) is the exception: it stays on its kernel
# driver (bifurcated); DPDK's mlx5 PMD talks to it through rdma-core.
# DPDK's own tool does the same: `dpdk-devbind.py` (package dpdk).
set -euo pipefail
. "$(dirname "$0")/need-root.sh"
need_root bind-vfio
STATE=/run/icx-vfio
cmd=${1:-status}
dev=${2:-}

status() {
  local d
  for d in /sys/bus/pci/devices/*; do
    case $(cat "$d/class") in 0x02*) ;; *) continue ;; esac   # network controllers
    local drv=none grp=none ifs=""
    [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
    [ -e "$d/iommu_group" ] && grp=$(basename "$(readlink "$d/iommu_group")")
    [ -d "$d/net" ] && ifs=$(ls "$d/net" | tr '\n' ' ')
    printf '%s vendor %s device %s driver %-10s iommu_group %-5s %s\n' \
      "$(basename "$d")" "$(cat "$d/vendor")" "$(cat "$d/device")" "$drv" "$grp" "$ifs"
  done
  [ -n "$(ls /sys/kernel/iommu_groups 2>/dev/null)" ] || echo "note: no IOMMU groups (IOMMU off?)"
}

need_dev() {
  [ -n "$dev" ] && [ -e "/sys/bus/pci/devices/$dev" ] || { echo "bind-vfio: no PCI device '$dev' (see: $0 status)" >&2; exit 2; }
}

case $cmd in
  status) status ;;
  bind)
    need_dev
    if [ -d "/sys/bus/pci/devices/$dev/net" ]; then
      for i in $(ls "/sys/bus/pci/devices/$dev/net"); do
        if ip -o addr show dev "$i" | grep -q inet; then
          echo "bind-vfio: $i ($dev) has addresses configured; refusing (take it down first)" >&2; exit 1
        fi
      done
    fi
    modprobe vfio-pci
    mkdir -p "$STATE"
    if [ -e "/sys/bus/pci/devices/$dev/driver" ]; then
      basename "$(readlink "/sys/bus/pci/devices/$dev/driver")" > "$STATE/$dev"
      echo "$dev" > "/sys/bus/pci/devices/$dev/driver/unbind"
    fi
    echo vfio-pci > "/sys/bus/pci/devices/$dev/driver_override"
    echo "$dev" > /sys/bus/pci/drivers_probe
    echo "$dev -> $(basename "$(readlink "/sys/bus/pci/devices/$dev/driver")")"
    ;;
  unbind)
    need_dev
    drv=${3:-$(cat "$STATE/$dev" 2>/dev/null || true)}
    [ -e "/sys/bus/pci/devices/$dev/driver" ] && echo "$dev" > "/sys/bus/pci/devices/$dev/driver/unbind"
    echo "${drv}" > "/sys/bus/pci/devices/$dev/driver_override"
    echo "$dev" > /sys/bus/pci/drivers_probe
    echo "" > "/sys/bus/pci/devices/$dev/driver_override"
    rm -f "$STATE/$dev"
    echo "$dev -> $(basename "$(readlink "/sys/bus/pci/devices/$dev/driver" 2>/dev/null || echo none)")"
    ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
