//! `MeshInput` → every proxy's `ProxyIntent`.
//!
//! Permissive mode: every meshed service is reachable by every proxy, so one `OutboundIntent` is shared by
//! all of them. SMI mode: deny by default; a TrafficTarget lets its sources reach the destination identity
//! on the routes its rules name, so outbound intent is computed once per client identity and only holds
//! services (and endpoints) that identity may reach.
//!
//! [`MeshState`] keeps the indices and intents between changes: [`MeshState::update`] compares the old and
//! new input (or, with [`MeshState::update_changed`], reads the entries a delta named) and recomputes
//! only what the changed services, endpoints and pods touch (their endpoints,
//! the outbound intents of the identities that may reach them, the inbound intents of the pods behind
//! them). Policy and MeshConfig edits are rare and recompute everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use osm_api::policy::IngressBackendStatus;
use osm_api::smi::access::IdentityBindingSubject;

use crate::diff::changed_keys;
use crate::ingress::IngressIndex;
use crate::input::{
    AppProtocol, InputDelta, MeshInput, ObjectRef, Pod, PodRef, Service, ServiceIdentity, ServiceRef,
    in_namespace, selects,
};
use crate::intent::*;
use crate::retry::RetriesBySource;

/// The computed mesh: one intent per sidecar (keyed by proxy uuid) and what could not be used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshModel {
    pub proxies: BTreeMap<String, ProxyIntent>,
    /// Policy references that point nowhere, etc.: reported, never fatal.
    pub warnings: Vec<String>,
    /// The status of every IngressBackend policy, as written back to it (`committed`, or `error` with
    /// the reason).
    pub ingress_backend_status: BTreeMap<ObjectRef, IngressBackendStatus>,
}

/// Computes every proxy's intent. Pure and deterministic.
pub fn compute(input: &MeshInput) -> MeshModel {
    MeshState::new(input).into_model()
}

/// An endpoint with the identity of the pod behind it (None: not a known pod).
#[derive(Clone)]
struct ResolvedEndpoint {
    ip: IpAddr,
    pod: Option<PodRef>,
    identity: Option<ServiceIdentity>,
    hostname: Option<String>,
}

/// The SMI policy that applies to one destination identity.
#[derive(Default)]
struct DestinationPolicy {
    http: BTreeMap<HttpRouteMatch, BTreeSet<ServiceIdentity>>,
    /// (ports, sources): `None` ports means every port.
    tcp: Vec<(Option<BTreeSet<u16>>, BTreeSet<ServiceIdentity>)>,
}

/// The model with the indices it was computed from, kept between changes.
pub struct MeshState {
    permissive: bool,
    /// Resolved endpoints of every service.
    endpoints: BTreeMap<ServiceRef, Vec<ResolvedEndpoint>>,
    /// Services with at least one endpoint of each identity.
    services_by_identity: HashMap<ServiceIdentity, BTreeSet<ServiceRef>>,
    /// Services whose endpoints name each pod: the pod's local services.
    services_by_pod: HashMap<PodRef, BTreeSet<ServiceRef>>,
    /// TrafficSplit apex → weighted backend services.
    splits: BTreeMap<ServiceRef, Vec<(ServiceRef, u32)>>,
    /// SMI: destination identity → what may reach it.
    destinations: BTreeMap<ServiceIdentity, DestinationPolicy>,
    /// SMI: source identity → destination identities it may reach.
    reachable: BTreeMap<ServiceIdentity, BTreeSet<ServiceIdentity>>,
    /// SMI: destination identity → source identities that may reach it (`reachable` inverted), so a
    /// change finds the clients it concerns without looking at every client.
    reachers: HashMap<ServiceIdentity, BTreeSet<ServiceIdentity>>,
    clusters: Interner<UpstreamCluster>,
    /// Permissive: the one outbound intent every proxy shares.
    shared_outbound: Option<Arc<OutboundIntent>>,
    /// SMI: the outbound intent of each client identity. Permissive: that of each identity a Retry
    /// policy names (the shared one with its retries).
    outbound_by_identity: HashMap<ServiceIdentity, Arc<OutboundIntent>>,
    /// Egress policy: what each named source identity may reach outside the mesh.
    egress_by_identity: HashMap<ServiceIdentity, Arc<EgressIntent>>,
    /// The egress intent of every other identity, shared.
    no_egress: Arc<EgressIntent>,
    /// IngressBackend policies by backend Service.
    ingress: IngressIndex,
    /// UpstreamTrafficSetting connection limits by upstream Service.
    limits: HashMap<ServiceRef, ConnectionLimits>,
    /// UpstreamTrafficSetting local rate limits by upstream Service.
    rate_limits: HashMap<ServiceRef, Arc<LocalRateLimit>>,
    /// Retry policies by source identity, then destination Service.
    retries: RetriesBySource,
    /// MeshConfig tracing, shared by every intent.
    tracing: Option<Arc<Tracing>>,
    /// MeshConfig external authorization, shared by every inbound intent that accepts HTTP.
    ext_authz: Option<Arc<ExternalAuthz>>,
    model: MeshModel,
}

