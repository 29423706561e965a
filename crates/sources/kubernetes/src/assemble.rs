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
use osm_api::policy::{Egress, IngressBackend, Retry, UpstreamTrafficSetting};
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::{HTTPRouteGroup, TCPRoute};
use osm_api::smi::split::TrafficSplit;
use osm_api::validate::Validate;
use osm_model::{AppProtocol, Endpoint, InputDelta, MeshInput, ObjectRef, Pod, Service, ServicePort};

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
    /// OSM Egress policies (`policy.openservicemesh.io/v1alpha1`).
    pub egresses: Vec<Arc<Egress>>,
    /// OSM IngressBackend policies (`policy.openservicemesh.io/v1alpha1`).
    pub ingress_backends: Vec<Arc<IngressBackend>>,
    /// OSM UpstreamTrafficSettings (`policy.openservicemesh.io/v1alpha1`).
    pub upstream_traffic_settings: Vec<Arc<UpstreamTrafficSetting>>,
    /// OSM Retry policies (`policy.openservicemesh.io/v1alpha1`).
    pub retries: Vec<Arc<Retry>>,
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
    let assembly = Assembly::new(snap, mesh_name, trust_domain, fallback_config);
    let mut problems: Vec<Problem> = assembly.problems().cloned().collect();
    problems.sort();
    Assembled {
        input: assembly.input,
        problems,
    }
}

/// The stores read by object reference: what re-assembling one entry reads.
pub trait Lookup {
    fn pod(&self, id: &ObjectRef) -> Option<Arc<KubePod>>;
    fn service(&self, id: &ObjectRef) -> Option<Arc<KubeService>>;
    fn endpoints(&self, id: &ObjectRef) -> Option<Arc<Endpoints>>;
    fn endpoint_slice(&self, id: &ObjectRef) -> Option<Arc<EndpointSlice>>;
}

/// The objects of the kinds re-assembled one entry at a time that changed since the last assembly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    pub pods: BTreeSet<ObjectRef>,
    pub services: BTreeSet<ObjectRef>,
    /// core/v1 Endpoints, by their (and their Service's) reference.
    pub endpoints: BTreeSet<ObjectRef>,
    pub endpoint_slices: BTreeSet<ObjectRef>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
            && self.services.is_empty()
            && self.endpoints.is_empty()
            && self.endpoint_slices.is_empty()
    }
}

/// Problems are kept by the object they belong to (kind, reference), so re-assembling one object
/// replaces only its own.
type ProblemKey = (&'static str, ObjectRef);

/// An assembled input kept between changes, with the indices that let a Pod, Service, Endpoints or
/// EndpointSlice change re-assemble only the entries it touches ([`Assembly::update`]). Namespaces,
/// MeshConfig, SMI policies and Egress policies are assembled only by [`Assembly::new`].
#[derive(Clone, Debug, Default)]
pub struct Assembly {
    input: MeshInput,
    monitored: BTreeSet<String>,
    /// Named TCP container ports of every pod in the input (named target ports resolve to them).
    named_ports: BTreeMap<ObjectRef, Vec<(String, u16)>>,
    /// Services of the input with a named target port: a pod change may change them.
    named_targets: BTreeSet<ObjectRef>,
    /// EndpointSlices of monitored namespaces by the Service their label names, and back.
    slices: BTreeMap<ObjectRef, BTreeSet<ObjectRef>>,
    slice_service: BTreeMap<ObjectRef, ObjectRef>,
    problems: BTreeMap<ProblemKey, Vec<Problem>>,
}

/// A snapshot indexed by reference, so a full assembly looks objects up as an incremental one does.
struct Indexed<'a> {
    endpoints: BTreeMap<ObjectRef, &'a Arc<Endpoints>>,
    slices: BTreeMap<ObjectRef, &'a Arc<EndpointSlice>>,
}

