//! The command line: verbs, their options, and the parsers of option values.

use crate::backend::{BackendKind, BackendOpts, Toggle, ZcMode};
use crate::Failure;
use clap::{Args, Parser, Subcommand};
use icx_core::Channel;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "ibench",
    version,
    about = "Interconnect latency/throughput tool for icx: sockperf-style verbs, block-shaped traffic, MTU and reliability counters",
    after_help = "Every `ibench server` serves icx on PORT and a plain-UDP baseline echo on PORT+1.\n\
                  Quick check on this host: `ibench loopback ping-pong`.\n\
                  JSON schema and examples: crates/ibench/README.md"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Serve any client: icx on --bind, plain-UDP baseline on the next port.
    Server(ServerArgs),
    /// Round-trip latency: request and echo of -m bytes.
    PingPong(RunArgs),
    /// One-way throughput with a window of --inflight messages; latency is
    /// per-message delivery (send to full ack).
    Throughput(RunArgs),
    /// Ping-pong latency while a one-way flow runs at --rate or --bandwidth.
    UnderLoad(RunArgs),
    /// Block requests answered by --block-size blocks ('gc cr block 2-way');
    /// with --three-way through a forwarding server to a holder.
    Block(RunArgs),
    /// Ping-pong over --sizes.
    Sweep(RunArgs),
    /// Name each host-visible cause of 'gc block lost' (MOS 1674865.1):
    /// counters and settings, probes against --peer servers; exit 1 on FAIL.
    Doctor(crate::doctor::DoctorArgs),
    /// Run server(s) and client on 127.0.0.1 in this process.
    Loopback {
        #[command(subcommand)]
        verb: Option<LoopVerb>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum LoopVerb {
    PingPong(RunArgs),
    Throughput(RunArgs),
    UnderLoad(RunArgs),
    Block(RunArgs),
    Sweep(RunArgs),
}

#[derive(Args, Debug, Clone)]
pub(crate) struct BackendArgs {
    /// Datagram backend: uring (falls back to sockets if the kernel refuses
    /// io_uring), sockets, loopback (in-process; `ibench loopback` only), dpdk.
    #[arg(long, value_enum, default_value_t = BackendKind::Uring)]
    pub(crate) backend: BackendKind,
    /// io_uring zero-copy send (SEND_ZC): auto, on, off.
    #[arg(long, value_enum, default_value_t = ZcMode::Auto)]
    pub(crate) zero_copy: ZcMode,
    /// io_uring UDP GSO for fragment trains.
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub(crate) gso: Toggle,
    /// io_uring UDP GRO on receive.
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub(crate) gro: Toggle,
    /// Spin instead of sleeping while waiting for datagrams (one busy core per side).
    #[arg(long)]
    pub(crate) busy_poll: bool,
    /// Without --busy-poll, how long an io_uring wait spins before it sleeps
    /// (0: sleep at once). Request/response traffic then never sleeps between
    /// messages; an idle side still does.
    #[arg(long, value_name = "US", default_value_t = icx_uring::DEFAULT_SPIN.as_micros() as u64)]
    pub(crate) spin_us: u64,
    /// Run the per-core runtime with N core threads on this side (and, for
    /// `ibench loopback`, on the in-process server), instead of one thread
    /// running the transport itself. io_uring or sockets only.
    #[arg(long, value_name = "N", value_parser = parse_cores)]
    pub(crate) cores: Option<usize>,
    /// Delay-based congestion control of the block channel (on: block
    /// traffic keeps the queue it builds near the controller's target).
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub(crate) cc: Toggle,
    /// The urgent lane: a second socket on the same address that heartbeat,
    /// control and ack-only frames travel and are received on first (off:
    /// one socket, one FIFO for every frame, for A/B runs).
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub(crate) urgent_lane: Toggle,
    /// With the urgent lane: datagrams received per look at it (default:
    /// the driver's, 16).
    #[arg(long, value_name = "N")]
    pub(crate) urgent_chunk: Option<usize>,
    /// With the urgent lane: block frames sent between looks at it (0: no
    /// looks; default: the driver's, 32). Single-thread driver only.
    #[arg(long, value_name = "N")]
    pub(crate) send_chunk: Option<usize>,
    /// The congestion controller's target: queueing delay, in microseconds,
    /// block traffic is held near (default: the transport's).
    #[arg(long, value_name = "US")]
    pub(crate) cc_target_us: Option<u64>,
    /// DPDK EAL arguments for `--backend dpdk`, e.g.
    /// "--no-huge --no-pci -m 256 --file-prefix ib1 --vdev=net_af_packet0,iface=veth0".
    #[arg(long, value_name = "EAL ARGS", allow_hyphen_values = true)]
    pub(crate) eal: Option<String>,
    /// Client's own address for `--backend dpdk` (DPDK owns this IPv4
    /// address and UDP port on its port); other backends pick one. With
    /// several --peer addresses, one per link (comma-separated, link 0
    /// first), link k on the k-th port the EAL probed.
    #[arg(long, value_name = "IP:PORT", value_delimiter = ',')]
    pub(crate) local: Vec<SocketAddr>,
    /// Authenticate every frame with the cluster key in FILE instead of
    /// CRC32C: 32 bytes, raw, as 64 hex digits or base64; owned by this
    /// user, mode 0600. Both ends need the same key; frames without it are
    /// dropped and counted (rejected_auth).
    #[arg(long, value_name = "FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// The id (0-255) frames sealed with --key-file carry.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) key_id: u8,
    /// Encrypt payloads as well as authenticating them (needs --key-file).
    #[arg(long)]
    pub(crate) encrypt: bool,
    /// AEAD to seal with: aes-256-gcm or chacha20-poly1305 (default:
    /// AES-256-GCM where the CPU has AES instructions, else ChaCha20).
    #[arg(long, value_parser = parse_cipher)]
    pub(crate) cipher: Option<icx_wire::Cipher>,
    /// How a peer's links share its traffic: active-passive (the healthy
    /// link of highest priority carries all, ties to the lowest) or spread
    /// (every healthy link, by weight over RTT). Default: the transport's.
    #[arg(long, value_parser = parse_link_mode)]
    pub(crate) link_mode: Option<icx_transport::LinkMode>,
    /// Milliseconds a link's keepalives may go unanswered before it is
    /// taken out of service (default: the transport's).
    #[arg(long, value_name = "MS")]
    pub(crate) link_timeout: Option<u64>,
}

pub(crate) fn parse_link_mode(s: &str) -> Result<icx_transport::LinkMode, String> {
    icx_transport::LinkMode::parse(s.trim())
        .ok_or_else(|| format!("'{s}' is not a link mode (active-passive or spread)"))
}

pub(crate) fn parse_cipher(s: &str) -> Result<icx_wire::Cipher, String> {
    icx_wire::Cipher::from_name(s.trim())
        .ok_or_else(|| format!("'{s}' is not a cipher (aes-256-gcm or chacha20-poly1305)"))
}

impl BackendArgs {
    pub(crate) fn opts(&self, loss: f64, seed: u64, mtu: usize) -> Result<BackendOpts, Failure> {
        let auth = match &self.key_file {
            Some(f) => Some(
                icx_driver::keys::load_keyring(&icx_driver::keys::KeySpec {
                    key_file: f,
                    key_id: self.key_id,
                    next_key_file: None,
                    next_key_id: None,
                    cipher: self.cipher,
                    encrypt: self.encrypt,
                })
                .map_err(|e| Failure::Usage(e.message))?,
            ),
            None if self.encrypt || self.cipher.is_some() => {
                return Err(Failure::Usage(
                    "--encrypt and --cipher need --key-file FILE (the cluster key)".into(),
                ))
            }
            None => None,
        };
        Ok(BackendOpts {
            auth,
            kind: self.backend,
            eal: self.eal.clone(),
            local: self.local.clone(),
            mtu,
            zero_copy: self.zero_copy,
            gso: self.gso.on(),
            gro: self.gro.on(),
            busy_poll: self.busy_poll,
            spin: Duration::from_micros(self.spin_us),
            cc: self.cc.on(),
            urgent_lane: self.urgent_lane.on(),
            urgent_chunk: self.urgent_chunk,
            send_chunk: self.send_chunk,
            cc_target: self.cc_target_us.map(Duration::from_micros),
            cores: self.cores,
            loss,
            seed,
            link_mode: self.link_mode,
            link_timeout: self.link_timeout.map(Duration::from_millis),
        })
    }
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ServerArgs {
    /// Address(es) to serve icx on, one interconnect link each (up to 4,
    /// comma-separated). `0.0.0.0:PORT` (a fixed port) binds a link to
    /// each local IPv4 address that is up (non-loopback ones first, then
    /// 127.0.0.1; at most 4), so every reply leaves by the link its
    /// request came in by. The baseline listens on PORT+1.
    #[arg(long, default_value = "0.0.0.0:7470")]
    pub(crate) bind: String,
    /// This server's icx node id (a 3-way holder needs one different from the forwarder's).
    #[arg(long, default_value_t = 1)]
    pub(crate) node: u16,
    /// IP MTU the server frames its replies for (match the clients' --mtu).
    #[arg(long, default_value_t = 1500)]
    pub(crate) mtu: usize,
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    /// Pin the serving thread to this CPU.
    #[arg(long)]
    pub(crate) cpu: Option<usize>,
    /// Print counters every 5 seconds.
    #[arg(long, short)]
    pub(crate) verbose: bool,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct RunArgs {
    /// Server address HOST:PORT (IPv4 or IPv6); several (A,B, up to 4)
    /// are the server's addresses on as many interconnect links, link 0
    /// first: the client binds a link to the local address that reaches
    /// each. Not used by `ibench loopback`.
    #[arg(long)]
    pub(crate) peer: Option<String>,
    /// IP MTU of each link, comma-separated, link 0 first (default: --mtu
    /// for every link).
    #[arg(long, value_delimiter = ',')]
    pub(crate) link_mtu: Option<Vec<usize>>,
    /// The server's icx node id.
    #[arg(long, default_value_t = 1)]
    pub(crate) server_node: u16,
    /// block: the 3-way pattern: the request goes to --peer (forwarder), which
    /// forwards it to --holder, which ships the block to this client.
    #[arg(long)]
    pub(crate) three_way: bool,
    /// block --three-way: the holder server HOST:PORT.
    #[arg(long)]
    pub(crate) holder: Option<String>,
    /// block --three-way: the holder's icx node id (start it with --node N).
    #[arg(long, default_value_t = 2)]
    pub(crate) holder_node: u16,
    /// Measured seconds (sweep: per size). Default 5 (sweep: 1 per size).
    #[arg(short = 't', long = "time")]
    pub(crate) time: Option<f64>,
    /// Measured messages instead of a duration (sweep: per size).
    #[arg(long, conflicts_with = "time")]
    pub(crate) count: Option<u64>,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 0.25)]
    pub(crate) warmup: f64,
    /// Message bytes (ping-pong, throughput, under-load pings; block: the
    /// request). Suffixes K and M are powers of 1024. At least 32.
    #[arg(short = 'm', long = "msg-size", value_parser = parse_size, default_value = "64")]
    pub(crate) msg_size: usize,
    /// block: bytes of each block (8K, 16K, 32K or any up to 1M).
    #[arg(long, value_parser = parse_size, default_value = "8K")]
    pub(crate) block_size: usize,
    /// sweep: message sizes, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "64,256,1K,4K,8K,16K,32K,64K")]
    pub(crate) sizes: Vec<usize>,
    /// IP MTU to frame for: 1500, 9000 or any.
    #[arg(long, default_value_t = 1500)]
    pub(crate) mtu: usize,
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    /// Messages in flight (default: 1, throughput 64).
    #[arg(long)]
    pub(crate) inflight: Option<usize>,
    /// under-load: background messages per second.
    #[arg(long, conflicts_with = "bandwidth")]
    pub(crate) rate: Option<f64>,
    /// under-load: background bandwidth in bits/s (suffixes K, M, G are
    /// powers of 1000), converted to a rate of --load-size messages.
    #[arg(long, value_parser = parse_bandwidth)]
    pub(crate) bandwidth: Option<f64>,
    /// under-load: bytes of each background message.
    #[arg(long, value_parser = parse_size, default_value = "8K")]
    pub(crate) load_size: usize,
    /// icx channel of the measured requests and their replies: heartbeat,
    /// control or block (default: heartbeat for under-load, else control).
    #[arg(long, value_parser = parse_channel)]
    pub(crate) ping_channel: Option<Channel>,
    /// under-load: icx channel of the background flow.
    #[arg(long, value_parser = parse_channel, default_value = "block")]
    pub(crate) load_channel: Channel,
    /// Percent of datagrams the client drops each way (fault injection).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) loss: f64,
    /// Seed for --loss.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Pin the client thread to this CPU.
    #[arg(long)]
    pub(crate) cpu: Option<usize>,
    /// loopback: pin the server thread(s) to this CPU.
    #[arg(long)]
    pub(crate) server_cpu: Option<usize>,
    /// CLIENT,SERVER CPUs (shorthand for --cpu and --server-cpu).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["cpu", "server_cpu"])]
    pub(crate) cpus: Option<Vec<usize>>,
    /// Also run the same pattern over plain kernel UDP and print the ratios
    /// (the UDP sockets wait as icx does: --spin-us, --busy-poll).
    #[arg(long)]
    pub(crate) baseline: bool,
    /// The baseline echo's address (default: the server's PORT+1).
    #[arg(long)]
    pub(crate) baseline_peer: Option<String>,
    /// Print one JSON object on stdout.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) json: bool,
    /// Print CSV: a header line and one row per result.
    #[arg(long)]
    pub(crate) csv: bool,
    /// Write an HdrHistogram interval log (one histogram per second) here.
    #[arg(long)]
    pub(crate) hlog: Option<PathBuf>,
    /// Draw a latency histogram and percentile curve (.svg or .png).
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
    /// Seconds to wait for the server's first answer.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) connect_timeout: f64,
    /// No progress line.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

pub(crate) fn parse_cores(s: &str) -> Result<usize, String> {
    if s.contains(',') {
        return Err(format!(
            "'{s}': --cores is the number of runtime cores per side (pin the threads with --cpus CLIENT,SERVER)"
        ));
    }
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=icx_driver::runtime::MAX_CORES).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a core count (1..={})",
            icx_driver::runtime::MAX_CORES
        )),
    }
}

pub(crate) fn parse_channel(s: &str) -> Result<Channel, String> {
    Channel::ALL
        .into_iter()
        .find(|c| c.name() == s.trim())
        .ok_or_else(|| format!("'{s}' is not a channel (heartbeat, control or block)"))
}

pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1usize << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        _ => (t, 1),
    };
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("'{s}' is not a size (bytes, or with a K or M suffix)"))
}

pub(crate) fn parse_bandwidth(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches("bit/s").trim_end_matches("bps");
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v * mul),
        _ => Err(format!(
            "'{s}' is not a bandwidth in bits/s (e.g. 500M, 1G)"
        )),
    }
}
