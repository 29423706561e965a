//! A simulated proxy: one real gRPC ADS client over mTLS with its own xDS client certificate and its
//! own HTTP/2 connection, subscribing as Envoy does.
//!
//! - SotW: wildcard CDS and LDS; then EDS for the EDS clusters received, RDS for the route names the
//!   listeners' HTTP connection managers use, SDS for the secrets their TLS contexts name. Every
//!   request carries the full current name list, so a subscription change racing a response is
//!   repeated by the ACK.
//! - Delta: wildcard CDS and LDS; EDS/RDS/SDS names subscribed and unsubscribed as differences.
//!
//! Subscription changes go out before the ACK of the response that caused them, as Envoy's cluster
//! warming does, so the server never sees a proxy "in sync" that is still missing a dependent type.
//! Every response is ACKed (NACKed if it does not decode), and its arrival time and size recorded.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use osm_xds::TypeKind;
use tokio::sync::{Semaphore, watch};

use crate::call::{Call, Dialer};
use crate::decode::{self, DeriveCache, DerivedSet, Names, Parent};
use crate::light;
use crate::sys::now_ns;

/// Which ADS flavour the proxies speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Sotw,
    Delta,
}

/// What every simulated proxy shares: where the server is, the mesh root, the decode caches.
pub struct Shared {
    pub dialer: Dialer,
    pub api: Api,
    pub derive: DeriveCache,
    /// Bounds how many proxies start at once: from connecting until every type they subscribe to
    /// has arrived once. `None`: all at once.
    pub starting: Option<Semaphore>,
    empty: Names,
}

impl Shared {
    pub fn new(dialer: Dialer, api: Api, startup_concurrency: usize) -> Self {
        Self {
            dialer,
            api,
            derive: DeriveCache::default(),
            starting: (startup_concurrency > 0).then(|| Semaphore::new(startup_concurrency)),
            empty: Arc::from(Vec::<String>::new()),
        }
    }
}

/// One response as the proxy saw it.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub at_ns: u64,
    pub kind: TypeKind,
    pub bytes: u32,
}

/// What one proxy recorded.
#[derive(Clone, Debug, Default)]
pub struct ProxyStats {
    /// gRPC message bytes received (encoded responses).
    pub bytes: u64,
    pub responses: u64,
    pub nacks: u64,
    pub connects: u32,
    pub errors: u32,
    pub last_error: Option<String>,
    pub arrivals: Vec<Arrival>,
    /// Resources held per type, in `TypeKind::ALL` order.
    pub held: [usize; 5],
    /// The EDS names (upstream clusters) the proxy subscribes to.
    pub eds_names: Option<Names>,
}

/// A simulated proxy.
pub struct Proxy {
    pub key: String,
    pub node_cluster: String,
    /// Its TLS client config: the mesh root and its own xDS client certificate.
    pub tls: Arc<rustls::ClientConfig>,
    pub stats: Mutex<ProxyStats>,
}

impl Proxy {
    pub fn stats(&self) -> ProxyStats {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, kind: TypeKind, bytes: usize, held: usize, nack: Option<&str>) {
        let at_ns = now_ns();
        let mut s = self.lock();
        s.bytes += bytes as u64;
        s.responses += 1;
        s.held[kind_index(kind)] = held;
        s.arrivals.push(Arrival {
            at_ns,
            kind,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        });
        if let Some(e) = nack {
            s.nacks += 1;
            s.last_error = Some(e.to_string());
        }
    }
}

pub fn kind_index(kind: TypeKind) -> usize {
    TypeKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("ALL lists every kind")
}

