//! [`DpdkPort`]: an ethdev port configured and started once, with its queue
//! pairs and mbuf pools, shared by the per-queue [`DpdkBackend`]s; port
//! selection and the port's own counters.

#[cfg(doc)]
use crate::backend::DpdkBackend;
use crate::config::{DpdkConfig, PortSelect};
use crate::eal::{self, strerror};
use crate::error::DpdkError;
use crate::net::{self, MacAddr, TxChecksums};
use crate::stats::DpdkStats;
use icx_dpdk_sys::{self as sys, flags};
use std::ffi::{CStr, CString};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The port's own counters (`rte_eth_stats_get`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// What the port turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub port: u16,
    pub name: String,
    pub driver: String,
    pub mac: MacAddr,
    pub max_mtu: u16,
    /// The MTU was set through ethdev (else left to the device/kernel).
    pub mtu_set: bool,
    pub tx_checksum_offload: TxChecksums,
    pub rx_checksum_offload: bool,
}

/// Distinguishes the mempools of several backends in one process.
static POOL_SEQ: AtomicU32 = AtomicU32::new(0);

/// Live per-queue frame counters, readable while the queue's backend runs
/// on another thread (updated once per burst).
#[derive(Debug, Default)]
pub(crate) struct QueueCounters {
    pub(crate) rx_frames: AtomicU64,
    pub(crate) tx_frames: AtomicU64,
}

/// The port, shared by the queue backends: EAL, the configured and started
/// ethdev port, one mbuf pool per queue, the neighbour entries learned on
/// any queue. Stopped, closed and its pools freed when the last
/// [`DpdkPort`] handle and the last backend are gone.
pub(crate) struct PortShared {
    pub(crate) port: u16,
    pub(crate) queues: u16,
    /// One pool per queue: the queue's rx ring fills from it and its
    /// backend builds tx frames from it. Mempool get/put are thread-safe
    /// (multi-producer/consumer ring); a thread that is not an EAL lcore
    /// simply gets no per-lcore cache.
    pub(crate) pools: Vec<*mut sys::rte_mempool>,
    pub(crate) info: PortInfo,
    pub(crate) cfg: DpdkConfig,
    pub(crate) mac: MacAddr,
    pub(crate) max_udp_payload: usize,
    pub(crate) tx_csum: TxChecksums,
    pub(crate) rx_csum_offload: bool,
    /// Whether a backend drives queue q now.
    pub(crate) claimed: Vec<AtomicBool>,
    pub(crate) counters: Vec<QueueCounters>,
    /// Final [`DpdkStats`] of each queue's dropped backends (summed).
    pub(crate) retired: Mutex<Vec<DpdkStats>>,
    /// Neighbour entries learned by ARP on any queue, and a version bumped
    /// on every change so queues refresh their local copy cheaply.
    pub(crate) learned: Mutex<Vec<(Ipv4Addr, MacAddr)>>,
    pub(crate) learned_version: AtomicU64,
    /// Dropped after the port is stopped and closed (field drop order).
    _claim: PortClaim,
}

/// The ports this process has configured: a second configure of a started
/// port (two links, or a link and a `DpdkPort`, selecting the same one)
/// would reset it under the first.
static OPEN_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// One port of [`OPEN_PORTS`], released on drop.
struct PortClaim(u16);

impl PortClaim {
    fn take(port: u16, name: &str) -> Result<Self, DpdkError> {
        let mut open = OPEN_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if open.contains(&port) {
            return Err(DpdkError::Config(format!(
                "port {port} ({name}) is already driven by this process: each link needs a port of its own"
            )));
        }
        open.push(port);
        Ok(PortClaim(port))
    }
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        OPEN_PORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != self.0);
    }
}

// SAFETY: the raw pointers are mempools owned by this object and freed only
// in its Drop; DPDK mempool get/put are thread-safe (the default ring ops
// are multi-producer/multi-consumer), and the ethdev calls made through a
// shared reference (info/stats queries) are safe from any thread. Per-queue
// rx/tx bursts are made only by the one backend that claimed the queue.
unsafe impl Send for PortShared {}
// SAFETY: as above; all mutable state is behind atomics or mutexes.
unsafe impl Sync for PortShared {}

impl Drop for PortShared {
    fn drop(&mut self) {
        // SAFETY: every backend (holding an Arc) is gone, so no burst is in
        // flight; stopping releases the mbufs the queues hold, then the
        // pools can go.
        unsafe {
            sys::rte_eth_dev_stop(self.port);
            sys::rte_eth_dev_close(self.port);
        }
        for &mp in &self.pools {
            // SAFETY: created by open, no longer referenced by the port.
            unsafe { sys::rte_mempool_free(mp) };
        }
    }
}

