//! `osm-loadtest`: runs the ADS load test (see `docs/scale.md`), or, as `osm-loadtest controller`,
//! the controller process the test spawns.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use osm_loadtest::controller::{self, ControllerArgs};
use osm_loadtest::driver::{self, RunArgs};

/// The allocator the control-plane binary uses, so the controller measured here is the one shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "osm-loadtest",
    version,
    about = "ADS load test: the control plane and N simulated proxies (mTLS gRPC ADS clients) on 127.0.0.1",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// The controller process (spawned by the test itself; commands on stdin, replies on stdout).
    #[command(hide = true)]
    Controller(ControllerArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Controller(args)) => controller::run(args),
        None => {
            let exe = std::env::current_exe().context("locating this binary")?;
            let report = driver::run(&cli.run, &exe)?;
            print!("{}", report.human());
            let json = serde_json::to_string(&report)?;
            if let Some(path) = &cli.run.json_out {
                std::fs::write(path, format!("{json}\n"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{json}");
            Ok(())
        }
    }
}
