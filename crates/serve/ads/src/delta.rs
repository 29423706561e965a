//! Incremental (delta) ADS: per type, what the proxy subscribed to and the version of every resource it
//! holds; a change sends only resources whose version differs, and the names that went away.
//!
//! Per type it also remembers the sets it last computed against. A request that changes no
//! subscription costs nothing when the config is still those sets, and a new config is compared set by
//! set: only names from sets that differ are looked at (see `sets::candidates`).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use osm_xds::{PerType, ProxyConfig, Resource, ResourceSet, TypeKind};

use crate::cache::AdsEvent;
use crate::sets::{Names, Transitions, intern_names};
use crate::sotw::Output;
use crate::wire::{self, Encoded, Part};

/// A config's sets as one stream keeps them (see `DeltaStream::sets`).
type Sets = Arc<[Arc<ResourceSet>]>;

/// What the proxy holds of one type.
///
/// Usually exactly the wanted resources of the sets last computed, which `Sets` says in O(sets) memory:
/// 2000 proxies holding 2000 shared resources each would otherwise keep four million name/version
/// pairs. Whatever that cannot say (declared versions on reconnect, refused versions, a re-subscribed
/// name the proxy dropped) switches to an explicit `Map`, until a response brings the proxy back in line.
enum Known {
    Sets(Sets),
    /// Name → version the proxy holds ("" for an unknown version).
    Map(HashMap<String, String>),
}

impl Default for Known {
    fn default() -> Self {
        Known::Map(HashMap::new())
    }
}

#[derive(Default)]
struct TypeState {
    subscribed: bool,
    wildcard: bool,
    names: Names,
    /// What the proxy holds (as far as we know).
    known: Known,
    /// Nonce → the resources it carried, until acknowledged.
    in_flight: HashMap<String, Vec<Arc<Resource>>>,
    /// Name → version the proxy refused: not re-sent until it changes.
    refused: HashMap<String, String>,
    /// The sets `known` was last brought up to date with: for every wanted name in them, `known` (or
    /// `refused`) holds its version, and `known` holds no other name. `None` after a subscription
    /// change, which calls for a walk over everything.
    computed: Option<Sets>,
}

impl TypeState {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// The version of `name` the proxy holds.
    fn held(&self, kind: TypeKind, name: &str) -> Option<&str> {
        match &self.known {
            Known::Map(map) => map.get(name).map(String::as_str),
            Known::Sets(sets) => self
                .wants(name)
                .then(|| sets.iter().find_map(|s| s.get(kind, name)))
                .flatten()
                .map(|r| r.version.as_str()),
        }
    }

    /// Whether the proxy holds (or refused) this very version.
    fn has(&self, r: &Resource) -> bool {
        self.held(r.kind, &r.name) == Some(r.version.as_str())
            || self.refused.get(&r.name) == Some(&r.version)
    }

    /// `known` as an explicit map, to be edited name by name.
    fn known_map(&mut self, kind: TypeKind) -> &mut HashMap<String, String> {
        if let Known::Sets(sets) = &self.known {
            let map = sets
                .iter()
                .flat_map(|s| s.of_kind(kind).iter())
                .filter(|(n, _)| self.wants(n))
                .map(|(n, r)| (n.clone(), r.version.clone()))
                .collect();
            self.known = Known::Map(map);
        }
        match &mut self.known {
            Known::Map(map) => map,
            Known::Sets(_) => unreachable!("replaced above"),
        }
    }

    /// Names the proxy holds that are not (wanted and) in `config`.
    fn gone(&self, kind: TypeKind, config: &ProxyConfig) -> Vec<String> {
        let stays = |n: &str| self.wants(n) && config.get(kind, n).is_some();
        match &self.known {
            Known::Map(map) => map.keys().filter(|n| !stays(n)).cloned().collect(),
            Known::Sets(sets) => sets
                .iter()
                .flat_map(|s| s.of_kind(kind).keys())
                .filter(|n| self.wants(n) && !stays(n))
                .cloned()
                .collect(),
        }
    }
}

