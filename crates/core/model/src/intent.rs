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

use crate::input::{AppProtocol, ObjectRef, PodRef, ServiceIdentity, ServiceRef};

/// Everything one sidecar needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ProxyIntent {
    pub proxy_uuid: String,
    pub pod: PodRef,
    pub identity: ServiceIdentity,
    pub inbound: Arc<InboundIntent>,
    pub outbound: Arc<OutboundIntent>,
    /// What its identity may reach outside the mesh by Egress policy (most proxies: nothing, one
    /// shared empty value).
    pub egress: Arc<EgressIntent>,
}

/// Traffic this proxy accepts for its local application.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct InboundIntent {
    /// The local identity: its certificate is presented to clients.
    pub identity: ServiceIdentity,
    /// One entry per application port, sorted by port.
    pub ports: Vec<InboundPort>,
    /// Traffic from outside the mesh that IngressBackend policies admit, at most one per application
    /// port, sorted by port.
    pub ingress: Vec<IngressBackendIntent>,
    /// MeshConfig `traffic.inboundExternalAuthorization`, when enabled and the pod accepts HTTP (every
    /// HTTP request, mesh or ingress, is checked with it); one value shared by every such pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_authz: Option<Arc<ExternalAuthz>>,
    /// Log each request and connection on the sidecar's stdout (MeshConfig
    /// `observability.enableAccessLog`).
    pub access_log: bool,
    /// Where HTTP requests' spans go (MeshConfig `observability.tracing`); `None`: not traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Arc<Tracing>>,
}

/// A Zipkin collector every HTTP connection manager reports spans to (MeshConfig
/// `observability.tracing`, when enabled), over HTTP/JSON v2 as upstream does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Tracing {
    pub address: String,
    pub port: u16,
    /// The collector's API path, `/api/v2/spans` by default.
    pub endpoint: String,
}

impl Tracing {
    /// The tracing the MeshConfig asks for: enabled with an address.
    pub fn from_spec(spec: &osm_api::config::TracingSpec) -> Option<Tracing> {
        let address = spec.address.as_deref().filter(|a| !a.is_empty())?;
        spec.enable.then(|| Tracing {
            address: address.to_string(),
            port: spec.port,
            endpoint: spec.endpoint.clone(),
        })
    }
}

/// An external authorization service every inbound HTTP request is checked with (Envoy ext_authz, gRPC
/// v3), as MeshConfig `traffic.inboundExternalAuthorization` names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ExternalAuthz {
    /// Host name or IP address of the authorization service.
    pub address: String,
    pub port: u16,
    /// `statPrefix`
    pub stat_prefix: String,
    /// How long a check may take, in milliseconds.
    pub timeout_ms: u64,
    /// Let a request through when the service cannot be asked (down, too slow); otherwise it is refused
    /// with 403.
    pub failure_mode_allow: bool,
}

impl ExternalAuthz {
    /// What MeshConfig asks for: `None` unless enabled with an address and port (validation refuses an
    /// enabled spec without them).
    pub fn from_spec(spec: &osm_api::config::ExternalAuthzSpec) -> Option<ExternalAuthz> {
        if !spec.enable {
            return None;
        }
        Some(ExternalAuthz {
            address: spec.address.clone().filter(|a| !a.is_empty())?,
            port: spec.port?,
            stat_prefix: spec.stat_prefix.clone(),
            timeout_ms: u64::try_from(std::time::Duration::from(spec.timeout).as_millis())
                .unwrap_or(u64::MAX),
            failure_mode_allow: spec.failure_mode_allow,
        })
    }
}

/// What one IngressBackend admits to one application port of the local pod: traffic that does not come
/// from a sidecar (an ingress controller), so it carries no mesh SNI and, for `http`, no TLS at all.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct IngressBackendIntent {
    /// The backend Service and the IngressBackend that names it (both name the filter chain and
    /// virtual host).
    pub service: ServiceRef,
    pub policy: ObjectRef,
    /// The application port (`backends[].port.number`).
    pub target_port: u16,
    /// Source addresses admitted (the endpoints of `Service` sources, the `IPRange` sources); empty:
    /// any address.
    pub source_ranges: Vec<IpRange>,
    pub transport: IngressTransport,
}

