//! Reflector store contents → one [`MeshInput`]. Pure: no I/O, so a snapshot always assembles the same
//! way.
//!
//! Only objects of monitored namespaces count: a namespace is monitored iff it is labelled
//! `openservicemesh.io/monitored-by=<mesh name>` and has no `openservicemesh.io/ignore` label (any
//! value, as upstream's injector reads it: [`osm_api::contract`]). Unlike local mode, the label is
//! required. Invalid objects are logged with kind,
//! namespace, name and field and skipped; nothing here fails.

use osm_api::contract::{self, MESH_CONFIG_NAME, Membership, PROXY_UUID_LABEL};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod as KubePod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use osm_api::config::{MeshConfig, MeshConfigSpec};
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::{HTTPRouteGroup, TCPRoute};
use osm_api::smi::split::TrafficSplit;
use osm_api::validate::Validate;
use osm_model::{AppProtocol, Endpoint, MeshInput, ObjectRef, Pod, Service, ServicePort};

/// The pod an endpoint's `targetRef` names (its namespace defaults to the Service's).
fn pod_of(
    target: Option<&k8s_openapi::api::core::v1::ObjectReference>,
    namespace: &str,
) -> Option<ObjectRef> {
    let r = target.filter(|r| r.kind.as_deref() == Some("Pod"))?;
    Some(ObjectRef::new(
        r.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
        r.name.clone()?,
    ))
}

/// The label joining an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What every store held at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub namespaces: Vec<Arc<Namespace>>,
    pub services: Vec<Arc<KubeService>>,
    /// core/v1 Endpoints: used when the server does not serve EndpointSlice v1 (then
    /// `endpoint_slices` is empty, and vice versa).
    pub endpoints: Vec<Arc<Endpoints>>,
    /// discovery.k8s.io/v1 EndpointSlices, joined to their Service by `kubernetes.io/service-name`.
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
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
    contract::membership(ns.metadata.labels.as_ref(), mesh_name) == Membership::Monitored
}

fn id_of<K: kube::Resource>(o: &K) -> ObjectRef {
    ObjectRef::new(o.namespace().unwrap_or_default(), o.name_any())
}

/// Why an object (or one of its fields) was left out of the input.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The object's resourceVersion, so an edited object that is still invalid is reported again.
    pub resource_version: String,
    /// JSON path of the offending field, e.g. `spec.destination.namespace`.
    pub field: String,
    pub message: String,
}

impl Problem {
    /// Logs this problem as a warning naming kind, namespace, name and field.
    pub fn log(&self) {
        tracing::warn!(
            kind = %self.kind,
            namespace = %self.namespace,
            name = %self.name,
            field = %self.field,
            "invalid object skipped: {}",
            self.message
        );
    }
}

/// An assembled input and the problems met on the way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assembled {
    pub input: MeshInput,
    pub problems: Vec<Problem>,
}

fn problem<K: kube::Resource>(kind: &str, o: &K, field: &str, message: &str) -> Problem {
    let m = o.meta();
    Problem {
        kind: kind.into(),
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        resource_version: m.resource_version.clone().unwrap_or_default(),
        field: field.into(),
        message: message.into(),
    }
}

/// Records every broken rule of an invalid object; true when the object is valid.
fn valid<K: kube::Resource + Validate>(kind: &str, o: &K, problems: &mut Vec<Problem>) -> bool {
    match o.validate() {
        Ok(()) => true,
        Err(errors) => {
            problems.extend(errors.iter().map(|e| problem(kind, o, &e.field, &e.message)));
            false
        }
    }
}