pub struct DeltaStream {
    proxy: String,
    types: PerType<TypeState>,
    /// The sets of the config last responded to, which every type's `computed` and `known` share: a
    /// new config changes one reference count per stream. Cloning the config's own `Arc`s per type
    /// changed the counts of sets every proxy shares, and those cache lines bounced between the cores
    /// serving 2000 streams.
    sets: Option<Sets>,
    nonce: u64,
}

impl DeltaStream {
    pub fn new(proxy: impl Into<String>) -> Self {
        Self {
            proxy: proxy.into(),
            types: PerType::default(),
            sets: None,
            nonce: 0,
        }
    }

    /// `config`'s sets as this stream's shared `Sets`: the ones it already holds when they are the same.
    fn sets_of(&mut self, config: &ProxyConfig) -> Sets {
        match &self.sets {
            Some(held) if config.made_of(held) => held.clone(),
            _ => {
                let sets: Sets = config.sets.as_slice().into();
                self.sets = Some(sets.clone());
                sets
            }
        }
    }

    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        config: Option<&ProxyConfig>,
    ) -> Output<Encoded<DeltaDiscoveryResponse>> {
        let mut out = Output::default();
        if let Some(kind) = TypeKind::from_type_url(&req.type_url) {
            self.handle(kind, req, &mut out);
        }
        // Also the other types: the stream task marks the config seen when it hands it to a request,
        // so a change that arrived meanwhile is sent now or not until the next one.
        if let Some(config) = config {
            self.respond_all(config, &mut out);
        }
        out
    }

    /// Records an ACK or NACK and applies subscription changes.
    fn handle(
        &mut self,
        kind: TypeKind,
        req: &DeltaDiscoveryRequest,
        out: &mut Output<Encoded<DeltaDiscoveryResponse>>,
    ) {
        tracing::debug!(
            proxy = %self.proxy,
            r#type = kind.short(),
            nonce = %req.response_nonce,
            subscribe = req.resource_names_subscribe.len(),
            unsubscribe = req.resource_names_unsubscribe.len(),
            "request"
        );
        let state = &mut self.types[kind];
        if !req.response_nonce.is_empty() {
            let carried = state.in_flight.remove(&req.response_nonce).unwrap_or_default();
            match &req.error_detail {
                Some(status) => {
                    tracing::warn!(proxy = %self.proxy, r#type = kind.short(), error = %status.message, "proxy rejected config (NACK)");
                    for r in carried {
                        // A later response already superseded this version: nothing to remember.
                        if state.held(kind, &r.name) != Some(r.version.as_str()) {
                            continue;
                        }
                        // The proxy may hold an older version, or none: keep the name with a version
                        // matching nothing, so its removal is still announced if it goes away.
                        state.known_map(kind).insert(r.name.clone(), String::new());
                        state.refused.insert(r.name.clone(), r.version.clone());
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
        let moved = !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty();
        if first {
            state.subscribed = true;
            // LDS and CDS are wildcard unless the proxy names resources; "*" is an explicit wildcard.
            state.wildcard = matches!(kind, TypeKind::Listener | TypeKind::Cluster)
                && req.resource_names_subscribe.iter().all(|n| n == "*");
            state.known = Known::Map(req.initial_resource_versions.clone().into_iter().collect());
        } else if moved {
            // `Known::Sets` is read through `wants`: pin it down as a map before the subscription moves.
            state.known_map(kind);
        }
        let mut names = if moved { Some((*state.names).clone()) } else { None };
        for name in &req.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else {
                names.as_mut().expect("moved").insert(name.clone());
                // Subscribing to a name means "send it", even if we think it is known: the proxy may
                // have dropped it. Not so for a name whose version the same first request declares
                // (Envoy lists every name in both on reconnect); that is what the map is for.
                if !(first && req.initial_resource_versions.contains_key(name)) {
                    state.known_map(kind).remove(name);
                }
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            }
            names.as_mut().expect("moved").remove(name);
            state.known_map(kind).remove(name);
        }
        if let Some(names) = names {
            state.names = intern_names(names);
        }
        if first || moved {
            state.computed = None;
        }
    }

    pub fn on_config(&mut self, config: &ProxyConfig) -> Output<Encoded<DeltaDiscoveryResponse>> {
        let mut out = Output::default();
        self.respond_all(config, &mut out);
        out
    }

    fn respond_all(&mut self, config: &ProxyConfig, out: &mut Output<Encoded<DeltaDiscoveryResponse>>) {
        let sets = self.sets_of(config);
        let mut seen = Transitions::default();
        for kind in TypeKind::ALL {
            if self.types[kind].subscribed {
                self.respond(kind, config, &sets, &mut seen, out);
            }
        }
    }

    fn respond(
        &mut self,
        kind: TypeKind,
        config: &ProxyConfig,
        sets: &Sets,
        seen: &mut Transitions,
        out: &mut Output<Encoded<DeltaDiscoveryResponse>>,
    ) {
        let state = &mut self.types[kind];
        let mut parts: Vec<Part<'_>> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        match &state.computed {
            // Nothing changed since `known` was brought up to date. Every subscribed type's `computed`
            // is the stream's `sets` of the config last handled, and `sets_of` keeps that `Arc` while
            // the config is made of the same sets: identity says it.
            Some(old) if Arc::ptr_eq(old, sets) => return,
            Some(old) => {
                // Only names from sets that differ can have changed.
                for name in crate::sets::candidates(old, sets, kind, seen) {
                    match config.get(kind, &name).filter(|_| state.wants(&name)) {
                        Some(r) if state.has(r) => {}
                        Some(r) => parts.push(Part::One(r)),
                        None if state.held(kind, &name).is_some() => removed.push(name),
                        None => {}
                    }
                }
            }
            None => {
                for set in &config.sets {
                    let of_kind = set.of_kind(kind);
                    let missing: Vec<&Arc<Resource>> = of_kind
                        .values()
                        .filter(|r| state.wants(&r.name) && !state.has(r))
                        .collect();
                    if !missing.is_empty() && missing.len() == of_kind.len() {
                        parts.push(Part::Whole(set));
                    } else {
                        parts.extend(missing.into_iter().map(Part::One));
                    }
                }
                removed = state.gone(kind, config);
            }
        }
        state.computed = Some(sets.clone());
        let mut carried: Vec<Arc<Resource>> = Vec::new();
        for p in &parts {
            p.for_each(kind, |r| carried.push(r.clone()));
        }
        for n in &removed {
            state.refused.remove(n);
        }
        for r in &carried {
            // A refusal concerns the version refused; once another one went out, it no longer applies.
            state.refused.remove(&r.name);
        }
        if state.refused.is_empty() {
            // The proxy now holds exactly the wanted resources of `config` (or will, once this response
            // arrives): say so in O(sets).
            state.known = Known::Sets(sets.clone());
        } else {
            let map = state.known_map(kind);
            for n in &removed {
                map.remove(n);
            }
            for r in &carried {
                map.insert(r.name.clone(), r.version.clone());
            }
        }
        if parts.is_empty() && removed.is_empty() {
            return;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        out.events.push(AdsEvent::Sent {
            proxy: self.proxy.clone(),
            kind,
            version: nonce.clone(),
            resources: carried.len(),
        });
        out.responses
            .push(wire::delta_response(kind, &nonce, &parts, removed));
        state.in_flight.insert(nonce, carried.clone());
        if kind == TypeKind::Cluster {
            // A changed cluster is a new cluster to Envoy: it warms until endpoints arrive for it, and
            // would otherwise wait out the initial fetch timeout (15 s) with the old one serving.
            // Endpoints come after clusters in `TypeKind::ALL`, so this pass sends them again.
            let endpoints = &mut self.types[TypeKind::Endpoint];
            if endpoints.subscribed {
                let held = endpoints.known_map(TypeKind::Endpoint);
                for r in &carried {
                    held.remove(&r.name);
                }
                endpoints.computed = None;
            }
        }
    }
}
