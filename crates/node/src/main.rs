//! `fusion-node --config FILE --node N`: runs node N of the cluster in the
//! foreground. `fusion-node local`: a whole cluster on this host (see
//! `icx_node::local`). Exit codes: 0 after a clean shutdown, 2 for a bad
//! argument or configuration, 1 when the node cannot start or its
//! transport fails (or `local`'s checks fail).

use clap::Parser;
use icx_core::NodeId;
use icx_node::config::ClusterConfig;
use icx_node::node::{Exit, Node};
use std::path::PathBuf;
use std::process::ExitCode;

/// The icx cluster node: membership (CSS-style) and cache fusion over the
/// icx interconnect, serving Redis clients (redis-cli, redis-benchmark).
#[derive(Parser, Debug)]
#[command(name = "fusion-node", version, args_conflicts_with_subcommands = true)]
struct Args {
    /// The cluster's configuration file (TOML; the same on every node).
    #[arg(long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// This node's id in the configuration.
    #[arg(long, value_name = "N", required = true, value_parser = clap::value_parser!(u16).range(1..=255))]
    node: Option<u16>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// A whole cluster on this host: N node processes on 127.0.0.1 with
    /// their files in a temporary directory, a mixed workload with checks,
    /// a Global Cache report per node, then serving redis-cli until Ctrl-C.
    Local {
        /// Nodes to start.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
        nodes: u16,
        /// Seconds to keep serving after the report (default: until Ctrl-C).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        /// Seconds of built-in workload.
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        workload: f64,
        /// Workload clients per node.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        clients: u16,
        /// RESP port of node 1 (node i: PORT + i - 1).
        #[arg(long, default_value_t = 7001, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Keep the cluster's files in DIR (default: a temporary directory,
        /// removed at the end).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Blocks of the scan check (node 1 scans, then node 2).
        #[arg(long, default_value_t = 2048)]
        scan_blocks: u32,
    },
}

fn seconds(what: &str, s: f64) -> Result<std::time::Duration, String> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| format!("--{what} {s}: give a number of seconds, 0 or more"))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Some(Sub::Local {
        nodes,
        duration,
        workload,
        clients,
        port,
        dir,
        scan_blocks,
    }) = args.command
    {
        let a = (|| {
            Ok::<_, String>(icx_node::local::LocalArgs {
                nodes,
                duration: duration.map(|d| seconds("duration", d)).transpose()?,
                workload: seconds("workload", workload)?,
                clients: usize::from(clients),
                port,
                dir,
                scan_blocks,
            })
        })();
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                eprintln!("fusion-node local: {e}");
                return ExitCode::from(2);
            }
        };
        return match icx_node::local::run(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fusion-node local: {e}");
                ExitCode::from(1)
            }
        };
    }
    let (Some(config), Some(node)) = (args.config, args.node) else {
        eprintln!("fusion-node: --config FILE --node N, or a subcommand (local)");
        return ExitCode::from(2);
    };
    let cfg = match ClusterConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fusion-node: {e}");
            return ExitCode::from(2);
        }
    };
    let me = NodeId(node);
    if cfg.node(me).is_none() {
        eprintln!(
            "fusion-node: --node {node}: not configured in {}",
            config.display()
        );
        return ExitCode::from(2);
    }
    if args.check {
        println!(
            "{}: cluster {} (id {}), {} nodes, {} voting files: ok",
            config.display(),
            cfg.cluster_name,
            cfg.cluster_id,
            cfg.nodes.len(),
            cfg.voting_files.len()
        );
        return ExitCode::SUCCESS;
    }
    let mut node = match Node::start(cfg, me) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("fusion-node: {e}");
            return ExitCode::from(1);
        }
    };
    match node.run() {
        Ok(Exit::Shutdown) => ExitCode::SUCCESS,
        Ok(Exit::Forced) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fusion-node: {e}");
            ExitCode::from(1)
        }
    }
}
