//! Talking to the cluster: server-side apply of a rendering (with a per-object created / configured /
//! unchanged report), waiting for CRDs and Deployments, uninstall, and listing installed meshes.

use osm_api::contract::{
    APP_NAME_LABEL, APP_NAME_VALUE, CONTROLLER, MESH_CONFIG_NAME, MONITORED_BY_LABEL, PRESET_CONFIG_MAP,
};
use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt as _};
use serde::Serialize;
use serde_json::Value;

use crate::render::{INSTANCE_LABEL, SET_ANNOTATION, VERSION_LABEL, describe};

/// Field manager of `osm install` / `osm mesh upgrade`.
pub const FIELD_MANAGER: &str = "osm-cli";
/// How long the CRDs may take to become Established.
pub const CRD_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a cluster operation failed; each variant names the object or what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A rendered object of a kind this crate does not know how to address.
    #[error("{api_version} {kind} is not a kind osm install can apply")]
    UnknownKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// A rendered object without a name.
    #[error("a rendered {0} has no metadata.name")]
    NoName(String),
    /// An API call failed.
    #[error("{what}")]
    Api {
        /// What we were doing, e.g. `applying Deployment osm-system/osm-controller`.
        what: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// Waiting for a condition timed out.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long we waited.
        waited: Duration,
    },
    /// Watching an object for a condition failed.
    #[error("watching {what}")]
    Watch {
        /// The object.
        what: String,
        /// Why.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// Installing next to another mesh was refused.
    #[error("{0}")]
    MeshConflict(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Api { what, source }
}

/// What applying one object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyOutcome {
    /// It did not exist.
    Created,
    /// It existed and changed (its resourceVersion moved).
    Configured,
    /// It existed and the apply changed nothing.
    Unchanged,
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// One applied object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppliedObject {
    /// `Kind namespace/name` or `Kind name`.
    pub object: String,
    /// What happened.
    pub outcome: ApplyOutcome,
    /// Its resourceVersion after the apply.
    pub resource_version: String,
}

/// Every applied object, in apply order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// Per object.
    pub objects: Vec<AppliedObject>,
}

impl ApplyReport {
    /// How many objects had `outcome`.
    pub fn count(&self, outcome: ApplyOutcome) -> usize {
        self.objects.iter().filter(|o| o.outcome == outcome).count()
    }
}

/// (apiVersion, kind) → the resource, and whether it is namespaced.
fn resource_of(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    fn erase<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
        ApiResource::erase::<K>(&())
    }
    let (resource, namespaced) = match (api_version, kind) {
        ("v1", "Namespace") => (erase::<Namespace>(), false),
        ("v1", "ServiceAccount") => (erase::<ServiceAccount>(), true),
        ("v1", "ConfigMap") => (erase::<ConfigMap>(), true),
        ("v1", "Secret") => (erase::<Secret>(), true),
        ("v1", "Service") => (erase::<Service>(), true),
        ("apps/v1", "Deployment") => (erase::<Deployment>(), true),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => (erase::<ClusterRole>(), false),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => (erase::<ClusterRoleBinding>(), false),
        ("rbac.authorization.k8s.io/v1", "Role") => (erase::<Role>(), true),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => (erase::<RoleBinding>(), true),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            (erase::<MutatingWebhookConfiguration>(), false)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            (erase::<ValidatingWebhookConfiguration>(), false)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            (erase::<CustomResourceDefinition>(), false)
        }
        _ => return None,
    };
    Some((resource, namespaced))
}

/// The dynamic API and name of a rendered object.
pub fn api_for(client: &Client, object: &Value) -> Result<(Api<DynamicObject>, String), ClusterError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (resource, namespaced) = resource_of(api_version, kind).ok_or_else(|| ClusterError::UnknownKind {
        api_version: api_version.into(),
        kind: kind.into(),
    })?;
    let name = object["metadata"]["name"]
        .as_str()
        .ok_or_else(|| ClusterError::NoName(kind.into()))?;
    let api = match object["metadata"]["namespace"].as_str() {
        Some(ns) if namespaced => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    Ok((api, name.to_string()))
}

