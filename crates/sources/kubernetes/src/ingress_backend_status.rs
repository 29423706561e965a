//! IngressBackend status written back as upstream OSM writes it: `status.currentStatus` `committed`
//! (reason `successfully committed by the system`) or `error` with the reason, so `kubectl get
//! ingressbackend` shows whether a policy took effect.
//!
//! The statuses come from the model (`MeshModel::ingress_backend_status`); only those that differ from
//! what the object holds are written, so writing a status (which the source watches) does not write
//! again. Every minute each object is compared again (a re-created object, a hand-edited status).

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use osm_api::policy::{IngressBackend, IngressBackendStatus};
use osm_model::ObjectRef;
use tokio::sync::watch;

/// How often every status is compared with its object again, changed or not.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(60);

/// Statuses by IngressBackend, as the model last computed them.
pub type Statuses = Arc<BTreeMap<ObjectRef, IngressBackendStatus>>;

/// Writes each status that differs from the object's until `shutdown` turns true. A failed write is
/// logged and tried again with the next change of statuses; a deleted object is skipped.
pub async fn write_statuses(
    client: Client,
    mut statuses: watch::Receiver<Statuses>,
    mut shutdown: watch::Receiver<bool>,
) {
    // What this writer last wrote (or found): a status equal to it is not written again.
    let mut written: BTreeMap<ObjectRef, IngressBackendStatus> = BTreeMap::new();
    loop {
        let current = statuses.borrow_and_update().clone();
        for (id, status) in current.iter() {
            if written.get(id) == Some(status) {
                continue;
            }
            match write_one(&client, id, status).await {
                Ok(()) => {
                    written.insert(id.clone(), status.clone());
                }
                Err(e) => tracing::warn!(ingress_backend = %id, error = %e, "writing IngressBackend status"),
            }
        }
        written.retain(|id, _| current.contains_key(id));
        tokio::select! {
            changed = statuses.changed() => if changed.is_err() { return },
            // An object deleted and created again between two inputs, or a status edited by hand,
            // leaves the statuses unchanged: now and then every object is compared again.
            _ = tokio::time::sleep(RESYNC) => written.clear(),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Patches one object's status subresource unless it already holds `status`.
async fn write_one(
    client: &Client,
    id: &ObjectRef,
    status: &IngressBackendStatus,
) -> Result<(), kube::Error> {
    let api: Api<IngressBackend> = Api::namespaced(client.clone(), &id.namespace);
    let Some(object) = api.get_opt(&id.name).await? else {
        return Ok(()); // deleted since
    };
    if object.status.as_ref() == Some(status) {
        return Ok(());
    }
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(
        ingress_backend = %id,
        status = status.current_status.as_deref().unwrap_or_default(),
        reason = status.reason.as_deref().unwrap_or_default(),
        "IngressBackend status written"
    );
    Ok(())
}
