//! `osm controller --config-dir DIR`: the local-mode control plane on its own, for Envoys running
//! anywhere that can reach its ADS port.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use osm_ca::{CertificateAuthority, TrustDomain};

#[derive(clap::Args)]
pub struct ControllerArgs {
    /// Directory of Kubernetes-style YAML (Namespaces, ServiceAccounts, Services, Pods/Deployments with
    /// workload IPs, SMI and OSM resources, MeshConfig). Watched: edits apply live.
    #[arg(long)]
    config_dir: PathBuf,
    /// Where ADS listens (mTLS only).
    #[arg(long, default_value = "0.0.0.0:15128")]
    listen: String,
    /// Health, version and Prometheus metrics: `/health/ready`, `/health/alive`, `/version`, `/metrics`.
    #[arg(long, default_value = "0.0.0.0:9091")]
    http_addr: String,
    /// Keeps the CA (`root-cert.pem`, `root-key.pem`) so restarts keep identities.
    #[arg(long, default_value_os_t = crate::default_state_dir())]
    state_dir: PathBuf,
    /// Where the ingress gateway certificate MeshConfig `spec.certificate.ingressGateway` asks for is
    /// written, as `ca.crt` (the mesh root), `tls.crt` and `tls.key` (mode 0600), and kept current
    /// (renewed before expiry; deleted when the spec goes). Without it the certificate is not issued.
    #[arg(long)]
    ingress_gateway_cert_dir: Option<PathBuf>,
}

pub fn run(osm_namespace: &str, a: ControllerArgs) -> Result<std::process::ExitCode> {
    let ca = CertificateAuthority::load_or_create(
        &a.state_dir,
        TrustDomain::default(),
        Duration::from_secs(10 * 365 * 24 * 3600),
    )
    .with_context(|| format!("loading the CA from {}", a.state_dir.display()))?;
    let ca = Arc::new(ca);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let listener =
        std::net::TcpListener::bind(&a.listen).with_context(|| format!("binding ADS on {}", a.listen))?;
    let addr = listener.local_addr()?;
    let http = std::net::TcpListener::bind(&a.http_addr)
        .with_context(|| format!("binding HTTP on {}", a.http_addr))?;
    let http_addr = http.local_addr()?;
    let local = crate::local::LocalControlPlane::start_on(
        &rt,
        ca,
        &a.config_dir,
        listener,
        Some(http),
        osm_namespace,
        a.ingress_gateway_cert_dir.as_deref(),
    )?;
    println!("ADS (mTLS) listening on {addr}");
    println!("health and metrics on http://{http_addr} (/health/ready, /health/alive, /version, /metrics)");
    println!(
        "CA bundle: {}",
        a.state_dir.join(osm_ca::ROOT_CERT_FILE).display()
    );
    if let Some(dir) = &a.ingress_gateway_cert_dir {
        println!(
            "ingress gateway certificate (if MeshConfig asks for one): {}/{{ca.crt,tls.crt,tls.key}}",
            dir.display()
        );
    }
    println!(
        "server name sidecars must expect: {}",
        osm_api::contract::ads_server_name(osm_namespace)
    );
    println!(
        "watching {} — `osm bootstrap` writes a sidecar bootstrap for a workload",
        a.config_dir.display()
    );
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    local.stop();
    Ok(std::process::ExitCode::SUCCESS)
}
