//! `osm`: the command-line front door. Local mode (`controller`, `bootstrap`), the bookstore `demo`,
//! and `version`.
#![forbid(unsafe_code)]

mod bootstrap_cmd;
mod controller_cmd;
mod demo;
mod local;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "osm",
    version,
    about = "Open Service Mesh successor: an Envoy control plane for SMI and OSM APIs"
)]
struct Cli {
    /// Namespace of the control plane (upstream default); part of the ADS server name.
    #[arg(long, global = true, default_value = "osm-system", env = "OSM_NAMESPACE")]
    osm_namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write an Envoy bootstrap (and its xDS client certificate) for one workload, to start a sidecar
    /// by hand next to a local-mode controller.
    Bootstrap(bootstrap_cmd::BootstrapArgs),
    /// Run the control plane in local mode: read Kubernetes-style YAML from a directory (and watch it),
    /// serve ADS over mTLS for sidecars anywhere.
    Controller(controller_cmd::ControllerArgs),
    /// The bookstore demo as real pods on this machine (needs root).
    Demo {
        #[command(subcommand)]
        command: Option<demo::DemoCommand>,
    },
    /// Print the CustomResourceDefinitions (SMI and OSM APIs, with OpenAPI schemas) as YAML, for
    /// `kubectl apply -f -`.
    Crds,
    /// Print the version.
    Version,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            // The cause chain, one line; never a backtrace (these are user-facing errors).
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bootstrap(args) => {
            bootstrap_cmd::run(&cli.osm_namespace, args).map(|_| std::process::ExitCode::SUCCESS)
        }
        Command::Controller(args) => controller_cmd::run(&cli.osm_namespace, args),
        Command::Demo { command } => demo::run(command),
        Command::Crds => {
            print!("{}", osm_api::crds::render_yaml());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Version => {
            println!(
                "osm {} (Envoy API v3; SMI access v1alpha3, specs v1alpha4, split v1alpha2)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// Where a local-mode control plane keeps its CA (`root-cert.pem`, `root-key.pem`).
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/osm")
}
