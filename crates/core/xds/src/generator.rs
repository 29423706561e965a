//! Builds each proxy's `ProxyConfig` from its intent, memoising every resource by the intent value it
//! was built from. Proxies with equal intents share the same `Arc<ResourceSet>`; across recomputes a
//! resource whose input did not change is neither rebuilt nor re-encoded. Entries live as long as a
//! config or set outside the generator holds them, so a recompute may visit only the proxies a change
//! reached.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use osm_model::{
    AppProtocol, ConnectionLimits, EgressIntent, InboundAccess, InboundIntent, OutboundIntent,
    OutboundService, ProxyIntent, RetryPolicy, ServiceIdentity, ServiceRef, Tracing, UpstreamCluster,
};

use crate::resource::{ProxyConfig, Resource, ResourceSet};
use crate::{cds, eds, egress, ext_authz, ingress, lds, names, rds, sds};

/// A memo table keyed by value. An entry lives while something outside the table (a proxy config, a
/// set) still holds its value: `sweep` drops the rest. That lets a recompute touch only the proxies a
/// change reached without forgetting what the others use.
struct Memo<K, V> {
    entries: HashMap<K, Arc<V>>,
}

impl<K: Eq + Hash, V> Memo<K, V> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    fn get_or_build(&mut self, key: K, build: impl FnOnce(&K) -> Arc<V>) -> Arc<V> {
        self.entries.entry(key).or_insert_with_key(|k| build(k)).clone()
    }

    fn sweep(&mut self) {
        self.entries.retain(|_, v| Arc::strong_count(v) > 1);
    }

    fn clear(&mut self) {
        self.entries.clear();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Sets by the address of the intent they were built from: the model hands out the same `Arc` for an
/// unchanged intent, so most lookups hash a pointer, not a whole intent. Entries hold both weakly: the
/// value memo and the published configs decide what lives, and a `Weak` keeps the intent's allocation,
/// so its address cannot be reused by another intent while the entry exists.
struct ByPointer<I> {
    entries: HashMap<usize, (Weak<I>, Weak<ResourceSet>)>,
}

impl<I> ByPointer<I> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    fn get(&self, intent: &Arc<I>) -> Option<Arc<ResourceSet>> {
        self.entries
            .get(&(Arc::as_ptr(intent) as usize))
            .and_then(|(_, set)| set.upgrade())
    }

    fn insert(&mut self, intent: &Arc<I>, set: &Arc<ResourceSet>) {
        self.entries.insert(
            Arc::as_ptr(intent) as usize,
            (Arc::downgrade(intent), Arc::downgrade(set)),
        );
    }

    fn sweep(&mut self) {
        self.entries
            .retain(|_, (intent, set)| intent.strong_count() > 0 && set.strong_count() > 0);
    }
}

/// [`ByPointer`] for the outbound set, which is built from two intents: the outbound one and the
/// egress one (the same shared empty value for most proxies).
struct ByPointerPair {
    entries: HashMap<(usize, usize), PairEntry>,
}

type PairEntry = (Weak<OutboundIntent>, Weak<EgressIntent>, Weak<ResourceSet>);

impl ByPointerPair {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    fn key(outbound: &Arc<OutboundIntent>, egress: &Arc<EgressIntent>) -> (usize, usize) {
        (Arc::as_ptr(outbound) as usize, Arc::as_ptr(egress) as usize)
    }

    fn get(&self, outbound: &Arc<OutboundIntent>, egress: &Arc<EgressIntent>) -> Option<Arc<ResourceSet>> {
        self.entries
            .get(&Self::key(outbound, egress))
            .and_then(|(_, _, set)| set.upgrade())
    }

    fn insert(&mut self, outbound: &Arc<OutboundIntent>, egress: &Arc<EgressIntent>, set: &Arc<ResourceSet>) {
        self.entries.insert(
            Self::key(outbound, egress),
            (
                Arc::downgrade(outbound),
                Arc::downgrade(egress),
                Arc::downgrade(set),
            ),
        );
    }

    fn sweep(&mut self) {
        self.entries.retain(|_, (outbound, egress, set)| {
            outbound.strong_count() > 0 && egress.strong_count() > 0 && set.strong_count() > 0
        });
    }
}

