//! `osm namespace add|remove|list|ignore`: which namespaces a mesh monitors, by the upstream label
//! `openservicemesh.io/monitored-by=<mesh>` and annotation `openservicemesh.io/sidecar-injection`.
//! Every change is a JSON merge patch of the Namespace's metadata (a `null` removes a key).

use anyhow::{Result, anyhow, bail};
use comfy_table::{Table, presets::NOTHING};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

use super::{api_error, get_namespace, with_client};
use crate::output::{OutputFormat, print_structured};
use osm_api::contract::{DEFAULT_MESH_NAME, IGNORE_LABEL, MONITORED_BY_LABEL, SIDECAR_INJECTION_ANNOTATION};

#[derive(clap::Subcommand, Debug)]
pub enum NamespaceCommand {
    /// Add namespaces to the mesh: label them `openservicemesh.io/monitored-by=<mesh>` and enable
    /// automatic sidecar injection (unless --disable-sidecar-injection).
    Add {
        /// The namespaces.
        #[arg(required = true, value_name = "NAMESPACE")]
        namespaces: Vec<String>,
        /// Name of the service mesh.
        #[arg(long, default_value = DEFAULT_MESH_NAME)]
        mesh_name: String,
        /// Annotate the namespaces `sidecar-injection: disabled` instead of `enabled`.
        #[arg(long)]
        disable_sidecar_injection: bool,
    },
    /// Remove namespaces from the mesh (the label and the sidecar-injection annotation).
    Remove {
        /// The namespaces.
        #[arg(required = true, value_name = "NAMESPACE")]
        namespaces: Vec<String>,
        /// Name of the service mesh the namespaces belong to.
        #[arg(long, default_value = DEFAULT_MESH_NAME)]
        mesh_name: String,
    },
    /// List the namespaces monitored by meshes.
    List {
        /// Only the namespaces of this mesh.
        #[arg(long)]
        mesh_name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Make every mesh ignore namespaces (label `openservicemesh.io/ignore=true`).
    Ignore {
        /// The namespaces.
        #[arg(required = true, value_name = "NAMESPACE")]
        namespaces: Vec<String>,
    },
}

pub fn run(global: &crate::Global, command: NamespaceCommand) -> Result<std::process::ExitCode> {
    with_client(global, |client| async move {
        match command {
            NamespaceCommand::Add {
                namespaces,
                mesh_name,
                disable_sidecar_injection,
            } => {
                let ctx = Ctx { client, global };
                each(&namespaces, |ns| {
                    ctx.add(ns, &mesh_name, disable_sidecar_injection)
                })
                .await
            }
            NamespaceCommand::Remove {
                namespaces,
                mesh_name,
            } => {
                let ctx = Ctx { client, global };
                each(&namespaces, |ns| ctx.remove(ns, &mesh_name)).await
            }
            NamespaceCommand::List { mesh_name, output } => list(&client, mesh_name.as_deref(), output).await,
            NamespaceCommand::Ignore { namespaces } => {
                let ctx = Ctx { client, global };
                each(&namespaces, |ns| ctx.ignore(ns)).await
            }
        }?;
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// Runs `f` for every namespace, printing each success; fails at the end naming every failure, so
/// one bad namespace does not leave the others undone.
async fn each<'a, F, Fut>(namespaces: &'a [String], f: F) -> Result<()>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<String>>,
{
    let mut failures = Vec::new();
    for ns in namespaces {
        match f(ns.trim()).await {
            Ok(done) => println!("{done}"),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    match failures.len() {
        0 => Ok(()),
        _ => Err(anyhow!(failures.join("; "))),
    }
}

struct Ctx<'a> {
    client: kube::Client,
    global: &'a crate::Global,
}

impl Ctx<'_> {
    fn api(&self) -> Api<Namespace> {
        Api::all(self.client.clone())
    }

    async fn patch(&self, ns: &str, patch: serde_json::Value) -> Result<()> {
        self.api()
            .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error(e).context(format!("patching namespace {ns}")))?;
        Ok(())
    }

    async fn add(&self, ns: &str, mesh: &str, disable_injection: bool) -> Result<String> {
        let osm_ns = &self.global.osm_namespace;
        if ns == osm_ns {
            bail!("namespace {ns} is the control plane's namespace and cannot be added to mesh {mesh}");
        }
        let namespace = get_namespace(&self.client, ns).await?;
        // Upstream refuses any namespace running an osm-controller (another mesh's control plane).
        let controllers = Api::<Deployment>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels("app=osm-controller"))
            .await
            .map_err(|e| api_error(e).context(format!("listing Deployments in namespace {ns}")))?;
        if !controllers.items.is_empty() {
            bail!("namespace {ns} runs osm-controller and cannot be added to mesh {mesh}");
        }
        let labels = namespace.metadata.labels.unwrap_or_default();
        if let Some(other) = labels.get(MONITORED_BY_LABEL).filter(|m| *m != mesh) {
            bail!(
                "namespace {ns} is already monitored by mesh {other}; remove it from that mesh first \
                 (osm namespace remove {ns} --mesh-name {other})"
            );
        }
        // Upstream refuses when no control plane of that mesh exists; here it is only a warning, so
        // namespaces can be prepared before `osm install`.
        let meshes = Api::<Deployment>::all(self.client.clone())
            .list(&ListParams::default().labels(&format!("meshName={mesh}")))
            .await
            .map(|l| l.items.len())
            .unwrap_or(1);
        if meshes == 0 {
            eprintln!(
                "warning: no control plane of mesh {mesh} found (no Deployment labelled meshName={mesh}); \
                 namespace {ns} is labelled anyway"
            );
        }
        let injection = if disable_injection { "disabled" } else { "enabled" };
        self.patch(
            ns,
            json!({"metadata": {
                "labels": {MONITORED_BY_LABEL: mesh},
                "annotations": {SIDECAR_INJECTION_ANNOTATION: injection},
            }}),
        )
        .await?;
        let mut done = format!("Namespace [{ns}] successfully added to mesh [{mesh}]");
        if disable_injection {
            done.push_str(" (sidecar injection disabled)");
        }
        if labels.contains_key(IGNORE_LABEL) {
            done.push_str(&format!(
                "; note: it is labelled {IGNORE_LABEL}, so the mesh still ignores it"
            ));
        }
        Ok(done)
    }

    async fn remove(&self, ns: &str, mesh: &str) -> Result<String> {
        let namespace = get_namespace(&self.client, ns).await?;
        let labels = namespace.metadata.labels.unwrap_or_default();
        match labels.get(MONITORED_BY_LABEL) {
            None => Ok(format!("Namespace [{ns}] already does not belong to any mesh")),
            Some(other) if other != mesh => bail!(
                "namespace {ns} belongs to mesh {other}, not mesh {mesh}; specify the right one with \
                 --mesh-name"
            ),
            Some(_) => {
                self.patch(
                    ns,
                    json!({"metadata": {
                        "labels": {MONITORED_BY_LABEL: null},
                        "annotations": {SIDECAR_INJECTION_ANNOTATION: null},
                    }}),
                )
                .await?;
                Ok(format!(
                    "Namespace [{ns}] successfully removed from mesh [{mesh}]"
                ))
            }
        }
    }

    async fn ignore(&self, ns: &str) -> Result<String> {
        get_namespace(&self.client, ns).await?;
        self.patch(ns, json!({"metadata": {"labels": {IGNORE_LABEL: "true"}}}))
            .await?;
        Ok(format!("Successfully configured namespace [{ns}] to be ignored"))
    }
}

/// One row of `namespace list`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct NamespaceRow {
    namespace: String,
    mesh: String,
    /// `enabled`, `disabled`, or `-` when the namespace has no annotation.
    sidecar_injection: String,
}

