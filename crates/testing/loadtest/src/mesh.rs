//! The synthetic mesh and its scripted churn. Both processes (the driver with the simulated proxies and
//! the controller) build the same mesh from the same [`MeshSpec`]: it is a pure function of the flags.
//!
//! Shape: `services` HTTP services (port 8080) spread over `namespaces`, each running as its own
//! ServiceAccount and backed by `endpoints` pods. Pod `j` belongs to service `j % services`; pods
//! `0..proxies` have a sidecar, and when `proxies` exceeds `services × endpoints` the extra pods are
//! client-only (same identity as their service, not an endpoint). In SMI mode service `i` may call the
//! `allow` services after it (`i+1 ..= i+allow`, wrapping) through one TrafficTarget per destination and
//! one HTTPRouteGroup per namespace. `splits` adds TrafficSplit apexes `split-<i>` over two services.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use osm_api::smi::access::{IdentityBindingSubject, TrafficTargetRule, TrafficTargetSpec};
use osm_api::smi::specs::{HTTPRouteGroupSpec, HttpMatch};
use osm_api::smi::split::{TrafficSplitBackend, TrafficSplitSpec};
use osm_ca::TrustDomain;
use osm_fixtures::MeshBuilder;
use osm_model::{AppProtocol, Endpoint, MeshInput, ObjectRef, PodRef, ServiceIdentity, ServiceRef};
use serde::Serialize;

/// The one service port of every generated service (port = target port).
pub const PORT: u16 = 8080;
pub(crate) const ROUTE_GROUP: &str = "svc-routes";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every proxy may reach every service.
    Permissive,
    /// Deny by default; TrafficTargets allow each service `--allow` upstreams.
    Smi,
}

/// What mesh to generate (flags shared by the driver and the controller process).
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct MeshSpec {
    /// Number of services.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Endpoints (pods) per service.
    #[arg(long, default_value_t = 2)]
    pub endpoints: usize,
    /// Pods with a sidecar, i.e. simulated proxies.
    #[arg(long, default_value_t = 2000)]
    pub proxies: usize,
    #[arg(long, value_enum, default_value_t = Mode::Permissive)]
    pub mode: Mode,
    /// SMI mode: how many other services each service may call.
    #[arg(long, default_value_t = 10)]
    pub allow: usize,
    /// Number of TrafficSplits (apex `split-<i>` over services i and the next one in its namespace).
    #[arg(long, default_value_t = 0)]
    pub splits: usize,
    /// Namespaces the services are spread over.
    #[arg(long, default_value_t = 1)]
    pub namespaces: usize,
    /// Derive endpoints from service selectors (as local YAML mode does) instead of giving them
    /// explicitly (as Kubernetes EndpointSlices do).
    #[arg(long)]
    pub selectors: bool,
}

impl Default for MeshSpec {
    fn default() -> Self {
        Self {
            services: 1000,
            endpoints: 2,
            proxies: 2000,
            mode: Mode::Permissive,
            allow: 10,
            splits: 0,
            namespaces: 1,
            selectors: false,
        }
    }
}

