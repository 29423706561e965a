//! `osm metrics enable|disable --namespace NS,...`: the namespace annotation
//! `openservicemesh.io/metrics: enabled` (new pods get the Prometheus annotations from the injector)
//! and, as upstream does, the `prometheus.io/scrape|port|path` annotations of the namespace's
//! existing injected pods (those labelled `osm-proxy-uuid`). Only namespaces in a mesh are accepted.

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use osm_api::contract::{
    PROMETHEUS_PATH_ANNOTATION, PROMETHEUS_PORT, PROMETHEUS_PORT_ANNOTATION, PROMETHEUS_SCRAPE_ANNOTATION,
    PROMETHEUS_SCRAPE_PATH,
};
use serde_json::{Value, json};

use super::{api_error, get_namespace, monitored_by};
use osm_api::contract::{METRICS_ANNOTATION, MONITORED_BY_LABEL, PROXY_UUID_LABEL};

#[derive(clap::Subcommand, Debug)]
pub enum MetricsCommand {
    /// Enable Prometheus scraping of the sidecars in namespaces (existing injected pods included).
    Enable {
        /// Namespaces (comma-separated or repeated).
        #[arg(long = "namespace", required = true, value_delimiter = ',', value_name = "NS")]
        namespaces: Vec<String>,
    },
    /// Disable Prometheus scraping of the sidecars in namespaces.
    Disable {
        /// Namespaces (comma-separated or repeated).
        #[arg(long = "namespace", required = true, value_delimiter = ',', value_name = "NS")]
        namespaces: Vec<String>,
    },
}

pub fn run(global: &crate::Global, command: MetricsCommand) -> Result<std::process::ExitCode> {
    let (namespaces, enable) = match command {
        MetricsCommand::Enable { namespaces } => (namespaces, true),
        MetricsCommand::Disable { namespaces } => (namespaces, false),
    };
    super::with_client(global, |client| async move {
        let mut failures = Vec::new();
        for ns in namespaces.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            match set(&client, ns, enable).await {
                Ok(pods) => println!(
                    "Metrics successfully {} in namespace [{ns}] ({pods} injected pod{} updated)",
                    if enable { "enabled" } else { "disabled" },
                    if pods == 1 { "" } else { "s" }
                ),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        if !failures.is_empty() {
            return Err(anyhow!(failures.join("; ")));
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// Annotates (or un-annotates) one namespace and its injected pods; returns how many pods.
async fn set(client: &kube::Client, ns: &str, enable: bool) -> Result<usize> {
    let namespace = get_namespace(client, ns).await?;
    if monitored_by(&namespace).is_none() {
        bail!("namespace {ns} does not belong to a mesh (no {MONITORED_BY_LABEL} label)");
    }
    let value = |v: Value| if enable { v } else { Value::Null };
    let patch = json!({"metadata": {"annotations": {METRICS_ANNOTATION: value(json!("enabled"))}}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| api_error(e).context(format!("patching namespace {ns}")))?;

    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let injected = pods
        .list(&ListParams::default().labels(PROXY_UUID_LABEL))
        .await
        .map_err(|e| api_error(e).context(format!("listing the injected pods of namespace {ns}")))?;
    let patch = json!({"metadata": {"annotations": {
        PROMETHEUS_SCRAPE_ANNOTATION: value(json!("true")),
        PROMETHEUS_PORT_ANNOTATION: value(json!(PROMETHEUS_PORT.to_string())),
        PROMETHEUS_PATH_ANNOTATION: value(json!(PROMETHEUS_SCRAPE_PATH)),
    }}});
    for pod in &injected.items {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error(e).context(format!("patching pod {ns}/{name}")))?;
    }
    Ok(injected.items.len())
}
