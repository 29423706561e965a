//! `osm-control-plane bootstrap`: makes the cluster ready for the other components and keeps it so.
//!
//! 1. the mesh CA in Secret `osm-ca-bundle` (created once, never replaced);
//! 2. the CRDs, server-side applied (install and upgrade are the same operation), then Established;
//! 3. MeshConfig `osm-mesh-config` from ConfigMap `preset-mesh-config` when it does not exist yet
//!    (an existing MeshConfig is never overwritten: it holds the operator's settings);
//! 4. the CA bundle of the mutating and validating webhook configurations, kept current by watching
//!    them: a re-install or upgrade that clears it is repaired within one watch event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource, ResourceExt as _};
use osm_api::config::{MeshConfig, MeshConfigSpec};

use crate::common::{self, CommonArgs};

/// Field manager of what bootstrap applies.
const FIELD_MANAGER: &str = "osm-bootstrap";
/// Upstream's preset ConfigMap and its key.
pub const PRESET_CONFIG_MAP: &str = "preset-mesh-config";
pub const PRESET_KEY: &str = "preset-mesh-config.json";

#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The MutatingWebhookConfiguration whose CA bundle to keep current (default `osm-webhook-<mesh>`).
    #[arg(long)]
    webhook_config_name: Option<String>,
    /// The ValidatingWebhookConfiguration whose CA bundle to keep current (default
    /// `osm-validator-mesh-<mesh>`).
    #[arg(long)]
    validator_webhook_config_name: Option<String>,
}

pub fn run(a: BootstrapArgs) -> Result<()> {
    common::runtime()?.block_on(run_async(a))
}

async fn run_async(a: BootstrapArgs) -> Result<()> {
    let mut shutdown = common::shutdown_on_signals()?;
    let ready = Arc::new(AtomicBool::new(false));
    let http = common::bind(&a.common.http_addr, "HTTP")?;
    common::serve_health(http, ready.clone(), shutdown.clone())?;

    let client = a.common.client().await?;
    let ca = a.common.ca(&client).await?;
    let ns = &a.common.osm_namespace;
    apply_crds(&client).await?;
    ensure_mesh_config(&client, ns).await?;
    let bundle = ByteString(ca.root_cert_pem().as_bytes().to_vec());
    let mutating = a
        .webhook_config_name
        .clone()
        .unwrap_or_else(|| format!("osm-webhook-{}", a.common.mesh_name));
    let validating = a
        .validator_webhook_config_name
        .clone()
        .unwrap_or_else(|| format!("osm-validator-mesh-{}", a.common.mesh_name));
    ready.store(true, Ordering::SeqCst);
    tracing::info!(
        "bootstrap complete; keeping the webhook CA bundles of {mutating} and {validating} current"
    );

    let keep_mutating =
        keep_ca_bundle::<MutatingWebhookConfiguration>(client.clone(), mutating, bundle.clone());
    let keep_validating = keep_ca_bundle::<ValidatingWebhookConfiguration>(client, validating, bundle);
    tokio::select! {
        _ = keep_mutating => {}
        _ = keep_validating => {}
        _ = shutdown.changed() => {}
    }
    Ok(())
}

/// Server-side applies every CRD and waits until each is Established.
pub async fn apply_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let crds = osm_api::crds::all();
    for crd in &crds {
        let name = crd.name_any();
        let mut crd = crd.clone();
        // SSA needs apiVersion/kind in the body.
        crd.meta_mut().managed_fields = None;
        let body = serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": name },
            "spec": crd.spec,
        });
        api.patch(&name, &params, &Patch::Apply(&body))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
    }
    for crd in &crds {
        let name = crd.name_any();
        let established = kube::runtime::wait::await_condition(
            api.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(60), established)
            .await
            .with_context(|| format!("CRD {name} not Established within 60 s"))?
            .with_context(|| format!("waiting for CRD {name}"))?;
    }
    tracing::info!(count = crds.len(), "CRDs applied and Established");
    Ok(())
}

/// Creates `osm-mesh-config` from the preset when it does not exist.
async fn ensure_mesh_config(client: &Client, ns: &str) -> Result<()> {
    let configs: Api<MeshConfig> = Api::namespaced(client.clone(), ns);
    if configs
        .get_opt(osm_api::contract::MESH_CONFIG_NAME)
        .await?
        .is_some()
    {
        tracing::info!(
            "MeshConfig {ns}/{} exists; left as is",
            osm_api::contract::MESH_CONFIG_NAME
        );
        return Ok(());
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let spec: MeshConfigSpec = match maps.get_opt(PRESET_CONFIG_MAP).await? {
        Some(map) => {
            let Some(json) = map.data.as_ref().and_then(|d| d.get(PRESET_KEY)) else {
                bail!("ConfigMap {ns}/{PRESET_CONFIG_MAP} has no `{PRESET_KEY}` entry");
            };
            serde_json::from_str(json)
                .with_context(|| format!("ConfigMap {ns}/{PRESET_CONFIG_MAP} `{PRESET_KEY}`"))?
        }
        None => {
            tracing::warn!("ConfigMap {ns}/{PRESET_CONFIG_MAP} not found; MeshConfig gets upstream defaults");
            MeshConfigSpec::default()
        }
    };
    let config = MeshConfig::new(osm_api::contract::MESH_CONFIG_NAME, spec);
    match configs.create(&PostParams::default(), &config).await {
        Ok(_) => tracing::info!("created MeshConfig {ns}/{}", osm_api::contract::MESH_CONFIG_NAME),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e).context("creating MeshConfig"),
    }
    Ok(())
}

/// Webhook configurations whose webhooks carry a `clientConfig`.
trait WebhookConfiguration:
    Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig>;
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

/// Watches one webhook configuration and sets every webhook's CA bundle to `bundle` whenever it differs.
async fn keep_ca_bundle<K: WebhookConfiguration>(client: Client, name: String, bundle: ByteString) {
    let api: Api<K> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(api.clone(), config).default_backoff());
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "watching webhook configuration {name}");
                continue;
            }
        };
        let mut updated = object.clone();
        let mut changed = false;
        for cc in updated.client_configs() {
            if cc.ca_bundle.as_ref() != Some(&bundle) {
                cc.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if !changed {
            continue;
        }
        // A replace carries the resourceVersion we read: a concurrent writer makes it fail with a
        // conflict, and the watch delivers their version for another try.
        match api.replace(&name, &PostParams::default(), &updated).await {
            Ok(_) => tracing::info!("set the CA bundle of webhook configuration {name}"),
            Err(e) => tracing::warn!(error = %e, "updating the CA bundle of webhook configuration {name}"),
        }
    }
}