/// Server-side applies `objects` (forcing ownership, as `field_manager`): Namespaces and CRDs first,
/// then waits until the CRDs are Established, then the rest in order. `progress` sees each object
/// as it is applied.
pub async fn apply_with_progress(
    client: &Client,
    objects: &[Value],
    field_manager: &str,
    mut progress: impl FnMut(&AppliedObject),
) -> Result<ApplyReport, ClusterError> {
    let first = |o: &&Value| matches!(o["kind"].as_str(), Some("Namespace" | "CustomResourceDefinition"));
    let mut report = ApplyReport::default();
    let mut crds = Vec::new();
    for object in objects.iter().filter(first) {
        let applied = apply_one(client, object, field_manager).await?;
        progress(&applied);
        report.objects.push(applied);
        if object["kind"] == "CustomResourceDefinition" {
            crds.push(
                object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    wait_for_crds(client, &crds, CRD_TIMEOUT).await?;
    for object in objects.iter().filter(|o| !first(o)) {
        let applied = apply_one(client, object, field_manager).await?;
        progress(&applied);
        report.objects.push(applied);
    }
    Ok(report)
}

/// [`apply_with_progress`] without progress.
pub async fn apply(
    client: &Client,
    objects: &[Value],
    field_manager: &str,
) -> Result<ApplyReport, ClusterError> {
    apply_with_progress(client, objects, field_manager, |_| {}).await
}

async fn apply_one(
    client: &Client,
    object: &Value,
    field_manager: &str,
) -> Result<AppliedObject, ClusterError> {
    let (api, name) = api_for(client, object)?;
    let what = describe(object);
    let before = api
        .get_opt(&name)
        .await
        .map_err(api_err(format!("reading {what}")))?
        .and_then(|o| o.metadata.resource_version);
    let params = PatchParams::apply(field_manager).force();
    let after = api
        .patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(api_err(format!("applying {what}")))?;
    let resource_version = after.metadata.resource_version.unwrap_or_default();
    let outcome = match before {
        None => ApplyOutcome::Created,
        Some(rv) if rv == resource_version => ApplyOutcome::Unchanged,
        Some(_) => ApplyOutcome::Configured,
    };
    Ok(AppliedObject {
        object: what,
        outcome,
        resource_version,
    })
}

/// Waits until every named CRD is Established.
pub async fn wait_for_crds(client: &Client, names: &[String], timeout: Duration) -> Result<(), ClusterError> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    for name in names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout_at(deadline, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(ClusterError::Watch {
                    what: format!("CRD {name}"),
                    source,
                });
            }
            Err(_) => {
                return Err(ClusterError::Timeout {
                    what: format!("CRD {name} to be Established"),
                    waited: timeout,
                });
            }
        }
    }
    Ok(())
}

/// Whether a Deployment reports at least one available replica.
pub fn is_available(deployment: &Deployment) -> bool {
    deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .is_some_and(|n| n >= 1)
}

/// Waits until each named Deployment in `namespace` has `status.availableReplicas >= 1`, calling
/// `on_ready` as each one gets there. Watches, so a status change is seen at once.
pub async fn wait_for_deployments(
    client: &Client,
    namespace: &str,
    names: &[&str],
    timeout: Duration,
    mut on_ready: impl FnMut(&str),
) -> Result<(), ClusterError> {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    for name in names {
        let ready = await_condition(api.clone(), name, |d: Option<&Deployment>| {
            d.is_some_and(is_available)
        });
        match tokio::time::timeout_at(deadline, ready).await {
            Ok(Ok(_)) => on_ready(name),
            Ok(Err(source)) => {
                return Err(ClusterError::Watch {
                    what: format!("Deployment {namespace}/{name}"),
                    source,
                });
            }
            Err(_) => {
                let pending: Vec<&str> = names.iter().skip_while(|n| *n != name).copied().collect();
                return Err(ClusterError::Timeout {
                    what: format!(
                        "Deployments {} in {namespace} to have an available replica",
                        pending.join(", ")
                    ),
                    waited: timeout,
                });
            }
        }
    }
    Ok(())
}

/// A mesh found in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshInfo {
    /// The mesh name (`meshName` label of its osm-controller Deployment).
    pub name: String,
    /// The control-plane namespace.
    pub namespace: String,
    /// The version that installed it (`app.kubernetes.io/version`).
    pub version: String,
    /// Whether it refuses other meshes in the cluster.
    pub enforce_single_mesh: bool,
    /// osm-controller replicas available / desired.
    pub controller_replicas: String,
    /// Namespaces labelled `openservicemesh.io/monitored-by=<name>`.
    pub added_namespaces: Vec<String>,
}

