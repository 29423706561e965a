//! `osm install`, `osm uninstall mesh`, `osm mesh list|upgrade`: the command-line side of
//! `osm_install` (values from flags and `--set`, progress, confirmation, tables).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::ArgAction;
use indicatif::{ProgressBar, ProgressStyle};
use osm_api::contract::{BOOTSTRAP, CONTROLLER, INJECTOR};
use osm_api::duration::GoDuration;
use osm_install::{
    ApplyOutcome, ApplyReport, FIELD_MANAGER, InstallOptions, MeshInfo, UninstallOptions, Values,
};

use crate::Global;
use crate::kube_client::{client, runtime};
use crate::output::{OutputFormat, print_structured};

/// `osm install`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Name of the new mesh (a Kubernetes label value; unique in the cluster).
    #[arg(long, default_value = "osm")]
    mesh_name: String,
    /// Chart values as KEY=VALUE with upstream key names, e.g. `osm.enableEgress=false`;
    /// repeatable, or comma-separated (`k1=v1,k2=v2`); lists as `{a,b}`. The managed installs'
    /// `osm.osm.` prefix is accepted.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// How long to wait for the control-plane Deployments to become available; `0s` does not wait.
    #[arg(long, default_value = "5m")]
    timeout: GoDuration,
    /// Refuse to install next to another mesh, and make later installs refuse to join this one
    /// (`--enforce-single-mesh=false` to allow several meshes).
    #[arg(
        long,
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    enforce_single_mesh: bool,
    /// Print the objects as YAML instead of applying them.
    #[arg(long)]
    dry_run: bool,
}

/// `osm uninstall ...`.
#[derive(clap::Subcommand, Debug)]
pub enum UninstallCommand {
    /// Remove a mesh's control plane (CRDs and namespace only when asked).
    Mesh(UninstallMeshArgs),
}

/// `osm uninstall mesh`.
#[derive(clap::Args, Debug)]
pub struct UninstallMeshArgs {
    /// The mesh to remove.
    #[arg(long, default_value = "osm")]
    mesh_name: String,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Also delete the control-plane namespace.
    #[arg(long)]
    delete_namespace: bool,
    /// Also delete the cluster-wide resources: the SMI/OSM CRDs (and with them every policy object)
    /// and the CA Secret.
    #[arg(short = 'a', long)]
    delete_cluster_wide_resources: bool,
    /// Name of the Secret holding the mesh CA.
    #[arg(long, default_value = "osm-ca-bundle")]
    ca_bundle_secret_name: String,
}

/// `osm mesh ...`.
#[derive(clap::Subcommand, Debug)]
pub enum MeshCommand {
    /// List the meshes installed in the cluster.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Re-apply a mesh's control plane as this version renders it; MeshConfig `osm-mesh-config`
    /// keeps its values.
    Upgrade(MeshUpgradeArgs),
}

/// `osm mesh upgrade`.
#[derive(clap::Args, Debug)]
pub struct MeshUpgradeArgs {
    /// The mesh to upgrade.
    #[arg(long, default_value = "osm")]
    mesh_name: String,
    /// Chart values to change, as for `osm install` (the install's `--set` values are kept).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// How long to wait for the Deployments to become available; `0s` does not wait.
    #[arg(long, default_value = "5m")]
    timeout: GoDuration,
}

/// Values from defaults, the flags and the `--set` arguments, checked.
fn install_options(
    mesh: &str,
    namespace: &str,
    enforce: Option<bool>,
    set: &[String],
) -> Result<InstallOptions> {
    let mut values = Values::default();
    values.osm.osm_namespace = namespace.to_string();
    values.set_all(set.iter().map(String::as_str))?;
    // The flags win over --set, as upstream's install does.
    values.osm.mesh_name = mesh.to_string();
    if let Some(enforce) = enforce {
        values.osm.enforce_single_mesh = enforce;
    }
    values.validate()?;
    let opts = InstallOptions {
        values,
        set: set.to_vec(),
    };
    // On stderr, so `--dry-run > manifest.yaml` stays clean.
    for warning in opts.unsupported_warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(opts)
}

