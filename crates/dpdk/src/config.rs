//! How to open a [`DpdkBackend`](crate::DpdkBackend): EAL arguments, which
//! port, our addresses, the neighbour table and queue/pool sizes.
#![deny(unsafe_code)]

use crate::net::MacAddr;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Which ethdev port to drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSelect {
    /// The only port the EAL probed (an error when there are several).
    Only,
    /// By device name: a PCI address (`0000:3b:00.0`) or a vdev name
    /// (`net_af_packet0`), as `rte_eth_dev_get_port_by_name` knows it.
    Name(String),
    /// By port id.
    Id(u16),
    /// The n-th port the EAL probed, counting from 0 in port-id order (the
    /// order of the `-a`/`--vdev` arguments for vdevs): link n of a node
    /// whose links are ports 0..N.
    Nth(usize),
}

/// EAL arguments (without the program name): the usual sets, or any list.
///
/// EAL initialises once per process (a DPDK rule); the first backend opened
/// decides the arguments and later ones must agree or get an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EalArgs(pub Vec<String>);

impl EalArgs {
    /// Splits a command-line string on whitespace (as `--eal "..."`).
    pub fn parse(s: &str) -> Self {
        EalArgs(s.split_whitespace().map(str::to_string).collect())
    }

    /// No NIC needed: `--no-huge --no-pci -m 256 --no-shconf` with a
    /// per-process `--file-prefix`, telemetry off, and one af_packet vdev
    /// on the kernel interface `iface` (of the caller's network namespace).
    /// `jumbo` sizes its ring frames at 16 KiB (an MTU-9000 frame needs
    /// more than the 2 KiB default). The rings get more frames than the
    /// PMD's default 512 (4096 x 2 KiB, or 1024 x 16 KiB when jumbo): a
    /// kernel sender's GSO trains overflow a 512-frame ring between two
    /// polls, and those drops are invisible to DPDK 22.11's af_packet
    /// counters (measured: 5851 retransmits for 2,000 messages at 512
    /// frames, 664 at 4096).
    pub fn af_packet(iface: &str, file_prefix: &str, jumbo: bool) -> Self {
        Self::af_packet_queues(iface, file_prefix, jumbo, 1)
    }

    /// [`af_packet`](Self::af_packet) with `qpairs` rx/tx queue pairs (one
    /// packet socket each, joined in a fanout group that hashes flows to
    /// queues), for a port driven by one backend per core.
    pub fn af_packet_queues(iface: &str, file_prefix: &str, jumbo: bool, qpairs: u16) -> Self {
        Self::af_packet_ports(&[iface], file_prefix, jumbo, qpairs)
    }

    /// [`af_packet_queues`](Self::af_packet_queues) with one port per
    /// interface, `net_af_packet<k>` on `ifaces[k]`, for a node with a link
    /// per interface: port k is [`PortSelect::Nth`]`(k)`.
    pub fn af_packet_ports(ifaces: &[&str], file_prefix: &str, jumbo: bool, qpairs: u16) -> Self {
        let mut args: Vec<String> = [
            "--no-huge",
            "--no-pci",
            "-m",
            // Each port's pool lives in this memory.
            if ifaces.len() > 1 { "512" } else { "256" },
            // No shared-config files (there is no secondary process);
            // `--in-memory` would say it too but clashes with --no-huge.
            "--no-shconf",
            "--no-telemetry",
            "--file-prefix",
            file_prefix,
        ]
        .map(str::to_string)
        .to_vec();
        for (k, iface) in ifaces.iter().enumerate() {
            let mut vdev = format!("net_af_packet{k},iface={iface}");
            if qpairs > 1 {
                vdev.push_str(&format!(",qpairs={qpairs}"));
            }
            if jumbo {
                vdev.push_str(",framesz=16384,blocksz=16384,framecnt=1024");
            } else {
                vdev.push_str(",framecnt=4096");
            }
            args.push("--vdev".into());
            args.push(vdev);
        }
        EalArgs(args)
    }

