//! Raw bindings to the system DPDK, for icx's DPDK backend (`icx-dpdk`).
//!
//! Everything here exists only with the `dpdk` feature; without it the crate
//! is empty and its build script does nothing, so `cargo build --workspace`
//! needs no DPDK. With it, `build.rs` finds DPDK 22.11 through pkg-config,
//! generates bindings for an allowlist with bindgen (including bindgen's
//! layout asserts, which pin every generated struct's size and field offsets
//! to the headers it read), and compiles `shim/icx_dpdk_shim.c`: callable
//! wrappers (`icx_*`) for DPDK's static inline functions (rx/tx burst, mbuf
//! alloc/free/mtod/append, rte_errno) plus C static asserts pinning the
//! release (22.11), `struct rte_mbuf` offsets and the flag values below.
//!
//! Library requirement: DPDK 22.11 (Debian `libdpdk-dev`), libclang at build
//! time. Linked dynamically; the shared EAL loads its PMDs from its plugin
//! directory at run time.
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
#![allow(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "dpdk")]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}
#[cfg(feature = "dpdk")]
pub use generated::*;

/// Flag values that DPDK defines with function-like macros (`RTE_BIT64`),
/// which bindgen cannot evaluate. Each is checked against the headers by a
/// `_Static_assert` in the shim, so a mismatch fails the build.
pub mod flags {
    pub const RTE_ETH_RX_OFFLOAD_IPV4_CKSUM: u64 = 1 << 1;
    pub const RTE_ETH_RX_OFFLOAD_UDP_CKSUM: u64 = 1 << 2;
    pub const RTE_ETH_TX_OFFLOAD_IPV4_CKSUM: u64 = 1 << 1;
    pub const RTE_ETH_TX_OFFLOAD_UDP_CKSUM: u64 = 1 << 2;
    pub const RTE_ETH_TX_OFFLOAD_MULTI_SEGS: u64 = 1 << 15;
    pub const RTE_MBUF_F_RX_IP_CKSUM_MASK: u64 = (1 << 4) | (1 << 7);
    pub const RTE_MBUF_F_RX_IP_CKSUM_BAD: u64 = 1 << 4;
    pub const RTE_MBUF_F_RX_IP_CKSUM_GOOD: u64 = 1 << 7;
    pub const RTE_MBUF_F_RX_L4_CKSUM_MASK: u64 = (1 << 3) | (1 << 8);
    pub const RTE_MBUF_F_RX_L4_CKSUM_BAD: u64 = 1 << 3;
    pub const RTE_MBUF_F_RX_L4_CKSUM_GOOD: u64 = 1 << 8;
    pub const RTE_MBUF_F_TX_UDP_CKSUM: u64 = 3 << 52;
    pub const RTE_MBUF_F_TX_IP_CKSUM: u64 = 1 << 54;
    pub const RTE_MBUF_F_TX_IPV4: u64 = 1 << 55;
}

/// The release the bindings are pinned to.
pub const PINNED_VERSION: &str = "22.11";

// Rust-side layout pins for what icx-dpdk reads directly, on top of
// bindgen's own per-struct layout asserts.
#[cfg(feature = "dpdk")]
const _: () = {
    assert!(std::mem::size_of::<rte_mbuf>() == 128);
    assert!(std::mem::align_of::<rte_mbuf>() == 64);
    assert!(std::mem::size_of::<rte_ether_addr>() == 6);
    assert!(RTE_PKTMBUF_HEADROOM == 128);
};

#[cfg(all(test, feature = "dpdk"))]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn shim_headers_are_22_11() {
        // SAFETY: pure functions without arguments.
        let v = unsafe { icx_rte_version_headers() };
        assert_eq!(v >> 24, 22, "year");
        assert_eq!((v >> 16) & 0xff, 11, "month");
        // SAFETY: rte_version returns a static NUL-terminated string.
        let lib = unsafe { CStr::from_ptr(rte_version()) };
        let lib = lib.to_string_lossy();
        assert!(lib.contains("22.11"), "runtime library is {lib}");
    }
}