/// The meshes in the cluster: every Deployment labelled `app=osm-controller`, in any namespace.
pub async fn mesh_list(client: &Client) -> Result<Vec<MeshInfo>, ClusterError> {
    let deployments = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().labels(&format!("app={CONTROLLER}")))
        .await
        .map_err(api_err("listing osm-controller Deployments"))?;
    let namespaces = Api::<Namespace>::all(client.clone());
    let mut meshes = Vec::new();
    for d in deployments.items {
        let labels = d.labels();
        let name = labels.get("meshName").cloned().unwrap_or_default();
        let added = namespaces
            .list(&ListParams::default().labels(&format!("{MONITORED_BY_LABEL}={name}")))
            .await
            .map_err(api_err(format!("listing namespaces of mesh {name}")))?;
        let mut added_namespaces: Vec<String> = added.items.iter().map(|n| n.name_any()).collect();
        added_namespaces.sort();
        let desired = d.spec.replicas.unwrap_or(1);
        let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
        meshes.push(MeshInfo {
            namespace: d.namespace().unwrap_or_default(),
            version: labels.get(VERSION_LABEL).cloned().unwrap_or_default(),
            enforce_single_mesh: labels.get("enforceSingleMesh").is_some_and(|v| v == "true"),
            controller_replicas: format!("{available}/{desired}"),
            added_namespaces,
            name,
        });
    }
    meshes.sort_by(|a, b| (&a.name, &a.namespace).cmp(&(&b.name, &b.namespace)));
    Ok(meshes)
}

/// Refuses an install of `mesh` into `namespace` that would clash with the meshes already there
/// (upstream's pre-install checks): the same name elsewhere, another mesh in the same namespace, or
/// any other mesh when either side enforces a single mesh. Re-installing the same mesh is fine.
pub fn check_mesh_conflicts(
    existing: &[MeshInfo],
    mesh: &str,
    namespace: &str,
    enforce_single_mesh: bool,
) -> Result<(), ClusterError> {
    for other in existing {
        if other.name == mesh && other.namespace == namespace {
            continue;
        }
        let conflict = if other.name == mesh {
            format!(
                "mesh {mesh} already exists in namespace {}; choose another --mesh-name",
                other.namespace
            )
        } else if other.namespace == namespace {
            format!(
                "mesh {} is already installed in namespace {namespace}; use another --osm-namespace",
                other.name
            )
        } else if other.enforce_single_mesh {
            format!(
                "mesh {} in namespace {} enforces a single mesh in this cluster",
                other.name, other.namespace
            )
        } else if enforce_single_mesh {
            format!(
                "mesh {} already exists in namespace {} and --enforce-single-mesh is set",
                other.name, other.namespace
            )
        } else {
            continue;
        };
        return Err(ClusterError::MeshConflict(conflict));
    }
    Ok(())
}

/// The `--set` arguments recorded by the install of the mesh in `namespace` (on ConfigMap
/// `preset-mesh-config`); `None` when there is no install there.
pub async fn recorded_set(client: &Client, namespace: &str) -> Result<Option<Vec<String>>, ClusterError> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(PRESET_CONFIG_MAP)
        .await
        .map_err(api_err(format!(
            "reading ConfigMap {namespace}/{PRESET_CONFIG_MAP}"
        )))?;
    Ok(cm.map(|cm| {
        cm.annotations()
            .get(SET_ANNOTATION)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }))
}

/// What `osm uninstall mesh` removes beyond the mesh's own objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UninstallOptions {
    /// Also delete the control-plane namespace.
    pub delete_namespace: bool,
    /// Also delete the CRDs and the CA Secret.
    pub delete_cluster_wide_resources: bool,
    /// The CA Secret's name (upstream `--ca-bundle-secret-name`, default `osm-ca-bundle`).
    pub ca_bundle_secret_name: String,
}

/// What an uninstall deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UninstallReport {
    /// Deleted objects, `Kind namespace/name` or `Kind name`.
    pub deleted: Vec<String>,
}

async fn delete_named(
    api: &Api<DynamicObject>,
    what: String,
    name: &str,
    report: &mut UninstallReport,
) -> Result<(), ClusterError> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            report.deleted.push(what);
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(ClusterError::Api {
            what: format!("deleting {what}"),
            source: e,
        }),
    }
}

/// Deletes every object of `kind` labelled as part of `mesh` (in `namespace` when namespaced).
async fn delete_labelled(
    client: &Client,
    api_version: &str,
    kind: &str,
    namespace: &str,
    mesh: &str,
    report: &mut UninstallReport,
) -> Result<(), ClusterError> {
    let (resource, namespaced) = resource_of(api_version, kind).expect("a kind of the table");
    let api = if namespaced {
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::<DynamicObject>::all_with(client.clone(), &resource)
    };
    let selector = format!("{APP_NAME_LABEL}={APP_NAME_VALUE},{INSTANCE_LABEL}={mesh}");
    let found = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api_err(format!("listing {kind}s of mesh {mesh}")))?;
    let mut names: BTreeSet<String> = found.items.iter().map(|o| o.name_any()).collect();
    // Upstream's default names too, in case labels were edited away.
    match kind {
        "MutatingWebhookConfiguration" => {
            names.insert(format!("osm-webhook-{mesh}"));
        }
        "ValidatingWebhookConfiguration" => {
            names.insert(format!("osm-validator-mesh-{mesh}"));
        }
        _ => {}
    }
    for name in names {
        let what = if namespaced {
            format!("{kind} {namespace}/{name}")
        } else {
            format!("{kind} {name}")
        };
        delete_named(&api, what, &name, report).await?;
    }
    Ok(())
}