/// Builds the model input (and the problems of the objects left out). `fallback_config` is used when `osm-mesh-config` is missing or invalid
/// (the caller passes the last valid one, so a bad edit does not flip the mesh's mode).
pub fn assemble(
    snap: &Snapshot,
    mesh_name: &str,
    trust_domain: &str,
    fallback_config: &MeshConfigSpec,
) -> Assembled {
    let mut problems = Vec::new();
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
        .filter(|mc| valid("MeshConfig", mc.as_ref(), &mut problems))
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
                    problems.push(problem(
                        "Pod",
                        p.as_ref(),
                        "status.podIP",
                        &format!("Invalid value: {text:?}: not an IP address"),
                    ));
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
        if let Some(svc) = service(s, &input, &named_ports, &mut problems) {
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
                problems.push(problem(
                    "Endpoints",
                    e.as_ref(),
                    "subsets[].addresses[].ip",
                    &format!("Invalid value: {:?}: not an IP address", address.ip),
                ));
                continue;
            };
            let pod = pod_of(address.target_ref.as_ref(), &id.namespace);
            set.insert(Endpoint { ip, pod });
        }
        input.endpoints.insert(id, set);
    }

    for slice in snap.endpoint_slices.iter().filter(|e| in_mesh(e.namespace())) {
        let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else {
            continue;
        };
        let id = ObjectRef::new(slice.namespace().unwrap_or_default(), service.clone());
        if !input.services.contains_key(&id) {
            continue;
        }
        // Several slices may make up one Service's endpoints.
        let set = input.endpoints.entry(id.clone()).or_default();
        // A not-ready endpoint gets no traffic (`ready` unset means ready, per the API).
        let ready = slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
        for endpoint in ready {
            let pod = pod_of(endpoint.target_ref.as_ref(), &id.namespace);
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    problems.push(problem(
                        "EndpointSlice",
                        slice.as_ref(),
                        "endpoints[].addresses[]",
                        &format!("Invalid value: {address:?}: not an IP address"),
                    ));
                    continue;
                };
                set.insert(Endpoint { ip, pod: pod.clone() });
            }
        }
    }

    let p = &mut problems;
    policies(
        &snap.traffic_targets,
        "TrafficTarget",
        &in_mesh,
        &mut input.traffic_targets,
        p,
    );
    policies(
        &snap.http_route_groups,
        "HTTPRouteGroup",
        &in_mesh,
        &mut input.http_route_groups,
        p,
    );
    policies(&snap.tcp_routes, "TCPRoute", &in_mesh, &mut input.tcp_routes, p);
    policies(
        &snap.traffic_splits,
        "TrafficSplit",
        &in_mesh,
        &mut input.traffic_splits,
        p,
    );
    problems.sort();
    Assembled { input, problems }
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
    problems: &mut Vec<Problem>,
) {
    for o in objects.iter().filter(|o| in_mesh(o.meta().namespace.clone())) {
        if valid(kind, o.as_ref(), problems) {
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
    problems: &mut Vec<Problem>,
) -> Option<Service> {
    let id = id_of(s);
    let spec = s.spec.as_ref()?;
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("" | "None") => None,
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                problems.push(problem(
                    "Service",
                    s,
                    "spec.clusterIP",
                    &format!("Invalid value: {text:?}: not an IP address"),
                ));
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
            problems.push(problem(
                "Service",
                s,
                &format!("spec.ports[{i}].port"),
                "must be 1..65535",
            ));
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
            problems.push(problem(
                "Service",
                s,
                &format!("spec.ports[{i}].targetPort"),
                "no usable target port (a named port no selected pod declares, or out of range)",
            ));
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

#[cfg(test)]
mod tests {
    //! Assembly without a server: objects built from JSON, one scenario per test.

    use super::*;
    use osm_api::contract::{IGNORE_LABEL, MONITORED_BY_LABEL};
    use serde_json::{Value, json};

    fn obj<K: serde::de::DeserializeOwned>(v: Value) -> Arc<K> {
        Arc::new(serde_json::from_value(v).expect("test object decodes"))
    }

    fn namespace(name: &str, labels: Value) -> Arc<Namespace> {
        obj(json!({"metadata": {"name": name, "labels": labels}}))
    }

    fn pod(ns: &str, name: &str, labels: Value, ip: &str, phase: &str) -> Arc<KubePod> {
        obj(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "web", "containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": phase},
        }))
    }

    fn service(ns: &str, name: &str, target: Value) -> Arc<KubeService> {
        obj(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": "10.0.0.7", "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": target},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]},
        }))
    }

    fn target(ns: &str, name: &str, dest_ns: &str) -> Arc<TrafficTarget> {
        obj(json!({
            "apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
            "metadata": {"namespace": ns, "name": name, "resourceVersion": "7"},
            "spec": {
                "destination": {"kind": "ServiceAccount", "name": "web", "namespace": dest_ns},
                "sources": [{"kind": "ServiceAccount", "name": "client", "namespace": ns}],
                "rules": [{"kind": "TCPRoute", "name": "all"}],
            },
        }))
    }

    fn run(snap: &Snapshot) -> Assembled {
        assemble(snap, "osm", "cluster.local", &MeshConfigSpec::default())
    }

    /// Only namespaces labelled for this mesh count; `ignore` wins over the label whatever its value
    /// (upstream's injector selects `DoesNotExist`), "false" included.
    #[test]
    fn monitored_namespaces_need_the_label_and_no_ignore() {
        let snap = Snapshot {
            namespaces: vec![
                namespace("mine", json!({MONITORED_BY_LABEL: "osm"})),
                namespace("other-mesh", json!({MONITORED_BY_LABEL: "other"})),
                namespace(
                    "ignored",
                    json!({MONITORED_BY_LABEL: "osm", IGNORE_LABEL: "true"}),
                ),
                namespace(
                    "ignored-false",
                    json!({MONITORED_BY_LABEL: "osm", IGNORE_LABEL: "false"}),
                ),
                namespace("plain", json!({})),
            ],
            pods: [
                "mine",
                "other-mesh",
                "ignored",
                "ignored-false",
                "plain",
                "no-namespace-object",
            ]
            .iter()
            .map(|ns| pod(ns, "p", json!({"app": "p"}), "10.1.0.1", "Running"))
            .collect(),
            ..Snapshot::default()
        };
        let got: Vec<String> = run(&snap)
            .input
            .pods
            .keys()
            .map(|id| id.namespace.clone())
            .collect();
        assert_eq!(got, ["mine"]);
    }

    /// Pods: proxy uuid from the label only, `default` service account, terminal pods left out;
    /// services: named target port resolved, UDP ports left out; endpoints keep their pod reference.
    #[test]
    fn pods_services_and_endpoints() {
        let ns = "shop";
        let endpoints: Arc<Endpoints> = obj(json!({
            "metadata": {"namespace": ns, "name": "web"},
            "subsets": [{"addresses": [{"ip": "10.1.0.1", "targetRef": {"kind": "Pod", "name": "web-1"}}],
                         "notReadyAddresses": [{"ip": "10.1.0.9"}]}],
        }));
        let snap = Snapshot {
            namespaces: vec![namespace(ns, json!({MONITORED_BY_LABEL: "osm"}))],
            pods: vec![
                pod(
                    ns,
                    "web-1",
                    json!({"app": "web", PROXY_UUID_LABEL: "u-1"}),
                    "10.1.0.1",
                    "Running",
                ),
                pod(ns, "web-2", json!({"app": "web"}), "10.1.0.2", "Pending"),
                pod(ns, "web-3", json!({"app": "web"}), "10.1.0.3", "Succeeded"),
            ],
            services: vec![service(ns, "web", json!("web"))],
            endpoints: vec![endpoints],
            ..Snapshot::default()
        };
        let Assembled { input, problems } = run(&snap);
        assert!(problems.is_empty(), "{problems:?}");
        let web1 = &input.pods[&ObjectRef::new(ns, "web-1")];
        assert_eq!(web1.proxy_uuid.as_deref(), Some("u-1"));
        assert_eq!(web1.service_account, "default");
        assert_eq!(input.pods[&ObjectRef::new(ns, "web-2")].proxy_uuid, None);
        assert!(!input.pods.contains_key(&ObjectRef::new(ns, "web-3")));
        let svc = &input.services[&ObjectRef::new(ns, "web")];
        assert_eq!(svc.ports.len(), 1);
        assert_eq!((svc.ports[0].port, svc.ports[0].target_port), (80, 8080));
        let eps: Vec<_> = input.endpoints[&ObjectRef::new(ns, "web")]
            .iter()
            .cloned()
            .collect();
        assert_eq!(
            eps,
            [Endpoint {
                ip: "10.1.0.1".parse().unwrap(),
                pod: Some(ObjectRef::new(ns, "web-1"))
            }]
        );
    }

    /// EndpointSlices (servers with discovery.k8s.io/v1): joined to the Service by label, several
    /// slices merged, not-ready endpoints left out, a bad address reported with its field.
    #[test]
    fn endpoint_slices_make_the_same_endpoints() {
        let ns = "shop";
        let slice = |name: &str, endpoints: serde_json::Value| -> Arc<EndpointSlice> {
            obj(json!({
                "metadata": {"namespace": ns, "name": name, "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4",
                "endpoints": endpoints,
            }))
        };
        let snap = Snapshot {
            namespaces: vec![namespace(ns, json!({MONITORED_BY_LABEL: "osm"}))],
            services: vec![service(ns, "web", json!(8080))],
            endpoint_slices: vec![
                slice(
                    "web-a",
                    json!([
                        {"addresses": ["10.1.0.1"], "targetRef": {"kind": "Pod", "name": "web-1"}},
                        {"addresses": ["10.1.0.9"], "conditions": {"ready": false}},
                    ]),
                ),
                slice(
                    "web-b",
                    json!([
                        {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
                        {"addresses": ["not-an-ip"]},
                    ]),
                ),
            ],
            ..Snapshot::default()
        };
        let Assembled { input, problems } = run(&snap);
        let eps: Vec<_> = input.endpoints[&ObjectRef::new(ns, "web")]
            .iter()
            .cloned()
            .collect();
        assert_eq!(
            eps,
            [
                Endpoint {
                    ip: "10.1.0.1".parse().unwrap(),
                    pod: Some(ObjectRef::new(ns, "web-1"))
                },
                Endpoint {
                    ip: "10.1.0.2".parse().unwrap(),
                    pod: None
                },
            ]
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            format!("{:?}", problems[0]).contains("endpoints[].addresses[]"),
            "{problems:?}"
        );
    }

    /// A named target port no selected pod declares drops that port with a problem naming the field.
    #[test]
    fn unresolved_named_port_is_a_problem() {
        let snap = Snapshot {
            namespaces: vec![namespace("shop", json!({MONITORED_BY_LABEL: "osm"}))],
            services: vec![service("shop", "web", json!("nope"))],
            ..Snapshot::default()
        };
        let Assembled { input, problems } = run(&snap);
        assert!(input.services[&ObjectRef::new("shop", "web")].ports.is_empty());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "spec.ports[0].targetPort");
    }

    /// A TrafficTarget outside its destination's namespace is skipped with its field; the valid one
    /// is kept.
    #[test]
    fn invalid_traffic_target_is_skipped() {
        let snap = Snapshot {
            namespaces: vec![namespace("shop", json!({MONITORED_BY_LABEL: "osm"}))],
            traffic_targets: vec![target("shop", "good", "shop"), target("shop", "bad", "elsewhere")],
            ..Snapshot::default()
        };
        let Assembled { input, problems } = run(&snap);
        let kept: Vec<_> = input.traffic_targets.keys().map(|id| id.name.as_str()).collect();
        assert_eq!(kept, ["good"]);
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!(
            (
                p.kind.as_str(),
                p.namespace.as_str(),
                p.name.as_str(),
                p.field.as_str(),
                p.resource_version.as_str()
            ),
            ("TrafficTarget", "shop", "bad", "spec.destination.namespace", "7")
        );
    }

    /// An invalid `osm-mesh-config` does not replace the last valid configuration.
    #[test]
    fn invalid_mesh_config_keeps_the_fallback() {
        let mut fallback = MeshConfigSpec::default();
        fallback.traffic.enable_permissive_traffic_policy_mode = false;
        let bad: Arc<MeshConfig> = obj(json!({
            "apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshConfig",
            "metadata": {"namespace": "osm-system", "name": MESH_CONFIG_NAME},
            "spec": {"sidecar": {"logLevel": "loud"}, "traffic": {"enablePermissiveTrafficPolicyMode": true}},
        }));
        let snap = Snapshot {
            mesh_configs: vec![bad],
            ..Snapshot::default()
        };
        let Assembled { input, problems } = assemble(&snap, "osm", "cluster.local", &fallback);
        assert_eq!(input.mesh_config, fallback);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "spec.sidecar.logLevel");
    }
}
