//! Flags and plumbing every component shares.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio::sync::watch;

/// Flags of every component (upstream names).
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// The mesh this control plane serves (`openservicemesh.io/monitored-by=<name>` on namespaces).
    #[arg(long, default_value = "osm")]
    pub mesh_name: String,
    /// The control plane's namespace (MeshConfig, CA Secret, Services).
    #[arg(long, default_value = "osm-system", env = "OSM_NAMESPACE")]
    pub osm_namespace: String,
    /// Trust domain of service identities.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// The Secret holding the mesh CA.
    #[arg(long, default_value = osm_k8s::ca_secret::DEFAULT_CA_SECRET)]
    pub ca_bundle_secret_name: String,
    /// Kubeconfig to use instead of the in-cluster ServiceAccount.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Health and version (and metrics, for the controller): `/health/ready`, `/health/alive`.
    #[arg(long, default_value = "0.0.0.0:9091")]
    pub http_addr: String,
}

impl CommonArgs {
    pub fn trust_domain(&self) -> Result<osm_ca::TrustDomain> {
        osm_ca::TrustDomain::new(&self.trust_domain)
            .with_context(|| format!("--trust-domain {}", self.trust_domain))
    }

    /// A client authenticated as this component: `--kubeconfig`, else in-cluster / `~/.kube/config`.
    pub async fn client(&self) -> Result<kube::Client> {
        Ok(osm_k8s::connect(self.kubeconfig.as_deref()).await?)
    }

    /// Loads the mesh CA from its Secret, creating it when this is the first component to start.
    pub async fn ca(&self, client: &kube::Client) -> Result<osm_ca::CertificateAuthority> {
        osm_k8s::ca_secret::load_or_create_ca(
            client,
            &self.osm_namespace,
            &self.ca_bundle_secret_name,
            self.trust_domain()?,
        )
        .await
        .context("loading the mesh CA")
    }
}

pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OSM_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A shutdown signal that turns true on SIGTERM (what the kubelet sends) or Ctrl-C.
pub fn shutdown_on_signals() -> Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Binds a TCP listener (std, for handing to the servers).
pub fn bind(addr: &str, what: &str) -> Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).with_context(|| format!("binding {what} on {addr}"))
}

/// Serves `/health/alive`, `/health/ready` (200 while `ready` is true, else 503) and `/version` on
/// `listener` until shutdown: the health port of the components without metrics.
pub fn serve_health(
    listener: std::net::TcpListener,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = axum::Router::new()
        .route("/health/alive", get(|| async { "alive" }))
        .route(
            "/health/ready",
            get(move || {
                let ready = ready.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route(
            "/version",
            get(|| async { axum::Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })) }),
        );
    tokio::spawn(async move {
        let stopped = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok(())
}