impl MeshSpec {
    /// The same spec as command-line flags, for the controller process.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--services={}", self.services),
            format!("--endpoints={}", self.endpoints),
            format!("--proxies={}", self.proxies),
            format!(
                "--mode={}",
                match self.mode {
                    Mode::Permissive => "permissive",
                    Mode::Smi => "smi",
                }
            ),
            format!("--allow={}", self.allow),
            format!("--splits={}", self.splits),
            format!("--namespaces={}", self.namespaces),
        ];
        if self.selectors {
            args.push("--selectors".to_string());
        }
        args
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.services == 0 || self.endpoints == 0 || self.proxies == 0 || self.namespaces == 0 {
            return Err("--services, --endpoints, --proxies and --namespaces must be at least 1".into());
        }
        if self.namespaces > self.services {
            return Err("--namespaces must not exceed --services".into());
        }
        if self.splits > self.services {
            return Err("--splits must not exceed --services".into());
        }
        Ok(())
    }

    /// Pods in total: every endpoint, plus client-only pods when there are more proxies than endpoints.
    pub fn pods(&self) -> usize {
        self.proxies.max(self.services * self.endpoints)
    }

    pub fn namespace_of(&self, service: usize) -> String {
        format!("ns-{}", service % self.namespaces)
    }

    /// The upstream services service `i` may call in SMI mode.
    pub fn allowed_upstreams(&self, service: usize) -> BTreeSet<usize> {
        let k = self.allow.min(self.services - 1);
        (1..=k).map(|d| (service + d) % self.services).collect()
    }

    /// The upstream cluster name of service `i` (`<ns>/<svc>|<port>`).
    pub fn cluster_name(&self, service: usize) -> String {
        format!("{}/{}|{PORT}", self.namespace_of(service), service_name(service))
    }

    /// Pod `j`: (service, replica, has sidecar, is endpoint).
    pub(crate) fn pod_role(&self, j: usize) -> (usize, usize, bool, bool) {
        let service = j % self.services;
        let replica = j / self.services;
        (service, replica, j < self.proxies, replica < self.endpoints)
    }

    /// The backends of split `i`: service `i` and the next service in the same namespace.
    fn split_backends(&self, i: usize) -> (usize, usize) {
        let next = (i + self.namespaces) % self.services;
        (i, next)
    }
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

pub(crate) fn pod_name(j: usize) -> String {
    format!("pod-{j}")
}

pub(crate) fn proxy_uuid(j: usize) -> String {
    format!("00000000-0000-4000-8000-{j:012}")
}

/// `10.<a>.x.y` for `n`, skipping `.0` addresses.
pub(crate) fn addr(a: u8, n: usize) -> IpAddr {
    let n = n + 1;
    IpAddr::V4(Ipv4Addr::new(
        10,
        a.wrapping_add((n >> 16) as u8),
        (n >> 8) as u8,
        n as u8,
    ))
}

/// One simulated proxy: what the driver needs to connect as it and to check what it receives.
#[derive(Clone, Debug)]
pub struct ProxyInfo {
    pub index: usize,
    pub uuid: String,
    pub namespace: String,
    pub service_account: String,
    pub service: usize,
}

impl ProxyInfo {
    /// The ADS key / Envoy node id / xDS certificate CN.
    pub fn key(&self, td: &TrustDomain) -> String {
        osm_controller::proxy_key(
            &self.uuid,
            &ServiceIdentity::new(&self.namespace, &self.service_account),
            td,
        )
    }
}

/// The proxies of the generated mesh, in pod order.
pub fn proxies(spec: &MeshSpec) -> Vec<ProxyInfo> {
    (0..spec.proxies)
        .map(|j| {
            let (service, ..) = spec.pod_role(j);
            ProxyInfo {
                index: j,
                uuid: proxy_uuid(j),
                namespace: spec.namespace_of(service),
                service_account: service_name(service),
                service,
            }
        })
        .collect()
}

fn subject(name: &str, namespace: &str) -> IdentityBindingSubject {
    IdentityBindingSubject {
        kind: osm_api::smi::access::KIND_SERVICE_ACCOUNT.to_string(),
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
    }
}

pub(crate) fn route_group() -> HTTPRouteGroupSpec {
    let m = |name: &str, path: &str, method: &str| HttpMatch {
        name: name.to_string(),
        path_regex: Some(path.to_string()),
        methods: vec![method.to_string()],
        headers: Vec::new(),
    };
    HTTPRouteGroupSpec {
        matches: vec![m("read", "/api/.*", "GET"), m("write", "/api/orders", "POST")],
    }
}

pub(crate) fn traffic_target_ref(spec: &MeshSpec, destination: usize) -> ObjectRef {
    ObjectRef::new(
        spec.namespace_of(destination),
        format!("{}-access", service_name(destination)),
    )
}

pub(crate) fn traffic_target(
    spec: &MeshSpec,
    destination: usize,
    sources: &BTreeSet<usize>,
) -> TrafficTargetSpec {
    TrafficTargetSpec {
        destination: subject(&service_name(destination), &spec.namespace_of(destination)),
        sources: sources
            .iter()
            .map(|&s| subject(&service_name(s), &spec.namespace_of(s)))
            .collect(),
        rules: vec![TrafficTargetRule {
            kind: osm_api::smi::access::RULE_KIND_HTTP_ROUTE_GROUP.to_string(),
            name: ROUTE_GROUP.to_string(),
            matches: Vec::new(),
        }],
    }
}

