//! The local-mode control plane: a manifest directory (validated, watched) feeding the controller,
//! the ADS server over mTLS, and certificate rotation. Used by `osm controller` and `osm demo`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use osm_ca::CertificateAuthority;
use osm_controller::ControlPlane;
use osm_sources::{ManifestDir, ManifestSource, Reload};
use tokio::runtime::Runtime;

pub struct LocalControlPlane {
    cp: Arc<ControlPlane>,
    last_event: Arc<Mutex<String>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    ads_serving: Arc<std::sync::atomic::AtomicBool>,
}

impl LocalControlPlane {
    /// Loads `config_dir` once (problems are reported; valid files still apply), starts ADS on
    /// `listener` and watches the directory for changes.
    pub fn start_on(
        rt: &Runtime,
        ca: Arc<CertificateAuthority>,
        config_dir: &Path,
        listener: std::net::TcpListener,
        osm_namespace: &str,
    ) -> Result<Self> {
        let mut source = ManifestSource::new(ManifestDir::new(config_dir));
        let last_event = Arc::new(Mutex::new(String::new()));
        match source.reload() {
            Reload::Rejected(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "invalid manifest; its last good contents (none yet) stay in force");
                }
                set(
                    &last_event,
                    format!("{} invalid manifest(s): {}", errors.len(), errors[0]),
                );
            }
            _ => set(&last_event, "loaded the config directory".to_string()),
        }
        let cp = Arc::new(ControlPlane::new(ca, source.input().clone()));
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let ads_serving = cp.spawn_servers(rt.handle(), listener, osm_namespace, shutdown_rx.clone())?;
        {
            let cp = cp.clone();
            let last_event = last_event.clone();
            rt.spawn(async move {
                source
                    .watch(shutdown_rx, move |change| match change {
                        Ok(input) => {
                            let stats = cp.replace(input);
                            tracing::info!(?stats, "applied the config directory");
                            set(&last_event, format!(
                                "applied config dir: {} proxies, {} changed in {} ms",
                                stats.proxies,
                                stats.changed,
                                stats.micros / 1000
                            ));
                        }
                        Err(errors) => {
                            for e in &errors {
                                tracing::error!(error = %e, "invalid manifest; the previous policy stays in force");
                            }
                            set(&last_event, format!("REJECTED {}: previous policy kept", errors[0]));
                        }
                    })
                    .await;
            });
        }
        Ok(Self {
            cp,
            last_event,
            shutdown,
            ads_serving,
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
        Self::start_on(rt, ca, config_dir, listener, "osm-system")
    }

    /// Serves `/health/*`, `/version` and `/metrics` on `listener` (upstream's port 9091).
    pub fn serve_http(&self, rt: &Runtime, listener: std::net::TcpListener) -> Result<()> {
        listener.set_nonblocking(true)?;
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (cp, serving, shutdown) = (
            self.cp.clone(),
            self.ads_serving.clone(),
            self.shutdown.subscribe(),
        );
        rt.spawn(async move {
            if let Err(e) = osm_controller::http::serve_http(cp, listener, serving, shutdown).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
        Ok(())
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
