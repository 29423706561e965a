//! `MeshInput` → every proxy's `ProxyIntent`.
//!
//! Permissive mode: every meshed service is reachable by every proxy, so one `OutboundIntent` is shared by
//! all of them. SMI mode: deny by default; a TrafficTarget lets its sources reach the destination identity
//! on the routes its rules name, so outbound intent is computed once per client identity and only holds
//! services (and endpoints) that identity may reach.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use osm_api::smi::access::IdentityBindingSubject;

use crate::input::{AppProtocol, MeshInput, ObjectRef, PodRef, Service, ServiceIdentity, ServiceRef};
use crate::intent::*;

/// The computed mesh: one intent per sidecar (keyed by proxy uuid) and what could not be used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshModel {
    pub proxies: BTreeMap<String, ProxyIntent>,
    /// Policy references that point nowhere, etc.: reported, never fatal.
    pub warnings: Vec<String>,
}

/// Computes every proxy's intent. Pure and deterministic.
pub fn compute(input: &MeshInput) -> MeshModel {
    Builder::new(input).build()
}

/// An endpoint with the identity of the pod behind it (None: not a known pod).
#[derive(Clone)]
struct ResolvedEndpoint {
    ip: IpAddr,
    pod: Option<PodRef>,
    identity: Option<ServiceIdentity>,
}

/// The SMI policy that applies to one destination identity.
#[derive(Default)]
struct DestinationPolicy {
    http: BTreeMap<HttpRouteMatch, BTreeSet<ServiceIdentity>>,
    /// (ports, sources): `None` ports means every port.
    tcp: Vec<(Option<BTreeSet<u16>>, BTreeSet<ServiceIdentity>)>,
}

struct Builder<'a> {
    input: &'a MeshInput,
    permissive: bool,
    endpoints: BTreeMap<&'a ServiceRef, Vec<ResolvedEndpoint>>,
    /// Services with at least one endpoint of each identity.
    services_by_identity: HashMap<ServiceIdentity, Vec<&'a ServiceRef>>,
    /// TrafficSplit apex → weighted backend services.
    splits: BTreeMap<ServiceRef, Vec<(ServiceRef, u32)>>,
    /// SMI: destination identity → what may reach it.
    destinations: BTreeMap<ServiceIdentity, DestinationPolicy>,
    /// SMI: source identity → destination identities it may reach.
    reachable: BTreeMap<ServiceIdentity, BTreeSet<ServiceIdentity>>,
    clusters: Interner<UpstreamCluster>,
    warnings: Vec<String>,
}

/// Deduplicates equal values into one shared `Arc`.
struct Interner<T>(HashMap<Arc<T>, ()>);

impl<T: Eq + Hash> Interner<T> {
    fn new() -> Self {
        Self(HashMap::new())
    }

    fn intern(&mut self, value: T) -> Arc<T> {
        if let Some((existing, _)) = self.0.get_key_value(&value) {
            return existing.clone();
        }
        let value = Arc::new(value);
        self.0.insert(value.clone(), ());
        value
    }
}

impl<'a> Builder<'a> {
    fn new(input: &'a MeshInput) -> Self {
        let mut b = Self {
            input,
            permissive: input.mesh_config.traffic.enable_permissive_traffic_policy_mode,
            endpoints: BTreeMap::new(),
            services_by_identity: HashMap::new(),
            splits: BTreeMap::new(),
            destinations: BTreeMap::new(),
            reachable: BTreeMap::new(),
            clusters: Interner::new(),
            warnings: Vec::new(),
        };
        b.resolve_endpoints();
        b.index_splits();
        if !b.permissive {
            b.index_traffic_targets();
        }
        b
    }

    fn resolve_endpoints(&mut self) {
        let index = crate::input::PodSelectorIndex::new(self.input);
        for (id, svc) in &self.input.services {
            let resolved = self
                .input
                .endpoints_with(svc, &index)
                .into_iter()
                .map(|ep| ResolvedEndpoint {
                    ip: ep.ip,
                    identity: ep
                        .pod
                        .as_ref()
                        .and_then(|p| self.input.pods.get(p))
                        .map(|p| p.identity()),
                    pod: ep.pod,
                })
                .collect();
            let resolved: Vec<ResolvedEndpoint> = resolved;
            let identities: BTreeSet<&ServiceIdentity> =
                resolved.iter().filter_map(|e| e.identity.as_ref()).collect();
            for identity in identities {
                self.services_by_identity
                    .entry(identity.clone())
                    .or_default()
                    .push(id);
            }
            self.endpoints.insert(id, resolved);
        }
    }