/// The outbound listener and route configs, which depend on which services a proxy may reach and how
/// (addresses, ports, protocols, clusters and weights) but not on the endpoints behind the clusters: an
/// endpoint change must not re-encode them. Keyed by a hash of that shape, confirmed on a hit.
#[derive(Default)]
struct Routing {
    entries: HashMap<u64, Vec<RoutingEntry>>,
    /// Whether the resources read each service's retry policy (routes do, the listener does not:
    /// an identity with retries shares the listener of those without).
    reads_retry: bool,
}

type RoutingEntry = (RoutingShape, Vec<Arc<Resource>>);

/// A backend as routing names it: cluster `<service>|<target port>`, and its weight.
type BackendShape = (ServiceRef, u16, u32);

/// What `lds::outbound`, `rds::outbound` and the egress routes read of the intents.
struct RoutingShape {
    egress_passthrough: bool,
    access_log: bool,
    tracing: Option<Arc<Tracing>>,
    egress: Arc<EgressIntent>,
    services: Vec<ServiceShape>,
}

struct ServiceShape {
    service: ServiceRef,
    port: u16,
    protocol: AppProtocol,
    addresses: Vec<std::net::IpAddr>,
    backends: Vec<BackendShape>,
    /// Per-pod names of a headless service (their clusters are named by hostname).
    pod_hosts: Vec<String>,
    /// `None` as well where the resources do not read it.
    retry: Option<Arc<RetryPolicy>>,
}

impl RoutingShape {
    fn of(intent: &OutboundIntent, egress: &Arc<EgressIntent>, reads_retry: bool) -> Self {
        Self {
            egress_passthrough: intent.egress_passthrough,
            access_log: intent.access_log,
            tracing: intent.tracing.clone(),
            egress: egress.clone(),
            services: intent
                .services
                .iter()
                .map(|s| {
                    let backends = s
                        .backends
                        .iter()
                        .map(|b| (b.cluster.service.clone(), b.cluster.target_port, b.weight))
                        .collect();
                    ServiceShape {
                        service: s.service.clone(),
                        port: s.port,
                        protocol: s.protocol,
                        addresses: s.addresses.clone(),
                        backends,
                        pod_hosts: s.pod_hosts.iter().map(|p| p.hostname.clone()).collect(),
                        retry: s.retry.clone().filter(|_| reads_retry),
                    }
                })
                .collect(),
        }
    }

    /// Compares without building the intent's shape.
    fn matches(&self, intent: &OutboundIntent, egress: &EgressIntent, reads_retry: bool) -> bool {
        self.egress_passthrough == intent.egress_passthrough
            && self.access_log == intent.access_log
            && self.tracing == intent.tracing
            && *self.egress == *egress
            && self.services.len() == intent.services.len()
            && self.services.iter().zip(&intent.services).all(|(shape, s)| {
                shape.service == s.service
                    && shape.port == s.port
                    && shape.protocol == s.protocol
                    && shape.addresses == s.addresses
                    && (!reads_retry || shape.retry == s.retry)
                    && shape.pod_hosts.len() == s.pod_hosts.len()
                    && shape
                        .pod_hosts
                        .iter()
                        .zip(&s.pod_hosts)
                        .all(|(h, p)| *h == p.hostname)
                    && shape.backends.len() == s.backends.len()
                    && shape
                        .backends
                        .iter()
                        .zip(&s.backends)
                        .all(|((svc, target, weight), b)| {
                            *svc == b.cluster.service
                                && *target == b.cluster.target_port
                                && *weight == b.weight
                        })
            })
    }

    fn hash(intent: &OutboundIntent, egress: &EgressIntent, reads_retry: bool) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        intent.egress_passthrough.hash(&mut h);
        intent.access_log.hash(&mut h);
        intent.tracing.hash(&mut h);
        egress.hash(&mut h);
        for s in &intent.services {
            (&s.service, s.port, s.protocol, &s.addresses).hash(&mut h);
            if reads_retry {
                s.retry.hash(&mut h);
            }
            for p in &s.pod_hosts {
                p.hostname.hash(&mut h);
            }
            for b in &s.backends {
                (&b.cluster.service, b.cluster.target_port, b.weight).hash(&mut h);
            }
        }
        h.finish()
    }
}