/// What an update changed, by proxy uuid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelChange {
    /// Any proxy may have changed (everything was recomputed, or the shared outbound intent moved).
    pub all: bool,
    /// Proxies whose intent changed, or that are new.
    pub changed: BTreeSet<String>,
    /// Proxies that are gone.
    pub removed: BTreeSet<String>,
}

impl ModelChange {
    pub fn is_empty(&self) -> bool {
        !self.all && self.changed.is_empty() && self.removed.is_empty()
    }
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

impl<T: Eq + Hash> Interner<T> {
    /// Forgets the values nobody else holds any more.
    fn sweep(&mut self) {
        self.0.retain(|value, _| Arc::strong_count(value) > 1);
    }
}

/// What a change reached: the identities and pods behind the endpoints of the services it touched,
/// before and after.
#[derive(Default)]
struct Touched {
    identities: BTreeSet<ServiceIdentity>,
    pods: BTreeSet<PodRef>,
}

/// Whether a TrafficSplit names this service as its apex or a backend.
fn split_refers_to(input: &MeshInput, service: &ServiceRef) -> bool {
    in_namespace(&input.traffic_splits, &service.namespace).any(|(_, split)| {
        split.service.split('.').next() == Some(service.name.as_str())
            || split.backends.iter().any(|b| b.service == service.name)
    })
}

/// Endpoints with the identity of the pod behind each.
fn resolve(input: &MeshInput, endpoints: BTreeSet<crate::input::Endpoint>) -> Vec<ResolvedEndpoint> {
    endpoints
        .into_iter()
        .map(|ep| ResolvedEndpoint {
            ip: ep.ip,
            identity: ep
                .pod
                .as_ref()
                .and_then(|p| input.pods.get(p))
                .map(|p| p.identity()),
            pod: ep.pod,
            hostname: ep.hostname,
        })
        .collect()
}

impl MeshState {
    /// Computes everything from scratch.
    pub fn new(input: &MeshInput) -> Self {
        let mut state = Self {
            permissive: input.mesh_config.traffic.enable_permissive_traffic_policy_mode,
            endpoints: BTreeMap::new(),
            services_by_identity: HashMap::new(),
            services_by_pod: HashMap::new(),
            splits: BTreeMap::new(),
            destinations: BTreeMap::new(),
            reachable: BTreeMap::new(),
            reachers: HashMap::new(),
            clusters: Interner::new(),
            shared_outbound: None,
            outbound_by_identity: HashMap::new(),
            egress_by_identity: HashMap::new(),
            no_egress: Arc::new(EgressIntent::default()),
            ingress: IngressIndex::default(),
            limits: HashMap::new(),
            rate_limits: HashMap::new(),
            retries: HashMap::new(),
            tracing: Tracing::from_spec(&input.mesh_config.observability.tracing).map(Arc::new),
            ext_authz: ExternalAuthz::from_spec(&input.mesh_config.traffic.inbound_external_authorization)
                .map(Arc::new),
            model: MeshModel::default(),
        };
        state.retries = crate::retry::by_source(input, &mut state.model.warnings);
        let tracing = &input.mesh_config.observability.tracing;
        if tracing.enable && state.tracing.is_none() {
            state.model.warnings.push(
                "MeshConfig spec.observability.tracing.enable is true but spec.observability.tracing.address \
                 is empty: no spans are sent until it names the collector"
                    .to_string(),
            );
        }
        let settings = crate::upstream_traffic::by_service(input, &mut state.model.warnings);
        state.limits = settings.limits;
        state.rate_limits = settings.rate_limits;
        state.egress_by_identity = crate::egress::by_identity(input, &mut state.model.warnings);
        let index = crate::input::PodSelectorIndex::new(input);
        for (id, svc) in &input.services {
            let endpoints = resolve(input, input.endpoints_with(svc, &index));
            state.insert_endpoints(id, endpoints, None);
        }
        state.ingress = IngressIndex::new(
            input,
            |svc| {
                state
                    .endpoints
                    .get(svc)
                    .into_iter()
                    .flatten()
                    .map(|e| e.ip)
                    .collect()
            },
            &mut state.model.warnings,
        );
        state.model.ingress_backend_status = state.ingress.status.clone();
        state.index_splits(input);
        if !state.permissive {
            state.index_traffic_targets(input);
        }
        state.build_proxies(input);
        state
    }

