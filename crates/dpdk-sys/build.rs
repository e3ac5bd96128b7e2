//! Without the `dpdk` feature this does nothing, so the workspace builds on
//! hosts without DPDK. With it: finds DPDK through pkg-config (22.11 only:
//! the layout asserts are pinned to it), generates bindings with bindgen for
//! an allowlist of functions and types, and compiles the C shim that exposes
//! DPDK's static inline functions (rx/tx burst, mbuf helpers, rte_errno).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::env;
    use std::path::PathBuf;

    /// The DPDK release the bindings, the shim's static asserts and the
    /// constants in `src/lib.rs` were checked against.
    const PINNED: &str = "22.11";
    /// Set to `1` to build against another release anyway (the shim's
    /// static asserts still catch layout changes of what icx touches).
    const ALLOW_ENV: &str = "ICX_DPDK_ALLOW_ANY_VERSION";

    fn fail(msg: &str) -> ! {
        eprintln!("icx-dpdk-sys: {msg}");
        panic!("icx-dpdk-sys: {msg}");
    }

    pub fn build() {
        println!("cargo:rerun-if-changed=shim/icx_dpdk_shim.c");
        println!("cargo:rerun-if-changed=shim/icx_dpdk_shim.h");
        println!("cargo:rerun-if-env-changed={ALLOW_ENV}");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

        let lib = pkg_config::Config::new()
            .atleast_version("22.11")
            .probe("libdpdk")
            .unwrap_or_else(|e| {
                fail(&format!(
                    "the `dpdk` feature needs DPDK's development files visible to pkg-config \
                     as `libdpdk` (Debian/Ubuntu: apt-get install libdpdk-dev pkg-config): {e}"
                ))
            });
        let allow_any = env::var(ALLOW_ENV).is_ok_and(|v| v == "1");
        if !lib.version.starts_with(PINNED) && !allow_any {
            fail(&format!(
                "found DPDK {} but the bindings are pinned to {PINNED}.x; \
                 install DPDK {PINNED} or set {ALLOW_ENV}=1 to try anyway",
                lib.version
            ));
        }

        // pkg-config's cflags carry `-include rte_config.h` and `-march=...`,
        // which the headers need (and which must match DPDK's own build).
        let mut clang_args: Vec<String> = lib
            .include_paths
            .iter()
            .map(|p| format!("-I{}", p.display()))
            .collect();
        clang_args.push("-include".into());
        clang_args.push("rte_config.h".into());
        let march = std::process::Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .unwrap_or_default()
            .split_whitespace()
            .find(|f| f.starts_with("-march="))
            .map(str::to_string);
        if let Some(m) = &march {
            clang_args.push(m.clone());
        }

        let mut cc = cc::Build::new();
        cc.file("shim/icx_dpdk_shim.c")
            .include("shim")
            .includes(&lib.include_paths)
            .flag("-include")
            .flag("rte_config.h")
            .warnings(true)
            .flag_if_supported("-Wno-unused-parameter")
            .opt_level(2);
        if let Some(m) = &march {
            cc.flag(m);
        }
        cc.compile("icx_dpdk_shim");

        let bindings = bindgen::Builder::default()
            .header("shim/icx_dpdk_shim.h")
            .clang_args(&clang_args)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
            // Functions icx calls (exported symbols of the shared DPDK).
            .allowlist_function("rte_eal_init")
            .allowlist_function("rte_eal_cleanup")
            .allowlist_function("rte_eal_process_type")
            .allowlist_function("rte_strerror")
            .allowlist_function("rte_version")
            .allowlist_function("rte_socket_id")
            .allowlist_function("rte_log_set_global_level")
            .allowlist_function("rte_pktmbuf_pool_create")
            .allowlist_function("rte_pktmbuf_free_bulk")
            .allowlist_function("rte_mempool_free")
            .allowlist_function("rte_mempool_avail_count")
            .allowlist_function("rte_mempool_in_use_count")
            .allowlist_function("rte_eth_dev_count_avail")
            .allowlist_function("rte_eth_dev_get_port_by_name")
            .allowlist_function("rte_eth_dev_get_name_by_port")
            .allowlist_function("rte_eth_dev_is_valid_port")
            .allowlist_function("rte_eth_find_next_owned_by")
            .allowlist_function("rte_eth_dev_info_get")
            .allowlist_function("rte_eth_dev_configure")
            .allowlist_function("rte_eth_dev_adjust_nb_rx_tx_desc")
            .allowlist_function("rte_eth_rx_queue_setup")
            .allowlist_function("rte_eth_tx_queue_setup")
            .allowlist_function("rte_eth_dev_start")
            .allowlist_function("rte_eth_dev_stop")
            .allowlist_function("rte_eth_dev_close")
            .allowlist_function("rte_eth_dev_socket_id")
            .allowlist_function("rte_eth_macaddr_get")
            .allowlist_function("rte_eth_stats_get")
            .allowlist_function("rte_eth_promiscuous_enable")
            .allowlist_function("rte_eth_allmulticast_enable")
            .allowlist_function("rte_eth_link_get_nowait")
            .allowlist_function("rte_dev_probe")
            // The shim (static inline functions made callable).
            .allowlist_function("icx_.*")
            .allowlist_type("rte_mbuf")
            .allowlist_type("rte_eth_conf")
            .allowlist_type("rte_eth_dev_info")
            .allowlist_type("rte_eth_stats")
            .allowlist_type("rte_eth_link")
            .allowlist_type("rte_ether_addr")
            .allowlist_var("RTE_PKTMBUF_HEADROOM")
            .allowlist_var("RTE_ETH_NAME_MAX_LEN")
            .allowlist_var("RTE_MAX_ETHPORTS")
            .allowlist_var("SOCKET_ID_ANY")
            .allowlist_var("RTE_ETHER_ADDR_LEN")
            // Only ever handled through pointers.
            .opaque_type("rte_mempool")
            .derive_debug(true)
            .derive_default(true)
            .layout_tests(true)
            .generate_comments(false)
            .generate()
            .unwrap_or_else(|e| fail(&format!("bindgen failed on the DPDK headers: {e}")));
        let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
        bindings
            .write_to_file(out.join("bindings.rs"))
            .unwrap_or_else(|e| fail(&format!("writing bindings: {e}")));
        println!("cargo:version={}", lib.version);
    }
}