/// How an ingress client connects.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngressTransport {
    /// Plain HTTP: clients are known by address only.
    Http,
    /// TLS terminated by the sidecar with its service certificate.
    Https {
        /// TLS server names accepted; empty: any.
        sni_hosts: Vec<String>,
        clients: IngressClients,
    },
}

/// Which TLS clients an `https` ingress backend accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngressClients {
    /// `skipClientCertValidation`: no client certificate is asked for.
    Unverified,
    /// A client certificate signed by the mesh CA whose principal (URI or DNS SAN) is one of these
    /// `AuthenticatedPrincipal` names; none listed: nobody.
    Principals(BTreeSet<String>),
}

impl IngressBackendIntent {
    /// The protocol as the IngressBackend names it (`http`, `https`), which the chain name embeds.
    pub fn protocol(&self) -> &'static str {
        match self.transport {
            IngressTransport::Http => osm_api::policy::PROTOCOL_HTTP,
            IngressTransport::Https { .. } => osm_api::policy::PROTOCOL_HTTPS,
        }
    }
}

/// One application port of the local pod and who may reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundPort {
    pub target_port: u16,
    /// The services that route to this port; each gets a filter chain matched by its TLS SNI.
    pub services: Vec<InboundService>,
    /// The port's protocol with who may reach it, in that protocol's terms.
    pub access: InboundAccess,
    /// The local rate limits an UpstreamTrafficSetting of one of the port's services sets (the first
    /// such service, in service order); `None`: none.
    pub rate_limit: Option<Arc<LocalRateLimit>>,
}

/// An UpstreamTrafficSetting's `rateLimit.local`, enforced by the upstream's own sidecar for all its
/// clients together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct LocalRateLimit {
    /// New connections (`tcp`), counted after RBAC.
    pub connections: Option<TokenBucket>,
    /// Requests (`http`), per virtual host.
    pub requests: Option<HttpRateLimit>,
    /// `httpRoutes`: requests whose route's path regex is this one (as the HTTPRouteGroup writes it;
    /// in permissive mode a route of its own), limited apart from the rest. Sorted by path.
    pub routes: Vec<(String, HttpRateLimit)>,
}

impl LocalRateLimit {
    /// Whether the HTTP rate-limit filter is needed: a virtual host or a route is limited.
    pub fn limits_requests(&self) -> bool {
        self.requests.is_some() || !self.routes.is_empty()
    }
}

/// `n` tokens every `fill_interval_secs`, at most `max_tokens` (`n + burst`) saved up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TokenBucket {
    pub tokens_per_fill: u32,
    pub max_tokens: u32,
    pub fill_interval_secs: u64,
}

/// A request rate limit and how refused requests are answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct HttpRateLimit {
    pub bucket: TokenBucket,
    /// Status of a refused request (Envoy's default, 429, when `None`).
    pub status: Option<u32>,
    /// Headers added to refused requests' responses.
    pub response_headers: Vec<(String, String)>,
}

impl InboundPort {
    pub fn protocol(&self) -> AppProtocol {
        self.access.protocol()
    }
}

/// Flat (`target_port`, `protocol`, `services`, `access`), as the intent has always been printed.
impl Serialize for InboundPort {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("InboundPort", 5)?;
        st.serialize_field("target_port", &self.target_port)?;
        st.serialize_field("protocol", &self.protocol())?;
        st.serialize_field("services", &self.services)?;
        match &self.access {
            InboundAccess::Http(access) => st.serialize_field("access", access)?,
            InboundAccess::Tcp(access) => st.serialize_field("access", access)?,
        }
        if let Some(limit) = &self.rate_limit {
            st.serialize_field("rate_limit", limit)?;
        }
        st.end()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct InboundService {
    pub service: ServiceRef,
    pub port: u16,
}

/// How an inbound port is handled, with who may reach it. Each protocol carries its own kind of
/// policy, so an HTTP port cannot hold identity-only (TCP) access nor a TCP port HTTP routes: the xDS
/// layer never has to guess what a mismatch means.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "protocol", content = "access", rename_all = "lowercase")]
pub enum InboundAccess {
    Http(HttpAccess),
    Tcp(TcpAccess),
}

impl InboundAccess {
    /// The port's protocol (filter chain names embed it).
    pub fn protocol(&self) -> AppProtocol {
        match self {
            Self::Http(_) => AppProtocol::Http,
            Self::Tcp(_) => AppProtocol::Tcp,
        }
    }
}

/// Who may reach an HTTP port. A valid mesh client certificate is always required.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpAccess {
    /// Permissive mode: any mesh identity, any request.
    AnyMeshIdentity,
    /// SMI mode: only these routes, each for the identities listed. Requests matching no route are
    /// refused.
    #[serde(rename = "http_routes")]
    Routes(Vec<HttpRoutePolicy>),
}

