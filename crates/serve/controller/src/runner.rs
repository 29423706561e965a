//! One control-plane runner for every source: `osm controller` (a manifest directory) and
//! `osm-control-plane controller` (Kubernetes) differ only in the [`Source`] they pass.
//!
//! Order, as upstream: the source's first complete input is applied before ADS serves (before it,
//! every sidecar would be refused as unknown); then ADS, certificate rotation and, if given, the
//! health/metrics HTTP server run until `shutdown`.

use std::sync::Arc;

use osm_model::{Source, SourceEvent};
use tokio::sync::watch;

use crate::{ControlPlane, ControllerError, RecomputeStats};

/// Where the runner serves.
pub struct Listeners {
    /// ADS (mTLS).
    pub ads: std::net::TcpListener,
    /// `/health/ready`, `/health/alive`, `/version`, `/metrics` (upstream's 9091), if wanted.
    pub http: Option<std::net::TcpListener>,
    /// The control plane's namespace: it names the ADS server (`osm-controller.<ns>.svc.cluster.local`).
    pub osm_namespace: String,
}

/// What happened to one source event, for status displays.
#[derive(Debug)]
pub enum Update<'a> {
    Applied(&'a RecomputeStats),
    Rejected(&'a str),
}

/// Runs a recompute off the async workers when the runtime allows it: it is CPU-bound and must not
/// stall the ADS streams sharing this worker.
fn off_workers(recompute: impl FnOnce() -> RecomputeStats) -> RecomputeStats {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(recompute),
        _ => recompute(),
    }
}

/// Resolves when `shutdown` turns true or its sender is gone (the guard `wait_for` returns is not
/// `Send`: it must not live across an await).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(drop);
}

/// Runs `cp` fed by `source` until `shutdown` turns true (or its sender is dropped).
pub async fn run(
    cp: Arc<ControlPlane>,
    source: impl Source,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
    mut on_update: impl FnMut(Update<'_>) + Send + 'static,
) -> Result<(), ControllerError> {
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let sink = {
        let cp = cp.clone();
        let mut synced = Some(synced_tx);
        Box::new(move |event: SourceEvent| {
            let stats = match event {
                SourceEvent::Input(input) => off_workers(|| cp.replace(*input)),
                SourceEvent::Delta(delta) => off_workers(|| cp.apply_delta(*delta)),
                SourceEvent::Rejected(summary) => {
                    tracing::warn!(%summary, "input rejected; the previous policy stays in force");
                    on_update(Update::Rejected(&summary));
                    return;
                }
            };
            tracing::info!(
                proxies = stats.proxies,
                changed = stats.changed,
                millis = stats.micros / 1000,
                "mesh updated"
            );
            on_update(Update::Applied(&stats));
            if let Some(tx) = synced.take() {
                let _ = tx.send(());
            }
        })
    };
    let stop = Box::pin(stopped(shutdown.clone()));
    let source = tokio::spawn(source.run_until(stop, sink));

    tokio::select! {
        _ = synced_rx => {}
        () = stopped(shutdown.clone()) => {
            let _ = source.await;
            return Ok(());
        }
    }
    tracing::info!("initial sync complete; serving ADS");
    let handle = tokio::runtime::Handle::current();
    let ads_serving = cp.spawn_servers(&handle, listeners.ads, &listeners.osm_namespace, shutdown.clone())?;
    let http = match listeners.http {
        Some(listener) => {
            listener
                .set_nonblocking(true)
                .map_err(ControllerError::Listener)?;
            let listener = tokio::net::TcpListener::from_std(listener).map_err(ControllerError::Listener)?;
            Some(tokio::spawn(crate::http::serve_http(
                cp.clone(),
                listener,
                ads_serving,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    stopped(shutdown).await;
    let _ = source.await;
    if let Some(http) = http
        && let Ok(Err(e)) = http.await
    {
        tracing::error!(error = %e, "HTTP server stopped");
    }
    Ok(())
}
