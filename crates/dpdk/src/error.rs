//! Errors of EAL and port setup, each with what to do about it.
#![deny(unsafe_code)]

use std::fmt;
use std::io;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DpdkError {
    /// Built without the `dpdk` feature.
    NotBuilt,
    /// `rte_eal_init` failed; `errno` is rte_errno, `hint` says what to check.
    Eal {
        errno: i32,
        message: String,
        hint: &'static str,
    },
    /// EAL was already initialised in this process with other arguments
    /// (DPDK allows one `rte_eal_init` per process).
    EalArgsDiffer {
        first: Vec<String>,
        now: Vec<String>,
    },
    /// The EAL probed no port matching the selection.
    NoPort {
        wanted: String,
        available: Vec<String>,
    },
    /// A port or pool call failed.
    Port {
        port: u16,
        step: &'static str,
        errno: i32,
        message: String,
    },
    /// The configuration cannot work with this port.
    Config(String),
    /// Opening link `link` of several failed (the others were closed).
    Link { link: usize, error: Box<DpdkError> },
}

impl DpdkError {
    /// This error, said of link `link` of a node's several.
    pub fn for_link(self, link: usize) -> Self {
        DpdkError::Link {
            link,
            error: Box::new(self),
        }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpdkError::NotBuilt => write!(
                f,
                "icx-dpdk was built without the `dpdk` feature (rebuild with --features dpdk; needs libdpdk-dev)"
            ),
            DpdkError::Eal {
                errno,
                message,
                hint,
            } => write!(
                f,
                "DPDK EAL initialisation failed: {message} (rte_errno {errno}); {hint}"
            ),
            DpdkError::EalArgsDiffer { first, now } => write!(
                f,
                "DPDK EAL already initialised in this process with {first:?}; cannot re-initialise with {now:?} (one EAL per process: run another process)"
            ),
            DpdkError::NoPort { wanted, available } => write!(
                f,
                "no DPDK port {wanted}; the EAL probed {}: check the -a/--vdev EAL arguments, that the NIC is bound to vfio-pci (hw/bind-vfio.sh) or that the vdev's interface exists in this network namespace",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ),
            DpdkError::Port {
                port,
                step,
                errno,
                message,
            } => write!(f, "DPDK port {port}: {step} failed: {message} (errno {errno})"),
            DpdkError::Config(m) => write!(f, "DPDK backend configuration: {m}"),
            DpdkError::Link { link, error } => write!(f, "interconnect link {link}: {error}"),
        }
    }
}

impl std::error::Error for DpdkError {}

impl DpdkError {
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            DpdkError::NotBuilt => io::ErrorKind::Unsupported,
            DpdkError::Eal { errno: 13, .. } => io::ErrorKind::PermissionDenied,
            DpdkError::NoPort { .. } => io::ErrorKind::NotFound,
            DpdkError::Config(_) | DpdkError::EalArgsDiffer { .. } => io::ErrorKind::InvalidInput,
            DpdkError::Link { error, .. } => error.io_kind(),
            _ => io::ErrorKind::Other,
        }
    }
}

impl From<DpdkError> for io::Error {
    fn from(e: DpdkError) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}

/// What to check when `rte_eal_init` fails with `errno`.
#[cfg(feature = "dpdk")]
pub(crate) fn eal_hint(errno: i32, args: &[String]) -> &'static str {
    let no_huge = args.iter().any(|a| a == "--no-huge");
    // EAL reports missing hugepages as EACCES, ENOMEM or ENOENT depending
    // on the step that failed; look for ourselves.
    if !no_huge && matches!(errno, 2 | 12 | 13) && !hugepages_ready() {
        return "no hugepages reserved or no hugetlbfs mounted: run hw/hugepages.sh (e.g. 256 x 2 MiB), or pass --no-huge -m 256 for tests";
    }
    match errno {
        13 => "permission denied: run as root, or grant CAP_SYS_ADMIN/CAP_IPC_LOCK/CAP_NET_RAW and access to /dev/hugepages and /dev/vfio",
        12 | 2 if !no_huge => "no usable hugepages: reserve some (hw/hugepages.sh, e.g. 256 x 2 MiB) and mount hugetlbfs, or pass --no-huge -m 256 for tests",
        12 => "out of memory: lower -m or the mbuf count",
        19 => "no device: check -a <pci addr> / --vdev and the driver binding (hw/bind-vfio.sh)",
        114 => "EAL already initialised in this process",
        22 => "invalid EAL arguments (see the EAL log above)",
        95 => "unsupported: this CPU or kernel lacks something the EAL needs (see the EAL log)",
        _ => "see the EAL log above",
    }
}

/// Whether the host has free hugepages and a hugetlbfs mount.
pub fn hugepages_ready() -> bool {
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        })
        .unwrap_or(false);
    free > 0 && mounted
}