impl Assembly {
    /// Assembles every store; see [`assemble`].
    pub fn new(
        snap: &Snapshot,
        mesh_name: &str,
        trust_domain: &str,
        fallback_config: &MeshConfigSpec,
    ) -> Self {
        let mut a = Self {
            input: MeshInput::new(trust_domain),
            monitored: snap
                .namespaces
                .iter()
                .filter(|ns| is_monitored(ns, mesh_name))
                .filter_map(|ns| ns.metadata.name.clone())
                .collect(),
            ..Self::default()
        };
        let mut fresh = Vec::new();
        let mesh_config = snap
            .mesh_configs
            .iter()
            .find(|mc| mc.name_any() == MESH_CONFIG_NAME);
        let mut problems = Vec::new();
        a.input.mesh_config = mesh_config
            .filter(|mc| valid("MeshConfig", mc.as_ref(), &mut problems))
            .map_or_else(|| fallback_config.clone(), |mc| mc.spec.clone());
        if let Some(mc) = mesh_config {
            a.record(("MeshConfig", id_of(mc.as_ref())), problems, &mut fresh);
        }

        for p in &snap.pods {
            a.refresh_pod(&id_of(p.as_ref()), Some(p), &mut fresh);
        }
        for s in &snap.services {
            a.refresh_service(&id_of(s.as_ref()), Some(s), &mut fresh);
        }
        for slice in &snap.endpoint_slices {
            a.index_slice(&id_of(slice.as_ref()), Some(slice));
        }
        let index = Indexed {
            endpoints: snap.endpoints.iter().map(|e| (id_of(e.as_ref()), e)).collect(),
            slices: snap
                .endpoint_slices
                .iter()
                .map(|e| (id_of(e.as_ref()), e))
                .collect(),
        };
        let services: Vec<ObjectRef> = a.input.services.keys().cloned().collect();
        for id in &services {
            a.refresh_endpoints(
                id,
                index.endpoints.get(id).copied().cloned(),
                |s| index.slices.get(s).copied().cloned(),
                &mut fresh,
            );
        }

        a.policies(&snap.traffic_targets, "TrafficTarget", |i| &mut i.traffic_targets);
        a.policies(&snap.http_route_groups, "HTTPRouteGroup", |i| {
            &mut i.http_route_groups
        });
        a.policies(&snap.tcp_routes, "TCPRoute", |i| &mut i.tcp_routes);
        a.policies(&snap.traffic_splits, "TrafficSplit", |i| &mut i.traffic_splits);
        a.policies(&snap.egresses, "Egress", |i| &mut i.egresses);
        a.policies(&snap.ingress_backends, "IngressBackend", |i| {
            &mut i.ingress_backends
        });
        a.policies(&snap.upstream_traffic_settings, "UpstreamTrafficSetting", |i| {
            &mut i.upstream_traffic_settings
        });
        a.policies(&snap.retries, "Retry", |i| &mut i.retries);
        a
    }

    /// The assembled input.
    pub fn input(&self) -> &MeshInput {
        &self.input
    }

