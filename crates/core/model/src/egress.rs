//! Egress policies (`policy.openservicemesh.io/v1alpha1` Egress) → what each source identity may reach
//! outside the mesh, per destination port ([`EgressIntent`]).
//!
//! Upstream OSM's semantics (`pkg/catalog/egress.go`): a policy applies to the ServiceAccounts it lists
//! as sources; per port, `http` routes by Host (`host` and `host:port`) to a DNS-resolved cluster
//! `<host>:<port>`, narrowed by the HTTPRouteGroups it matches; `https` matches the TLS SNI against
//! `hosts`; `tcp` and `tcp-server-first` match the destination against `ipAddresses`. Policies for the
//! same port are merged. Where upstream misbehaved we differ: `ipAddresses` narrow HTTP egress too
//! (upstream ignored them), and an `https` port with both `hosts` and `ipAddresses` admits either (the
//! SNI from anywhere, or anything to those addresses) instead of requiring both at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use osm_api::policy::{
    EgressSpec, KIND_HTTP_ROUTE_GROUP, KIND_SERVICE_ACCOUNT, KIND_UPSTREAM_TRAFFIC_SETTING, PROTOCOL_HTTP,
    PROTOCOL_HTTPS, PROTOCOL_TCP, PROTOCOL_TCP_SERVER_FIRST,
};

use crate::compute::http_route_match;
use crate::input::{MeshInput, ObjectRef, ServiceIdentity};
use crate::intent::{ConnectionLimits, EgressHttpHost, EgressIntent, EgressPort, HttpRouteMatch, IpRange};

/// The egress intent of every identity some Egress policy names (others have none). Empty when the
/// feature flag `enableEgressPolicy` is off. Problems are pushed to `warnings`, naming the object.
pub(crate) fn by_identity(
    input: &MeshInput,
    warnings: &mut Vec<String>,
) -> HashMap<ServiceIdentity, Arc<EgressIntent>> {
    if !input.mesh_config.feature_flags.enable_egress_policy {
        if !input.egresses.is_empty() {
            warnings.push(format!(
                "{} Egress policies are not applied: featureFlags.enableEgressPolicy is false",
                input.egresses.len()
            ));
        }
        return HashMap::new();
    }
    let mut builders: BTreeMap<ServiceIdentity, Builder> = BTreeMap::new();
    for (id, spec) in &input.egresses {
        let Some(policy) = Policy::read(input, id, spec, warnings) else {
            continue;
        };
        if spec.hosts.is_empty() {
            for (i, port) in spec.ports.iter().enumerate() {
                if port.protocol == PROTOCOL_HTTP
                    || (port.protocol == PROTOCOL_HTTPS && spec.ip_addresses.is_empty())
                {
                    warnings.push(format!(
                        "Egress {id}: spec.ports[{i}] is {} but spec.hosts is empty; it matches nothing",
                        port.protocol
                    ));
                }
            }
        }
        for source in &spec.sources {
            if source.kind != KIND_SERVICE_ACCOUNT {
                continue; // refused by validation
            }
            let identity = ServiceIdentity::new(&source.namespace, &source.name);
            builders.entry(identity).or_default().add(&policy, spec);
        }
    }
    // Identities with equal policies share one value: the generator finds a proxy's config by the
    // address of its intents, and hashing the (permissive, mesh-wide) outbound intent again for each
    // identity would cost more than the config.
    let mut shared: HashMap<EgressIntent, Arc<EgressIntent>> = HashMap::new();
    builders
        .into_iter()
        .map(|(identity, b)| {
            let intent = b.finish();
            for p in intent.ports.iter().filter(|p| p.server_first) {
                if !p.http_hosts.is_empty() || !p.server_names.is_empty() {
                    // The inspectors that read Host and SNI would wait for a server-first client.
                    warnings.push(format!(
                        "Egress policies for {identity}: port {} is tcp-server-first and also http/https; \
                         on that port only the IP-range match applies",
                        p.port
                    ));
                }
            }
            let intent = shared
                .entry(intent)
                .or_insert_with_key(|i| Arc::new(i.clone()))
                .clone();
            (identity, intent)
        })
        .collect()
}

/// What one policy contributes, read once for all its sources.
struct Policy {
    ip_ranges: Vec<IpRange>,
    /// `None`: no HTTPRouteGroup named, every request of the host matches.
    routes: Option<Vec<HttpRouteMatch>>,
    /// The `connectionSettings` of the UpstreamTrafficSetting it names, for its clusters.
    limits: Option<ConnectionLimits>,
}

impl Policy {
    fn read(
        input: &MeshInput,
        id: &ObjectRef,
        spec: &EgressSpec,
        warnings: &mut Vec<String>,
    ) -> Option<Policy> {
        let mut ip_ranges = Vec::new();
        for (i, cidr) in spec.ip_addresses.iter().enumerate() {
            match IpRange::parse(cidr) {
                Some(r) => ip_ranges.push(r),
                None => {
                    // Validation refuses these; a policy that would reach more than it says is dropped.
                    warnings.push(format!(
                        "Egress {id}: spec.ipAddresses[{i}] {cidr:?} is not a CIDR; the policy is not applied"
                    ));
                    return None;
                }
            }
        }
        let mut routes: Option<Vec<HttpRouteMatch>> = None;
        let mut limits = None;
        for (i, m) in spec.matches.iter().enumerate() {
            match m.kind.as_str() {
                KIND_HTTP_ROUTE_GROUP => {
                    let group = ObjectRef::new(&id.namespace, &m.name);
                    let found = routes.get_or_insert_with(Vec::new);
                    match input.http_route_groups.get(&group) {
                        Some(g) => found.extend(g.matches.iter().map(http_route_match)),
                        // Named but missing: the policy matches nothing on HTTP until it exists.
                        None => warnings.push(format!(
                            "Egress {id}: spec.matches[{i}] names HTTPRouteGroup {group}, which does not exist; \
                             its HTTP ports match no request"
                        )),
                    }
                }
                KIND_UPSTREAM_TRAFFIC_SETTING => {
                    let setting = ObjectRef::new(&id.namespace, &m.name);
                    match input.upstream_traffic_settings.get(&setting) {
                        Some(s) => limits = limits.or_else(|| crate::upstream_traffic::read(s)),
                        // As upstream: a policy whose setting is missing is not applied at all.
                        None => {
                            warnings.push(format!(
                                "Egress {id}: spec.matches[{i}] names UpstreamTrafficSetting {setting}, which \
                                 does not exist; the policy is not applied"
                            ));
                            return None;
                        }
                    }
                }
                _ => {} // refused by validation
            }
        }
        Some(Policy {
            ip_ranges,
            routes,
            limits,
        })
    }
}

