//! State-of-the-world ADS: per type, the subscribed names, the last version sent (and its nonce), and
//! the last version the proxy refused. A pure state machine: requests and config changes in, responses
//! out; the stream task in `server` only moves messages.
//!
//! A type's version is a digest of its resources, summed from per-set digests that are computed once
//! per shared set (`sets::set_digest`), and recomputed only when the config's sets or the subscription
//! changed: a plain ACK costs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use osm_xds::{PerType, ProxyConfig, Resource, ResourceSet, TypeKind};

use crate::cache::AdsEvent;
use crate::sets::{Digest, Names, Transitions, candidates, intern_names, set_digest};
use crate::wire::{self, Encoded, Part};

#[derive(Default)]
struct TypeState {
    /// Every resource of the type (LDS/CDS without names, or an explicit `*`); `names` is then empty.
    wildcard: bool,
    /// The names the proxy asked for when not `wildcard`. Empty means none (an EDS/RDS/SDS request
    /// without names unsubscribes from everything; it is not a wildcard).
    names: Names,
    subscribed: bool,
    sent_version: Option<String>,
    sent_nonce: String,
    nacked_version: Option<String>,
    /// The sets the type was last answered from (`None` after a subscription change): until the
    /// config is other sets, answering again would come to the same result.
    computed: Option<Vec<Arc<ResourceSet>>>,
    /// For named subscriptions, the digest of the subscribed resources in each set of `computed`.
    named_digests: Vec<(Arc<ResourceSet>, Digest)>,
}

impl TypeState {
    /// Calls `f` for each resource of `of_kind` (one set's resources of a type) the proxy subscribed to
    /// by name, walking whichever of the two is smaller.
    fn named_in<'s>(&self, of_kind: &'s BTreeMap<String, Arc<Resource>>, f: impl FnMut(&'s Arc<Resource>)) {
        if self.names.len() <= of_kind.len() {
            self.names.iter().filter_map(|n| of_kind.get(n)).for_each(f);
        } else {
            of_kind
                .values()
                .filter(|r| self.names.contains(&r.name))
                .for_each(f);
        }
    }

    /// The digest of what the proxy would be sent from `config`.
    fn digest(&mut self, kind: TypeKind, config: &ProxyConfig) -> Digest {
        let mut total = Digest::default();
        if self.wildcard {
            for set in &config.sets {
                total.merge(set_digest(set, kind));
            }
            return total;
        }
        let mut digests = Vec::with_capacity(config.sets.len());
        for set in &config.sets {
            let d = match self.named_digests.iter().find(|(s, _)| Arc::ptr_eq(s, set)) {
                Some((_, d)) => *d,
                None => {
                    let mut d = Digest::default();
                    self.named_in(set.of_kind(kind), |r| d.add(r));
                    d
                }
            };
            total.merge(d);
            digests.push((set.clone(), d));
        }
        self.named_digests = digests;
        total
    }
}

pub struct SotwStream {
    proxy: String,
    types: PerType<TypeState>,
    nonce: u64,
}

/// What one request produced: responses to send and events to record.
pub struct Output<R> {
    pub responses: Vec<R>,
    pub events: Vec<AdsEvent>,
}