    fn index_splits(&mut self) {
        for (split_ref, split) in &self.input.traffic_splits {
            // The apex may be written as a short name or an FQDN; the first label is the service name.
            let apex_name = split.service.split('.').next().unwrap_or_default();
            let apex = ServiceRef::new(&split_ref.namespace, apex_name);
            if !self.input.services.contains_key(&apex) {
                self.warnings.push(format!(
                    "TrafficSplit {split_ref}: apex service {apex} does not exist"
                ));
                continue;
            }
            let backends = split
                .backends
                .iter()
                .filter_map(|b| {
                    let svc = ServiceRef::new(&split_ref.namespace, &b.service);
                    if !self.input.services.contains_key(&svc) {
                        self.warnings.push(format!(
                            "TrafficSplit {split_ref}: backend service {svc} does not exist"
                        ));
                        return None;
                    }
                    Some((svc, u32::try_from(b.weight).unwrap_or(0)))
                })
                .collect();
            self.splits.insert(apex, backends);
        }
    }

    fn index_traffic_targets(&mut self) {
        for (tt_ref, tt) in &self.input.traffic_targets {
            let destination = subject_identity(&tt.destination, &tt_ref.namespace);
            let sources: BTreeSet<ServiceIdentity> = tt
                .sources
                .iter()
                .map(|s| subject_identity(s, &tt_ref.namespace))
                .collect();
            for source in &sources {
                self.reachable
                    .entry(source.clone())
                    .or_default()
                    .insert(destination.clone());
            }
            let mut http = Vec::new();
            let mut tcp = Vec::new();
            for rule in &tt.rules {
                let group_ref = ObjectRef::new(&tt_ref.namespace, &rule.name);
                match rule.kind.as_str() {
                    "HTTPRouteGroup" => match self.input.http_route_groups.get(&group_ref) {
                        Some(group) => {
                            let mut matched = 0;
                            for m in &group.matches {
                                if rule.matches.is_empty() || rule.matches.contains(&m.name) {
                                    matched += 1;
                                    http.push(http_route_match(m));
                                }
                            }
                            if matched < rule.matches.len() {
                                self.warnings.push(format!(
                                    "TrafficTarget {tt_ref}: some of the matches {:?} are not in HTTPRouteGroup {group_ref}",
                                    rule.matches
                                ));
                            }
                        }
                        None => self.warnings.push(format!(
                            "TrafficTarget {tt_ref}: HTTPRouteGroup {group_ref} does not exist"
                        )),
                    },
                    "TCPRoute" => match self.input.tcp_routes.get(&group_ref) {
                        Some(route) => {
                            let ports = &route.matches.ports;
                            tcp.push((!ports.is_empty()).then(|| ports.iter().copied().collect()));
                        }
                        None => self.warnings.push(format!(
                            "TrafficTarget {tt_ref}: TCPRoute {group_ref} does not exist"
                        )),
                    },
                    other => self
                        .warnings
                        .push(format!("TrafficTarget {tt_ref}: unsupported rule kind {other:?}")),
                }
            }
            let policy = self.destinations.entry(destination).or_default();
            for route in http {
                policy
                    .http
                    .entry(route)
                    .or_default()
                    .extend(sources.iter().cloned());
            }
            for ports in tcp {
                policy.tcp.push((ports, sources.clone()));
            }
        }
    }

    fn build(mut self) -> MeshModel {
        let shared_outbound = self.permissive.then(|| Arc::new(self.outbound_for(None)));
        let mut outbound_by_identity: HashMap<ServiceIdentity, Arc<OutboundIntent>> = HashMap::new();
        let mut inbound_interner: Interner<InboundIntent> = Interner::new();
        let local_services = self.local_services_by_pod();

        let mut proxies = BTreeMap::new();
        for pod in self.input.pods.values() {
            let Some(uuid) = &pod.proxy_uuid else {
                continue;
            };
            let identity = pod.identity();
            let outbound = match &shared_outbound {
                Some(shared) => shared.clone(),
                None => match outbound_by_identity.get(&identity) {
                    Some(o) => o.clone(),
                    None => {
                        let o = Arc::new(self.outbound_for(Some(&identity)));
                        outbound_by_identity.insert(identity.clone(), o.clone());
                        o
                    }
                },
            };
            let services = local_services.get(&pod.id).map(Vec::as_slice).unwrap_or(&[]);
            let inbound = inbound_interner.intern(self.inbound_for(&identity, services));
            proxies.insert(
                uuid.clone(),
                ProxyIntent {
                    proxy_uuid: uuid.clone(),
                    pod: pod.id.clone(),
                    identity,
                    inbound,
                    outbound,
                },
            );
        }
        MeshModel {
            proxies,
            warnings: self.warnings,
        }
    }

