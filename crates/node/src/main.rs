//! `fusion-node --config FILE --node N`: runs node N of the cluster in the
//! foreground. Exit codes: 0 after a clean shutdown, 2 for a bad argument
//! or configuration, 1 when the node cannot start or its transport fails.

use clap::Parser;
use icx_core::NodeId;
use icx_node::config::ClusterConfig;
use icx_node::node::{Exit, Node};
use std::path::PathBuf;
use std::process::ExitCode;

/// The icx cluster node: membership (CSS-style) over the icx interconnect,
/// administered over RESP (redis-cli).
#[derive(Parser, Debug)]
#[command(name = "fusion-node", version)]
struct Args {
    /// The cluster's configuration file (TOML; the same on every node).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// This node's id in the configuration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=255))]
    node: u16,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
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
    let cfg = match ClusterConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fusion-node: {e}");
            return ExitCode::from(2);
        }
    };
    let me = NodeId(args.node);
    if cfg.node(me).is_none() {
        eprintln!(
            "fusion-node: --node {}: not configured in {}",
            args.node,
            args.config.display()
        );
        return ExitCode::from(2);
    }
    if args.check {
        println!(
            "{}: cluster {} (id {}), {} nodes, {} voting files: ok",
            args.config.display(),
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