fn split(spec: &MeshSpec, i: usize, weights: (i64, i64)) -> (ObjectRef, TrafficSplitSpec) {
    let (a, b) = spec.split_backends(i);
    (
        ObjectRef::new(spec.namespace_of(i), format!("split-{i}")),
        TrafficSplitSpec {
            service: format!("split-{i}"),
            backends: vec![
                TrafficSplitBackend {
                    service: service_name(a),
                    weight: weights.0,
                },
                TrafficSplitBackend {
                    service: service_name(b),
                    weight: weights.1,
                },
            ],
        },
    )
}

/// SMI: destination service → the services that may call it (one TrafficTarget each).
pub(crate) fn callers(spec: &MeshSpec) -> BTreeMap<usize, BTreeSet<usize>> {
    let mut callers: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for s in 0..spec.services {
        for d in spec.allowed_upstreams(s) {
            callers.entry(d).or_default().insert(s);
        }
    }
    callers
}

/// Builds the mesh input.
pub fn build(spec: &MeshSpec) -> MeshInput {
    let mut b = MeshBuilder::new(spec.mode == Mode::Permissive);
    for i in 0..spec.services {
        let name = service_name(i);
        b.service(
            &spec.namespace_of(i),
            &name,
            Some(addr(96, i)),
            &[(PORT, PORT, AppProtocol::Http)],
            &[("app", &name)],
        );
    }
    for i in 0..spec.splits {
        b.service(
            &spec.namespace_of(i),
            &format!("split-{i}"),
            Some(addr(97, i)),
            &[(PORT, PORT, AppProtocol::Http)],
            &[],
        );
    }
    let mut endpoints: BTreeMap<ServiceRef, BTreeSet<Endpoint>> = BTreeMap::new();
    for j in 0..spec.pods() {
        let (service, _, sidecar, endpoint) = spec.pod_role(j);
        let ns = spec.namespace_of(service);
        let name = service_name(service);
        let app = if endpoint {
            name.clone()
        } else {
            format!("{name}-client")
        };
        let ip = addr(1, j);
        let uuid = proxy_uuid(j);
        b.pod(
            &ns,
            &pod_name(j),
            &name,
            &[("app", &app)],
            Some(ip),
            sidecar.then_some(uuid.as_str()),
        );
        if endpoint {
            endpoints
                .entry(ServiceRef::new(&ns, &name))
                .or_default()
                .insert(Endpoint {
                    ip,
                    pod: Some(PodRef::new(&ns, pod_name(j))),
                    hostname: None,
                });
        }
    }
    let mut input = b.build();
    if !spec.selectors {
        // Services without endpoints (split apexes) get an explicit empty set, as an EndpointSlice
        // source would give them.
        for id in input.services.keys() {
            endpoints.entry(id.clone()).or_default();
        }
        input.endpoints = endpoints;
    }
    if spec.mode == Mode::Smi {
        for n in 0..spec.namespaces {
            input
                .http_route_groups
                .insert(ObjectRef::new(format!("ns-{n}"), ROUTE_GROUP), route_group());
        }
        for (d, sources) in callers(spec) {
            input
                .traffic_targets
                .insert(traffic_target_ref(spec, d), traffic_target(spec, d, &sources));
        }
    }
    for i in 0..spec.splits {
        let (id, s) = split(spec, i, (50, 50));
        input.traffic_splits.insert(id, s);
    }
    input
}

/// A kind of scripted change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChurnKind {
    /// One pod of a service gets a new IP (its endpoint changes).
    Endpoint,
    /// Alternately add a pod (with a sidecar that never connects) to a service, and delete it again.
    Pod,
    /// SMI: toggle an extra source in one TrafficTarget; permissive: toggle a TrafficSplit's weights.
    Policy,
}