/// Merges every policy of one identity, port by port.
#[derive(Default)]
struct Builder {
    ports: BTreeMap<u16, PortBuilder>,
}

#[derive(Default)]
struct PortBuilder {
    /// `None`: no HTTP egress on this port.
    http: Option<HttpBuilder>,
    server_names: BTreeSet<String>,
    ip_ranges: BTreeSet<IpRange>,
    /// A `tcp` policy without `ipAddresses`: any destination address on this port.
    ip_any: bool,
    /// Protocols of the policies that contributed `ip_ranges`, for the chain's name.
    ip_protocols: BTreeSet<&'static str>,
    server_first: bool,
    /// The first policy's connection limits for the port's original-destination cluster.
    limits: Option<ConnectionLimits>,
}

#[derive(Default)]
struct HttpBuilder {
    hosts: BTreeMap<String, BTreeSet<HttpRouteMatch>>,
    /// The first policy's connection limits for each host's cluster.
    host_limits: BTreeMap<String, ConnectionLimits>,
    /// Empty while any policy left the destination address open.
    ip_ranges: BTreeSet<IpRange>,
    any_address: bool,
}

impl Builder {
    fn add(&mut self, policy: &Policy, spec: &EgressSpec) {
        for port in &spec.ports {
            let p = self.ports.entry(port.number).or_default();
            match port.protocol.as_str() {
                PROTOCOL_HTTP => {
                    let http = p.http.get_or_insert_with(HttpBuilder::default);
                    for host in &spec.hosts {
                        if let Some(limits) = &policy.limits {
                            http.host_limits
                                .entry(host.clone())
                                .or_insert_with(|| limits.clone());
                        }
                        let routes = http.hosts.entry(host.clone()).or_default();
                        match &policy.routes {
                            None => {
                                routes.insert(HttpRouteMatch::any());
                            }
                            Some(matches) => routes.extend(matches.iter().cloned()),
                        }
                    }
                    if policy.ip_ranges.is_empty() {
                        http.any_address = true;
                    } else {
                        http.ip_ranges.extend(policy.ip_ranges.iter().copied());
                    }
                }
                PROTOCOL_HTTPS => {
                    p.limits = p.limits.take().or_else(|| policy.limits.clone());
                    p.server_names.extend(spec.hosts.iter().cloned());
                    if !policy.ip_ranges.is_empty() {
                        p.ip_ranges.extend(policy.ip_ranges.iter().copied());
                        p.ip_protocols.insert(PROTOCOL_HTTPS);
                    }
                }
                protocol @ (PROTOCOL_TCP | PROTOCOL_TCP_SERVER_FIRST) => {
                    p.limits = p.limits.take().or_else(|| policy.limits.clone());
                    p.ip_ranges.extend(policy.ip_ranges.iter().copied());
                    p.ip_any |= policy.ip_ranges.is_empty();
                    if protocol == PROTOCOL_TCP {
                        p.ip_protocols.insert(PROTOCOL_TCP);
                    } else {
                        p.ip_protocols.insert(PROTOCOL_TCP_SERVER_FIRST);
                        p.server_first = true;
                    }
                }
                _ => {} // refused by validation
            }
        }
    }

    fn finish(self) -> EgressIntent {
        let ports = self
            .ports
            .into_iter()
            .map(|(port, p)| EgressPort {
                port,
                http_hosts: p
                    .http
                    .as_ref()
                    .map(|h| {
                        h.hosts
                            .iter()
                            .map(|(host, routes)| EgressHttpHost {
                                host: host.clone(),
                                routes: routes.iter().cloned().collect(),
                                limits: h.host_limits.get(host).cloned(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                http_ip_ranges: p
                    .http
                    .as_ref()
                    .filter(|h| !h.any_address)
                    .map(|h| h.ip_ranges.iter().copied().collect())
                    .unwrap_or_default(),
                server_names: p.server_names.into_iter().collect(),
                ip_ranges: match (p.ip_protocols.is_empty(), p.ip_any) {
                    (true, _) => None,
                    (false, true) => Some(Vec::new()),
                    (false, false) => Some(p.ip_ranges.into_iter().collect()),
                },
                ip_protocol: if p.ip_protocols.contains(PROTOCOL_TCP_SERVER_FIRST) {
                    PROTOCOL_TCP_SERVER_FIRST
                } else if p.ip_protocols.contains(PROTOCOL_TCP) {
                    PROTOCOL_TCP
                } else {
                    PROTOCOL_HTTPS
                },
                server_first: p.server_first,
                limits: p.limits,
            })
            .collect();
        EgressIntent { ports }
    }
}
