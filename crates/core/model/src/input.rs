//! The model's input: a snapshot of what the sources (manifest directory or Kubernetes) observed.
//!
//! Only objects in monitored namespaces belong here; the sources filter. Policies are the validated
//! `osm-api` specs keyed by their object reference.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use osm_api::config::MeshConfigSpec;
use osm_api::policy::{EgressSpec, IngressBackendSpec, RetrySpec, UpstreamTrafficSettingSpec};
use osm_api::smi::access::TrafficTargetSpec;
use osm_api::smi::specs::{HTTPRouteGroupSpec, TCPRouteSpec};
use osm_api::smi::split::TrafficSplitSpec;
use serde::Serialize;

/// `namespace/name` of any namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Serialised as their display form (`ns/name`, `sa.ns`) so golden snapshots read like upstream output.
macro_rules! serialize_as_display {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_as_display!(ObjectRef, ServiceIdentity);

/// A Kubernetes Service, by namespace/name.
pub type ServiceRef = ObjectRef;
/// A Pod, by namespace/name.
pub type PodRef = ObjectRef;

/// The identity a workload runs as: its ServiceAccount. Printed `<sa>.<ns>` as upstream OSM does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceIdentity {
    pub namespace: String,
    pub service_account: String,
}

impl ServiceIdentity {
    pub fn new(namespace: impl Into<String>, service_account: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// The TLS principal (certificate SAN) of this identity: `<sa>.<ns>.<trustDomain>`.
    pub fn principal(&self, trust_domain: &str) -> String {
        format!("{}.{}.{}", self.service_account, self.namespace, trust_domain)
    }
}

impl fmt::Display for ServiceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service_account, self.namespace)
    }
}

/// The application protocol of a service port, which decides HTTP (L7) or TCP (L4) handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    Http,
    Tcp,
}

impl AppProtocol {
    /// Upstream OSM's rule: `appProtocol` wins, then the port name prefix (`http-`, `tcp-`),
    /// and HTTP when nothing says otherwise.
    pub fn detect(app_protocol: Option<&str>, port_name: Option<&str>) -> Self {
        let hint = app_protocol
            .or_else(|| port_name.and_then(|n| n.split('-').next()))
            .unwrap_or("http")
            .to_ascii_lowercase();
        match hint.as_str() {
            "tcp" | "tcp-server-first" | "mysql" | "mongo" | "redis" | "postgres" => Self::Tcp,
            _ => Self::Http,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    /// The port the application listens on in the pod (named target ports are resolved by the source).
    pub target_port: u16,
    pub protocol: AppProtocol,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub id: ServiceRef,
    /// `None` for headless services; clients then reach the endpoint addresses directly.
    pub cluster_ip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Pod label selector; used to derive endpoints when the source has no endpoint objects.
    pub selector: BTreeMap<String, String>,
}

impl Service {
    /// The names clients use for this service (what cluster DNS would resolve to its ClusterIP):
    /// `<svc>.<ns>`, `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local`.
    pub fn dns_names(&self) -> Vec<String> {
        let (n, ns) = (&self.id.name, &self.id.namespace);
        vec![
            format!("{n}.{ns}"),
            format!("{n}.{ns}.svc"),
            format!("{n}.{ns}.svc.cluster.local"),
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub id: PodRef,
    pub service_account: String,
    /// The `osm-proxy-uuid` label: present when the pod has a sidecar.
    pub proxy_uuid: Option<String>,
    pub ip: Option<IpAddr>,
    pub labels: BTreeMap<String, String>,
    /// `spec.hostname` and `spec.subdomain`: when the subdomain names a Service of the pod's namespace
    /// (a StatefulSet's pods: their own name and its `serviceName`), the pod is
    /// `<hostname>.<subdomain>.<ns>` — what Kubernetes writes into the Endpoints as the address's
    /// `hostname`, and what endpoints derived from a selector carry here.
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
}

impl Pod {
    pub fn identity(&self) -> ServiceIdentity {
        ServiceIdentity::new(&self.id.namespace, &self.service_account)
    }
}

/// One ready address behind a service, with the pod it belongs to when known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub pod: Option<PodRef>,
    /// The address's `hostname` (Kubernetes sets it for a pod whose `subdomain` is the service's
    /// name, as a StatefulSet's pods have): a headless service then names the pod
    /// `<hostname>.<svc>.<ns>`.
    pub hostname: Option<String>,
}

/// Everything the model needs to compute every proxy's intent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshInput {
    pub mesh_config: MeshConfigSpec,
    pub trust_domain: String,
    pub services: BTreeMap<ServiceRef, Service>,
    /// Ready endpoints per service. Services missing here get endpoints from their selector.
    pub endpoints: BTreeMap<ServiceRef, BTreeSet<Endpoint>>,
    pub pods: BTreeMap<PodRef, Pod>,
    pub traffic_targets: BTreeMap<ObjectRef, TrafficTargetSpec>,
    pub http_route_groups: BTreeMap<ObjectRef, HTTPRouteGroupSpec>,
    pub tcp_routes: BTreeMap<ObjectRef, TCPRouteSpec>,
    pub traffic_splits: BTreeMap<ObjectRef, TrafficSplitSpec>,
    /// `policy.openservicemesh.io` Egress policies (applied when `featureFlags.enableEgressPolicy`).
    pub egresses: BTreeMap<ObjectRef, EgressSpec>,
    /// `policy.openservicemesh.io` IngressBackend policies (applied when
    /// `featureFlags.enableIngressBackendPolicy`).
    pub ingress_backends: BTreeMap<ObjectRef, IngressBackendSpec>,
    /// `policy.openservicemesh.io` UpstreamTrafficSettings (their `connectionSettings` are applied).
    pub upstream_traffic_settings: BTreeMap<ObjectRef, UpstreamTrafficSettingSpec>,
    /// `policy.openservicemesh.io` Retry policies (applied when `featureFlags.enableRetryPolicy`).
    pub retries: BTreeMap<ObjectRef, RetrySpec>,
}

impl MeshInput {
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            ..Self::default()
        }
    }

