//! The model's output: what each proxy must do, independent of Envoy's vocabulary.
//!
//! Intents are values (`Eq + Hash`) shared through `Arc`: every proxy with the same identity and local
//! services points at the same `InboundIntent`, and in permissive mode every proxy points at the same
//! `OutboundIntent`. The xDS layer memoises the Envoy resources it builds by these values, so a resource
//! is built and encoded once however many proxies use it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::input::{AppProtocol, PodRef, ServiceIdentity, ServiceRef};

/// Everything one sidecar needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ProxyIntent {
    pub proxy_uuid: String,
    pub pod: PodRef,
    pub identity: ServiceIdentity,
    pub inbound: Arc<InboundIntent>,
    pub outbound: Arc<OutboundIntent>,
}

/// Traffic this proxy accepts for its local application.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct InboundIntent {
    /// The local identity: its certificate is presented to clients.
    pub identity: ServiceIdentity,
    /// One entry per application port, sorted by port.
    pub ports: Vec<InboundPort>,
}

/// One application port of the local pod and who may reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct InboundPort {
    pub target_port: u16,
    pub protocol: AppProtocol,
    /// The services that route to this port; each gets a filter chain matched by its TLS SNI.
    pub services: Vec<InboundService>,
    pub access: InboundAccess,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct InboundService {
    pub service: ServiceRef,
    pub port: u16,
}

/// Who may reach an inbound port. A valid mesh client certificate is always required.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundAccess {
    /// Permissive mode: any mesh identity, any request.
    AnyMeshIdentity,
    /// SMI mode on an HTTP port: only these routes, each for the identities listed. Requests matching
    /// no route are refused.
    HttpRoutes(Vec<HttpRoutePolicy>),
    /// SMI mode on a TCP port: only these identities.
    TcpIdentities(BTreeSet<ServiceIdentity>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct HttpRoutePolicy {
    pub route: HttpRouteMatch,
    pub allowed: BTreeSet<ServiceIdentity>,
}

/// An HTTP request match from an SMI HTTPRouteGroup.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct HttpRouteMatch {
    /// RE2 regex the whole path must match.
    pub path_regex: String,
    /// Upper-case methods; empty means any method.
    pub methods: Vec<String>,
    /// Header name (lower case) → RE2 regex the whole value must match.
    pub headers: Vec<(String, String)>,
}

impl HttpRouteMatch {
    /// Matches every request.
    pub fn any() -> Self {
        Self {
            path_regex: ".*".to_string(),
            methods: Vec::new(),
            headers: Vec::new(),
        }
    }
}

/// Traffic this proxy may send.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct OutboundIntent {
    /// Reachable services, sorted by service and port.
    pub services: Vec<OutboundService>,
    /// Send unknown destinations to their original address (`passthrough-outbound`).
    pub egress_passthrough: bool,
}

/// One reachable service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct OutboundService {
    pub service: ServiceRef,
    pub port: u16,
    pub protocol: AppProtocol,
    /// Where clients connect: the ClusterIP, or the endpoint addresses of a headless service.
    pub addresses: Vec<IpAddr>,
    /// Weighted upstream clusters; a TrafficSplit apex has several, a plain service one.
    pub backends: Vec<WeightedCluster>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct WeightedCluster {
    pub cluster: Arc<UpstreamCluster>,
    pub weight: u32,
}

/// An upstream cluster `<ns>/<svc>|<targetPort>` with the endpoints this client may use.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct UpstreamCluster {
    pub service: ServiceRef,
    pub target_port: u16,
    pub protocol: AppProtocol,
    /// Identities the server certificate may have (the identities of the endpoints' pods).
    pub server_identities: BTreeSet<ServiceIdentity>,
    pub endpoints: BTreeSet<IpAddr>,
}

impl UpstreamCluster {
    /// Upstream OSM's cluster name.
    pub fn name(&self) -> String {
        cluster_name(&self.service, self.target_port)
    }

    /// The TLS SNI clients send, which the server's inbound filter chains match.
    pub fn sni(&self) -> String {
        service_sni(&self.service)
    }
}

/// `<ns>/<svc>|<port>`
pub fn cluster_name(service: &ServiceRef, port: u16) -> String {
    format!("{}/{}|{}", service.namespace, service.name, port)
}

/// `<svc>.<ns>.svc.cluster.local`
pub fn service_sni(service: &ServiceRef) -> String {
    format!("{}.{}.svc.cluster.local", service.name, service.namespace)
}
