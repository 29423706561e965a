//! The Kubernetes client every cluster verb uses: `--kubeconfig`, else `$KUBECONFIG`, else
//! `~/.kube/config`, else the in-cluster ServiceAccount (kube-rs's inference order).

use std::path::Path;

use anyhow::{Context, Result};

/// A client for the cluster named by `kubeconfig` (or inferred as described above).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    Ok(osm_k8s::connect(kubeconfig).await?)
}

/// A current-thread runtime for one CLI command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
