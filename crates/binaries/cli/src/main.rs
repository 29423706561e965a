//! `osm`: the command-line front door. Local mode (`controller`, `bootstrap`), the bookstore `demo`,
//! and the upstream cluster verbs (`install`, `uninstall mesh`, `mesh`, `namespace`, `metrics`,
//! `proxy`, `policy`, `verify`, `support`), plus `version` and `completion`.
#![forbid(unsafe_code)]

mod bootstrap_cmd;
mod cluster;
mod controller_cmd;
mod demo;
mod install_cmd;
mod kube_client;
mod local;
mod output;

use std::path::PathBuf;

use anyhow::Result;
use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "osm",
    version,
    about = "Open Service Mesh successor: an Envoy control plane for SMI and OSM APIs"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command sees.
#[derive(clap::Args, Clone, Debug)]
pub struct Global {
    /// Namespace of the control plane (upstream default); part of the ADS server name.
    #[arg(long, global = true, default_value = "osm-system", env = "OSM_NAMESPACE")]
    pub osm_namespace: String,
    /// Kubeconfig for the cluster verbs (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
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
    /// Install the control plane into a cluster (server-side apply of every object; `--dry-run`
    /// prints them as YAML).
    Install(install_cmd::InstallArgs),
    /// Remove the control plane from a cluster.
    Uninstall {
        #[command(subcommand)]
        command: install_cmd::UninstallCommand,
    },
    /// List or upgrade the meshes installed in a cluster.
    Mesh {
        #[command(subcommand)]
        command: install_cmd::MeshCommand,
    },
    /// Add namespaces to a mesh, remove them, list them, or make the mesh ignore them.
    Namespace {
        #[command(subcommand)]
        command: cluster::namespace::NamespaceCommand,
    },
    /// Enable or disable Prometheus scraping of the sidecars in namespaces.
    Metrics {
        #[command(subcommand)]
        command: cluster::metrics::MetricsCommand,
    },
    /// Read a sidecar's Envoy admin interface (config_dump, clusters, stats …).
    Proxy {
        #[command(subcommand)]
        command: cluster::proxy::ProxyCommand,
    },
    /// Explain the policies between pods.
    Policy {
        #[command(subcommand)]
        command: cluster::policy::PolicyCommand,
    },
    /// Check the mesh: connectivity between pods, control-plane health.
    Verify {
        #[command(subcommand)]
        command: cluster::verify::VerifyCommand,
    },
    /// Collect state for a bug report.
    Support {
        #[command(subcommand)]
        command: cluster::support::SupportCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
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
    let g = &cli.global;
    match cli.command {
        Command::Bootstrap(args) => {
            bootstrap_cmd::run(&g.osm_namespace, args).map(|_| std::process::ExitCode::SUCCESS)
        }
        Command::Controller(args) => controller_cmd::run(&g.osm_namespace, args),
        Command::Install(args) => install_cmd::install(g, args),
        Command::Uninstall { command } => install_cmd::uninstall(g, command),
        Command::Mesh { command } => install_cmd::mesh(g, command),
        Command::Namespace { command } => cluster::namespace::run(g, command),
        Command::Metrics { command } => cluster::metrics::run(g, command),
        Command::Proxy { command } => cluster::proxy::run(g, command),
        Command::Policy { command } => cluster::policy::run(g, command),
        Command::Verify { command } => cluster::verify::run(g, command),
        Command::Support { command } => cluster::support::run(g, command),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "osm", &mut std::io::stdout());
            Ok(std::process::ExitCode::SUCCESS)
        }
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