    pub fn model(&self) -> &MeshModel {
        &self.model
    }

    pub fn into_model(self) -> MeshModel {
        self.model
    }

    /// Brings the model from `old` to `new` (the input it was last computed from, and the current one).
    /// The result equals `MeshState::new(new)`; only what the change touched is recomputed.
    pub fn update(&mut self, old: &MeshInput, new: &MeshInput) -> ModelChange {
        let policies_moved = old.mesh_config != new.mesh_config
            || old.traffic_targets != new.traffic_targets
            || old.http_route_groups != new.http_route_groups
            || old.tcp_routes != new.tcp_routes
            || old.traffic_splits != new.traffic_splits
            || old.egresses != new.egresses
            || old.ingress_backends != new.ingress_backends
            || old.upstream_traffic_settings != new.upstream_traffic_settings
            || old.retries != new.retries;
        let services = changed_keys(&old.services, &new.services);
        if policies_moved {
            return self.recompute_all(new);
        }
        let endpoints = changed_keys(&old.endpoints, &new.endpoints);
        let pods = changed_keys(&old.pods, &new.pods);
        self.update_entries(new, services, endpoints, pods, |p| old.pods.get(p))
    }

    /// [`MeshState::update`] after an [`InputDelta`] was applied to the input: `prior` is what
    /// [`InputDelta::apply`] returned, `new` the input now. Only the named entries are compared, so
    /// the cost follows the delta, not the input; the result is the one `update(&old, new)` gives.
    /// The delta must be the only change since the last update (policies and MeshConfig included).
    pub fn update_changed(&mut self, prior: &InputDelta, new: &MeshInput) -> ModelChange {
        fn moved<K: Ord + Clone, V: PartialEq>(
            prior: &BTreeMap<K, Option<V>>,
            now: &BTreeMap<K, V>,
        ) -> Vec<K> {
            prior
                .iter()
                .filter(|(k, v)| now.get(*k) != v.as_ref())
                .map(|(k, _)| k.clone())
                .collect()
        }
        let services = moved(&prior.services, &new.services);
        let endpoints = moved(&prior.endpoints, &new.endpoints);
        let pods = moved(&prior.pods, &new.pods);
        self.update_entries(new, services, endpoints, pods, |p| {
            prior.pods.get(p).and_then(Option::as_ref)
        })
    }

