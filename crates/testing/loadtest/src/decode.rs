//! What a simulated proxy learns from the clusters and listeners it receives, as Envoy would: the EDS
//! names of its EDS clusters, the RDS names its HTTP connection managers refer to, and the SDS secrets
//! named by TLS contexts. Resources are shared by many proxies, so results are cached by version in
//! [`DeriveCache`] and every proxy with the same config holds the same `Arc`s.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext, common_tls_context,
};
use prost::{Message, Name};

use crate::light;

/// A sorted list of resource names, shared between proxies that derive the same list.
pub type Names = Arc<[String]>;

/// Names one resource (a cluster or a listener) makes the proxy subscribe to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Derived {
    /// EDS names (clusters) or RDS names (listeners).
    pub names: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

/// What a whole set of clusters or listeners makes the proxy subscribe to.
#[derive(Debug, Default)]
pub struct DerivedSet {
    /// EDS names (from clusters) or RDS names (from listeners).
    pub names: Names,
    pub secrets: Names,
    pub resources: usize,
}

pub fn cluster(any: &light::Any) -> Result<Derived, prost::DecodeError> {
    let c = Cluster::decode(any.value.as_ref())?;
    let mut d = Derived::default();
    if c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        ))
    {
        let service_name = c
            .eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.clone())
            .filter(|n| !n.is_empty());
        d.names.insert(service_name.unwrap_or_else(|| c.name.clone()));
    }
    if let Some(ts) = &c.transport_socket
        && let Some(ctx) = tls_context::<UpstreamTlsContext>(ts)?
    {
        common_secrets(ctx.common_tls_context.as_ref(), &mut d.secrets);
    }
    Ok(d)
}

pub fn listener(any: &light::Any) -> Result<Derived, prost::DecodeError> {
    let l = Listener::decode(any.value.as_ref())?;
    let mut d = Derived::default();
    for chain in l.filter_chains.iter().chain(l.default_filter_chain.as_ref()) {
        filter_chain(chain, &mut d)?;
    }
    Ok(d)
}

fn filter_chain(chain: &FilterChain, d: &mut Derived) -> Result<(), prost::DecodeError> {
    if let Some(ts) = &chain.transport_socket
        && let Some(ctx) = tls_context::<DownstreamTlsContext>(ts)?
    {
        common_secrets(ctx.common_tls_context.as_ref(), &mut d.secrets);
    }
    for f in &chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            continue;
        };
        if any.type_url != HttpConnectionManager::type_url() {
            continue;
        }
        let hcm = HttpConnectionManager::decode(any.value.as_slice())?;
        if let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
            d.names.insert(rds.route_config_name.clone());
        }
    }
    Ok(())
}

fn tls_context<M: Message + Name + Default>(ts: &TransportSocket) -> Result<Option<M>, prost::DecodeError> {
    match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) if any.type_url == M::type_url() => {
            M::decode(any.value.as_slice()).map(Some)
        }
        _ => Ok(None),
    }
}

fn common_secrets(ctx: Option<&CommonTlsContext>, out: &mut BTreeSet<String>) {
    let Some(ctx) = ctx else {
        return;
    };
    for s in &ctx.tls_certificate_sds_secret_configs {
        out.insert(s.name.clone());
    }
    match &ctx.validation_context_type {
        Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            out.insert(s.name.clone());
        }
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
            if let Some(s) = &c.validation_context_sds_secret_config {
                out.insert(s.name.clone());
            }
        }
        _ => {}
    }
}

/// The parent type of a derived set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parent {
    Clusters,
    Listeners,
}

/// (cluster secrets, listener secrets, their union).
type SecretUnion = (Names, Names, Names);