impl Routing {
    fn get_or_build(
        &mut self,
        intent: &OutboundIntent,
        egress: &Arc<EgressIntent>,
        build: impl FnOnce(&OutboundIntent, &EgressIntent) -> Vec<Arc<Resource>>,
    ) -> Vec<Arc<Resource>> {
        let reads_retry = self.reads_retry;
        let bucket = self
            .entries
            .entry(RoutingShape::hash(intent, egress, reads_retry))
            .or_default();
        if let Some((_, resources)) = bucket
            .iter()
            .find(|(shape, _)| shape.matches(intent, egress, reads_retry))
        {
            return resources.clone();
        }
        let resources = build(intent, egress);
        bucket.push((RoutingShape::of(intent, egress, reads_retry), resources.clone()));
        resources
    }

    /// Drops shapes whose resources no set holds any more.
    fn sweep(&mut self) {
        for bucket in self.entries.values_mut() {
            bucket.retain(|(_, resources)| resources.iter().any(|r| Arc::strong_count(r) > 1));
        }
        self.entries.retain(|_, bucket| !bucket.is_empty());
    }
}

/// `outbound-listener`, one `rds-egress.<port>` per HTTP egress port and the egress clusters: what
/// depends on the egress intent too.
fn build_listener(intent: &OutboundIntent, egress: &EgressIntent) -> Vec<Arc<Resource>> {
    let mut out: Vec<Arc<Resource>> = lds::outbound(intent, egress).into_iter().collect();
    // Every proxy has this set: the collector's cluster serves the inbound connection managers too.
    out.extend(intent.tracing.as_deref().map(crate::tracing::cluster));
    out.extend(egress::route_configs(egress));
    out.extend(egress::clusters(egress));
    out
}

/// One `rds-outbound.<port>` per HTTP port.
fn build_routes(intent: &OutboundIntent, _: &EgressIntent) -> Vec<Arc<Resource>> {
    let mut out = Vec::new();
    let mut http_ports: std::collections::BTreeMap<u16, Vec<&OutboundService>> = Default::default();
    for s in &intent.services {
        if s.protocol == AppProtocol::Http {
            http_ports.entry(s.port).or_default().push(s);
        }
    }
    out.extend(
        http_ports
            .into_iter()
            .map(|(port, services)| rds::outbound(port, &services)),
    );
    out
}

/// What `cds::upstream` reads of a cluster: everything but its endpoints (which EDS carries), so an
/// endpoint change does not re-encode the cluster.
type ClusterKey = (
    ServiceRef,
    u16,
    AppProtocol,
    BTreeSet<ServiceIdentity>,
    Option<String>,
    Option<ConnectionLimits>,
);

/// How many memoised entries the generator holds, per table (for metrics, tests and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratorStats {
    pub outbound_sets: usize,
    pub inbound_sets: usize,
    pub clusters: usize,
    pub load_assignments: usize,
}

/// Memoising builder of proxy configs. One per control plane; not shared between threads.
pub struct Generator {
    trust_domain: String,
    ca_bundle: Arc<str>,
    /// Without and with access logs on the prometheus listener (indexed by `access_log as usize`).
    statics: [Arc<ResourceSet>; 2],
    /// What a proxy may reach in the mesh: clusters, endpoints, `rds-outbound.<port>`.
    outbound: Memo<Arc<OutboundIntent>, ResourceSet>,
    /// The permissive intent is shared by every proxy; hashing it once per proxy would cost more than
    /// building it.
    outbound_by_ptr: ByPointer<OutboundIntent>,
    /// The outbound listener and the egress routes and clusters, which depend on the egress intent
    /// too: apart from the mesh part, so that identities with their own egress policies share that.
    listener_sets_by_ptr: ByPointerPair,
    /// Listener sets by the addresses of their resources (which the `listeners` memo keeps alive while
    /// a set holds them, so an address is not reused meanwhile).
    listener_sets: HashMap<Vec<usize>, Weak<ResourceSet>>,
    listeners: Routing,
    /// The key of the mesh routes (which do not depend on egress).
    no_egress: Arc<EgressIntent>,
    inbound: Memo<Arc<InboundIntent>, ResourceSet>,
    inbound_by_ptr: ByPointer<InboundIntent>,
    routing: Routing,
    /// By service, target port, server identities and pod hostname (one pod of a headless service).
    clusters: Memo<ClusterKey, Resource>,
    endpoints: Memo<Arc<UpstreamCluster>, Resource>,
    /// Proxies whose config was replaced or dropped since the last full sweep (see [`Generator::sweep`]).
    released_since_sweep: usize,
}