    /// `/etc/hosts` entries for every Service with a ClusterIP (the harness's stand-in for cluster DNS).
    pub fn hosts_entries(&self) -> Vec<(IpAddr, Vec<String>)> {
        self.services
            .values()
            .filter_map(|s| Some((s.cluster_ip?, s.dns_names())))
            .collect()
    }

    /// Endpoints of a service: the explicit ones if the source gave any, otherwise the pods its
    /// selector matches (a local manifest directory has no EndpointSlices).
    pub fn endpoints_of(&self, service: &Service) -> BTreeSet<Endpoint> {
        self.endpoints_with(service, &PodSelectorIndex::new(self))
    }

    pub(crate) fn endpoints_with(
        &self,
        service: &Service,
        index: &PodSelectorIndex<'_>,
    ) -> BTreeSet<Endpoint> {
        if let Some(eps) = self.endpoints.get(&service.id) {
            return eps.clone();
        }
        pod_endpoints(service, index.select(&service.id.namespace, &service.selector))
    }

    /// `endpoints_of` for one service without building an index: its namespace's pods are scanned
    /// (what an incremental update does for the few services a change touches).
    pub(crate) fn endpoints_scanning(&self, service: &Service) -> BTreeSet<Endpoint> {
        if let Some(eps) = self.endpoints.get(&service.id) {
            return eps.clone();
        }
        pod_endpoints(
            service,
            in_namespace(&self.pods, &service.id.namespace)
                .map(|(_, p)| p)
                .filter(|p| selects(&service.selector, &p.labels)),
        )
    }
}

/// The endpoints of the pods a service selects: those with an address, named by their hostname when
/// their subdomain is the service (as the Kubernetes endpoints controller does).
fn pod_endpoints<'a>(service: &Service, pods: impl Iterator<Item = &'a Pod>) -> BTreeSet<Endpoint> {
    pods.filter_map(|p| {
        p.ip.map(|ip| Endpoint {
            ip,
            pod: Some(p.id.clone()),
            hostname: p
                .hostname
                .clone()
                .filter(|_| p.subdomain.as_deref() == Some(service.id.name.as_str())),
        })
    })
    .collect()
}

/// Whether a service selector selects a pod with these labels (an empty selector selects nothing).
pub(crate) fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The entries of a map keyed by `ObjectRef` that live in one namespace.
pub(crate) fn in_namespace<'m, V>(
    map: &'m BTreeMap<ObjectRef, V>,
    namespace: &'m str,
) -> impl Iterator<Item = (&'m ObjectRef, &'m V)> + 'm {
    map.range(ObjectRef::new(namespace, "")..)
        .take_while(move |(k, _)| k.namespace == namespace)
}

/// Pods by (namespace, label, value), so a selector is evaluated against the pods carrying its first
/// label rather than against every pod (which made the model quadratic in services × pods).
pub(crate) struct PodSelectorIndex<'a> {
    by_label: std::collections::HashMap<(&'a str, &'a str, &'a str), Vec<&'a Pod>>,
}

impl<'a> PodSelectorIndex<'a> {
    pub(crate) fn new(input: &'a MeshInput) -> Self {
        let mut by_label: std::collections::HashMap<(&str, &str, &str), Vec<&Pod>> = Default::default();
        for pod in input.pods.values() {
            for (k, v) in &pod.labels {
                by_label
                    .entry((pod.id.namespace.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(pod);
            }
        }
        Self { by_label }
    }

    /// Pods of `namespace` matching every pair of `selector`; an empty selector selects nothing.
    pub(crate) fn select<'s>(
        &'s self,
        namespace: &'s str,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Pod> + 's {
        let first = selector.iter().next();
        first
            .and_then(|(k, v)| self.by_label.get(&(namespace, k.as_str(), v.as_str())))
            .into_iter()
            .flatten()
            .copied()
            .filter(move |p| selects(selector, &p.labels))
    }
}

/// New values for a few `services`, `endpoints` and `pods` entries of a [`MeshInput`] (`None`:
/// removed): what an incremental source delivers instead of a whole input, so a change costs work
/// proportional to it. Naming an entry that does not change is allowed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputDelta {
    pub services: BTreeMap<ServiceRef, Option<Service>>,
    pub endpoints: BTreeMap<ServiceRef, Option<BTreeSet<Endpoint>>>,
    pub pods: BTreeMap<PodRef, Option<Pod>>,
}

impl InputDelta {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.endpoints.is_empty() && self.pods.is_empty()
    }

    /// Writes the delta into `input` and returns the entries it replaced, by the same keys (the
    /// inverse delta, which [`crate::MeshState::update_changed`] reads).
    pub fn apply(self, input: &mut MeshInput) -> InputDelta {
        fn swap<K: Ord + Clone, V>(
            map: &mut BTreeMap<K, V>,
            entries: BTreeMap<K, Option<V>>,
        ) -> BTreeMap<K, Option<V>> {
            entries
                .into_iter()
                .map(|(k, v)| {
                    let old = match v {
                        Some(v) => map.insert(k.clone(), v),
                        None => map.remove(&k),
                    };
                    (k, old)
                })
                .collect()
        }
        InputDelta {
            services: swap(&mut input.services, self.services),
            endpoints: swap(&mut input.endpoints, self.endpoints),
            pods: swap(&mut input.pods, self.pods),
        }
    }
}