/// Who may reach a TCP port. A valid mesh client certificate is always required.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpAccess {
    /// Permissive mode: any mesh identity.
    AnyMeshIdentity,
    /// SMI mode: only these identities.
    #[serde(rename = "tcp_identities")]
    Identities(BTreeSet<ServiceIdentity>),
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

    /// Whether a request matches, as Envoy judges the route this becomes: the path without its query
    /// string and fragment must wholly match `path_regex`; the method must be one listed (if any);
    /// every header condition must wholly match the header's values (several joined by `,`). A
    /// regex that does not compile matches nothing (validation refuses those).
    pub fn matches(&self, method: &str, path: &str, headers: &[(String, String)]) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        full_match(&self.path_regex, path)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.headers.iter().all(|(name, re)| {
                let values: Vec<&str> = headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
                    .collect();
                !values.is_empty() && full_match(re, &values.join(","))
            })
    }
}

/// RE2 `FullMatch`, which Envoy's `safe_regex` uses.
fn full_match(re: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|re| re.is_match(text))
}

/// Traffic this proxy may send.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct OutboundIntent {
    /// Reachable services, sorted by service and port.
    pub services: Vec<OutboundService>,
    /// Send unknown destinations to their original address (`passthrough-outbound`).
    pub egress_passthrough: bool,
    /// Log each request and connection on the sidecar's stdout (MeshConfig
    /// `observability.enableAccessLog`).
    pub access_log: bool,
    /// Where HTTP requests' spans go (MeshConfig `observability.tracing`); `None`: not traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Arc<Tracing>>,
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
    /// A headless service's pods with a hostname, each reachable alone as `<hostname>.<svc>.<ns>`;
    /// sorted by hostname.
    pub pod_hosts: Vec<PodHost>,
    /// How this client retries failed requests to the service (a Retry policy naming the client's
    /// ServiceAccount and this service); `None`: no retries. Applies to its per-pod names too.
    pub retry: Option<Arc<RetryPolicy>>,
}

/// A Retry policy's `retryPolicy`, as the client's sidecar applies it to its routes to a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RetryPolicy {
    /// Envoy retry conditions, comma-separated (`retryOn`, validated at admission).
    pub retry_on: String,
    pub num_retries: u32,
    /// Time allowed per attempt, in milliseconds; `None` (`0s`): the route's own timeout.
    pub per_try_timeout_ms: Option<u64>,
    /// Base interval of the exponential backoff between attempts, in milliseconds.
    pub backoff_base_interval_ms: u64,
}

/// One pod of a headless service, by its hostname, and the cluster holding only that pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PodHost {
    pub hostname: String,
    pub cluster: Arc<UpstreamCluster>,
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
    /// One pod of a headless service by its hostname (see [`PodHost`]); `None`: the whole service.
    pub pod_hostname: Option<String>,
    /// The UpstreamTrafficSetting for this service's host: circuit breaking and connect timeout for
    /// every client. `None`: none names it.
    pub limits: Option<ConnectionLimits>,
}

