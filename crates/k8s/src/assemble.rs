//! Reflector store contents → one [`MeshInput`]. Pure: no I/O, so a snapshot always assembles the same
//! way.
//!
//! Only objects of monitored namespaces count: a namespace is monitored iff it is labelled
//! `openservicemesh.io/monitored-by=<mesh name>` and not `openservicemesh.io/ignore` (any value but
//! `false`). Unlike local mode, the label is required. Invalid objects are logged with kind,
//! namespace, name and field and skipped; nothing here fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod as KubePod, Service as KubeService};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use osm_api::config::{MeshConfig, MeshConfigSpec};
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::{HTTPRouteGroup, TCPRoute};
use osm_api::smi::split::TrafficSplit;
use osm_api::validate::Validate;
use osm_model::{AppProtocol, Endpoint, MeshInput, ObjectRef, Pod, Service, ServicePort};

/// Namespace label naming the mesh that monitors the namespace.
pub const MONITORED_BY_LABEL: &str = "openservicemesh.io/monitored-by";
/// Namespace label excluding the namespace from every mesh.
pub const IGNORE_LABEL: &str = "openservicemesh.io/ignore";
/// Pod label carrying the sidecar's proxy uuid (set by the injector).
pub const PROXY_UUID_LABEL: &str = "osm-proxy-uuid";
/// The name of the MeshConfig that configures the mesh.
pub const MESH_CONFIG_NAME: &str = "osm-mesh-config";

/// What every store held at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub namespaces: Vec<Arc<Namespace>>,
    pub services: Vec<Arc<KubeService>>,
    pub endpoints: Vec<Arc<Endpoints>>,
    pub pods: Vec<Arc<KubePod>>,
    pub traffic_targets: Vec<Arc<TrafficTarget>>,
    pub http_route_groups: Vec<Arc<HTTPRouteGroup>>,
    pub tcp_routes: Vec<Arc<TCPRoute>>,
    pub traffic_splits: Vec<Arc<TrafficSplit>>,
    /// MeshConfigs of the OSM namespace (only `osm-mesh-config` is read).
    pub mesh_configs: Vec<Arc<MeshConfig>>,
}

/// True when `ns` belongs to the mesh `mesh_name`.
pub fn is_monitored(ns: &Namespace, mesh_name: &str) -> bool {
    let labels = ns.labels();
    let ignored = labels.get(IGNORE_LABEL).is_some_and(|v| v != "false");
    !ignored && labels.get(MONITORED_BY_LABEL).map(String::as_str) == Some(mesh_name)
}

fn id_of<K: kube::Resource>(o: &K) -> ObjectRef {
    ObjectRef::new(o.namespace().unwrap_or_default(), o.name_any())
}

/// Logs every broken rule of an invalid object; true when the object is valid.
fn valid<K: kube::Resource + Validate>(kind: &str, o: &K) -> bool {
    match o.validate() {
        Ok(()) => true,
        Err(errors) => {
            for e in errors.iter() {
                tracing::warn!(
                    kind,
                    namespace = o.meta().namespace.as_deref().unwrap_or(""),
                    name = o.meta().name.as_deref().unwrap_or(""),
                    field = %e.field,
                    "invalid object skipped: {}",
                    e.message
                );
            }
            false
        }
    }
}

fn skip(kind: &str, id: &ObjectRef, field: &str, message: &str) {
    tracing::warn!(kind, namespace = %id.namespace, name = %id.name, field, "invalid object skipped: {message}");
}

