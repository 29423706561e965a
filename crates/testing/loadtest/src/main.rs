//! `osm-loadtest`: runs the ADS load test (see `docs/scale.md`); `osm-loadtest envtest` runs it through
//! a real kube-apiserver and the Kubernetes source; `osm-loadtest controller` is the controller
//! process both spawn.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use osm_loadtest::controller::{self, ControllerArgs};
use osm_loadtest::driver::{self, RunArgs};
use osm_loadtest::envtest::{self, EnvtestArgs};

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
    /// The load test through a real kube-apiserver + etcd (envtest; needs KUBEBUILDER_ASSETS): the
    /// mesh is written to the apiserver and the controller reads it with the Kubernetes source.
    Envtest(EnvtestArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // kube's client logs every failed request as an error, including envtest's readiness
            // polls; the callers report the failures that matter.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client::client::builder=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Controller(args)) => controller::run(args),
        Some(Cmd::Envtest(args)) => {
            let exe = std::env::current_exe().context("locating this binary")?;
            let report = envtest::run(&args, &exe)?;
            print!("{}", report.human());
            emit_json(&report, args.json_out.as_deref())
        }
        None => {
            let exe = std::env::current_exe().context("locating this binary")?;
            let report = driver::run(&cli.run, &exe)?;
            print!("{}", report.human());
            emit_json(&report, cli.run.json_out.as_deref())
        }
    }
}

/// Prints the report as one JSON line, and writes it to `path` too when given.
fn emit_json(report: &impl serde::Serialize, path: Option<&std::path::Path>) -> Result<()> {
    let json = serde_json::to_string(report)?;
    if let Some(path) = path {
        std::fs::write(path, format!("{json}\n")).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{json}");
    Ok(())
}