/// What one applied change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Endpoint,
    PodAdd,
    PodDelete,
    Policy,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Endpoint => "endpoint",
            Self::PodAdd => "pod-add",
            Self::PodDelete => "pod-delete",
            Self::Policy => "policy",
        })
    }
}

/// The churn script's state (kept by the controller process, which applies the changes).
pub struct Churn {
    spec: MeshSpec,
    kinds: Vec<ChurnKind>,
    moved: usize,
    added: Vec<(usize, PodRef)>,
    pod_turns: usize,
    policy_turns: usize,
    /// SMI: destinations that currently have the extra source.
    extra_source: BTreeSet<usize>,
}

impl Churn {
    pub fn new(spec: &MeshSpec, kinds: &[ChurnKind]) -> Result<Self, String> {
        if kinds.is_empty() {
            return Err("--churn needs at least one kind".into());
        }
        if kinds.contains(&ChurnKind::Policy) && spec.mode == Mode::Permissive && spec.splits == 0 {
            return Err("policy churn in permissive mode edits TrafficSplits: give --splits ≥ 1".into());
        }
        Ok(Self {
            spec: spec.clone(),
            kinds: kinds.to_vec(),
            moved: 0,
            added: Vec::new(),
            pod_turns: 0,
            policy_turns: 0,
            extra_source: BTreeSet::new(),
        })
    }

    /// Applies change number `index` (kinds are cycled) to `input`.
    pub fn apply(&mut self, index: usize, input: &mut MeshInput) -> ChangeKind {
        match self.kinds[index % self.kinds.len()] {
            ChurnKind::Endpoint => {
                self.move_endpoint(input);
                ChangeKind::Endpoint
            }
            ChurnKind::Pod => {
                self.pod_turns += 1;
                if !self.pod_turns.is_multiple_of(2) {
                    self.add_pod(input);
                    ChangeKind::PodAdd
                } else {
                    self.delete_pod(input);
                    ChangeKind::PodDelete
                }
            }
            ChurnKind::Policy => {
                self.edit_policy(input);
                ChangeKind::Policy
            }
        }
    }

    /// Spreads changes over services: a stride coprime-ish with typical sizes.
    fn pick_service(&self, turn: usize) -> usize {
        (turn * 7919 + 13) % self.spec.services
    }

    fn move_endpoint(&mut self, input: &mut MeshInput) {
        let spec = &self.spec;
        let service = self.pick_service(self.moved);
        let replica = self.moved % spec.endpoints;
        let j = replica * spec.services + service;
        let ns = spec.namespace_of(service);
        let pod_ref = PodRef::new(&ns, pod_name(j));
        let new_ip = addr(200, self.moved);
        self.moved += 1;
        let Some(pod) = input.pods.get_mut(&pod_ref) else {
            return;
        };
        let old_ip = pod.ip.replace(new_ip);
        if let Some(eps) = input
            .endpoints
            .get_mut(&ServiceRef::new(&ns, service_name(service)))
        {
            if let Some(old) = old_ip {
                eps.remove(&Endpoint {
                    ip: old,
                    pod: Some(pod_ref.clone()),
                    hostname: None,
                });
            }
            eps.insert(Endpoint {
                ip: new_ip,
                pod: Some(pod_ref),
                hostname: None,
            });
        }
    }

    fn add_pod(&mut self, input: &mut MeshInput) {
        let spec = &self.spec;
        let service = self.pick_service(self.pod_turns);
        let ns = spec.namespace_of(service);
        let name = service_name(service);
        let j = spec.pods() + self.pod_turns;
        let pod_ref = PodRef::new(&ns, pod_name(j));
        let ip = addr(201, self.pod_turns);
        input.pods.insert(
            pod_ref.clone(),
            osm_model::Pod {
                id: pod_ref.clone(),
                service_account: name.clone(),
                proxy_uuid: Some(proxy_uuid(j)),
                ip: Some(ip),
                labels: [("app".to_string(), name.clone())].into(),
                hostname: None,
                subdomain: None,
            },
        );
        if let Some(eps) = input.endpoints.get_mut(&ServiceRef::new(&ns, &name)) {
            eps.insert(Endpoint {
                ip,
                pod: Some(pod_ref.clone()),
                hostname: None,
            });
        }
        self.added.push((service, pod_ref));
    }