    /// Services whose endpoints include each pod.
    fn local_services_by_pod(&self) -> HashMap<PodRef, Vec<&'a Service>> {
        let mut by_pod: HashMap<PodRef, Vec<&'a Service>> = HashMap::new();
        for (id, eps) in &self.endpoints {
            for pod in eps.iter().filter_map(|ep| ep.pod.as_ref()) {
                by_pod
                    .entry(pod.clone())
                    .or_default()
                    .push(&self.input.services[*id]);
            }
        }
        by_pod
    }

    fn inbound_for(&self, identity: &ServiceIdentity, services: &[&Service]) -> InboundIntent {
        let mut ports: BTreeMap<u16, (AppProtocol, BTreeSet<InboundService>)> = BTreeMap::new();
        for svc in services {
            for p in &svc.ports {
                ports
                    .entry(p.target_port)
                    .or_insert_with(|| (p.protocol, BTreeSet::new()))
                    .1
                    .insert(InboundService {
                        service: svc.id.clone(),
                        port: p.port,
                    });
            }
        }
        let ports = ports
            .into_iter()
            .map(|(target_port, (protocol, services))| {
                let service_ports: BTreeSet<u16> = services.iter().map(|s| s.port).collect();
                InboundPort {
                    target_port,
                    protocol,
                    access: self.inbound_access(identity, protocol, target_port, &service_ports),
                    services: services.into_iter().collect(),
                }
            })
            .collect();
        InboundIntent {
            identity: identity.clone(),
            ports,
        }
    }

    fn inbound_access(
        &self,
        identity: &ServiceIdentity,
        protocol: AppProtocol,
        target_port: u16,
        service_ports: &BTreeSet<u16>,
    ) -> InboundAccess {
        if self.permissive {
            return InboundAccess::AnyMeshIdentity;
        }
        let empty = DestinationPolicy::default();
        let policy = self.destinations.get(identity).unwrap_or(&empty);
        // TCPRoute ports name the destination port; accept the pod port or the service port.
        let tcp_sources: BTreeSet<ServiceIdentity> = policy
            .tcp
            .iter()
            .filter(|(ports, _)| {
                ports
                    .as_ref()
                    .is_none_or(|ports| ports.contains(&target_port) || !ports.is_disjoint(service_ports))
            })
            .flat_map(|(_, sources)| sources.iter().cloned())
            .collect();
        match protocol {
            AppProtocol::Tcp => InboundAccess::TcpIdentities(tcp_sources),
            AppProtocol::Http => {
                let mut routes = policy.http.clone();
                // An identity allowed at L4 on this port may send any request.
                if !tcp_sources.is_empty() {
                    routes
                        .entry(HttpRouteMatch::any())
                        .or_default()
                        .extend(tcp_sources);
                }
                InboundAccess::HttpRoutes(
                    routes
                        .into_iter()
                        .map(|(route, allowed)| HttpRoutePolicy { route, allowed })
                        .collect(),
                )
            }
        }
    }

    /// Outbound intent for a client identity (`None`: permissive, everything reachable).
    fn outbound_for(&mut self, client: Option<&ServiceIdentity>) -> OutboundIntent {
        let allowed_destinations = client.map(|c| self.reachable.get(c).cloned().unwrap_or_default());
        let allowed = |id: &Option<ServiceIdentity>| match &allowed_destinations {
            None => true,
            Some(set) => id.as_ref().is_some_and(|id| set.contains(id)),
        };
        let mut services = Vec::new();
        let input = self.input;
        // SMI: only services backed by an allowed identity, and split apexes over them, can be
        // reachable; looking at just those keeps each identity's cost proportional to what it may
        // reach rather than to the whole mesh.
        let candidates: Box<dyn Iterator<Item = &Service>> = match &allowed_destinations {
            None => Box::new(input.services.values()),
            Some(destinations) => {
                let mut refs: BTreeSet<&ServiceRef> = destinations
                    .iter()
                    .filter_map(|d| self.services_by_identity.get(d))
                    .flatten()
                    .copied()
                    .collect();
                let apexes: Vec<&ServiceRef> = self
                    .splits
                    .iter()
                    .filter(|(_, backends)| backends.iter().any(|(b, _)| refs.contains(b)))
                    .filter_map(|(apex, _)| input.services.get_key_value(apex).map(|(k, _)| k))
                    .collect();
                refs.extend(apexes);
                Box::new(refs.into_iter().map(|r| &input.services[r]))
            }
        };
        for svc in candidates {
            for port in &svc.ports {
                let backends = match self.splits.get(&svc.id).cloned() {
                    Some(split) => split
                        .iter()
                        .filter(|(_, weight)| *weight > 0)
                        .filter_map(|(backend, weight)| {
                            let backend_svc = &input.services[backend];
                            let backend_port = backend_svc
                                .ports
                                .iter()
                                .find(|p| p.port == port.port)
                                .or_else(|| (backend_svc.ports.len() == 1).then(|| &backend_svc.ports[0]))?;
                            self.upstream_cluster(
                                backend_svc,
                                backend_port.target_port,
                                port.protocol,
                                client.is_some(),
                                &allowed,
                            )
                            .map(|cluster| WeightedCluster {
                                cluster,
                                weight: *weight,
                            })
                        })
                        .collect(),
                    None => self
                        .upstream_cluster(svc, port.target_port, port.protocol, client.is_some(), &allowed)
                        .map(|cluster| vec![WeightedCluster { cluster, weight: 100 }])
                        .unwrap_or_default(),
                };
                if backends.is_empty() {
                    continue;
                }
                let addresses = match svc.cluster_ip {
                    Some(ip) => vec![ip],
                    None => backends
                        .iter()
                        .flat_map(|b| b.cluster.endpoints.iter().copied())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                };
                services.push(OutboundService {
                    service: svc.id.clone(),
                    port: port.port,
                    protocol: port.protocol,
                    addresses,
                    backends,
                });
            }
        }
        OutboundIntent {
            services,
            egress_passthrough: self.input.mesh_config.traffic.enable_egress,
        }
    }

    /// The cluster for one service port with the endpoints `allowed` keeps. In SMI mode a cluster with
    /// no allowed endpoint is not reachable at all.
    fn upstream_cluster(
        &mut self,
        svc: &Service,
        target_port: u16,
        protocol: AppProtocol,
        deny_by_default: bool,
        allowed: &impl Fn(&Option<ServiceIdentity>) -> bool,
    ) -> Option<Arc<UpstreamCluster>> {
        let eps: Vec<&ResolvedEndpoint> = self
            .endpoints
            .get(&svc.id)
            .map(|eps| eps.iter().filter(|ep| allowed(&ep.identity)).collect())
            .unwrap_or_default();
        if deny_by_default && eps.is_empty() {
            return None;
        }
        Some(self.clusters.intern(UpstreamCluster {
            service: svc.id.clone(),
            target_port,
            protocol,
            server_identities: eps.iter().filter_map(|ep| ep.identity.clone()).collect(),
            endpoints: eps.iter().map(|ep| ep.ip).collect(),
        }))
    }
}

fn subject_identity(subject: &IdentityBindingSubject, default_ns: &str) -> ServiceIdentity {
    ServiceIdentity::new(subject.namespace.as_deref().unwrap_or(default_ns), &subject.name)
}

fn http_route_match(m: &osm_api::smi::specs::HttpMatch) -> HttpRouteMatch {
    let methods = if m.methods.iter().any(|x| x == "*") {
        Vec::new()
    } else {
        let mut methods: Vec<String> = m.methods.iter().map(|x| x.to_ascii_uppercase()).collect();
        methods.sort();
        methods.dedup();
        methods
    };
    let mut headers: Vec<(String, String)> = m
        .headers
        .iter()
        .flat_map(|h| h.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())))
        .collect();
    headers.sort();
    HttpRouteMatch {
        path_regex: m
            .path_regex
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| ".*".to_string()),
        methods,
        headers,
    }
}
