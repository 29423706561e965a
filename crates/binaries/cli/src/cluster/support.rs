//! `osm support bug-report [--app-namespaces NS,...] [--out-file F]`: a `.tar.gz` of the mesh's
//! state for a bug report.
//!
//! Contents (`README.txt` with the CLI version and what was asked; YAML `kind: List` documents,
//! `managedFields` trimmed, one directory per area):
//! `control-plane/` — the OSM namespace's Deployments, Services, ConfigMaps, MeshConfigs,
//! MeshRootCertificates, and the cluster's webhook configurations; `policies/` — every SMI and OSM
//! policy object in the cluster; `namespaces.yaml` — the monitored namespaces;
//! `namespaces/<ns>/` — Pods, Services and Endpoints of each app namespace; `proxies/<ns>/<pod>/` —
//! `config_dump.json` and `stats.txt` of each injected pod's Envoy, read through the API server's
//! pod proxy. Secrets are never read. Whatever cannot be collected is listed in `errors.txt` and
//! the report is still written.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Pod, Service};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::TypeMeta;
use osm_api::config::{MeshConfig, MeshRootCertificate};
use osm_api::policy::{Egress, IngressBackend, Retry, UpstreamTrafficSetting};
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::{HTTPRouteGroup, TCPRoute};
use osm_api::smi::split::TrafficSplit;
use serde_json::{Value, json};

use super::{envoy_admin, has_envoy, with_client};
use osm_api::contract::MONITORED_BY_LABEL;

#[derive(clap::Subcommand, Debug)]
pub enum SupportCommand {
    /// Collect the control plane's state, the mesh's policies and the app namespaces' pods (and
    /// their sidecars' config) into a .tar.gz for a bug report. Secrets are never included.
    BugReport {
        /// Application namespaces whose Pods, Services and Endpoints (and sidecars) to include
        /// (comma-separated or repeated; default: every monitored namespace).
        #[arg(long, value_delimiter = ',', value_name = "NS")]
        app_namespaces: Vec<String>,
        /// The archive to write (default: osm-bug-report-<unix time>.tar.gz).
        #[arg(short = 'o', long)]
        out_file: Option<PathBuf>,
    },
}

pub fn run(global: &crate::Global, command: SupportCommand) -> Result<std::process::ExitCode> {
    let SupportCommand::BugReport {
        app_namespaces,
        out_file,
    } = command;
    let out_file = out_file.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        PathBuf::from(format!("osm-bug-report-{now}.tar.gz"))
    });
    let app_namespaces: Vec<String> = app_namespaces
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    let report = with_client(global, |client| async move {
        let mut r = Collector {
            client,
            files: Vec::new(),
            errors: Vec::new(),
        };
        let namespaces = r.collect(&global.osm_namespace, app_namespaces).await;
        let summary = format!(
            "osm bug report\nosm CLI version: {}\ncontrol plane namespace: {}\napp namespaces: {}\n\
             Secrets are never collected. Envoy admin output (proxies/) is read through the API server's \
             pod proxy; what could not be collected is listed in errors.txt.\n",
            env!("CARGO_PKG_VERSION"),
            global.osm_namespace,
            if namespaces.is_empty() {
                "(none)".to_string()
            } else {
                namespaces.join(", ")
            },
        );
        r.files
            .insert(0, ("README.txt".to_string(), summary.into_bytes()));
        Ok(r)
    })?;
    write_archive(&out_file, &report.files, &report.errors)?;
    println!(
        "Bug report written to {} ({} files{})",
        out_file.display(),
        report.files.len() + usize::from(!report.errors.is_empty()),
        match report.errors.len() {
            0 => String::new(),
            n => format!(", {n} items could not be collected: see errors.txt"),
        }
    );
    Ok(std::process::ExitCode::SUCCESS)
}

struct Collector {
    client: kube::Client,
    /// (path in the archive, contents)
    files: Vec<(String, Vec<u8>)>,
    errors: Vec<String>,
}

/// Where to list: one namespace or the whole cluster.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Namespace(&'a str),
    Cluster,
}