    /// Every problem of the objects left out (or partly left out).
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems.values().flatten()
    }

    /// Re-assembles the entries the `dirty` objects touch, reading them from `stores`: a Pod its pod
    /// (and the Services resolving a named target port against it), a Service its service (and its
    /// endpoints when it appears or goes), Endpoints and EndpointSlices their Service's endpoints.
    /// Returns the entries whose value changed, and the problems not reported before.
    pub fn update(&mut self, dirty: &Dirty, stores: &impl Lookup) -> (InputDelta, Vec<Problem>) {
        let mut delta = InputDelta::default();
        let mut fresh = Vec::new();
        let mut services = dirty.services.clone();
        let mut endpoints = dirty.endpoints.clone();

        for id in &dirty.pods {
            let old_labels = self.input.pods.get(id).map(|p| p.labels.clone());
            let object = self.in_mesh(id).then(|| stores.pod(id)).flatten();
            if !self.refresh_pod(id, object.as_ref(), &mut fresh) {
                continue;
            }
            let new = self.input.pods.get(id);
            delta.pods.insert(id.clone(), new.cloned());
            // Services whose named target ports resolve against this pod, before or after.
            let labels = [old_labels.as_ref(), new.map(|p| &p.labels)];
            for s in in_namespace(&self.named_targets, &id.namespace) {
                let selector = &self.input.services[s].selector;
                if labels.iter().flatten().any(|l| selects(selector, l)) {
                    services.insert(s.clone());
                }
            }
        }

        for id in &services {
            let existed = self.input.services.contains_key(id);
            let object = self.in_mesh(id).then(|| stores.service(id)).flatten();
            if self.refresh_service(id, object.as_ref(), &mut fresh) {
                delta
                    .services
                    .insert(id.clone(), self.input.services.get(id).cloned());
            }
            // Endpoints are kept only for Services of the input.
            if existed != self.input.services.contains_key(id) {
                endpoints.insert(id.clone());
            }
        }

        for id in &dirty.endpoint_slices {
            let object = self.in_mesh(id).then(|| stores.endpoint_slice(id)).flatten();
            let (before, after) = self.index_slice(id, object.as_ref());
            // A filed slice's problems are recorded with its Service's endpoints below.
            if after.is_none() {
                self.record(("EndpointSlice", id.clone()), Vec::new(), &mut fresh);
            }
            endpoints.extend(before);
            endpoints.extend(after);
        }

        for id in &endpoints {
            let object = self.in_mesh(id).then(|| stores.endpoints(id)).flatten();
            if self.refresh_endpoints(id, object, |s| stores.endpoint_slice(s), &mut fresh) {
                delta
                    .endpoints
                    .insert(id.clone(), self.input.endpoints.get(id).cloned());
            }
        }
        (delta, fresh)
    }

    fn in_mesh(&self, id: &ObjectRef) -> bool {
        self.monitored.contains(&id.namespace)
    }

    /// Replaces the problems of one object; the ones it did not have before go to `fresh`.
    fn record(&mut self, key: ProblemKey, problems: Vec<Problem>, fresh: &mut Vec<Problem>) {
        let old = if problems.is_empty() {
            self.problems.remove(&key)
        } else {
            self.problems.insert(key, problems.clone())
        }
        .unwrap_or_default();
        fresh.extend(problems.into_iter().filter(|p| !old.contains(p)));
    }

    /// Re-assembles one pod entry from its object (`None`: gone or not in the mesh); true when the
    /// entry or its named ports changed.
    fn refresh_pod(
        &mut self,
        id: &ObjectRef,
        object: Option<&Arc<KubePod>>,
        fresh: &mut Vec<Problem>,
    ) -> bool {
        let mut problems = Vec::new();
        let new = object
            .filter(|p| self.in_mesh(&id_of(p.as_ref())))
            .and_then(|p| pod(p, &mut problems));
        self.record(("Pod", id.clone()), problems, fresh);
        let (pod, ports) = match new {
            Some((pod, ports)) => (Some(pod), Some(ports)),
            None => (None, None),
        };
        if self.input.pods.get(id) == pod.as_ref() && self.named_ports.get(id) == ports.as_ref() {
            return false;
        }
        set(&mut self.input.pods, id, pod);
        set(&mut self.named_ports, id, ports);
        true
    }

    /// Re-assembles one service entry from its object; true when the entry changed.
    fn refresh_service(
        &mut self,
        id: &ObjectRef,
        object: Option<&Arc<KubeService>>,
        fresh: &mut Vec<Problem>,
    ) -> bool {
        let mut problems = Vec::new();
        let object = object.filter(|s| self.in_mesh(&id_of(s.as_ref())));
        let new = object.and_then(|s| service(s, &self.input.pods, &self.named_ports, &mut problems));
        self.record(("Service", id.clone()), problems, fresh);
        if new.is_some() && object.is_some_and(|s| has_named_target(s)) {
            self.named_targets.insert(id.clone());
        } else {
            self.named_targets.remove(id);
        }
        if self.input.services.get(id) == new.as_ref() {
            return false;
        }
        set(&mut self.input.services, id, new);
        true
    }

    /// Files an EndpointSlice under the Service its label names (if it is in the mesh); returns that
    /// Service before and after.
    fn index_slice(
        &mut self,
        id: &ObjectRef,
        object: Option<&Arc<EndpointSlice>>,
    ) -> (Option<ObjectRef>, Option<ObjectRef>) {
        let before = self.slice_service.remove(id);
        if let Some(service) = &before
            && let Some(slices) = self.slices.get_mut(service)
        {
            slices.remove(id);
            if slices.is_empty() {
                self.slices.remove(service);
            }
        }
        let after = object
            .filter(|s| self.in_mesh(&id_of(s.as_ref())))
            .and_then(|s| s.labels().get(SERVICE_NAME_LABEL).cloned())
            .map(|name| ObjectRef::new(id.namespace.clone(), name));
        if let Some(service) = &after {
            self.slices.entry(service.clone()).or_default().insert(id.clone());
            self.slice_service.insert(id.clone(), service.clone());
        }
        (before, after)
    }

    /// Re-assembles one service's endpoints from its core/v1 Endpoints (`endpoints`) and its filed
    /// EndpointSlices; kept only for a Service of the input. True when the entry changed.
    fn refresh_endpoints(
        &mut self,
        id: &ObjectRef,
        endpoints: Option<Arc<Endpoints>>,
        slice: impl Fn(&ObjectRef) -> Option<Arc<EndpointSlice>>,
        fresh: &mut Vec<Problem>,
    ) -> bool {
        let exists = self.input.services.contains_key(id);
        let mut entry: Option<BTreeSet<Endpoint>> = None;
        let mut problems = Vec::new();
        if let Some(e) = endpoints.filter(|_| exists) {
            entry = Some(endpoints_set(&e, id, &mut problems));
        }
        self.record(("Endpoints", id.clone()), problems, fresh);
        let slices: Vec<ObjectRef> = self.slices.get(id).into_iter().flatten().cloned().collect();
        for slice_id in slices {
            let mut problems = Vec::new();
            // Several slices may make up one Service's endpoints.
            if let Some(s) = slice(&slice_id).filter(|_| exists) {
                slice_endpoints(&s, id, entry.get_or_insert_default(), &mut problems);
            }
            self.record(("EndpointSlice", slice_id), problems, fresh);
        }
        if self.input.endpoints.get(id) == entry.as_ref() {
            return false;
        }
        set(&mut self.input.endpoints, id, entry);
        true
    }

    fn policies<K: Policy>(
        &mut self,
        objects: &[Arc<K>],
        kind: &'static str,
        out: impl Fn(&mut MeshInput) -> &mut BTreeMap<ObjectRef, K::Spec>,
    ) {
        for o in objects {
            let id = id_of(o.as_ref());
            if !self.in_mesh(&id) {
                continue;
            }
            let mut problems = Vec::new();
            if valid(kind, o.as_ref(), &mut problems) {
                out(&mut self.input).insert(id.clone(), o.spec().clone());
            }
            self.record((kind, id), problems, &mut Vec::new());
        }
    }
}

