//! The local-mode control plane: a manifest directory (validated, watched) feeding the controller,
//! the ADS server over mTLS, and certificate rotation. Used by `osm controller` and `osm demo`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use osm_ca::CertificateAuthority;
use osm_controller::ControlPlane;
use osm_controller::runner::{self, Listeners, Update};
use osm_model::MeshInput;
use osm_sources::{ManifestDir, ManifestSource};
use tokio::runtime::Runtime;

pub struct LocalControlPlane {
    cp: Arc<ControlPlane>,
    last_event: Arc<Mutex<String>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl LocalControlPlane {
    /// Runs the control plane fed by `config_dir` (problems are reported; valid files still apply)
    /// on `rt`: ADS on `listener` once the directory is loaded, and `/health/*`, `/version` and
    /// `/metrics` on `http` (upstream's port 9091) if given. The directory is watched for changes.
    /// The ingress gateway certificate MeshConfig may ask for is written into `ingress_gateway_cert_dir`
    /// (`ca.crt`, `tls.crt`, `tls.key`) and kept current; without a directory it is not issued, with a
    /// warning.
    pub fn start_on(
        rt: &Runtime,
        ca: Arc<CertificateAuthority>,
        config_dir: &Path,
        listener: std::net::TcpListener,
        http: Option<std::net::TcpListener>,
        osm_namespace: &str,
        ingress_gateway_cert_dir: Option<&Path>,
    ) -> Result<Self> {
        let source = ManifestSource::new(ManifestDir::new(config_dir));
        let last_event = Arc::new(Mutex::new(String::new()));
        let cp = Arc::new(ControlPlane::new(ca, MeshInput::default()));
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        {
            let _guard = rt.enter();
            match ingress_gateway_cert_dir {
                Some(dir) => {
                    let store = Arc::new(osm_ca::DirectoryStore::new(dir));
                    cp.spawn_ingress_gateway_cert(store, shutdown_rx.clone());
                }
                None => {
                    rt.spawn(warn_unwritten_ingress_gateway_cert(
                        cp.ingress_gateway_spec(),
                        shutdown_rx.clone(),
                    ));
                }
            }
        }
        let listeners = Listeners {
            ads: listener,
            http,
            osm_namespace: osm_namespace.to_string(),
        };
        // Callers read the input at once (`osm demo` bootstraps its pods from it): return after the
        // directory's first load is applied.
        let (loaded_tx, loaded_rx) = std::sync::mpsc::channel::<()>();
        let on_update = {
            let last_event = last_event.clone();
            move |update: Update<'_>| match update {
                Update::Applied(stats) => {
                    set(
                        &last_event,
                        format!(
                            "applied config dir: {} proxies, {} changed in {} ms",
                            stats.proxies,
                            stats.changed,
                            stats.micros / 1000
                        ),
                    );
                    let _ = loaded_tx.send(());
                }
                Update::Rejected(summary) => {
                    set(&last_event, format!("REJECTED {summary}: previous policy kept"))
                }
            }
        };
        let runner = runner::run(cp.clone(), source, listeners, shutdown_rx, on_update);
        rt.spawn(async move {
            if let Err(e) = runner.await {
                tracing::error!(error = %e, "the control plane stopped");
            }
        });
        loaded_rx
            .recv_timeout(Duration::from_secs(60))
            .context("the config directory was not loaded")?;
        Ok(Self {
            cp,
            last_event,
            shutdown,
        })
    }

    /// Like [`Self::start_on`], with ADS bound inside the demo's hub namespace.
    pub fn start(
        rt: &Runtime,
        ca: Arc<CertificateAuthority>,
        config_dir: &Path,
        hub: &osm_harness::Hub,
    ) -> Result<Self> {
        let listener = hub.bind_tcp(osm_xds::names::ADS_PORT)?;
        Self::start_on(rt, ca, config_dir, listener, None, "osm-system", None)
    }

    pub fn control_plane(&self) -> Arc<ControlPlane> {
        self.cp.clone()
    }

    pub fn proxy_keys(&self) -> Vec<String> {
        self.cp.cache().proxies()
    }

    pub fn last_event(&self) -> String {
        self.last_event.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for LocalControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Without `--ingress-gateway-cert-dir` there is nowhere to put the ingress gateway certificate: says
/// so whenever the MeshConfig asks for one (again if the request changes).
async fn warn_unwritten_ingress_gateway_cert(
    mut spec: tokio::sync::watch::Receiver<Option<osm_api::config::IngressGatewayCertSpec>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Some(gw) = spec.borrow_and_update().as_ref() {
            tracing::warn!(
                secret = %format!("{}/{}", gw.secret.namespace, gw.secret.name),
                "MeshConfig sets spec.certificate.ingressGateway, but the ingress gateway certificate is \
                 not written: local mode has no Secrets and no --ingress-gateway-cert-dir was given to put \
                 its ca.crt, tls.crt and tls.key in"
            );
        }
        tokio::select! {
            changed = spec.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

fn set(slot: &Mutex<String>, s: String) {
    if let Ok(mut g) = slot.lock() {
        *g = s;
    }
}

/// Waits (bounded) until every proxy the control plane knows is in sync.
pub fn wait_all_in_sync(cp: &ControlPlane, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let keys = cp.cache().proxies();
        if !keys.is_empty() && keys.iter().all(|k| cp.cache().in_sync(k)) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