impl Collector {
    /// Collects everything; returns the app namespaces covered.
    async fn collect(&mut self, osm_ns: &str, app_namespaces: Vec<String>) -> Vec<String> {
        let cp = Scope::Namespace(osm_ns);
        self.list::<Deployment>(cp, "", "control-plane/deployments.yaml")
            .await;
        self.list::<Service>(cp, "", "control-plane/services.yaml").await;
        self.list::<ConfigMap>(cp, "", "control-plane/configmaps.yaml")
            .await;
        self.list::<MeshConfig>(cp, "", "control-plane/meshconfigs.yaml")
            .await;
        self.list::<MeshRootCertificate>(cp, "", "control-plane/meshrootcertificates.yaml")
            .await;
        let all = Scope::Cluster;
        self.list::<MutatingWebhookConfiguration>(
            all,
            "",
            "control-plane/mutatingwebhookconfigurations.yaml",
        )
        .await;
        self.list::<ValidatingWebhookConfiguration>(
            all,
            "",
            "control-plane/validatingwebhookconfigurations.yaml",
        )
        .await;

        self.list::<TrafficTarget>(all, "", "policies/traffictargets.yaml")
            .await;
        self.list::<HTTPRouteGroup>(all, "", "policies/httproutegroups.yaml")
            .await;
        self.list::<TCPRoute>(all, "", "policies/tcproutes.yaml").await;
        self.list::<TrafficSplit>(all, "", "policies/trafficsplits.yaml")
            .await;
        self.list::<Egress>(all, "", "policies/egresses.yaml").await;
        self.list::<IngressBackend>(all, "", "policies/ingressbackends.yaml")
            .await;
        self.list::<Retry>(all, "", "policies/retries.yaml").await;
        self.list::<UpstreamTrafficSetting>(all, "", "policies/upstreamtrafficsettings.yaml")
            .await;

        let monitored = self
            .list::<Namespace>(all, MONITORED_BY_LABEL, "namespaces.yaml")
            .await
            .unwrap_or_default();
        let app_namespaces = if app_namespaces.is_empty() {
            monitored.iter().filter_map(|n| n.metadata.name.clone()).collect()
        } else {
            app_namespaces
        };
        for ns in &app_namespaces {
            let scope = Scope::Namespace(ns);
            let pods = self
                .list::<Pod>(scope, "", &format!("namespaces/{ns}/pods.yaml"))
                .await
                .unwrap_or_default();
            self.list::<Service>(scope, "", &format!("namespaces/{ns}/services.yaml"))
                .await;
            self.list::<Endpoints>(scope, "", &format!("namespaces/{ns}/endpoints.yaml"))
                .await;
            for pod in pods.iter().filter(|p| has_envoy(p)) {
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                for (query, file) in [("config_dump", "config_dump.json"), ("stats", "stats.txt")] {
                    match envoy_admin(&self.client, ns, name, query).await {
                        Ok(text) => self
                            .files
                            .push((format!("proxies/{ns}/{name}/{file}"), text.into_bytes())),
                        Err(e) => self.errors.push(format!("proxies/{ns}/{name}/{file}: {e:#}")),
                    }
                }
            }
        }
        app_namespaces
    }

    /// Lists `K` (as untyped objects, so an invalid object is still reported), writes them as one
    /// YAML `List` to `path`, and returns them decoded as `K` where they decode. A failure (e.g. a
    /// CRD that is not installed) goes to `errors.txt`.
    async fn list<K>(&mut self, scope: Scope<'_>, labels: &str, path: &str) -> Option<Vec<K>>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        let resource = ApiResource::erase::<K>(&());
        let api: Api<DynamicObject> = match scope {
            Scope::Namespace(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
        };
        let mut params = ListParams::default();
        if !labels.is_empty() {
            params = params.labels(labels);
        }
        let list = match api.list(&params).await {
            Ok(list) => list,
            Err(e) => {
                let what = match scope {
                    Scope::Namespace(ns) => format!("{}s in namespace {ns}", resource.kind),
                    Scope::Cluster => format!("{}s", resource.kind),
                };
                self.errors
                    .push(format!("{path}: listing {what}: {:#}", super::api_error(e)));
                return None;
            }
        };
        let mut items = Vec::new();
        let mut typed = Vec::new();
        for mut item in list.items {
            item.metadata.managed_fields = None;
            item.types = Some(TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            });
            let value = serde_json::to_value(&item).unwrap_or(Value::Null);
            if let Ok(object) = serde_json::from_value::<K>(value.clone()) {
                typed.push(object);
            }
            items.push(value);
        }
        let document = json!({"apiVersion": "v1", "kind": "List", "items": items});
        match serde_saphyr::to_string(&document) {
            Ok(yaml) => self.files.push((path.to_string(), yaml.into_bytes())),
            Err(e) => self.errors.push(format!("{path}: rendering YAML: {e}")),
        }
        Some(typed)
    }
}

/// Writes the files (and `errors.txt` when something was missed) as a gzip-compressed tarball.
fn write_archive(path: &Path, files: &[(String, Vec<u8>)], errors: &[String]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut add = |name: &str, data: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.append_data(&mut header, format!("osm-bug-report/{name}"), data)
            .with_context(|| format!("adding {name} to {}", path.display()))
    };
    for (name, data) in files {
        add(name, data)?;
    }
    if !errors.is_empty() {
        let mut text = Vec::new();
        for e in errors {
            writeln!(text, "{e}")?;
        }
        add("errors.txt", &text)?;
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|mut f| f.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
