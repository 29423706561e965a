//! Incremental (delta) ADS: per type, what the proxy subscribed to and the version of every resource it
//! holds; a change sends only resources whose version differs, and the names that went away.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use osm_xds::{ProxyConfig, TypeKind};

use crate::cache::AdsEvent;
use crate::sotw::Output;

#[derive(Default)]
struct TypeState {
    subscribed: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// Name → version the proxy holds (as far as we know).
    known: HashMap<String, String>,
    /// Nonce → (name, version) pairs it carried, until acknowledged.
    in_flight: HashMap<String, Vec<(String, String)>>,
    /// Name → version the proxy refused: not re-sent until it changes.
    refused: HashMap<String, String>,
}

pub struct DeltaStream {
    proxy: String,
    types: HashMap<TypeKind, TypeState>,
    nonce: u64,
}

impl DeltaStream {
    pub fn new(proxy: impl Into<String>) -> Self {
        Self {
            proxy: proxy.into(),
            types: HashMap::new(),
            nonce: 0,
        }
    }

    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        config: Option<&ProxyConfig>,
    ) -> Output<DeltaDiscoveryResponse> {
        let mut out = Output::default();
        let Some(kind) = TypeKind::from_type_url(&req.type_url) else {
            return out;
        };
        let state = self.types.entry(kind).or_default();
        if !req.response_nonce.is_empty() {
            let carried = state.in_flight.remove(&req.response_nonce).unwrap_or_default();
            match &req.error_detail {
                Some(status) => {
                    tracing::warn!(proxy = %self.proxy, r#type = kind.short(), error = %status.message, "proxy rejected config (NACK)");
                    for (name, version) in carried {
                        // A later response already superseded this version: nothing to remember.
                        if state.known.get(&name) != Some(&version) {
                            continue;
                        }
                        // The proxy may hold an older version, or none: keep the name with a version
                        // matching nothing, so its removal is still announced if it goes away.
                        state.known.insert(name.clone(), String::new());
                        state.refused.insert(name, version);
                    }
                    out.events.push(AdsEvent::Nacked {
                        proxy: self.proxy.clone(),
                        kind,
                        version: req.response_nonce.clone(),
                        error: status.message.clone(),
                    });
                }
                None => out.events.push(AdsEvent::Acked {
                    proxy: self.proxy.clone(),
                    kind,
                    version: req.response_nonce.clone(),
                }),
            }
        }
        // The first request of a type on a stream says what the proxy already holds (after a
        // reconnect): those versions are known, so unchanged resources are not sent again.
        let first = !state.subscribed;
        if first {
            state.subscribed = true;
            // LDS and CDS are wildcard unless the proxy names resources; "*" is an explicit wildcard.
            state.wildcard = matches!(kind, TypeKind::Listener | TypeKind::Cluster)
                && req.resource_names_subscribe.iter().all(|n| n == "*");
            state.known = req.initial_resource_versions.clone().into_iter().collect();
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else {
                state.names.insert(name.clone());
                // Subscribing to a name means "send it", even if we think it is known: the proxy may
                // have dropped it. Not so for a name whose version the same first request declares
                // (Envoy lists every name in both on reconnect); that is what the map is for.
                if !(first && req.initial_resource_versions.contains_key(name)) {
                    state.known.remove(name);
                }
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            }
            state.names.remove(name);
            state.known.remove(name);
        }
        if let Some(config) = config {
            self.respond(kind, config, &mut out);
        }
        out
    }

    pub fn on_config(&mut self, config: &ProxyConfig) -> Output<DeltaDiscoveryResponse> {
        let mut out = Output::default();
        for kind in TypeKind::ALL {
            if self.types.get(&kind).is_some_and(|s| s.subscribed) {
                self.respond(kind, config, &mut out);
            }
        }
        out
    }

    fn respond(&mut self, kind: TypeKind, config: &ProxyConfig, out: &mut Output<DeltaDiscoveryResponse>) {
        let state = self
            .types
            .get_mut(&kind)
            .expect("respond is only called for subscribed types");
        let mut resources = Vec::new();
        let mut current = BTreeSet::new();
        let wanted: Box<dyn Iterator<Item = &std::sync::Arc<osm_xds::Resource>>> = if state.wildcard {
            Box::new(config.iter(kind))
        } else {
            Box::new(state.names.iter().filter_map(|n| config.get(kind, n)))
        };
        for r in wanted {
            current.insert(r.name.clone());
            if state.known.get(&r.name) == Some(&r.version) || state.refused.get(&r.name) == Some(&r.version)
            {
                continue;
            }
            resources.push(r.clone());
        }
        let removed: Vec<String> = state
            .known
            .keys()
            .filter(|n| !current.contains(*n))
            .cloned()
            .collect();
        if resources.is_empty() && removed.is_empty() {
            return;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        for n in &removed {
            state.known.remove(n);
            state.refused.remove(n);
        }
        let carried: Vec<(String, String)> = resources
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        for (name, version) in &carried {
            state.known.insert(name.clone(), version.clone());
            // A refusal concerns the version refused; once another one went out, it no longer applies.
            state.refused.remove(name);
        }
        state.in_flight.insert(nonce.clone(), carried);
        out.events.push(AdsEvent::Sent {
            proxy: self.proxy.clone(),
            kind,
            version: nonce.clone(),
            resources: resources.len(),
        });
        out.responses.push(DeltaDiscoveryResponse {
            system_version_info: String::new(),
            resources: resources
                .iter()
                .map(|r| DeltaResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: kind.type_url().to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        });
    }
}