/// Removes what `osm install` created for `mesh` in `namespace` (found by its labels), the webhook
/// configurations first so pod creation is never blocked by a webhook without a server, and the
/// MeshConfig `osm-mesh-config` (as upstream's uninstall hook does). The CRDs and the CA Secret go
/// only with `delete_cluster_wide_resources`, the namespace only with `delete_namespace`.
/// Idempotent: what is already gone is skipped.
pub async fn uninstall(
    client: &Client,
    mesh: &str,
    namespace: &str,
    opts: &UninstallOptions,
) -> Result<UninstallReport, ClusterError> {
    let mut report = UninstallReport::default();
    for (api_version, kind) in [
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
        ),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("v1", "ServiceAccount"),
    ] {
        delete_labelled(client, api_version, kind, namespace, mesh, &mut report).await?;
    }
    // The MeshConfig exists only if its CRD does; a missing CRD is a 404 like a missing object.
    let mesh_config = ApiResource::erase::<osm_api::config::MeshConfig>(&());
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &mesh_config);
    delete_named(
        &api,
        format!("MeshConfig {namespace}/{MESH_CONFIG_NAME}"),
        MESH_CONFIG_NAME,
        &mut report,
    )
    .await?;
    if opts.delete_cluster_wide_resources {
        let (secret, _) = resource_of("v1", "Secret").expect("in the table");
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &secret);
        let name = match opts.ca_bundle_secret_name.as_str() {
            "" => "osm-ca-bundle",
            n => n,
        };
        delete_named(&api, format!("Secret {namespace}/{name}"), name, &mut report).await?;
        let (crd, _) =
            resource_of("apiextensions.k8s.io/v1", "CustomResourceDefinition").expect("in the table");
        let api = Api::<DynamicObject>::all_with(client.clone(), &crd);
        for c in osm_api::crds::all() {
            let name = c.name_any();
            delete_named(
                &api,
                format!("CustomResourceDefinition {name}"),
                &name,
                &mut report,
            )
            .await?;
        }
    }
    if opts.delete_namespace {
        let (ns, _) = resource_of("v1", "Namespace").expect("in the table");
        let api = Api::<DynamicObject>::all_with(client.clone(), &ns);
        delete_named(&api, format!("Namespace {namespace}"), namespace, &mut report).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(name: &str, ns: &str, enforce: bool) -> MeshInfo {
        MeshInfo {
            name: name.into(),
            namespace: ns.into(),
            version: "0.1.0".into(),
            enforce_single_mesh: enforce,
            controller_replicas: "1/1".into(),
            added_namespaces: vec![],
        }
    }

    /// Re-installing the same mesh is allowed; clashes are refused with a reason.
    #[test]
    fn mesh_conflicts_follow_upstream_preinstall_checks() {
        let existing = [mesh("osm", "osm-system", false)];
        check_mesh_conflicts(&existing, "osm", "osm-system", true).unwrap();
        check_mesh_conflicts(&existing, "blue", "blue-system", false).unwrap();
        let err = check_mesh_conflicts(&existing, "osm", "other", false).unwrap_err();
        assert!(
            err.to_string().contains("already exists in namespace osm-system"),
            "{err}"
        );
        let err = check_mesh_conflicts(&existing, "blue", "osm-system", false).unwrap_err();
        assert!(
            err.to_string()
                .contains("already installed in namespace osm-system"),
            "{err}"
        );
        let err = check_mesh_conflicts(&existing, "blue", "blue-system", true).unwrap_err();
        assert!(err.to_string().contains("--enforce-single-mesh"), "{err}");
        let enforcing = [mesh("osm", "osm-system", true)];
        let err = check_mesh_conflicts(&enforcing, "blue", "blue-system", false).unwrap_err();
        assert!(err.to_string().contains("enforces a single mesh"), "{err}");
    }

    #[test]
    fn every_rendered_kind_is_addressable() {
        for object in crate::render(&Default::default()) {
            let api_version = object["apiVersion"].as_str().unwrap();
            let kind = object["kind"].as_str().unwrap();
            assert!(resource_of(api_version, kind).is_some(), "{api_version} {kind}");
        }
    }
}