/// Caches shared by every simulated proxy of the driver.
#[derive(Default)]
pub struct DeriveCache {
    /// SotW: (type, response version) → what the whole response derives.
    sotw: Mutex<HashMap<(Parent, String), Arc<DerivedSet>>>,
    /// Delta: hash of (name, version) → what one resource derives.
    resources: Mutex<HashMap<u64, Arc<Derived>>>,
    /// Delta: (type, order-independent hash of the held (name, version) pairs) → the whole set.
    delta_sets: Mutex<HashMap<(Parent, u64), Arc<DerivedSet>>>,
    /// (cluster secrets, listener secrets) → their union, keyed by the pointers of the two lists; the
    /// value keeps both alive so the pointers cannot be reused.
    unions: Mutex<HashMap<(usize, usize), SecretUnion>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn hash_of(parts: &[&str]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

fn decode(parent: Parent, any: &light::Any) -> Result<Derived, prost::DecodeError> {
    match parent {
        Parent::Clusters => cluster(any),
        Parent::Listeners => listener(any),
    }
}

fn to_names(set: BTreeSet<String>) -> Names {
    set.into_iter().collect::<Vec<_>>().into()
}

impl DeriveCache {
    /// A SotW response of clusters or listeners: the response version names its whole content.
    pub fn sotw(
        &self,
        parent: Parent,
        version: &str,
        resources: &[light::Any],
    ) -> Result<Arc<DerivedSet>, prost::DecodeError> {
        let key = (parent, version.to_string());
        if let Some(d) = lock(&self.sotw).get(&key) {
            return Ok(d.clone());
        }
        // Decoded outside the lock; two proxies racing decode twice, which is harmless.
        let mut names = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for any in resources {
            let d = decode(parent, any)?;
            names.extend(d.names);
            secrets.extend(d.secrets);
        }
        let set = Arc::new(DerivedSet {
            names: to_names(names),
            secrets: to_names(secrets),
            resources: resources.len(),
        });
        Ok(lock(&self.sotw).entry(key).or_insert(set).clone())
    }

    /// One delta resource, by its (name, version) hash.
    pub fn resource(
        &self,
        parent: Parent,
        key: u64,
        any: &light::Any,
    ) -> Result<Arc<Derived>, prost::DecodeError> {
        if let Some(d) = lock(&self.resources).get(&key) {
            return Ok(d.clone());
        }
        let d = Arc::new(decode(parent, any)?);
        Ok(lock(&self.resources).entry(key).or_insert(d).clone())
    }

    /// The set a delta proxy holds, identified by `set_hash`; `build` is called on a miss.
    pub fn delta_set(
        &self,
        parent: Parent,
        set_hash: u64,
        build: impl FnOnce() -> DerivedSet,
    ) -> Arc<DerivedSet> {
        if let Some(d) = lock(&self.delta_sets).get(&(parent, set_hash)) {
            return d.clone();
        }
        let d = Arc::new(build());
        lock(&self.delta_sets)
            .entry((parent, set_hash))
            .or_insert(d)
            .clone()
    }

    /// The secrets a proxy subscribes to: those of its clusters and of its listeners.
    pub fn secrets(&self, clusters: &Names, listeners: &Names) -> Names {
        let key = (
            Arc::as_ptr(clusters) as *const u8 as usize,
            Arc::as_ptr(listeners) as *const u8 as usize,
        );
        if let Some((_, _, u)) = lock(&self.unions).get(&key) {
            return u.clone();
        }
        let union: BTreeSet<String> = clusters.iter().chain(listeners.iter()).cloned().collect();
        let union = to_names(union);
        lock(&self.unions)
            .entry(key)
            .or_insert((clusters.clone(), listeners.clone(), union))
            .2
            .clone()
    }
}

/// Builds a delta set from the per-resource results a proxy holds.
pub fn union<'a>(held: impl Iterator<Item = &'a Arc<Derived>>) -> DerivedSet {
    let mut names = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let mut resources = 0;
    for d in held {
        resources += 1;
        names.extend(d.names.iter().cloned());
        secrets.extend(d.secrets.iter().cloned());
    }
    DerivedSet {
        names: to_names(names),
        secrets: to_names(secrets),
        resources,
    }
}

/// Names in `new` and not in `old`, and in `old` and not in `new` (both sorted).
pub fn diff(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o == n => {
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o < n => {
                removed.push(o.clone());
                i += 1;
            }
            (Some(_), Some(n)) => {
                added.push(n.clone());
                j += 1;
            }
            (Some(o), None) => {
                removed.push(o.clone());
                i += 1;
            }
            (None, Some(n)) => {
                added.push(n.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_of_sorted_lists() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (added, removed) = diff(&s(&["a", "c", "d"]), &s(&["b", "c", "e"]));
        assert_eq!(added, s(&["b", "e"]));
        assert_eq!(removed, s(&["a", "d"]));
        assert_eq!(diff(&s(&[]), &s(&["x"])), (s(&["x"]), s(&[])));
    }
}