/// Resources every proxy gets: the prometheus listener, the fixed clusters, the shared outbound CA.
fn statics(ca_bundle_pem: &str) -> [Arc<ResourceSet>; 2] {
    [false, true].map(|access_log| statics_with(ca_bundle_pem, access_log))
}

fn statics_with(ca_bundle_pem: &str, access_log: bool) -> Arc<ResourceSet> {
    let mut statics = ResourceSet::default();
    statics.insert(lds::prometheus(access_log));
    statics.insert(cds::metrics());
    statics.insert(cds::passthrough());
    statics.insert(sds::validation_context(
        names::ROOT_CERT_OUTBOUND,
        ca_bundle_pem,
        &[],
    ));
    Arc::new(statics)
}

impl Generator {
    pub fn new(trust_domain: impl Into<String>, ca_bundle_pem: &str) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            ca_bundle: ca_bundle_pem.into(),
            statics: statics(ca_bundle_pem),
            outbound: Memo::new(),
            outbound_by_ptr: ByPointer::new(),
            listener_sets_by_ptr: ByPointerPair::new(),
            listener_sets: HashMap::new(),
            listeners: Routing::default(),
            no_egress: Arc::new(EgressIntent::default()),
            inbound: Memo::new(),
            inbound_by_ptr: ByPointer::new(),
            routing: Routing {
                reads_retry: true,
                ..Routing::default()
            },
            clusters: Memo::new(),
            endpoints: Memo::new(),
            released_since_sweep: 0,
        }
    }

    /// A new CA bundle changes every validation context: forget everything that embeds it.
    pub fn set_ca_bundle(&mut self, ca_bundle_pem: &str) {
        self.ca_bundle = ca_bundle_pem.into();
        self.statics = statics(ca_bundle_pem);
        self.inbound.clear();
        self.inbound_by_ptr.entries.clear();
    }

    /// Forgets what nothing outside the generator holds any more: sets no published config uses, and
    /// resources no remaining set contains. Call it after publishing a recompute's configs, with the
    /// number of proxies whose config that replaced or dropped.
    ///
    /// A pass visits every entry, so it is amortised: it runs once the configs released since the last
    /// pass reach an eighth of the sets held. Until then what they released (at most one outbound and
    /// one inbound set each) only holds memory; an endpoint change costs what it touched, not a pass
    /// over the whole mesh.
    pub fn sweep(&mut self, released: usize) {
        self.released_since_sweep += released;
        let held = self.outbound.len() + self.inbound.len();
        if self.released_since_sweep == 0 || self.released_since_sweep * 8 < held {
            return;
        }
        self.released_since_sweep = 0;
        self.sweep_all();
    }

    /// [`Generator::sweep`] now, whatever was released.
    pub fn sweep_all(&mut self) {
        // Sets first: dropping one releases the resources it holds.
        self.outbound.sweep();
        self.listener_sets_by_ptr.sweep();
        self.listener_sets.retain(|_, set| set.strong_count() > 0);
        self.listeners.sweep();
        self.inbound.sweep();
        self.outbound_by_ptr.sweep();
        self.inbound_by_ptr.sweep();
        self.routing.sweep();
        self.clusters.sweep();
        self.endpoints.sweep();
    }

    /// Entries held per memo table.
    pub fn stats(&self) -> GeneratorStats {
        GeneratorStats {
            outbound_sets: self.outbound.len(),
            inbound_sets: self.inbound.len(),
            clusters: self.clusters.len(),
            load_assignments: self.endpoints.len(),
        }
    }

    /// The full config of one proxy. `identity_secrets` holds its `service-cert` (shared by every proxy
    /// of the same identity; the caller owns certificate issuance and rotation).
    pub fn proxy_config(&mut self, proxy: &ProxyIntent, identity_secrets: Arc<ResourceSet>) -> ProxyConfig {
        let outbound = self.outbound_set(&proxy.outbound);
        let listener = self.listener_set(&proxy.outbound, &proxy.egress);
        let inbound = self.inbound_set(&proxy.inbound);
        ProxyConfig {
            sets: vec![
                // The prometheus listener is an inbound one: it logs as the inbound listener does.
                self.statics[usize::from(proxy.inbound.access_log)].clone(),
                inbound,
                outbound,
                listener,
                identity_secrets,
            ],
        }
    }

    fn outbound_set(&mut self, intent: &Arc<OutboundIntent>) -> Arc<ResourceSet> {
        if let Some(set) = self.outbound_by_ptr.get(intent) {
            return set;
        }
        let set = match self.outbound.entries.get(intent) {
            Some(set) => set.clone(),
            None => {
                let set = Arc::new(self.build_outbound(intent));
                self.outbound.entries.insert(intent.clone(), set.clone());
                set
            }
        };
        self.outbound_by_ptr.insert(intent, &set);
        set
    }

    fn listener_set(&mut self, intent: &Arc<OutboundIntent>, egress: &Arc<EgressIntent>) -> Arc<ResourceSet> {
        if let Some(set) = self.listener_sets_by_ptr.get(intent, egress) {
            return set;
        }
        // A few resources, found by shape (not by the whole intent, whose endpoints they do not read),
        // and the set by their addresses: cheaper than hashing the intent to find an equal one.
        let resources = self.listeners.get_or_build(intent, egress, build_listener);
        let key: Vec<usize> = resources.iter().map(|r| Arc::as_ptr(r) as usize).collect();
        let set = match self.listener_sets.get(&key).and_then(Weak::upgrade) {
            Some(set) => set,
            None => {
                let mut set = ResourceSet::default();
                for r in resources {
                    set.insert(r);
                }
                let set = Arc::new(set);
                self.listener_sets.insert(key, Arc::downgrade(&set));
                set
            }
        };
        self.listener_sets_by_ptr.insert(intent, egress, &set);
        set
    }

    fn build_outbound(&mut self, intent: &Arc<OutboundIntent>) -> ResourceSet {
        let mut set = ResourceSet::default();
        let no_egress = self.no_egress.clone();
        for r in self.routing.get_or_build(intent, &no_egress, build_routes) {
            set.insert(r);
        }
        for s in &intent.services {
            let clusters = s
                .backends
                .iter()
                .map(|b| &b.cluster)
                .chain(s.pod_hosts.iter().map(|p| &p.cluster));
            for c in clusters {
                let td = &self.trust_domain;
                set.insert(self.clusters.get_or_build(
                    (
                        c.service.clone(),
                        c.target_port,
                        c.protocol,
                        c.server_identities.clone(),
                        c.pod_hostname.clone(),
                        c.limits.clone(),
                    ),
                    |_| cds::upstream(c, td),
                ));
                set.insert(
                    self.endpoints
                        .get_or_build(c.clone(), |c| eds::load_assignment(c)),
                );
            }
        }
        set
    }

    fn inbound_set(&mut self, intent: &Arc<InboundIntent>) -> Arc<ResourceSet> {
        if let Some(set) = self.inbound_by_ptr.get(intent) {
            return set;
        }
        let td = self.trust_domain.clone();
        let ca = self.ca_bundle.clone();
        let set = self.inbound.get_or_build(intent.clone(), |intent| {
            let mut set = ResourceSet::default();
            // The inbound validation context is referenced only by the inbound listener's chains.
            if let Some(listener) = lds::inbound(intent, &td) {
                set.insert(listener);
                set.insert(sds::validation_context(
                    &names::root_cert_inbound(&intent.identity),
                    &ca,
                    &[],
                ));
            }
            for port in &intent.ports {
                let Some(first) = port.services.first() else {
                    continue;
                };
                let local = names::local_cluster(&first.service, port.target_port);
                set.insert(cds::local(&first.service, port.target_port));
                if let InboundAccess::Http(access) = &port.access {
                    let limit = port.rate_limit.as_deref();
                    set.insert(rds::inbound(port.target_port, &local, access, limit, &td));
                }
            }
            for routes in ingress::route_configs(intent) {
                set.insert(routes);
            }
            if let Some(authz) = &intent.ext_authz {
                set.insert(ext_authz::cluster(authz));
            }
            Arc::new(set)
        });
        self.inbound_by_ptr.insert(intent, &set);
        set
    }
}

/// The `service-cert` set for one identity.
pub fn identity_secrets(cert_chain_pem: &str, private_key_pem: &str) -> Arc<ResourceSet> {
    let mut set = ResourceSet::default();
    set.insert(sds::service_cert(cert_chain_pem, private_key_pem));
    Arc::new(set)
}