    /// The incremental step shared by both updates: `services`, `endpoints` and `pods` are the keys
    /// whose entries differ (sorted), `old_pod` a changed pod as it was.
    fn update_entries<'o>(
        &mut self,
        new: &MeshInput,
        services: Vec<ServiceRef>,
        endpoints: Vec<ServiceRef>,
        pods: Vec<PodRef>,
        old_pod: impl Fn(&PodRef) -> Option<&'o Pod>,
    ) -> ModelChange {
        // A TrafficSplit's apex and backends, and the Services Retry and UpstreamTrafficSetting
        // policies name, are resolved (and warned about) when policies are indexed.
        if services.iter().any(|s| {
            split_refers_to(new, s)
                || self.ingress.refers_to(s)
                || crate::retry::refers_to(new, s)
                || crate::upstream_traffic::refers_to(new, s)
        }) {
            return self.recompute_all(new);
        }
        if services.is_empty() && endpoints.is_empty() && pods.is_empty() {
            return ModelChange::default();
        }

        // Services whose resolved endpoints may differ.
        let mut affected: BTreeSet<ServiceRef> = services.into_iter().chain(endpoints).collect();
        for pod_ref in &pods {
            if let Some(local) = self.services_by_pod.get(pod_ref) {
                affected.extend(local.iter().cloned());
            }
            let labels = [old_pod(pod_ref), new.pods.get(pod_ref)];
            for (id, svc) in in_namespace(&new.services, &pod_ref.namespace) {
                if !new.endpoints.contains_key(id)
                    && labels.iter().flatten().any(|p| selects(&svc.selector, &p.labels))
                {
                    affected.insert(id.clone());
                }
            }
        }
        // A source Service's addresses are in the ingress backends' intents (and their status).
        if affected.iter().any(|s| self.ingress.is_source(s)) {
            return self.recompute_all(new);
        }
        let mut touched = Touched::default();
        for id in &affected {
            self.remove_endpoints(id, &mut touched);
            if let Some(svc) = new.services.get(id) {
                let endpoints = resolve(new, new.endpoints_scanning(svc));
                self.insert_endpoints(id, endpoints, Some(&mut touched));
            }
        }

        let mut change = ModelChange::default();
        // Outbound intents that can include a touched service.
        let mut moved: HashMap<ServiceIdentity, Arc<OutboundIntent>> = HashMap::new();
        if affected.is_empty() {
            // No service's endpoints moved (say, a pod no service selects): no outbound intent did.
        } else if self.permissive {
            let outbound = self.outbound_for(new, None);
            if self.shared_outbound.as_deref() != Some(&outbound) {
                self.shared_outbound = Some(Arc::new(outbound));
                // The identities with retries derive theirs from the shared intent.
                self.outbound_by_identity.clear();
                change.all = true;
            }
        } else {
            let clients: BTreeSet<ServiceIdentity> = touched
                .identities
                .iter()
                .filter_map(|d| self.reachers.get(d))
                .flatten()
                .filter(|c| self.outbound_by_identity.contains_key(*c))
                .cloned()
                .collect();
            for client in clients {
                let outbound = self.outbound_for(new, Some(&client));
                if *self.outbound_by_identity[&client] != outbound {
                    let outbound = Arc::new(outbound);
                    self.outbound_by_identity.insert(client.clone(), outbound.clone());
                    moved.insert(client, outbound);
                }
            }
        }

        // Sidecars of changed pods that are gone, or have another uuid now.
        for pod_ref in &pods {
            if let Some(uuid) = old_pod(pod_ref).and_then(|p| p.proxy_uuid.clone())
                && new.pods.get(pod_ref).and_then(|p| p.proxy_uuid.as_ref()) != Some(&uuid)
                && self.model.proxies.get(&uuid).is_some_and(|p| p.pod == *pod_ref)
            {
                self.model.proxies.remove(&uuid);
                change.removed.insert(uuid);
            }
        }
        // Changed pods, and pods behind touched services: their whole intent again.
        let rebuild: BTreeSet<&PodRef> = pods.iter().chain(&touched.pods).collect();
        for pod_ref in rebuild {
            let Some(pod) = new.pods.get(pod_ref) else {
                continue;
            };
            let Some(uuid) = &pod.proxy_uuid else {
                continue;
            };
            let identity = pod.identity();
            let intent = ProxyIntent {
                proxy_uuid: uuid.clone(),
                pod: pod_ref.clone(),
                outbound: self.outbound_of(new, &identity),
                inbound: Arc::new(self.inbound_for(new, &identity, pod_ref)),
                egress: self.egress_of(&identity),
                identity,
            };
            if self.model.proxies.get(uuid) != Some(&intent) {
                change.removed.remove(uuid);
                change.changed.insert(uuid.clone());
                self.model.proxies.insert(uuid.clone(), intent);
            }
        }
        // Everyone else whose outbound intent moved.
        if let (true, Some(shared)) = (change.all, self.shared_outbound.clone()) {
            let sources: Vec<ServiceIdentity> = self.retries.keys().cloned().collect();
            let with_retries: HashMap<ServiceIdentity, Arc<OutboundIntent>> = sources
                .into_iter()
                .map(|id| {
                    let outbound = self.outbound_of(new, &id);
                    (id, outbound)
                })
                .collect();
            for proxy in self.model.proxies.values_mut() {
                proxy.outbound = with_retries.get(&proxy.identity).unwrap_or(&shared).clone();
            }
        } else if !moved.is_empty() {
            for (uuid, proxy) in &mut self.model.proxies {
                if let Some(outbound) = moved.get(&proxy.identity)
                    && !Arc::ptr_eq(outbound, &proxy.outbound)
                {
                    proxy.outbound = outbound.clone();
                    change.changed.insert(uuid.clone());
                }
            }
        }
        if !pods.is_empty() && !self.permissive {
            let live: std::collections::HashSet<&ServiceIdentity> =
                self.model.proxies.values().map(|p| &p.identity).collect();
            self.outbound_by_identity.retain(|id, _| live.contains(id));
        }
        self.clusters.sweep();
        change
    }

