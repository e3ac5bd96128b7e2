//! The DPDK backend for icx, behind the `dpdk` feature.
//!
//! With the feature, [`DpdkBackend`] drives one ethdev port (a PCI NIC bound
//! to vfio-pci, or a virtual device such as `net_af_packet` for tests) under
//! the same [`icx_core::Backend`] trait as the io_uring backend, and puts
//! plain Ethernet/IPv4/UDP on the wire, so DPDK and kernel-socket nodes
//! interoperate. Without the feature only the pure-Rust parts build (header
//! build/parse with checksums, ARP, configuration), and
//! [`open`] returns [`DpdkError::NotBuilt`].
//!
//! Library requirement: DPDK 22.11 (`libdpdk-dev`) through `icx-dpdk-sys`.
//! Run-time requirement: root (or the capabilities listed in `hw/README.md`).

// Ethernet/IPv4/UDP and ARP: only the backend (feature `dpdk`) uses them;
// without the feature they are built for their unit tests.
#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
mod arp;
mod config;
pub mod error;
#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
mod net;

#[cfg(feature = "dpdk")]
mod backend;
#[cfg(feature = "dpdk")]
pub mod eal;
#[cfg(feature = "dpdk")]
mod links;
#[cfg(feature = "dpdk")]
mod port;
#[cfg(feature = "dpdk")]
mod stats;

// ArpTable: what `DpdkBackend::neighbours` returns.
pub use arp::ArpTable;
pub use config::{DpdkConfig, EalArgs, PortSelect};
pub use error::DpdkError;
pub use net::{BadMac, MacAddr};

#[cfg(feature = "dpdk")]
pub use backend::{describe, DpdkBackend};
#[cfg(feature = "dpdk")]
pub use links::DpdkLinks;
#[cfg(feature = "dpdk")]
pub use port::{ports, DpdkPort, PortInfo, PortStats};
#[cfg(feature = "dpdk")]
pub use stats::DpdkStats;

/// Whether this build has the DPDK backend.
pub const BUILT: bool = cfg!(feature = "dpdk");

/// Opens the DPDK backend, boxed for a driver or runtime. Without the
/// `dpdk` feature: [`DpdkError::NotBuilt`] (as an `io::Error` of kind
/// `Unsupported`).
pub fn open(cfg: DpdkConfig) -> std::io::Result<Box<dyn icx_core::Backend + Send>> {
    #[cfg(feature = "dpdk")]
    {
        Ok(Box::new(DpdkBackend::open(cfg)?))
    }
    #[cfg(not(feature = "dpdk"))]
    {
        let _ = cfg;
        Err(DpdkError::NotBuilt.into())
    }
}

/// Opens one DPDK port per link (link 0 first; see [`DpdkLinks::open`]),
/// boxed: a lone config opens a plain single-port backend. Without the
/// `dpdk` feature: [`DpdkError::NotBuilt`].
pub fn open_links(cfgs: Vec<DpdkConfig>) -> std::io::Result<Box<dyn icx_core::Backend + Send>> {
    #[cfg(feature = "dpdk")]
    {
        if cfgs.len() == 1 {
            let cfg = cfgs.into_iter().next().expect("one");
            return Ok(Box::new(DpdkBackend::open(cfg)?));
        }
        Ok(Box::new(DpdkLinks::open(cfgs)?))
    }
    #[cfg(not(feature = "dpdk"))]
    {
        let _ = cfgs;
        Err(DpdkError::NotBuilt.into())
    }
}
