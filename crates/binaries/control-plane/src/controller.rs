//! `osm-control-plane controller`: the Kubernetes source feeding the same model → xDS → ADS pipeline as
//! local mode, and the ingress gateway certificate kept in the Secret MeshConfig names.

use osm_api::contract::VALIDATOR_SERVICE;
use std::sync::Arc;

use anyhow::{Context, Result};
use osm_controller::ControlPlane;
use osm_controller::runner::{self, Listeners};
use osm_k8s::ingress_gateway_secret::IngressGatewaySecretStore;
use osm_k8s::{KubeOptions, KubeSource};
use osm_model::MeshInput;

use crate::common::{self, CommonArgs};

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Where ADS listens (mTLS only; upstream port 15128).
    #[arg(long, default_value = "0.0.0.0:15128")]
    ads_addr: String,
    /// Where the validating webhook listens (TLS; upstream port 9093, Service `osm-validator`).
    #[arg(long, default_value = "0.0.0.0:9093")]
    validator_addr: String,
}

pub fn run(a: ControllerArgs) -> Result<()> {
    let rt = common::runtime()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: ControllerArgs) -> Result<()> {
    let mut shutdown = common::shutdown_on_signals()?;
    let client = a.common.client().await?;
    let ca = Arc::new(a.common.ca(&client).await?);
    let cp = Arc::new(ControlPlane::new(ca, MeshInput::default()));
    // Bind before syncing so a port problem shows at once.
    let ads = common::bind(&a.ads_addr, "ADS")?;
    let http = common::bind(&a.common.http_addr, "HTTP")?;
    let validator = common::bind(&a.validator_addr, "the validating webhook")?;

    let mut opts = KubeOptions::new(&a.common.mesh_name, &a.common.osm_namespace);
    opts.trust_domain = a.common.trust_domain.clone();
    let listeners = Listeners {
        ads,
        http: Some(http),
        osm_namespace: a.common.osm_namespace.clone(),
    };
    // MeshConfig `spec.certificate.ingressGateway`: the certificate, kept current in the Secret it names.
    let ingress_gateway = cp.spawn_ingress_gateway_cert(
        Arc::new(IngressGatewaySecretStore::new(client.clone())),
        shutdown.clone(),
    );
    // IngressBackend status (`committed` / `error` with the reason), written back as upstream.
    tokio::spawn(osm_k8s::ingress_backend_status::write_statuses(
        client.clone(),
        cp.ingress_backend_status(),
        shutdown.clone(),
    ));
    let runner = tokio::spawn(runner::run(
        cp.clone(),
        KubeSource::new(client.clone(), opts),
        listeners,
        shutdown.clone(),
        |_| {},
    ));

    // The validating webhook: refuses what the CRD schemas cannot (e.g. a TrafficTarget outside its
    // destination's namespace), with the field named.
    let tls = osm_webhook::server::service_tls_config(
        cp.ca(),
        VALIDATOR_SERVICE,
        &a.common.osm_namespace,
        std::time::Duration::from_secs(365 * 24 * 3600),
    )
    .context("the validator's serving certificate")?;
    let mut stop = shutdown.clone();
    let validator_task = tokio::spawn(osm_webhook::server::serve(
        validator,
        tls,
        osm_webhook::server::validator_router(osm_webhook::server::Validator::with_client(client.clone())),
        async move {
            let _ = stop.changed().await;
        },
    ));

    let _ = shutdown.changed().await;
    let _ = validator_task.await;
    let _ = ingress_gateway.await;
    runner
        .await
        .context("the control plane task")?
        .context("the control plane")?;
    Ok(())
}