/// An UpstreamTrafficSetting's `connectionSettings` (unset fields: Envoy's defaults, unlimited).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ConnectionLimits {
    /// `tcp.maxConnections`
    pub max_connections: Option<u32>,
    /// `tcp.connectTimeout`, in milliseconds.
    pub connect_timeout_ms: Option<u64>,
    /// `http.maxRequests`
    pub max_requests: Option<u32>,
    /// `http.maxPendingRequests`
    pub max_pending_requests: Option<u32>,
    /// `http.maxRetries`
    pub max_retries: Option<u32>,
    /// `http.maxRequestsPerConnection`
    pub max_requests_per_connection: Option<u32>,
}

impl UpstreamCluster {
    /// Upstream OSM's cluster name: `<ns>/<svc>|<port>`, `<ns>/<hostname>.<svc>|<port>` for one pod.
    pub fn name(&self) -> String {
        match &self.pod_hostname {
            None => cluster_name(&self.service, self.target_port),
            Some(h) => cluster_name(&pod_service(&self.service, h), self.target_port),
        }
    }

    /// The TLS SNI clients send, which the server's inbound filter chains match.
    pub fn sni(&self) -> String {
        service_sni(&self.service)
    }
}

/// One pod of a headless service as upstream OSM names it: `<hostname>.<svc>` in the service's
/// namespace (its cluster, chain and virtual host names follow).
pub fn pod_service(service: &ServiceRef, hostname: &str) -> ServiceRef {
    ServiceRef::new(&service.namespace, format!("{hostname}.{}", service.name))
}

/// `<ns>/<svc>|<port>`
pub fn cluster_name(service: &ServiceRef, port: u16) -> String {
    format!("{}/{}|{}", service.namespace, service.name, port)
}

/// `<svc>.<ns>.svc.cluster.local`
pub fn service_sni(service: &ServiceRef) -> String {
    format!("{}.{}.svc.cluster.local", service.name, service.namespace)
}

/// Destinations outside the mesh one identity may reach by Egress policy, per destination port.
/// (`traffic.enableEgress` passthrough is separate: [`OutboundIntent::egress_passthrough`].)
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct EgressIntent {
    /// Sorted by port.
    pub ports: Vec<EgressPort>,
}

impl EgressIntent {
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

/// Everything the policies of one identity allow on one destination port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct EgressPort {
    pub port: u16,
    /// `http`: hosts, sorted, each reached at `<host>:<port>` resolved by DNS. Empty: no HTTP egress.
    pub http_hosts: Vec<EgressHttpHost>,
    /// The destination addresses HTTP egress is limited to; empty: any address.
    pub http_ip_ranges: Vec<IpRange>,
    /// `https`: TLS server names (SNI) passed to their original destination.
    pub server_names: Vec<String>,
    /// `tcp`, `tcp-server-first` and `https` with `ipAddresses`: destination ranges passed to their
    /// original destination. `Some(empty)`: any address (a `tcp` policy without `ipAddresses`);
    /// `None`: no such chain.
    pub ip_ranges: Option<Vec<IpRange>>,
    /// The upstream protocol name of the `ip_ranges` chain: `tcp-server-first`, `tcp` or `https`.
    pub ip_protocol: &'static str,
    /// Some policy says the server speaks first here: the sidecar must not wait to inspect the
    /// client's first bytes on this port.
    pub server_first: bool,
    /// Circuit breaking of the port's original-destination cluster (`https`, `tcp`): the
    /// UpstreamTrafficSetting the first such policy names in `matches`.
    pub limits: Option<ConnectionLimits>,
}

/// One external HTTP host and the requests allowed to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct EgressHttpHost {
    pub host: String,
    /// Sorted; [`HttpRouteMatch::any`] when no HTTPRouteGroup narrows it; empty: nothing matches.
    pub routes: Vec<HttpRouteMatch>,
    /// Circuit breaking of the host's cluster: the UpstreamTrafficSetting the first policy for the
    /// host names in `matches`.
    pub limits: Option<ConnectionLimits>,
}

/// A CIDR range: `addr/prefix_len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IpRange {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpRange {
    /// Parses `a.b.c.d/n` or an IPv6 CIDR, as validation does.
    pub fn parse(s: &str) -> Option<IpRange> {
        osm_api::validate::parse_cidr(s)
            .ok()
            .map(|(addr, prefix_len)| IpRange { addr, prefix_len })
    }
}
