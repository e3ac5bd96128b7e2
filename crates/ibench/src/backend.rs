//! Backend selection: the one place that knows which datagram backends exist.

use clap::ValueEnum;
use icx_core::Backend;
use icx_driver::{FaultConfig, FaultInjector, LoopbackNet};
use icx_uring::{UringConfig, ZeroCopy};
use serde::Serialize;
use std::net::SocketAddr;

/// Backends `--backend` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// io_uring (falls back to plain sockets, logged, when the kernel refuses it).
    Uring,
    /// Plain kernel UDP sockets (recvmmsg/sendmmsg).
    Sockets,
    /// In-process loopback network (only with `ibench loopback`).
    Loopback,
    /// DPDK (needs a build with the `dpdk` feature).
    Dpdk,
}

/// `--zero-copy` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZcMode {
    /// SEND_ZC for large sends, switched off when the kernel copies anyway.
    Auto,
    /// SEND_ZC for sends of 16 KiB and more, always.
    On,
    Off,
}

/// On/off toggles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    On,
    Off,
}

impl BackendOpts {
    /// The driver's batching, with the urgent-lane chunks asked for.
    pub fn driver_config(&self) -> icx_driver::DriverConfig {
        let mut d = icx_driver::DriverConfig::default();
        if let Some(n) = self.urgent_chunk {
            d.urgent_chunk = n;
        }
        if let Some(n) = self.send_chunk {
            d.send_chunk = n;
        }
        d
    }
}

impl BackendOpts {
    /// Sets what these options say of the transport: congestion control,
    /// its target, and the links' mode and timeout.
    pub fn apply_transport(&self, cfg: &mut icx_transport::Config) {
        cfg.cc.enabled = self.cc;
        if let Some(t) = self.cc_target {
            cfg.cc.target_delay = icx_core::Duration::from_nanos(t.as_nanos() as u64);
        }
        if let Some(m) = self.link_mode {
            cfg.link_mode = m;
        }
        if let Some(t) = self.link_timeout {
            cfg.link_timeout = icx_core::Duration::from_nanos(t.as_nanos() as u64);
        }
    }
}

impl Toggle {
    pub fn on(self) -> bool {
        self == Toggle::On
    }
}

/// Everything that decides how a backend is opened.
#[derive(Clone, Debug)]
pub struct BackendOpts {
    /// Frame authentication (`--key-file`, `--encrypt`, `--cipher`).
    pub auth: Option<icx_wire::Keyring>,
    pub kind: BackendKind,
    /// EAL arguments (`--backend dpdk`).
    pub eal: Option<String>,
    /// The client's own addresses, one per link (`--backend dpdk`).
    pub local: Vec<SocketAddr>,
    /// IP MTU framed for (a DPDK port advertises `mtu - 28` of UDP payload).
    pub mtu: usize,
    pub zero_copy: ZcMode,
    pub gso: bool,
    pub gro: bool,
    pub busy_poll: bool,
    /// io_uring: spin this long in a wait before sleeping.
    pub spin: std::time::Duration,
    /// The transport's block-channel congestion control (`--cc`).
    pub cc: bool,
    /// A second socket for the urgent lane (`--urgent-lane`).
    pub urgent_lane: bool,
    /// The driver's `urgent_chunk` and `send_chunk` (`--urgent-chunk`,
    /// `--send-chunk`), if not its defaults.
    pub urgent_chunk: Option<usize>,
    pub send_chunk: Option<usize>,
    /// `--cc-target-us`: the controller's target queueing delay.
    pub cc_target: Option<std::time::Duration>,
    /// Run the per-core runtime with this many core threads (`--cores`)
    /// instead of the single-thread driver.
    pub cores: Option<usize>,
    /// Fraction of datagrams dropped each way (`--loss`), 0 for none.
    pub loss: f64,
    pub seed: u64,
    /// `--link-mode`: how a peer's links share its traffic (default: the
    /// transport's).
    pub link_mode: Option<icx_transport::LinkMode>,
    /// `--link-timeout`: how long a link's keepalives may go unanswered.
    pub link_timeout: Option<std::time::Duration>,
}

/// The features a backend ended up with, as reported.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackendInfo {
    /// The backend actually running ("uring", "sockets", "loopback").
    pub name: String,
    /// Why it is not the one asked for, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub gso: bool,
    pub gro: bool,
    pub zero_copy_send: bool,
    pub busy_poll: bool,
    /// Microseconds an io_uring wait spins before sleeping (0 elsewhere).
    pub spin_us: u64,
    pub registered_buffers: bool,
    pub max_udp_payload: usize,
    /// The block channel's congestion control (`--cc`).
    pub congestion_control: bool,
    /// Frame protection, as the report names it ("off", the AEAD, "+encrypt").
    pub auth: String,
    /// The urgent lane is in force (`--urgent-lane on` and the backend
    /// could open it; the in-process loopback net has one too).
    pub urgent_lane: bool,
    /// Core threads of the per-core runtime (`--cores`); absent for the
    /// single-thread driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<usize>,
}

pub struct Opened {
    pub backend: Box<dyn Backend + Send>,
    pub info: BackendInfo,
}

/// With the runtime on several cores, the kernel steers each datagram to the
/// socket of the core that owns its sender (the runtime binds core k's
/// socket k-th, as the steering program needs), so no core receives for
/// another and hands the datagram over.
fn steer(opts: &BackendOpts) -> usize {
    opts.cores.filter(|&n| n > 1).unwrap_or(0)
}

