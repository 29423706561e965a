//! `osm-control-plane injector`: the sidecar injector, a mutating admission webhook on 9090
//! (`/mutate-pod-creation`), serving a certificate for `osm-injector.<ns>.svc` from the mesh CA
//! (whose root the bootstrap component puts in the webhook configuration's CA bundle).

use osm_api::contract::INJECTOR;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt as _;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use osm_api::config::MeshConfig;
use osm_webhook::inject::InjectConfig;
use osm_webhook::server::{Injector, injector_router, serve, service_tls_config};
use tokio::sync::watch;

use crate::common::{self, CommonArgs};

#[derive(clap::Args, Debug)]
pub struct InjectorArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Where the webhook listens (TLS; upstream port 9090).
    #[arg(long, default_value = "0.0.0.0:9090")]
    webhook_addr: String,
    /// The MutatingWebhookConfiguration that calls this injector (kept current by bootstrap).
    #[arg(long)]
    webhook_config_name: Option<String>,
    /// Sidecar image (MeshConfig `spec.sidecar.envoyImage` overrides it).
    #[arg(long, default_value = "envoyproxy/envoy:v1.40.0")]
    envoy_image: String,
    /// Init container image providing `osm-init` (MeshConfig `spec.sidecar.initContainerImage`
    /// overrides it).
    #[arg(long, default_value = concat!("openservicemesh-rs/osm-init:", env!("CARGO_PKG_VERSION")))]
    init_image: String,
}

pub fn run(a: InjectorArgs) -> Result<()> {
    common::runtime()?.block_on(run_async(a))
}

async fn run_async(a: InjectorArgs) -> Result<()> {
    let mut shutdown = common::shutdown_on_signals()?;
    let ns = a.common.osm_namespace.clone();
    let webhook = common::bind(&a.webhook_addr, "the injector webhook")?;
    let http = common::bind(&a.common.http_addr, "HTTP")?;
    let client = a.common.client().await?;
    let ca = Arc::new(a.common.ca(&client).await?);

    let mut config = InjectConfig::new(&a.common.mesh_name, &ns, &a.envoy_image, &a.init_image);
    config.trust_domain = a.common.trust_domain()?;
    let (config_tx, config_rx) = watch::channel(config);
    tokio::spawn(follow_mesh_config(client.clone(), ns.clone(), config_tx));

    let tls = service_tls_config(&ca, INJECTOR, &ns, Duration::from_secs(365 * 24 * 3600))
        .context("the injector's serving certificate")?;
    let router = injector_router(Injector::new(client, ca, config_rx));
    let mut stop = shutdown.clone();
    let server = tokio::spawn(serve(webhook, tls, router, async move {
        let _ = stop.changed().await;
    }));
    // Ready once serving: everything above has succeeded.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    common::serve_health(http, ready, shutdown.clone())?;
    tracing::info!(addr = %a.webhook_addr, "sidecar injector serving /mutate-pod-creation");
    let _ = shutdown.changed().await;
    server.await?.context("injector webhook server")?;
    Ok(())
}

/// Keeps the injector's MeshConfig current (sidecar log level, images, exclusion lists …). A missing
/// MeshConfig keeps the last one seen.
async fn follow_mesh_config(client: kube::Client, ns: String, tx: watch::Sender<InjectConfig>) {
    let api: Api<MeshConfig> = Api::namespaced(client, &ns);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={}", osm_api::contract::MESH_CONFIG_NAME));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff().applied_objects());
    while let Some(event) = events.next().await {
        match event {
            Ok(mesh_config) => {
                tx.send_modify(|c| c.mesh_config = mesh_config.spec.clone());
                tracing::info!(
                    "MeshConfig {ns}/{} applied to injection",
                    osm_api::contract::MESH_CONFIG_NAME
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "watching MeshConfig {ns}/{}", osm_api::contract::MESH_CONFIG_NAME)
            }
        }
    }
}
