//! `osm bootstrap`: an Envoy bootstrap for a workload identity, signed by the local controller's CA.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_model::{Pod, PodRef};
use osm_xds::bootstrap::AdsApi;

#[derive(clap::Args)]
pub struct BootstrapArgs {
    /// The workload's namespace.
    #[arg(long)]
    namespace: String,
    /// The workload's ServiceAccount (its mesh identity).
    #[arg(long)]
    service_account: String,
    /// The proxy uuid; must match the pod's `osm-proxy-uuid` in the controller's config directory.
    #[arg(long)]
    proxy_uuid: String,
    /// Host or IP where the controller's ADS port (15128) is reachable.
    #[arg(long, default_value = "127.0.0.1")]
    ads_host: String,
    /// Use incremental (delta) ADS instead of state of the world.
    #[arg(long)]
    delta: bool,
    /// The controller's state directory (holds the CA).
    #[arg(long, default_value_os_t = crate::default_state_dir())]
    state_dir: PathBuf,
    /// Where to write the bootstrap (contains a private key; written with mode 0600).
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(osm_namespace: &str, a: BootstrapArgs) -> Result<()> {
    let ca = CertificateAuthority::load_or_create(
        &a.state_dir,
        TrustDomain::default(),
        Duration::from_secs(10 * 365 * 24 * 3600),
    )
    .with_context(|| format!("loading the CA from {}", a.state_dir.display()))?;
    let pod = Pod {
        id: PodRef::new(&a.namespace, &a.proxy_uuid),
        service_account: a.service_account.clone(),
        proxy_uuid: Some(a.proxy_uuid.clone()),
        ip: None,
        labels: Default::default(),
        hostname: None,
        subdomain: None,
    };
    let api = if a.delta {
        AdsApi::Delta
    } else {
        AdsApi::StateOfTheWorld
    };
    let server_name = osm_api::contract::ads_server_name(osm_namespace);
    let yaml = osm_xds::proxy_bootstrap::render(&ca, &pod, &a.ads_host, &server_name, api, &[])?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    f.write_all(yaml.as_bytes())?;
    println!(
        "wrote {} for {}.{} (node id {}.sidecar.{}.{}.cluster.local); start Envoy with: envoy -c {}",
        a.output.display(),
        a.service_account,
        a.namespace,
        a.proxy_uuid,
        a.service_account,
        a.namespace,
        a.output.display()
    );
    Ok(())
}