/// Sets or removes one map entry.
fn set<V>(map: &mut BTreeMap<ObjectRef, V>, id: &ObjectRef, value: Option<V>) {
    match value {
        Some(v) => {
            map.insert(id.clone(), v);
        }
        None => {
            map.remove(id);
        }
    }
}

/// The entries of a set of references in one namespace.
fn in_namespace<'s>(set: &'s BTreeSet<ObjectRef>, namespace: &'s str) -> impl Iterator<Item = &'s ObjectRef> {
    set.range(ObjectRef::new(namespace, "")..)
        .take_while(move |r| r.namespace == namespace)
}

/// Whether a selector selects these labels (an empty selector selects nothing).
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A pod of the mesh for the model, with its named TCP container ports; `None` for a terminated pod
/// or one with a bad address.
fn pod(p: &KubePod, problems: &mut Vec<Problem>) -> Option<(Pod, Vec<(String, u16)>)> {
    let id = id_of(p);
    let status = p.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let ip = match status.and_then(|s| s.pod_ip.as_deref()) {
        None | Some("") => None,
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                problems.push(problem(
                    "Pod",
                    p,
                    "status.podIP",
                    &format!("Invalid value: {text:?}: not an IP address"),
                ));
                return None;
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
    let pod = Pod {
        id,
        service_account,
        proxy_uuid: labels.get(PROXY_UUID_LABEL).cloned(),
        ip,
        labels,
        hostname: spec.and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty()),
        subdomain: spec.and_then(|s| s.subdomain.clone()).filter(|d| !d.is_empty()),
    };
    Some((pod, ports))
}

