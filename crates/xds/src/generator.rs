//! Builds each proxy's `ProxyConfig` from its intent, memoising every resource by the intent value it
//! was built from. Proxies with equal intents share the same `Arc<ResourceSet>`; across recomputes a
//! resource whose input did not change is neither rebuilt nor re-encoded.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use osm_model::{
    AppProtocol, InboundIntent, OutboundIntent, OutboundService, ProxyIntent, ServiceIdentity, ServiceRef,
    UpstreamCluster,
};

use crate::resource::{ProxyConfig, Resource, ResourceSet};
use crate::{cds, eds, lds, names, rds, sds};

/// A memo table whose entries remember the last generation that used them, so `sweep` can drop the rest.
struct Memo<K, V> {
    entries: HashMap<K, (Arc<V>, u64)>,
}

impl<K: Eq + Hash, V> Memo<K, V> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    fn get_or_build(&mut self, key: K, generation: u64, build: impl FnOnce(&K) -> Arc<V>) -> Arc<V> {
        let entry = self
            .entries
            .entry(key)
            .or_insert_with_key(|k| (build(k), generation));
        entry.1 = generation;
        entry.0.clone()
    }

    fn sweep(&mut self, generation: u64) {
        self.entries.retain(|_, (_, used)| *used == generation);
    }

    fn clear(&mut self) {
        self.entries.clear();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

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
    generation: u64,
    statics: Arc<ResourceSet>,
    outbound: Memo<Arc<OutboundIntent>, ResourceSet>,
    /// This generation's outbound sets by intent pointer: the permissive intent is shared by every
    /// proxy, and hashing it once per proxy would cost more than building it.
    outbound_by_ptr: HashMap<usize, (Arc<OutboundIntent>, Arc<ResourceSet>)>,
    inbound: Memo<Arc<InboundIntent>, ResourceSet>,
    clusters: Memo<(ServiceRef, u16, BTreeSet<ServiceIdentity>), Resource>,
    endpoints: Memo<Arc<UpstreamCluster>, Resource>,
}

/// Resources every proxy gets: the prometheus listener, the fixed clusters, the shared outbound CA.
fn statics(ca_bundle_pem: &str) -> Arc<ResourceSet> {
    let mut statics = ResourceSet::default();
    statics.insert(lds::prometheus());
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
            generation: 0,
            statics: statics(ca_bundle_pem),
            outbound: Memo::new(),
            outbound_by_ptr: HashMap::new(),
            inbound: Memo::new(),
            clusters: Memo::new(),
            endpoints: Memo::new(),
        }
    }

    /// A new CA bundle changes every validation context: forget everything that embeds it.
    pub fn set_ca_bundle(&mut self, ca_bundle_pem: &str) {
        self.ca_bundle = ca_bundle_pem.into();
        self.statics = statics(ca_bundle_pem);
        self.inbound.clear();
    }

    /// Starts a recompute; call `sweep` when every proxy of this recompute has been generated.
    pub fn begin(&mut self) {
        self.generation += 1;
        self.outbound_by_ptr.clear();
    }

    /// Drops resources no proxy used in this generation.
    pub fn sweep(&mut self) {
        let g = self.generation;
        self.outbound.sweep(g);
        self.inbound.sweep(g);
        self.clusters.sweep(g);
        self.endpoints.sweep(g);
    }

    /// Entries held per memo table; after `sweep`, exactly what the last generation used.
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
        let inbound = self.inbound_set(&proxy.inbound);
        ProxyConfig {
            sets: vec![self.statics.clone(), inbound, outbound, identity_secrets],
        }
    }

    fn outbound_set(&mut self, intent: &Arc<OutboundIntent>) -> Arc<ResourceSet> {
        let ptr = Arc::as_ptr(intent) as usize;
        if let Some((_, set)) = self.outbound_by_ptr.get(&ptr) {
            return set.clone();
        }
        let generation = self.generation;
        let mut outbound = std::mem::replace(&mut self.outbound, Memo::new());
        let set = outbound.get_or_build(intent.clone(), generation, |intent| {
            Arc::new(self.build_outbound(intent))
        });
        self.outbound = outbound;
        // Keeping the intent alive keeps the pointer key unique for this generation.
        self.outbound_by_ptr.insert(ptr, (intent.clone(), set.clone()));
        set
    }

    fn build_outbound(&mut self, intent: &OutboundIntent) -> ResourceSet {
        let g = self.generation;
        let mut set = ResourceSet::default();
        if let Some(listener) = lds::outbound(intent) {
            set.insert(listener);
        }
        let mut http_ports: std::collections::BTreeMap<u16, Vec<&OutboundService>> = Default::default();
        for s in &intent.services {
            if s.protocol == AppProtocol::Http {
                http_ports.entry(s.port).or_default().push(s);
            }
            for b in &s.backends {
                let c = &b.cluster;
                let td = &self.trust_domain;
                set.insert(self.clusters.get_or_build(
                    (c.service.clone(), c.target_port, c.server_identities.clone()),
                    g,
                    |_| cds::upstream(c, td),
                ));
                set.insert(
                    self.endpoints
                        .get_or_build(c.clone(), g, |c| eds::load_assignment(c)),
                );
            }
        }
        for (port, services) in http_ports {
            set.insert(rds::outbound(port, &services));
        }
        set
    }

    fn inbound_set(&mut self, intent: &Arc<InboundIntent>) -> Arc<ResourceSet> {
        let g = self.generation;
        let td = self.trust_domain.clone();
        let ca = self.ca_bundle.clone();
        self.inbound.get_or_build(intent.clone(), g, |intent| {
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
                if port.protocol == AppProtocol::Http {
                    set.insert(rds::inbound(port.target_port, &local, &port.access, &td));
                }
            }
            Arc::new(set)
        })
    }
}

/// The `service-cert` set for one identity.
pub fn identity_secrets(cert_chain_pem: &str, private_key_pem: &str) -> Arc<ResourceSet> {
    let mut set = ResourceSet::default();
    set.insert(sds::service_cert(cert_chain_pem, private_key_pem));
    Arc::new(set)
}