/// A started ethdev port with `cfg.queues` rx/tx queue pairs, shared
/// (reference-counted) by one [`DpdkBackend`] per queue, for the per-core
/// runtime: open it once, then in the runtime's factory
/// `move |core| DpdkBackend::for_queue(port.clone(), core as u16)`.
/// Frames arrive on a queue by the device's choice (RSS, af_packet's fanout
/// hash), not by which core owns the peer; the runtime hands them over.
#[derive(Clone)]
pub struct DpdkPort {
    pub(crate) shared: Arc<PortShared>,
}

impl std::fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkPort")
            .field("port", &self.shared.info)
            .field("queues", &self.shared.queues)
            .finish_non_exhaustive()
    }
}

pub(crate) fn port_err(port: u16, step: &'static str, ret: i32) -> DpdkError {
    let errno = if ret < 0 { -ret } else { eal::errno() };
    DpdkError::Port {
        port,
        step,
        errno,
        message: strerror(errno),
    }
}

fn port_name(port: u16) -> Option<String> {
    let mut buf = [0 as std::os::raw::c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf is RTE_ETH_NAME_MAX_LEN bytes, as the call requires.
    let r = unsafe { sys::rte_eth_dev_get_name_by_port(port, buf.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The ports the EAL probed, as (id, name).
pub fn ports() -> Vec<(u16, String)> {
    (0..sys::RTE_MAX_ETHPORTS as u16)
        // SAFETY: a plain query on a port id.
        .filter(|&p| unsafe { sys::rte_eth_dev_is_valid_port(p) } == 1)
        .map(|p| (p, port_name(p).unwrap_or_default()))
        .collect()
}

fn select_port(sel: &PortSelect) -> Result<u16, DpdkError> {
    let all = ports();
    let available = || all.iter().map(|(p, n)| format!("{p}: {n}")).collect();
    match sel {
        PortSelect::Only => match all.as_slice() {
            [(p, _)] => Ok(*p),
            _ => Err(DpdkError::NoPort {
                wanted: "(the only one)".into(),
                available: available(),
            }),
        },
        PortSelect::Nth(n) => all
            .get(*n)
            .map(|(p, _)| *p)
            .ok_or_else(|| DpdkError::NoPort {
                wanted: format!("number {n} (counting from 0)"),
                available: available(),
            }),
        PortSelect::Id(p) => all
            .iter()
            .find(|(q, _)| q == p)
            .map(|(q, _)| *q)
            .ok_or_else(|| DpdkError::NoPort {
                wanted: format!("id {p}"),
                available: available(),
            }),
        PortSelect::Name(n) => {
            let c = CString::new(n.as_str())
                .map_err(|_| DpdkError::Config(format!("port name {n:?} has a NUL")))?;
            let mut id = 0u16;
            // SAFETY: c is NUL-terminated; id is a valid out-pointer.
            let r = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
            if r == 0 {
                Ok(id)
            } else {
                Err(DpdkError::NoPort {
                    wanted: format!("named {n:?}"),
                    available: available(),
                })
            }
        }
    }
}

impl DpdkPort {
    /// Initialises the EAL (first call in the process), configures the port
    /// with `cfg.queues` rx/tx queue pairs (one mbuf pool each) and starts
    /// it. `cfg.queue` is ignored here. Every failure is an error naming the
    /// step and what to check; nothing panics.
    pub fn open(cfg: DpdkConfig) -> Result<Self, DpdkError> {
        if cfg.queues == 0 {
            return Err(DpdkError::Config("queues must be at least 1".into()));
        }
        if cfg.max_batch == 0 || cfg.max_batch > 512 {
            return Err(DpdkError::Config("max_batch must be 1..=512".into()));
        }
        let max_udp_payload = icx_core::max_udp_payload(cfg.mtu, false);
        if max_udp_payload == 0 {
            return Err(DpdkError::Config(format!("MTU {} is too small", cfg.mtu)));
        }
        eal::init(&cfg.eal)?;
        let port = select_port(&cfg.port)?;
        let name = port_name(port).unwrap_or_default();
        let claim = PortClaim::take(port, &name)?;

        // SAFETY: zeroed rte_eth_dev_info is a valid out-parameter.
        let mut dev: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: valid port id and out-pointer.
        let r = unsafe { sys::rte_eth_dev_info_get(port, &mut dev) };
        if r != 0 {
            return Err(port_err(port, "rte_eth_dev_info_get", r));
        }
        let driver = if dev.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: the driver name is a static NUL-terminated string.
            unsafe { CStr::from_ptr(dev.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        if dev.max_rx_queues < cfg.queues || dev.max_tx_queues < cfg.queues {
            return Err(DpdkError::Config(format!(
                "port {port} ({name}, {driver}) has {} rx / {} tx queues, {} wanted",
                dev.max_rx_queues, dev.max_tx_queues, cfg.queues
            )));
        }
        let room = cfg.mbuf_data_room();
        let frame = cfg.mtu + net::ETH_HDR_LEN;
        if usize::from(room) < frame {
            return Err(DpdkError::Config(format!(
                "mbuf data room {room} cannot hold a {frame}-byte frame (MTU {})",
                cfg.mtu
            )));
        }

        // Checksum offloads, when asked for and offered.
        let want = cfg.checksum_offload;
        let tx_csum = TxChecksums {
            ip_offload: want && dev.tx_offload_capa & flags::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM != 0,
            udp_offload: want && dev.tx_offload_capa & flags::RTE_ETH_TX_OFFLOAD_UDP_CKSUM != 0,
        };
        let rx_both = flags::RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | flags::RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
        let rx_csum_offload = want && dev.rx_offload_capa & rx_both == rx_both;

        // SAFETY: DPDK's examples zero rte_eth_conf for defaults.
        let mut conf: sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        if tx_csum.ip_offload {
            conf.txmode.offloads |= flags::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
        }
        if tx_csum.udp_offload {
            conf.txmode.offloads |= flags::RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
        }
        if rx_csum_offload {
            conf.rxmode.offloads |= rx_both;
        }
        // Set the MTU through ethdev only where the driver allows it;
        // af_packet reports a 1518 maximum but carries what the kernel
        // interface's MTU allows, so there it is left alone.
        // (ethdev also checks mtu + 18 bytes of Ethernet overhead against
        // max_rx_pktlen: af_packet reports a large max_mtu but 1518 there.)
        let mtu_set = cfg.mtu as u64 <= u64::from(dev.max_mtu)
            && cfg.mtu >= usize::from(dev.min_mtu)
            && (cfg.mtu + 18) as u64 <= u64::from(dev.max_rx_pktlen);
        if mtu_set {
            conf.rxmode.mtu = cfg.mtu as u32;
        } else {
            tracing::info!(port, driver = %driver, mtu = cfg.mtu, max_mtu = dev.max_mtu, max_rx_pktlen = dev.max_rx_pktlen,
                "icx-dpdk: MTU not set through ethdev (over the driver's max_mtu); the device's own MTU must carry it (af_packet: the kernel interface MTU)");
        }
        // SAFETY: valid port, conf lives across the call.
        let r = unsafe { sys::rte_eth_dev_configure(port, cfg.queues, cfg.queues, &conf) };
        if r != 0 {
            return Err(port_err(port, "rte_eth_dev_configure", r));
        }
        let (mut nrx, mut ntx) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid port and out-pointers.
        let r = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(port, &mut nrx, &mut ntx) };
        if r != 0 {
            return Err(port_err(port, "rte_eth_dev_adjust_nb_rx_tx_desc", r));
        }
        // SAFETY: valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port) };

        let data_room = room + sys::RTE_PKTMBUF_HEADROOM as u16;
        let seq = POOL_SEQ.fetch_add(1, Ordering::Relaxed);
        let mut pools: Vec<*mut sys::rte_mempool> = Vec::with_capacity(usize::from(cfg.queues));
        let free_pools = |pools: &[*mut sys::rte_mempool]| {
            for &mp in pools {
                // SAFETY: created below and not used by a started port.
                unsafe { sys::rte_mempool_free(mp) };
            }
        };
        for q in 0..cfg.queues {
            let pool_name = CString::new(format!("icx_p{port}q{q}_{seq}")).expect("no NUL");
            // SAFETY: name is NUL-terminated; sizes are plain numbers.
            let mp = unsafe {
                sys::rte_pktmbuf_pool_create(
                    pool_name.as_ptr(),
                    cfg.mbufs,
                    256,
                    0,
                    data_room,
                    socket,
                )
            };
            if mp.is_null() {
                let e = eal::errno();
                free_pools(&pools);
                return Err(DpdkError::Port {
                    port,
                    step: "rte_pktmbuf_pool_create (mbufs)",
                    errno: e,
                    message: format!(
                        "{}: {} mbufs of {} bytes for queue {q}; with --no-huge raise -m, else reserve more hugepages",
                        strerror(e),
                        cfg.mbufs,
                        data_room
                    ),
                });
            }
            pools.push(mp);
        }
        // From here on, a failure must free the pools.
        let fail = |step: &'static str, r: i32| {
            let e = port_err(port, step, r);
            free_pools(&pools);
            e
        };
        for (q, &mp) in (0..cfg.queues).zip(&pools) {
            // SAFETY: valid port, queue index < configured; NULL conf = defaults.
            let r = unsafe {
                sys::rte_eth_rx_queue_setup(port, q, nrx, socket as u32, std::ptr::null(), mp)
            };
            if r != 0 {
                return Err(fail("rte_eth_rx_queue_setup", r));
            }
            // SAFETY: as above.
            let r = unsafe {
                sys::rte_eth_tx_queue_setup(port, q, ntx, socket as u32, std::ptr::null())
            };
            if r != 0 {
                return Err(fail("rte_eth_tx_queue_setup", r));
            }
        }
        // SAFETY: configured port with its queues set up.
        let r = unsafe { sys::rte_eth_dev_start(port) };
        if r != 0 {
            return Err(fail("rte_eth_dev_start", r));
        }
        if cfg.promiscuous {
            // SAFETY: started port.
            let r = unsafe { sys::rte_eth_promiscuous_enable(port) };
            if r != 0 {
                tracing::warn!(port, error = %strerror(-r), "icx-dpdk: promiscuous mode refused");
            }
        }
        // SAFETY: zeroed is a valid out-parameter.
        let mut ea: sys::rte_ether_addr = unsafe { std::mem::zeroed() };
        // SAFETY: valid port and out-pointer.
        let r = unsafe { sys::rte_eth_macaddr_get(port, &mut ea) };
        if r != 0 {
            // SAFETY: started by us, stopped before the pool goes.
            unsafe { sys::rte_eth_dev_stop(port) };
            return Err(fail("rte_eth_macaddr_get", r));
        }
        let port_mac = MacAddr(ea.addr_bytes);
        let mac = cfg.mac.unwrap_or(port_mac);
        let info = PortInfo {
            port,
            name,
            driver,
            mac: port_mac,
            max_mtu: dev.max_mtu,
            mtu_set,
            tx_checksum_offload: tx_csum,
            rx_checksum_offload: rx_csum_offload,
        };
        tracing::info!(?info, %mac, addr = %cfg.addr, mtu = cfg.mtu, queues = cfg.queues, "icx-dpdk: port started");
        let queues = cfg.queues;
        Ok(DpdkPort {
            shared: Arc::new(PortShared {
                port,
                queues,
                pools,
                info,
                mac,
                max_udp_payload,
                tx_csum,
                rx_csum_offload,
                claimed: (0..queues).map(|_| AtomicBool::new(false)).collect(),
                counters: (0..queues).map(|_| QueueCounters::default()).collect(),
                retired: Mutex::new(vec![DpdkStats::default(); usize::from(queues)]),
                learned: Mutex::new(Vec::new()),
                learned_version: AtomicU64::new(0),
                cfg,
                _claim: claim,
            }),
        })
    }

    pub fn queues(&self) -> u16 {
        self.shared.queues
    }

    pub fn port_info(&self) -> &PortInfo {
        &self.shared.info
    }

    pub fn mac(&self) -> MacAddr {
        self.shared.mac
    }

    /// Frames received and sent on queue `q` so far (live; updated once per
    /// burst by the queue's backend).
    pub fn queue_frames(&self, q: u16) -> (u64, u64) {
        let c = &self.shared.counters[usize::from(q)];
        (
            c.rx_frames.load(Ordering::Relaxed),
            c.tx_frames.load(Ordering::Relaxed),
        )
    }

    /// The summed final counters of queue `q`'s backends that were dropped.
    pub fn retired_stats(&self, q: u16) -> DpdkStats {
        self.shared
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())[usize::from(q)]
    }

    /// Mbufs out of all the queues' pools.
    pub fn mbufs_in_use(&self) -> u32 {
        self.shared
            .pools
            .iter()
            // SAFETY: live mempools of this port.
            .map(|&mp| unsafe { sys::rte_mempool_in_use_count(mp) })
            .sum()
    }

    pub fn port_stats(&self) -> PortStats {
        port_stats(self.shared.port)
    }
}

pub(crate) fn port_stats(port: u16) -> PortStats {
    // SAFETY: zeroed is a valid out-parameter.
    let mut s: sys::rte_eth_stats = unsafe { std::mem::zeroed() };
    // SAFETY: valid port and out-pointer.
    if unsafe { sys::rte_eth_stats_get(port, &mut s) } != 0 {
        return PortStats::default();
    }
    PortStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    }
}