impl<R> Default for Output<R> {
    fn default() -> Self {
        Self {
            responses: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl SotwStream {
    pub fn new(proxy: impl Into<String>) -> Self {
        Self {
            proxy: proxy.into(),
            types: PerType::default(),
            nonce: 0,
        }
    }

    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        config: Option<&ProxyConfig>,
    ) -> Output<Encoded<DiscoveryResponse>> {
        let mut out = Output::default();
        match TypeKind::from_type_url(&req.type_url) {
            Some(kind) => self.handle(kind, req, &mut out),
            None => tracing::debug!(proxy = %self.proxy, type_url = %req.type_url, "ignoring unknown type"),
        }
        // Also the other types: the stream task marks the config seen when it hands it to a request,
        // so a change that arrived meanwhile is sent now or not until the next one.
        if let Some(config) = config {
            self.respond_all(config, &mut out);
        }
        out
    }

    /// Records an ACK or NACK and applies a subscription change.
    fn handle(
        &mut self,
        kind: TypeKind,
        req: &DiscoveryRequest,
        out: &mut Output<Encoded<DiscoveryResponse>>,
    ) {
        tracing::debug!(
            proxy = %self.proxy,
            r#type = kind.short(),
            version = %req.version_info,
            nonce = %req.response_nonce,
            names = req.resource_names.len(),
            "request"
        );
        let state = &mut self.types[kind];
        if !req.response_nonce.is_empty() {
            if req.response_nonce != state.sent_nonce {
                // A reply to a response we already superseded: the newer one is on its way.
                return;
            }
            match &req.error_detail {
                Some(status) => {
                    let version = state.sent_version.clone().unwrap_or_default();
                    tracing::warn!(proxy = %self.proxy, r#type = kind.short(), %version, error = %status.message, "proxy rejected config (NACK)");
                    state.nacked_version = Some(version.clone());
                    out.events.push(AdsEvent::Nacked {
                        proxy: self.proxy.clone(),
                        kind,
                        version,
                        error: status.message.clone(),
                    });
                }
                None => out.events.push(AdsEvent::Acked {
                    proxy: self.proxy.clone(),
                    kind,
                    version: req.version_info.clone(),
                }),
            }
        }
        // LDS and CDS without names are the legacy wildcard; `*` asks for everything of any type.
        let wildcard = req.resource_names.iter().any(|n| n == "*")
            || (req.resource_names.is_empty() && matches!(kind, TypeKind::Listener | TypeKind::Cluster));
        // Compared without copying: an ACK repeats every name it is subscribed to.
        let same_names = if wildcard {
            state.names.is_empty()
        } else {
            let names: BTreeSet<&str> = req.resource_names.iter().map(String::as_str).collect();
            names.into_iter().eq(state.names.iter().map(String::as_str))
        };
        let resubscribed = !state.subscribed || wildcard != state.wildcard || !same_names;
        state.subscribed = true;
        state.wildcard = wildcard;
        if resubscribed {
            state.names = intern_names(if wildcard {
                BTreeSet::new()
            } else {
                req.resource_names.iter().cloned().collect()
            });
            // New names: the old version string no longer describes what the proxy holds.
            state.sent_version = None;
            state.computed = None;
            state.named_digests.clear();
        }
    }

    pub fn on_config(&mut self, config: &ProxyConfig) -> Output<Encoded<DiscoveryResponse>> {
        let mut out = Output::default();
        self.respond_all(config, &mut out);
        out
    }

    fn respond_all(&mut self, config: &ProxyConfig, out: &mut Output<Encoded<DiscoveryResponse>>) {
        for kind in TypeKind::ALL {
            if self.types[kind].subscribed {
                self.respond(kind, config, out);
            }
        }
    }

    fn respond(
        &mut self,
        kind: TypeKind,
        config: &ProxyConfig,
        out: &mut Output<Encoded<DiscoveryResponse>>,
    ) {
        let state = &mut self.types[kind];
        if state.computed.as_ref().is_some_and(|old| config.made_of(old)) {
            return;
        }
        let previous = state.computed.replace(config.sets.clone());
        let digest = state.digest(kind, config);
        // Named resources we do not have yet (or no names at all): wait rather than send an empty
        // answer; the config will catch up. A wildcard answer may be empty: it removes everything.
        if !state.wildcard && digest.is_empty() {
            return;
        }
        let version = digest.version();
        if state.sent_version.as_deref() == Some(&version)
            || state.nacked_version.as_deref() == Some(&version)
        {
            return;
        }
        // Whole sets where the proxy gets all of a set (shared blocks on the wire), else by name.
        let mut parts: Vec<Part<'_>> = Vec::new();
        for set in &config.sets {
            let of_kind = set.of_kind(kind);
            if of_kind.is_empty() {
                continue;
            }
            if state.wildcard || of_kind.keys().all(|n| state.names.contains(n)) {
                parts.push(Part::Whole(set));
            } else {
                state.named_in(of_kind, |r| parts.push(Part::One(r)));
            }
        }
        let count: usize = parts.iter().map(|p| p.count(kind)).sum();
        self.nonce += 1;
        state.sent_nonce = self.nonce.to_string();
        state.sent_version = Some(version.clone());
        // The refusal was about an older version; should the config come back to it, send it again so
        // the proxy's state (and its NACK) stays visible rather than silently stale.
        state.nacked_version = None;
        out.events.push(AdsEvent::Sent {
            proxy: self.proxy.clone(),
            kind,
            version: version.clone(),
            resources: count,
        });
        out.responses
            .push(wire::sotw_response(&version, kind, &state.sent_nonce, &parts));
        if kind == TypeKind::Cluster
            && let Some(old) = previous
        {
            // A changed cluster is a new cluster to Envoy: it warms until endpoints arrive for it,
            // and an unchanged EDS version would leave it waiting out the initial fetch timeout
            // (15 s) with the old cluster serving. Endpoints come after clusters in `TypeKind::ALL`,
            // so this pass sends them again.
            let changed: Vec<String> = candidates(&old, &config.sets, kind, &mut Transitions::default())
                .into_iter()
                .filter(|name| {
                    let before = old.iter().find_map(|s| s.get(kind, name));
                    matches!((before, config.get(kind, name)), (Some(b), Some(a)) if b.version != a.version)
                })
                .collect();
            let endpoints = &mut self.types[TypeKind::Endpoint];
            if changed
                .iter()
                .any(|n| endpoints.wildcard || endpoints.names.contains(n))
            {
                endpoints.sent_version = None;
                endpoints.computed = None;
            }
        }
    }
}