async fn list(client: &kube::Client, mesh: Option<&str>, output: OutputFormat) -> Result<()> {
    let selector = match mesh {
        Some(m) => format!("{MONITORED_BY_LABEL}={m}"),
        None => MONITORED_BY_LABEL.to_string(),
    };
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| api_error(e).context("listing namespaces"))?;
    let mut rows: Vec<NamespaceRow> = namespaces
        .items
        .into_iter()
        .map(|ns| {
            let labels = ns.metadata.labels.unwrap_or_default();
            let annotations = ns.metadata.annotations.unwrap_or_default();
            NamespaceRow {
                namespace: ns.metadata.name.unwrap_or_default(),
                mesh: labels.get(MONITORED_BY_LABEL).cloned().unwrap_or_default(),
                sidecar_injection: annotations
                    .get(SIDECAR_INJECTION_ANNOTATION)
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.mesh, &a.namespace).cmp(&(&b.mesh, &b.namespace)));
    if print_structured(output, &rows)? {
        return Ok(());
    }
    if rows.is_empty() {
        match mesh {
            Some(m) => println!("No namespaces in mesh [{m}]"),
            None => println!("No namespaces in any mesh"),
        }
        return Ok(());
    }
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_header(["NAMESPACE", "MESH", "SIDECAR-INJECTION"]);
    for r in &rows {
        table.add_row([&r.namespace, &r.mesh, &r.sidecar_injection]);
    }
    println!("{}", table.trim_fmt());
    Ok(())
}