/// The DPDK arguments make sense together (checked before anything binds).
pub fn check_dpdk_args(opts: &BackendOpts) -> Result<(), String> {
    if opts.kind != BackendKind::Dpdk {
        if opts.eal.is_some() {
            return Err("--eal only applies to --backend dpdk".into());
        }
        return Ok(());
    }
    if !icx_dpdk::BUILT {
        return Err(
            "--backend dpdk: ibench was not built with the dpdk feature (cargo build -p ibench --features dpdk; or use uring or sockets)"
                .into(),
        );
    }
    if opts.eal.is_none() {
        return Err("--backend dpdk needs --eal \"EAL ARGS\" (see hw/README.md)".into());
    }
    Ok(())
}

/// Opens the backend `opts` asks for, with one link bound to each of
/// `addrs` (link 0 first), wrapped in a fault injector when `--loss` is set.
/// `net` is the in-process network for `--backend loopback`.
pub fn open(
    opts: &BackendOpts,
    addrs: &[SocketAddr],
    net: Option<&LoopbackNet>,
) -> Result<Opened, String> {
    if addrs.is_empty() {
        return Err("no address to bind".into());
    }
    let shown = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let (backend, name, fallback): (Box<dyn Backend + Send>, &str, Option<String>) = match opts.kind
    {
        BackendKind::Dpdk => {
            check_dpdk_args(opts)?;
            let eal = icx_dpdk::EalArgs::parse(opts.eal.as_deref().unwrap_or_default());
            let mut cfgs = Vec::with_capacity(addrs.len());
            for (k, &a) in addrs.iter().enumerate() {
                let SocketAddr::V4(v4) = a else {
                    return Err(format!("--backend dpdk needs an IPv4 address, not {a}"));
                };
                if v4.port() == 0 || v4.ip().is_unspecified() {
                    return Err(format!(
                        "--backend dpdk owns its address: give a concrete IP and port, not {a}"
                    ));
                }
                let mut c = icx_dpdk::DpdkConfig::new(eal.clone(), v4, opts.mtu);
                if addrs.len() > 1 {
                    // Link k drives the k-th port the EAL probed.
                    c.port = icx_dpdk::PortSelect::Nth(k);
                }
                cfgs.push(c);
            }
            let b = icx_dpdk::open_links(cfgs)
                .map_err(|e| format!("cannot open DPDK backend on {shown}: {e}"))?;
            (b, "dpdk", None)
        }
        BackendKind::Loopback => {
            let net = net.ok_or(
                "--backend loopback is the in-process network: it only works with `ibench loopback <verb>`",
            )?;
            let b = net
                .bind_links(addrs, opts.urgent_lane)
                .map_err(|e| format!("loopback bind {shown}: {e}"))?;
            (Box::new(b), "loopback", None)
        }
        BackendKind::Sockets => {
            let mut sc = icx_udp::SocketConfig::with_links(addrs)
                .map_err(|e| format!("--bind {shown}: {e}"))?;
            sc.steer_cores = steer(opts);
            sc.urgent_lane = opts.urgent_lane;
            let b = icx_udp::SocketBackend::bind(sc)
                .map_err(|e| format!("cannot bind UDP socket {shown}: {e}"))?;
            (Box::new(b), "sockets", None)
        }
        BackendKind::Uring => {
            let mut cfg =
                UringConfig::with_links(addrs).map_err(|e| format!("--bind {shown}: {e}"))?;
            cfg.zero_copy = match opts.zero_copy {
                ZcMode::Auto => ZeroCopy::Auto,
                ZcMode::On => ZeroCopy::Threshold(icx_uring::DEFAULT_ZC_THRESHOLD),
                ZcMode::Off => ZeroCopy::Off,
            };
            cfg.gso = opts.gso;
            cfg.gro = opts.gro;
            cfg.busy_poll = opts.busy_poll;
            cfg.spin = opts.spin;
            cfg.steer_cores = steer(opts);
            cfg.urgent_lane = opts.urgent_lane;
            match icx_uring::open(cfg)
                .map_err(|e| format!("cannot open io_uring backend on {shown}: {e}"))?
            {
                icx_uring::Opened::Uring(b) => (b, "uring", None),
                icx_uring::Opened::Sockets(b, why) => (b, "sockets", Some(why)),
            }
        }
    };
    let caps = backend.capabilities();
    let info = BackendInfo {
        name: name.to_string(),
        fallback,
        gso: caps.gso,
        gro: caps.gro,
        zero_copy_send: caps.zero_copy_send,
        busy_poll: opts.busy_poll,
        spin_us: if name == "uring" && !opts.busy_poll {
            opts.spin.as_micros() as u64
        } else {
            0
        },
        registered_buffers: caps.registered_buffers,
        max_udp_payload: caps.max_udp_payload,
        congestion_control: opts.cc,
        auth: icx_driver::keys::protection(opts.auth.as_ref()),
        urgent_lane: caps.urgent_lane,
        cores: opts.cores,
    };
    let backend: Box<dyn Backend + Send> = if opts.loss > 0.0 {
        Box::new(FaultInjector::new(
            backend,
            FaultConfig {
                tx_drop: opts.loss,
                rx_drop: opts.loss,
                ..FaultConfig::none(opts.seed)
            },
        ))
    } else {
        backend
    };
    Ok(Opened { backend, info })
}