    fn recompute_all(&mut self, input: &MeshInput) -> ModelChange {
        let before = std::mem::take(&mut self.model.proxies);
        *self = Self::new(input);
        ModelChange {
            all: true,
            changed: BTreeSet::new(),
            removed: before
                .into_keys()
                .filter(|uuid| !self.model.proxies.contains_key(uuid))
                .collect(),
        }
    }

    fn insert_endpoints(
        &mut self,
        id: &ServiceRef,
        endpoints: Vec<ResolvedEndpoint>,
        touched: Option<&mut Touched>,
    ) {
        for ep in &endpoints {
            if let Some(identity) = &ep.identity {
                self.services_by_identity
                    .entry(identity.clone())
                    .or_default()
                    .insert(id.clone());
            }
            if let Some(pod) = &ep.pod {
                self.services_by_pod
                    .entry(pod.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
        if let Some(touched) = touched {
            touched.note(&endpoints);
        }
        self.endpoints.insert(id.clone(), endpoints);
    }

    fn remove_endpoints(&mut self, id: &ServiceRef, touched: &mut Touched) {
        let Some(endpoints) = self.endpoints.remove(id) else {
            return;
        };
        for ep in &endpoints {
            if let Some(identity) = &ep.identity
                && let Some(services) = self.services_by_identity.get_mut(identity)
            {
                services.remove(id);
                if services.is_empty() {
                    self.services_by_identity.remove(identity);
                }
            }
            if let Some(pod) = &ep.pod
                && let Some(services) = self.services_by_pod.get_mut(pod)
            {
                services.remove(id);
                if services.is_empty() {
                    self.services_by_pod.remove(pod);
                }
            }
        }
        touched.note(&endpoints);
    }

    fn index_splits(&mut self, input: &MeshInput) {
        for (split_ref, split) in &input.traffic_splits {
            // The apex may be written as a short name or an FQDN; the first label is the service name.
            let apex_name = split.service.split('.').next().unwrap_or_default();
            let apex = ServiceRef::new(&split_ref.namespace, apex_name);
            if !input.services.contains_key(&apex) {
                self.model.warnings.push(format!(
                    "TrafficSplit {split_ref}: apex service {apex} does not exist"
                ));
                continue;
            }
            let backends = split
                .backends
                .iter()
                .filter_map(|b| {
                    let svc = ServiceRef::new(&split_ref.namespace, &b.service);
                    if !input.services.contains_key(&svc) {
                        self.model.warnings.push(format!(
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

    fn index_traffic_targets(&mut self, input: &MeshInput) {
        for (tt_ref, tt) in &input.traffic_targets {
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
            self.reachers
                .entry(destination.clone())
                .or_default()
                .extend(sources.iter().cloned());
            let mut http = Vec::new();
            let mut tcp = Vec::new();
            for rule in &tt.rules {
                let group_ref = ObjectRef::new(&tt_ref.namespace, &rule.name);
                match rule.kind.as_str() {
                    "HTTPRouteGroup" => match input.http_route_groups.get(&group_ref) {
                        Some(group) => {
                            let mut matched = 0;
                            for m in &group.matches {
                                if rule.matches.is_empty() || rule.matches.contains(&m.name) {
                                    matched += 1;
                                    http.push(http_route_match(m));
                                }
                            }
                            if matched < rule.matches.len() {
                                self.model.warnings.push(format!(
                                    "TrafficTarget {tt_ref}: some of the matches {:?} are not in HTTPRouteGroup {group_ref}",
                                    rule.matches
                                ));
                            }
                        }
                        None => self.model.warnings.push(format!(
                            "TrafficTarget {tt_ref}: HTTPRouteGroup {group_ref} does not exist"
                        )),
                    },
                    "TCPRoute" => match input.tcp_routes.get(&group_ref) {
                        Some(route) => {
                            let ports = &route.matches.ports;
                            tcp.push((!ports.is_empty()).then(|| ports.iter().copied().collect()));
                        }
                        None => self.model.warnings.push(format!(
                            "TrafficTarget {tt_ref}: TCPRoute {group_ref} does not exist"
                        )),
                    },
                    other => self
                        .model
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

    /// Every proxy's intent from the indices.
    fn build_proxies(&mut self, input: &MeshInput) {
        self.shared_outbound = self.permissive.then(|| Arc::new(self.outbound_for(input, None)));
        let mut inbound_interner: Interner<InboundIntent> = Interner::new();
        let mut proxies = BTreeMap::new();
        for pod in input.pods.values() {
            let Some(uuid) = &pod.proxy_uuid else {
                continue;
            };
            let identity = pod.identity();
            let outbound = self.outbound_of(input, &identity);
            let inbound = inbound_interner.intern(self.inbound_for(input, &identity, &pod.id));
            let egress = self.egress_of(&identity);
            proxies.insert(
                uuid.clone(),
                ProxyIntent {
                    proxy_uuid: uuid.clone(),
                    pod: pod.id.clone(),
                    identity,
                    inbound,
                    outbound,
                    egress,
                },
            );
        }
        self.model.proxies = proxies;
    }

    /// The outbound intent of a client identity: the shared one (permissive; with the identity's
    /// retries, if a Retry names it), else its own, computed the first time it is asked for.
    fn outbound_of(&mut self, input: &MeshInput, identity: &ServiceIdentity) -> Arc<OutboundIntent> {
        if let Some(outbound) = self.outbound_by_identity.get(identity) {
            return outbound.clone();
        }
        let outbound = match &self.shared_outbound {
            Some(shared) => match self.retries.get(identity) {
                None => return shared.clone(),
                Some(retries) => with_retries(shared, retries),
            },
            None => Arc::new(self.outbound_for(input, Some(identity))),
        };
        self.outbound_by_identity
            .insert(identity.clone(), outbound.clone());
        outbound
    }

    /// The egress intent of an identity: its own if an Egress policy names it, else the shared empty one.
    fn egress_of(&self, identity: &ServiceIdentity) -> Arc<EgressIntent> {
        self.egress_by_identity
            .get(identity)
            .unwrap_or(&self.no_egress)
            .clone()
    }

    /// Traffic a pod accepts: the ports of the services whose endpoints name it.
    fn inbound_for(&self, input: &MeshInput, identity: &ServiceIdentity, pod: &PodRef) -> InboundIntent {
        let services = || {
            self.services_by_pod
                .get(pod)
                .into_iter()
                .flatten()
                .filter_map(|id| input.services.get(id))
        };
        let ports: Vec<InboundPort> = local_ports(services())
            .into_iter()
            .map(|(target_port, (protocol, services))| {
                let service_ports: BTreeSet<u16> = services.iter().map(|s| s.port).collect();
                InboundPort {
                    target_port,
                    access: self.inbound_access(identity, protocol, target_port, &service_ports),
                    rate_limit: services
                        .iter()
                        .find_map(|s| self.rate_limits.get(&s.service))
                        .cloned(),
                    services: services.into_iter().collect(),
                }
            })
            .collect();
        let target_ports = ports.iter().map(|p| p.target_port).collect();
        let ingress = self.ingress.for_pod(services(), &target_ports);
        // Ingress backends are HTTP(S) too; a TCP-only pod keeps the intent it shares with its peers.
        let accepts_http =
            !ingress.is_empty() || ports.iter().any(|p| matches!(p.access, InboundAccess::Http(_)));
        InboundIntent {
            identity: identity.clone(),
            ingress,
            ports,
            ext_authz: self.ext_authz.clone().filter(|_| accepts_http),
            access_log: input.mesh_config.observability.enable_access_log,
            tracing: self.tracing.clone(),
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
            return match protocol {
                AppProtocol::Http => InboundAccess::Http(HttpAccess::AnyMeshIdentity),
                AppProtocol::Tcp => InboundAccess::Tcp(TcpAccess::AnyMeshIdentity),
            };
        }
        let empty = DestinationPolicy::default();
        let policy = self.destinations.get(identity).unwrap_or(&empty);
        let tcp_sources: BTreeSet<ServiceIdentity> = policy
            .tcp
            .iter()
            .filter(|(ports, _)| tcp_route_covers(ports.as_ref(), target_port, service_ports))
            .flat_map(|(_, sources)| sources.iter().cloned())
            .collect();
        match protocol {
            AppProtocol::Tcp => InboundAccess::Tcp(TcpAccess::Identities(tcp_sources)),
            AppProtocol::Http => {
                let mut routes = policy.http.clone();
                // An identity allowed at L4 on this port may send any request.
                if !tcp_sources.is_empty() {
                    routes
                        .entry(HttpRouteMatch::any())
                        .or_default()
                        .extend(tcp_sources);
                }
                InboundAccess::Http(HttpAccess::Routes(
                    routes
                        .into_iter()
                        .map(|(route, allowed)| HttpRoutePolicy { route, allowed })
                        .collect(),
                ))
            }
        }
    }

    /// Outbound intent for a client identity (`None`: permissive, everything reachable).
    fn outbound_for(&mut self, input: &MeshInput, client: Option<&ServiceIdentity>) -> OutboundIntent {
        let allowed_destinations = client.map(|c| self.reachable.get(c).cloned().unwrap_or_default());
        let allowed = |id: &Option<ServiceIdentity>| match &allowed_destinations {
            None => true,
            Some(set) => id.as_ref().is_some_and(|id| set.contains(id)),
        };
        let mut services = Vec::new();
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
                    .filter_map(|r| input.services.get_key_value(r).map(|(k, _)| k))
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
                let pod_hosts = if self.splits.contains_key(&svc.id) {
                    Vec::new()
                } else {
                    self.pod_hosts(svc, port.target_port, port.protocol, &allowed)
                };
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
                    pod_hosts,
                    retry: client
                        .and_then(|c| self.retries.get(c))
                        .and_then(|r| r.get(&svc.id))
                        .cloned(),
                });
            }
        }
        OutboundIntent {
            services,
            egress_passthrough: input.mesh_config.traffic.enable_egress,
            access_log: input.mesh_config.observability.enable_access_log,
            tracing: self.tracing.clone(),
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
            pod_hostname: None,
            limits: self.limits.get(&svc.id).cloned(),
        }))
    }

    /// A headless service's per-pod names: one cluster per allowed endpoint with a hostname, so
    /// `<hostname>.<svc>.<ns>` reaches that pod only (upstream OSM's per-pod mesh services).
    fn pod_hosts(
        &mut self,
        svc: &Service,
        target_port: u16,
        protocol: AppProtocol,
        allowed: &impl Fn(&Option<ServiceIdentity>) -> bool,
    ) -> Vec<PodHost> {
        if svc.cluster_ip.is_some() {
            return Vec::new();
        }
        let eps: Vec<(String, IpAddr, Option<ServiceIdentity>)> = self
            .endpoints
            .get(&svc.id)
            .into_iter()
            .flatten()
            .filter(|ep| allowed(&ep.identity))
            .filter_map(|ep| Some((ep.hostname.clone()?, ep.ip, ep.identity.clone())))
            .collect();
        let mut hosts: Vec<PodHost> = eps
            .into_iter()
            .map(|(hostname, ip, identity)| PodHost {
                cluster: self.clusters.intern(UpstreamCluster {
                    service: svc.id.clone(),
                    target_port,
                    protocol,
                    server_identities: identity.into_iter().collect(),
                    endpoints: [ip].into(),
                    pod_hostname: Some(hostname.clone()),
                    limits: self.limits.get(&svc.id).cloned(),
                }),
                hostname,
            })
            .collect();
        hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        // Two addresses with one hostname would make the name ambiguous: neither gets it.
        let mut dup = BTreeSet::new();
        for w in hosts.windows(2) {
            if w[0].hostname == w[1].hostname {
                dup.insert(w[0].hostname.clone());
            }
        }
        hosts.retain(|h| !dup.contains(&h.hostname));
        hosts
    }
}

impl Touched {
    fn note(&mut self, endpoints: &[ResolvedEndpoint]) {
        for ep in endpoints {
            self.identities.extend(ep.identity.iter().cloned());
            self.pods.extend(ep.pod.iter().cloned());
        }
    }
}

fn subject_identity(subject: &IdentityBindingSubject, default_ns: &str) -> ServiceIdentity {
    ServiceIdentity::new(subject.namespace.as_deref().unwrap_or(default_ns), &subject.name)
}

/// A pod's application ports from the services that route to it: target port → (protocol, the
/// service ports that reach it). Two services disagreeing on a target port's protocol: the first
/// (by service, then port order) decides. `explain` asks the same question of the same function.
pub(crate) fn local_ports<'a>(
    services: impl Iterator<Item = &'a Service>,
) -> BTreeMap<u16, (AppProtocol, BTreeSet<InboundService>)> {
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
    ports
}

/// Whether a TCPRoute's ports (`None`: every port) cover a local port. TCPRoute ports name the
/// destination port, so the pod port and the port of any service that routes to it both count.
pub(crate) fn tcp_route_covers(
    ports: Option<&BTreeSet<u16>>,
    target_port: u16,
    service_ports: &BTreeSet<u16>,
) -> bool {
    ports.is_none_or(|ports| ports.contains(&target_port) || !ports.is_disjoint(service_ports))
}

pub(crate) fn http_route_match(m: &osm_api::smi::specs::HttpMatch) -> HttpRouteMatch {
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

/// The shared (permissive) outbound intent with an identity's retry policies on the services they
/// name; the shared value itself when they name none of its services.
fn with_retries(
    shared: &Arc<OutboundIntent>,
    retries: &BTreeMap<ServiceRef, Arc<RetryPolicy>>,
) -> Arc<OutboundIntent> {
    if !shared.services.iter().any(|s| retries.contains_key(&s.service)) {
        return shared.clone();
    }
    let mut own = OutboundIntent::clone(shared);
    for s in &mut own.services {
        s.retry = retries.get(&s.service).cloned();
    }
    Arc::new(own)
}