/// Builds the model input. `fallback_config` is used when `osm-mesh-config` is missing or invalid
/// (the caller passes the last valid one, so a bad edit does not flip the mesh's mode).
pub fn assemble(
    snap: &Snapshot,
    mesh_name: &str,
    trust_domain: &str,
    fallback_config: &MeshConfigSpec,
) -> MeshInput {
    let monitored: BTreeSet<&str> = snap
        .namespaces
        .iter()
        .filter(|ns| is_monitored(ns, mesh_name))
        .filter_map(|ns| ns.metadata.name.as_deref())
        .collect();
    let in_mesh = |ns: Option<String>| ns.is_some_and(|ns| monitored.contains(ns.as_str()));
    let mut input = MeshInput::new(trust_domain);

    input.mesh_config = snap
        .mesh_configs
        .iter()
        .find(|mc| mc.name_any() == MESH_CONFIG_NAME)
        .filter(|mc| valid("MeshConfig", mc.as_ref()))
        .map_or_else(|| fallback_config.clone(), |mc| mc.spec.clone());

    // Pods (with their named container ports, for named target ports).
    let mut named_ports: BTreeMap<ObjectRef, Vec<(String, u16)>> = BTreeMap::new();
    for p in snap.pods.iter().filter(|p| in_mesh(p.namespace())) {
        let id = id_of(p.as_ref());
        let status = p.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let ip = match status.and_then(|s| s.pod_ip.as_deref()) {
            None | Some("") => None,
            Some(text) => match text.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    skip(
                        "Pod",
                        &id,
                        "status.podIP",
                        &format!("Invalid value: {text:?}: not an IP address"),
                    );
                    continue;
                }
            },
        };
        let spec = p.spec.as_ref();
        let service_account = spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let labels: BTreeMap<String, String> = p.labels().clone().into_iter().collect();
        let ports = spec
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|cp| cp.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|cp| Some((cp.name.clone()?, u16::try_from(cp.container_port).ok()?)))
            .collect();
        named_ports.insert(id.clone(), ports);
        input.pods.insert(
            id.clone(),
            Pod {
                id,
                service_account,
                proxy_uuid: labels.get(PROXY_UUID_LABEL).cloned(),
                ip,
                labels,
            },
        );
    }

    for s in snap.services.iter().filter(|s| in_mesh(s.namespace())) {
        if let Some(svc) = service(s, &input, &named_ports) {
            input.services.insert(svc.id.clone(), svc);
        }
    }

    for e in snap.endpoints.iter().filter(|e| in_mesh(e.namespace())) {
        let id = id_of(e.as_ref());
        if !input.services.contains_key(&id) {
            continue;
        }
        let mut set = BTreeSet::new();
        for address in e
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| s.addresses.iter().flatten())
        {
            let Ok(ip) = address.ip.parse::<IpAddr>() else {
                skip(
                    "Endpoints",
                    &id,
                    "subsets[].addresses[].ip",
                    &format!("Invalid value: {:?}: not an IP address", address.ip),
                );
                continue;
            };
            let pod = address
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    Some(ObjectRef::new(
                        r.namespace.clone().unwrap_or_else(|| id.namespace.clone()),
                        r.name.clone()?,
                    ))
                });
            set.insert(Endpoint { ip, pod });
        }
        input.endpoints.insert(id, set);
    }

    policies(
        &snap.traffic_targets,
        "TrafficTarget",
        &in_mesh,
        &mut input.traffic_targets,
    );
    policies(
        &snap.http_route_groups,
        "HTTPRouteGroup",
        &in_mesh,
        &mut input.http_route_groups,
    );
    policies(&snap.tcp_routes, "TCPRoute", &in_mesh, &mut input.tcp_routes);
    policies(
        &snap.traffic_splits,
        "TrafficSplit",
        &in_mesh,
        &mut input.traffic_splits,
    );
    input
}

/// A policy kind whose objects are `{ metadata, spec }`.
trait Policy: kube::Resource + Validate {
    type Spec: Clone;
    fn spec(&self) -> &Self::Spec;
}

macro_rules! policy {
    ($($k:ty => $s:ty),*) => {$(
        impl Policy for $k {
            type Spec = $s;
            fn spec(&self) -> &$s {
                &self.spec
            }
        }
    )*};
}
policy!(
    TrafficTarget => osm_api::smi::access::TrafficTargetSpec,
    HTTPRouteGroup => osm_api::smi::specs::HTTPRouteGroupSpec,
    TCPRoute => osm_api::smi::specs::TCPRouteSpec,
    TrafficSplit => osm_api::smi::split::TrafficSplitSpec
);

fn policies<K: Policy>(
    objects: &[Arc<K>],
    kind: &str,
    in_mesh: &dyn Fn(Option<String>) -> bool,
    out: &mut BTreeMap<ObjectRef, K::Spec>,
) {
    for o in objects.iter().filter(|o| in_mesh(o.meta().namespace.clone())) {
        if valid(kind, o.as_ref()) {
            out.insert(id_of(o.as_ref()), o.spec().clone());
        }
    }
}

/// A Service for the model; named target ports are resolved against the pods it selects (a port no
/// selected pod names is skipped with a log, the rest of the Service is kept).
fn service(
    s: &KubeService,
    input: &MeshInput,
    named_ports: &BTreeMap<ObjectRef, Vec<(String, u16)>>,
) -> Option<Service> {
    let id = id_of(s);
    let spec = s.spec.as_ref()?;
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("" | "None") => None,
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                skip(
                    "Service",
                    &id,
                    "spec.clusterIP",
                    &format!("Invalid value: {text:?}: not an IP address"),
                );
                return None;
            }
        },
    };
    let selector: BTreeMap<String, String> = spec.selector.clone().unwrap_or_default().into_iter().collect();
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        // The mesh proxies TCP only; UDP and SCTP ports are left alone, as upstream does.
        if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
            continue;
        }
        let Ok(port) = u16::try_from(p.port) else {
            skip(
                "Service",
                &id,
                &format!("spec.ports[{i}].port"),
                "must be 1..65535",
            );
            continue;
        };
        let target_port = match &p.target_port {
            None => Some(port),
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|n| *n > 0),
            Some(IntOrString::String(name)) => input
                .pods
                .values()
                .filter(|pod| {
                    pod.id.namespace == id.namespace
                        && !selector.is_empty()
                        && selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
                })
                .flat_map(|pod| named_ports.get(&pod.id).into_iter().flatten())
                .find(|(n, _)| n == name)
                .map(|(_, number)| *number),
        };
        let Some(target_port) = target_port else {
            skip(
                "Service",
                &id,
                &format!("spec.ports[{i}].targetPort"),
                "no usable target port (a named port no selected pod declares, or out of range)",
            );
            continue;
        };
        ports.push(ServicePort {
            name: p.name.clone(),
            port,
            target_port,
            protocol: AppProtocol::detect(p.app_protocol.as_deref(), p.name.as_deref()),
        });
    }
    Some(Service {
        id,
        cluster_ip,
        ports,
        selector,
    })
}