/// Runs a proxy until `shutdown`: connects, streams, and reconnects after a pause if the stream fails.
pub async fn run(proxy: Arc<Proxy>, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let result = tokio::select! {
            r = session(&proxy, &shared) => r,
            _ = shutdown.wait_for(|down| *down) => return,
        };
        if *shutdown.borrow() {
            return;
        }
        {
            let mut s = proxy.lock();
            s.errors += 1;
            s.last_error = Some(match result {
                Ok(()) => "the server ended the stream".to_string(),
                Err(e) => format!("{e:#}"),
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}

async fn session(proxy: &Proxy, shared: &Shared) -> anyhow::Result<()> {
    let permit = match &shared.starting {
        Some(s) => Some(s.acquire().await?),
        None => None,
    };
    let method = match shared.api {
        Api::Sotw => "StreamAggregatedResources",
        Api::Delta => "DeltaAggregatedResources",
    };
    let call = shared.dialer.open(proxy.tls.clone(), method).await?;
    proxy.lock().connects += 1;
    match shared.api {
        Api::Sotw => sotw(call, proxy, shared, permit).await,
        Api::Delta => delta(call, proxy, shared, permit).await,
    }
}

fn node(proxy: &Proxy) -> Option<Node> {
    Some(Node {
        id: proxy.key.clone(),
        cluster: proxy.node_cluster.clone(),
        ..Default::default()
    })
}

/// Per named type (EDS, RDS, SDS): what the proxy subscribes to.
struct Subscription {
    kind: TypeKind,
    names: Names,
    subscribed: bool,
}

impl Subscription {
    fn new(kind: TypeKind, empty: &Names) -> Self {
        Self {
            kind,
            names: empty.clone(),
            subscribed: false,
        }
    }

    /// Takes `names` as the new subscription; true when it differs and must be sent.
    fn update(&mut self, names: &Names) -> bool {
        if Arc::ptr_eq(&self.names, names) || (self.names[..] == names[..] && self.subscribed) {
            self.names = names.clone();
            return false;
        }
        if !self.subscribed && names.is_empty() {
            return false;
        }
        self.names = names.clone();
        self.subscribed = true;
        true
    }
}

/// The subscriptions that follow from the clusters and listeners a proxy holds.
struct Dependents {
    eds: Subscription,
    rds: Subscription,
    sds: Subscription,
    clusters: Option<Arc<DerivedSet>>,
    listeners: Option<Arc<DerivedSet>>,
}

impl Dependents {
    fn new(empty: &Names) -> Self {
        Self {
            eds: Subscription::new(TypeKind::Endpoint, empty),
            rds: Subscription::new(TypeKind::Route, empty),
            sds: Subscription::new(TypeKind::Secret, empty),
            clusters: None,
            listeners: None,
        }
    }

    /// True once clusters, listeners and every type subscribed since have arrived at least once.
    fn started(&self, received: &[bool; 5]) -> bool {
        let got = |k: TypeKind| received[kind_index(k)];
        got(TypeKind::Cluster)
            && got(TypeKind::Listener)
            && [&self.eds, &self.rds, &self.sds]
                .iter()
                .all(|s| !s.subscribed || got(s.kind))
    }

    /// Takes a new derived set of clusters or listeners; returns the subscriptions that changed, each
    /// with its old names.
    fn set(
        &mut self,
        parent: Parent,
        set: Arc<DerivedSet>,
        shared: &Shared,
    ) -> Vec<(TypeKind, Names, Names)> {
        let mut changed = Vec::new();
        let (sub, slot) = match parent {
            Parent::Clusters => (&mut self.eds, &mut self.clusters),
            Parent::Listeners => (&mut self.rds, &mut self.listeners),
        };
        let old = sub.names.clone();
        if sub.update(&set.names) {
            changed.push((sub.kind, old, set.names.clone()));
        }
        *slot = Some(set);
        let secrets = shared.derive.secrets(
            self.clusters.as_ref().map_or(&shared.empty, |s| &s.secrets),
            self.listeners.as_ref().map_or(&shared.empty, |s| &s.secrets),
        );
        let old = self.sds.names.clone();
        if self.sds.update(&secrets) {
            changed.push((TypeKind::Secret, old, secrets));
        }
        changed
    }
}

fn parent_of(kind: TypeKind) -> Option<Parent> {
    match kind {
        TypeKind::Cluster => Some(Parent::Clusters),
        TypeKind::Listener => Some(Parent::Listeners),
        _ => None,
    }
}

fn nack_status(message: String) -> Option<RpcStatus> {
    Some(RpcStatus {
        code: tonic::Code::InvalidArgument as i32,
        message,
        details: Vec::new(),
    })
}

#[derive(Default)]
struct SotwType {
    version: String,
    nonce: String,
}

async fn sotw(
    mut call: Call,
    proxy: &Proxy,
    shared: &Shared,
    mut permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> anyhow::Result<()> {
    let wildcard = |kind: TypeKind, node| DiscoveryRequest {
        node,
        type_url: kind.type_url().to_string(),
        ..Default::default()
    };
    call.send(&wildcard(TypeKind::Cluster, node(proxy)))?;
    call.send(&wildcard(TypeKind::Listener, None))?;
    let mut received = [false; 5];
    let mut types: HashMap<TypeKind, SotwType> = HashMap::new();
    let mut deps = Dependents::new(&shared.empty);
    while let Some((resp, size)) = call.message::<light::DiscoveryResponse>().await? {
        let light::DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = &resp;
        let Some(kind) = TypeKind::from_type_url(type_url) else {
            continue;
        };
        let mut error = None;
        if let Some(parent) = parent_of(kind) {
            match shared.derive.sotw(parent, version_info, resources) {
                Ok(set) => {
                    if parent == Parent::Clusters {
                        proxy.lock().eds_names = Some(set.names.clone());
                    }
                    for (dep, _, names) in deps.set(parent, set, shared) {
                        let t = types.entry(dep).or_default();
                        call.send(&DiscoveryRequest {
                            version_info: t.version.clone(),
                            resource_names: names.to_vec(),
                            type_url: dep.type_url().to_string(),
                            response_nonce: t.nonce.clone(),
                            ..Default::default()
                        })?;
                    }
                }
                Err(e) => error = Some(format!("{} does not decode: {e}", kind.short())),
            }
        }
        let names = match kind {
            TypeKind::Endpoint => deps.eds.names.to_vec(),
            TypeKind::Route => deps.rds.names.to_vec(),
            TypeKind::Secret => deps.sds.names.to_vec(),
            TypeKind::Cluster | TypeKind::Listener => Vec::new(),
        };
        let t = types.entry(kind).or_default();
        t.nonce = nonce.clone();
        if error.is_none() {
            t.version = version_info.clone();
        }
        proxy.record(kind, size, resources.len(), error.as_deref());
        received[kind_index(kind)] = true;
        if permit.is_some() && deps.started(&received) {
            permit = None;
        }
        call.send(&DiscoveryRequest {
            version_info: t.version.clone(),
            resource_names: names,
            type_url: type_url.clone(),
            response_nonce: nonce.clone(),
            error_detail: error.and_then(nack_status),
            ..Default::default()
        })?;
    }
    Ok(())
}

/// What a delta proxy holds of one type.
#[derive(Default)]
struct DeltaHeld {
    /// Clusters and listeners: name hash → (hash of name and version, what it derives).
    parents: HashMap<u64, (u64, Arc<decode::Derived>)>,
    /// Order-independent hash of the held (name, version) pairs: names the whole set.
    set_hash: u64,
    /// Other types: name hashes.
    names: HashSet<u64>,
}

impl DeltaHeld {
    fn len(&self) -> usize {
        self.parents.len() + self.names.len()
    }
}

async fn delta(
    mut call: Call,
    proxy: &Proxy,
    shared: &Shared,
    mut permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> anyhow::Result<()> {
    let wildcard = |kind: TypeKind, node| DeltaDiscoveryRequest {
        node,
        type_url: kind.type_url().to_string(),
        ..Default::default()
    };
    call.send(&wildcard(TypeKind::Cluster, node(proxy)))?;
    call.send(&wildcard(TypeKind::Listener, None))?;
    let mut received = [false; 5];
    let mut held: HashMap<TypeKind, DeltaHeld> = HashMap::new();
    let mut deps = Dependents::new(&shared.empty);
    while let Some((resp, size)) = call.message::<light::DeltaDiscoveryResponse>().await? {
        let light::DeltaDiscoveryResponse {
            resources,
            type_url,
            removed_resources,
            nonce,
            ..
        } = &resp;
        let Some(kind) = TypeKind::from_type_url(type_url) else {
            continue;
        };
        let h = held.entry(kind).or_default();
        let mut error = None;
        let mut dep_changes = Vec::new();
        match parent_of(kind) {
            Some(parent) => {
                for r in resources {
                    let Some(body) = &r.resource else {
                        continue;
                    };
                    let entry = decode::hash_of(&[&r.name, &r.version]);
                    match shared.derive.resource(parent, entry, body) {
                        Ok(d) => {
                            let old = h.parents.insert(decode::hash_of(&[&r.name]), (entry, d));
                            h.set_hash = h.set_hash.wrapping_add(entry);
                            if let Some((old, _)) = old {
                                h.set_hash = h.set_hash.wrapping_sub(old);
                            }
                        }
                        Err(e) => error = Some(format!("{} {} does not decode: {e}", kind.short(), r.name)),
                    }
                }
                for name in removed_resources {
                    if let Some((old, _)) = h.parents.remove(&decode::hash_of(&[name])) {
                        h.set_hash = h.set_hash.wrapping_sub(old);
                    }
                }
                let set = shared.derive.delta_set(parent, h.set_hash, || {
                    decode::union(h.parents.values().map(|(_, d)| d))
                });
                if parent == Parent::Clusters {
                    proxy.lock().eds_names = Some(set.names.clone());
                }
                dep_changes = deps.set(parent, set, shared);
            }
            None => {
                for r in resources {
                    h.names.insert(decode::hash_of(&[&r.name]));
                }
                for name in removed_resources {
                    h.names.remove(&decode::hash_of(&[name]));
                }
            }
        }
        for (dep, old, new) in dep_changes {
            let (subscribe, unsubscribe) = decode::diff(&old, &new);
            // Envoy drops what it unsubscribed from; the server does not announce it as removed.
            let dep_held = held.entry(dep).or_default();
            for name in &unsubscribe {
                dep_held.names.remove(&decode::hash_of(&[name]));
            }
            call.send(&DeltaDiscoveryRequest {
                type_url: dep.type_url().to_string(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            })?;
        }
        let count = held.get(&kind).map_or(0, DeltaHeld::len);
        proxy.record(kind, size, count, error.as_deref());
        received[kind_index(kind)] = true;
        if permit.is_some() && deps.started(&received) {
            permit = None;
        }
        call.send(&DeltaDiscoveryRequest {
            type_url: type_url.clone(),
            response_nonce: nonce.clone(),
            error_detail: error.and_then(nack_status),
            ..Default::default()
        })?;
    }
    Ok(())
}