    fn delete_pod(&mut self, input: &mut MeshInput) {
        let Some((service, pod_ref)) = self.added.pop() else {
            return;
        };
        let removed = input.pods.remove(&pod_ref);
        let svc = ServiceRef::new(self.spec.namespace_of(service), service_name(service));
        if let (Some(eps), Some(ip)) = (input.endpoints.get_mut(&svc), removed.and_then(|p| p.ip)) {
            eps.remove(&Endpoint {
                ip,
                pod: Some(pod_ref),
                hostname: None,
            });
        }
    }

    fn edit_policy(&mut self, input: &mut MeshInput) {
        let spec = self.spec.clone();
        let turn = self.policy_turns;
        self.policy_turns += 1;
        match spec.mode {
            Mode::Smi => {
                let d = self.pick_service(turn);
                let extra = (d + spec.services / 2) % spec.services;
                let mut sources: BTreeSet<usize> = (0..spec.services)
                    .filter(|&s| spec.allowed_upstreams(s).contains(&d))
                    .collect();
                if !self.extra_source.remove(&d) && extra != d {
                    sources.insert(extra);
                    self.extra_source.insert(d);
                }
                input
                    .traffic_targets
                    .insert(traffic_target_ref(&spec, d), traffic_target(&spec, d, &sources));
            }
            Mode::Permissive => {
                let i = turn % spec.splits;
                // Each split alternates 50/50 → 90/10 → 50/50 as its turns come round.
                let weights = if (turn / spec.splits).is_multiple_of(2) {
                    (90, 10)
                } else {
                    (50, 50)
                };
                let (id, s) = split(&spec, i, weights);
                input.traffic_splits.insert(id, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In SMI mode every proxy's outbound intent holds exactly its allowed upstream services.
    #[test]
    fn smi_mesh_allows_exactly_the_next_services() {
        let spec = MeshSpec {
            services: 6,
            endpoints: 2,
            proxies: 12,
            mode: Mode::Smi,
            allow: 2,
            ..MeshSpec::default()
        };
        let model = osm_model::compute(&build(&spec));
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);
        assert_eq!(model.proxies.len(), 12);
        for p in proxies(&spec) {
            let intent = &model.proxies[&p.uuid];
            let got: BTreeSet<String> = intent
                .outbound
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(|b| b.cluster.name()))
                .collect();
            let want: BTreeSet<String> = spec
                .allowed_upstreams(p.service)
                .into_iter()
                .map(|s| spec.cluster_name(s))
                .collect();
            assert_eq!(got, want, "proxy {}", p.index);
        }
    }

    /// Pod churn adds a meshed endpoint and removes it again; endpoint churn keeps the count.
    #[test]
    fn churn_changes_the_input_and_pod_churn_undoes_itself() {
        let spec = MeshSpec {
            services: 4,
            endpoints: 2,
            proxies: 8,
            splits: 1,
            ..MeshSpec::default()
        };
        let original = build(&spec);
        let mut input = original.clone();
        let kinds = [
            ChurnKind::Endpoint,
            ChurnKind::Pod,
            ChurnKind::Policy,
            ChurnKind::Pod,
        ];
        let mut churn = Churn::new(&spec, &kinds).expect("a valid script");
        assert_eq!(churn.apply(0, &mut input), ChangeKind::Endpoint);
        assert_ne!(input, original);
        assert_eq!(input.pods.len(), original.pods.len());
        let after_move = input.clone();
        assert_eq!(churn.apply(1, &mut input), ChangeKind::PodAdd);
        assert_eq!(input.pods.len(), original.pods.len() + 1);
        assert_eq!(churn.apply(2, &mut input), ChangeKind::Policy);
        assert_ne!(input.traffic_splits, after_move.traffic_splits);
        assert_eq!(churn.apply(3, &mut input), ChangeKind::PodDelete);
        assert_eq!(input.pods, after_move.pods);
        assert_eq!(input.endpoints, after_move.endpoints);
    }
}