    /// A PCI NIC bound to vfio-pci, with hugepages (see `hw/README.md`).
    /// `--huge-unlink` so a crashed process leaves no hugepage files behind.
    pub fn pci(pci_addr: &str, file_prefix: &str) -> Self {
        EalArgs(
            [
                "-a",
                pci_addr,
                "--huge-unlink",
                "--file-prefix",
                file_prefix,
                "--no-telemetry",
            ]
            .map(str::to_string)
            .to_vec(),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkConfig {
    pub eal: EalArgs,
    pub port: PortSelect,
    /// Our IPv4 address and UDP port. DPDK owns this address on the port:
    /// it answers ARP for it. (On an af_packet port the kernel interface
    /// must not have it too, or the kernel answers as well.)
    pub addr: SocketAddrV4,
    /// Override the port's MAC (a DPDK port keeps the MAC it reports
    /// otherwise).
    pub mac: Option<MacAddr>,
    /// IP MTU of the link: bounds the UDP payload advertised
    /// (`mtu - 28`). Set on the port through ethdev only when the driver's
    /// `max_mtu` allows it; on af_packet the kernel interface's MTU rules.
    pub mtu: usize,
    /// Static neighbour entries; others are resolved by ARP (when `arp`).
    pub neighbours: Vec<(Ipv4Addr, MacAddr)>,
    /// Resolve unknown neighbours by ARP request. Requests for our address
    /// are answered either way.
    pub arp: bool,
    /// The queue pair this backend drives (one per core).
    pub queue: u16,
    /// Queue pairs to configure on the port: 1 for `DpdkBackend::open`,
    /// one per core for a `DpdkPort`.
    pub queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Mbufs in this backend's pool (2^n - 1 is optimal for DPDK's ring).
    pub mbufs: u32,
    /// Data room of each mbuf, headroom excluded; 0 picks one frame of
    /// `mtu` plus slack (2 KiB up to MTU 1500... 16 KiB for jumbo).
    pub mbuf_data: u16,
    /// Most frames per rx/tx burst (and `Capabilities::max_batch`).
    pub max_batch: usize,
    /// Use the port's IPv4/UDP checksum offloads when it offers them.
    pub checksum_offload: bool,
    /// Put the port in promiscuous mode (frames to other MACs are still
    /// counted and dropped; only useful for diagnostics).
    pub promiscuous: bool,
    /// `wait` spins on the rx queue without sleeping (one busy core).
    pub busy_poll: bool,
    /// Without `busy_poll`: how long `wait` spins before it starts sleeping
    /// between polls, from 5 us doubling up to `idle_sleep_us`.
    pub spin_us: u64,
    pub idle_sleep_us: u64,
}

impl DpdkConfig {
    pub fn new(eal: EalArgs, addr: SocketAddrV4, mtu: usize) -> Self {
        DpdkConfig {
            eal,
            port: PortSelect::Only,
            addr,
            mac: None,
            mtu,
            neighbours: Vec::new(),
            arp: true,
            queue: 0,
            queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mbufs: 4095,
            mbuf_data: 0,
            max_batch: 32,
            checksum_offload: true,
            promiscuous: false,
            busy_poll: false,
            spin_us: 20,
            idle_sleep_us: 200,
        }
    }

    /// The mbuf data room used: `mbuf_data`, or a whole frame of `mtu`
    /// (plus a VLAN tag) in one segment, rounded up to 2/4/8/16 KiB.
    #[cfg(feature = "dpdk")]
    pub(crate) fn mbuf_data_room(&self) -> u16 {
        if self.mbuf_data != 0 {
            return self.mbuf_data;
        }
        let frame = self.mtu + crate::net::ETH_HDR_LEN + 4;
        let mut room = 2048usize;
        while room < frame && room < 16384 {
            room *= 2;
        }
        room as u16
    }
}