/// The ready addresses of a core/v1 Endpoints object.
fn endpoints_set(e: &Endpoints, id: &ObjectRef, problems: &mut Vec<Problem>) -> BTreeSet<Endpoint> {
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
                e,
                "subsets[].addresses[].ip",
                &format!("Invalid value: {:?}: not an IP address", address.ip),
            ));
            continue;
        };
        let pod = pod_of(address.target_ref.as_ref(), &id.namespace);
        let hostname = address.hostname.clone().filter(|h| !h.is_empty());
        set.insert(Endpoint { ip, pod, hostname });
    }
    set
}

/// Adds the ready endpoints of one EndpointSlice of Service `id` to `set`.
fn slice_endpoints(
    slice: &EndpointSlice,
    id: &ObjectRef,
    set: &mut BTreeSet<Endpoint>,
    problems: &mut Vec<Problem>,
) {
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
                    slice,
                    "endpoints[].addresses[]",
                    &format!("Invalid value: {address:?}: not an IP address"),
                ));
                continue;
            };
            set.insert(Endpoint {
                ip,
                pod: pod.clone(),
                hostname: endpoint.hostname.clone().filter(|h| !h.is_empty()),
            });
        }
    }
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
    TrafficSplit => osm_api::smi::split::TrafficSplitSpec,
    Egress => osm_api::policy::EgressSpec,
    IngressBackend => osm_api::policy::IngressBackendSpec,
    UpstreamTrafficSetting => osm_api::policy::UpstreamTrafficSettingSpec,
    Retry => osm_api::policy::RetrySpec
);

/// Whether a Service names a target port (resolved against the pods it selects).
fn has_named_target(s: &KubeService) -> bool {
    s.spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .any(|p| matches!(p.target_port, Some(IntOrString::String(_))))
}

/// A Service for the model; named target ports are resolved against the pods it selects (a port no
/// selected pod names is skipped with a log, the rest of the Service is kept).
fn service(
    s: &KubeService,
    pods: &BTreeMap<ObjectRef, Pod>,
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
            // The first selected pod (by name) declaring the name decides.
            Some(IntOrString::String(name)) => pods
                .range(ObjectRef::new(id.namespace.clone(), "")..)
                .take_while(|(pod, _)| pod.namespace == id.namespace)
                .map(|(_, pod)| pod)
                .filter(|pod| selects(&selector, &pod.labels))
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
                pod: Some(ObjectRef::new(ns, "web-1")),
                hostname: None,
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
                        {"addresses": ["10.1.0.1"], "targetRef": {"kind": "Pod", "name": "web-1"},
                         "hostname": "web-1"},
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
                    pod: Some(ObjectRef::new(ns, "web-1")),
                    hostname: Some("web-1".into()),
                },
                Endpoint {
                    ip: "10.1.0.2".parse().unwrap(),
                    pod: None,
                    hostname: None,
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

    fn egress(ns: &str, name: &str, sources: Value) -> Arc<Egress> {
        obj(json!({
            "apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Egress",
            "metadata": {"namespace": ns, "name": name, "resourceVersion": "3"},
            "spec": {
                "sources": sources,
                "hosts": ["example.com"],
                "ports": [{"number": 443, "protocol": "https"}],
            },
        }))
    }

    /// Egress policies are kept by reference with their spec, like the SMI policies: only those of
    /// monitored namespaces; an invalid one is skipped with its field.
    #[test]
    fn egress_policies_of_monitored_namespaces() {
        let web = |ns: &str| json!([{"kind": "ServiceAccount", "name": "web", "namespace": ns}]);
        let good = egress("shop", "good", web("shop"));
        let snap = Snapshot {
            namespaces: vec![
                namespace("shop", json!({MONITORED_BY_LABEL: "osm"})),
                namespace("plain", json!({})),
            ],
            egresses: vec![
                good.clone(),
                egress("shop", "bad", json!([])),
                egress("plain", "elsewhere", web("plain")),
            ],
            ..Snapshot::default()
        };
        let Assembled { input, problems } = run(&snap);
        let kept: Vec<String> = input.egresses.keys().map(ToString::to_string).collect();
        assert_eq!(kept, ["shop/good"]);
        assert_eq!(input.egresses[&ObjectRef::new("shop", "good")], good.spec);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert_eq!(
            (p.kind.as_str(), p.name.as_str(), p.field.as_str()),
            ("Egress", "bad", "spec.sources")
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