pub fn install(global: &Global, args: InstallArgs) -> Result<ExitCode> {
    let opts = install_options(
        &args.mesh_name,
        &global.osm_namespace,
        Some(args.enforce_single_mesh),
        &args.set,
    )?;
    let objects = osm_install::render(&opts);
    if args.dry_run {
        let yaml = osm_install::render_yaml(&objects);
        return match std::io::stdout().lock().write_all(yaml.as_bytes()) {
            // `osm install --dry-run | head` is fine.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
            other => other.map(|()| ExitCode::SUCCESS).context("writing the YAML"),
        };
    }
    runtime()?.block_on(async {
        let client = client(global.kubeconfig.as_deref()).await?;
        let meshes = osm_install::mesh_list(&client).await?;
        osm_install::check_mesh_conflicts(
            &meshes,
            opts.mesh_name(),
            opts.namespace(),
            opts.values.osm.enforce_single_mesh,
        )?;
        let report = apply_with_progress(&client, &objects).await?;
        wait(&client, opts.namespace(), args.timeout.as_std()).await?;
        println!(
            "OSM installed successfully in namespace [{}] with mesh name [{}] ({})",
            opts.namespace(),
            opts.mesh_name(),
            summary(&report)
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn summary(report: &ApplyReport) -> String {
    format!(
        "{} created, {} configured, {} unchanged",
        report.count(ApplyOutcome::Created),
        report.count(ApplyOutcome::Configured),
        report.count(ApplyOutcome::Unchanged)
    )
}

/// A progress bar on a terminal (stderr); one line per object on stdout either way.
fn progress_bar(len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

async fn apply_with_progress(client: &kube::Client, objects: &[serde_json::Value]) -> Result<ApplyReport> {
    let pb = progress_bar(objects.len());
    pb.set_message("applying");
    let report = osm_install::apply_with_progress(client, objects, FIELD_MANAGER, |applied| {
        pb.suspend(|| println!("{:<10} {}", applied.outcome.to_string(), applied.object));
        pb.inc(1);
    })
    .await;
    pb.finish_and_clear();
    Ok(report?)
}

/// Waits for the three Deployments unless `timeout` is zero.
async fn wait(client: &kube::Client, namespace: &str, timeout: Duration) -> Result<()> {
    if timeout.is_zero() {
        println!("not waiting for the control plane (--timeout 0s)");
        return Ok(());
    }
    let names = [CONTROLLER, INJECTOR, BOOTSTRAP];
    let pb = progress_bar(names.len());
    pb.set_message("waiting for the control-plane Deployments");
    println!(
        "waiting up to {} for Deployments {} in {namespace}",
        GoDuration(timeout),
        names.join(", ")
    );
    let result = osm_install::wait_for_deployments(client, namespace, &names, timeout, |name| {
        pb.suspend(|| println!("available  Deployment {namespace}/{name}"));
        pb.inc(1);
    })
    .await;
    pb.finish_and_clear();
    Ok(result?)
}

pub fn uninstall(global: &Global, command: UninstallCommand) -> Result<ExitCode> {
    let UninstallCommand::Mesh(args) = command;
    runtime()?.block_on(async {
        let client = client(global.kubeconfig.as_deref()).await?;
        let meshes = osm_install::mesh_list(&client).await?;
        let found = meshes.iter().find(|m| m.name == args.mesh_name);
        let namespace = found.map_or(global.osm_namespace.as_str(), |m| m.namespace.as_str());
        if found.is_none() {
            println!(
                "No OSM control plane with mesh name [{}] found in the cluster",
                args.mesh_name
            );
            if !args.delete_namespace && !args.delete_cluster_wide_resources {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if !args.force && std::io::stdin().is_terminal() {
            let question = format!(
                "Uninstall OSM [mesh name: {}] in namespace [{namespace}]{}{}?",
                args.mesh_name,
                if args.delete_namespace {
                    ", the namespace"
                } else {
                    ""
                },
                if args.delete_cluster_wide_resources {
                    " and the cluster-wide resources (CRDs and every SMI/OSM policy, CA Secret)"
                } else {
                    ""
                },
            );
            if !confirm(&question)? {
                println!("nothing uninstalled");
                return Ok(ExitCode::SUCCESS);
            }
        }
        let opts = UninstallOptions {
            delete_namespace: args.delete_namespace,
            delete_cluster_wide_resources: args.delete_cluster_wide_resources,
            ca_bundle_secret_name: args.ca_bundle_secret_name.clone(),
        };
        let report = osm_install::uninstall(&client, &args.mesh_name, namespace, &opts).await?;
        for deleted in &report.deleted {
            println!("deleted    {deleted}");
        }
        println!(
            "OSM [mesh name: {}] in namespace [{namespace}] uninstalled ({} objects deleted)",
            args.mesh_name,
            report.deleted.len()
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Asks a yes/no question on the terminal (three tries).
fn confirm(question: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    for _ in 0..3 {
        print!("{question} [y/n]: ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(false);
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "n" | "no" => return Ok(false),
            _ => println!("please answer y or n"),
        }
    }
    Ok(false)
}

pub fn mesh(global: &Global, command: MeshCommand) -> Result<ExitCode> {
    match command {
        MeshCommand::List { output } => mesh_list(global, output),
        MeshCommand::Upgrade(args) => mesh_upgrade(global, args),
    }
}

fn mesh_list(global: &Global, output: OutputFormat) -> Result<ExitCode> {
    let meshes: Vec<MeshInfo> = runtime()?.block_on(async {
        let client = client(global.kubeconfig.as_deref()).await?;
        Ok::<_, anyhow::Error>(osm_install::mesh_list(&client).await?)
    })?;
    if print_structured(output, &meshes)? {
        return Ok(ExitCode::SUCCESS);
    }
    if meshes.is_empty() {
        println!("No osm mesh control planes found");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_header([
        "MESH NAME",
        "MESH NAMESPACE",
        "VERSION",
        "CONTROLLER",
        "ADDED NAMESPACES",
    ]);
    for m in &meshes {
        table.add_row([
            m.name.clone(),
            m.namespace.clone(),
            m.version.clone(),
            m.controller_replicas.clone(),
            m.added_namespaces.join(","),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

fn mesh_upgrade(global: &Global, args: MeshUpgradeArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let client = client(global.kubeconfig.as_deref()).await?;
        let meshes = osm_install::mesh_list(&client).await?;
        let Some(mesh) = meshes.iter().find(|m| m.name == args.mesh_name) else {
            bail!("no mesh named {} in the cluster (see `osm mesh list`)", args.mesh_name);
        };
        let namespace = mesh.namespace.clone();
        let mut set = osm_install::recorded_set(&client, &namespace)
            .await?
            .context("the install's ConfigMap preset-mesh-config is missing")?;
        set.extend(args.set.iter().cloned());
        let opts = install_options(&mesh.name, &namespace, Some(mesh.enforce_single_mesh), &set)?;
        println!(
            "upgrading mesh [{}] in namespace [{namespace}] from {} to {}",
            mesh.name,
            if mesh.version.is_empty() { "?" } else { &mesh.version },
            osm_install::VERSION
        );
        let report = apply_with_progress(&client, &osm_install::render(&opts)).await?;
        wait(&client, &namespace, args.timeout.as_std()).await?;
        println!(
            "OSM successfully upgraded mesh [{}] in namespace [{namespace}] ({}); MeshConfig osm-mesh-config unchanged",
            mesh.name,
            summary(&report)
        );
        Ok(ExitCode::SUCCESS)
    })
}
