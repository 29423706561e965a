//! State-of-the-world ADS: per type, the subscribed names, the last version sent (and its nonce), and
//! the last version the proxy refused. A pure state machine: requests and config changes in, responses
//! out; the stream task in `server` only moves messages.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use osm_xds::{ProxyConfig, Resource, TypeKind};

use crate::cache::AdsEvent;

#[derive(Default)]
struct TypeState {
    /// Every resource of the type (LDS/CDS without names, or an explicit `*`); `names` is then empty.
    wildcard: bool,
    /// The names the proxy asked for when not `wildcard`. Empty means none (an EDS/RDS/SDS request
    /// without names unsubscribes from everything; it is not a wildcard).
    names: BTreeSet<String>,
    subscribed: bool,
    sent_version: Option<String>,
    sent_nonce: String,
    nacked_version: Option<String>,
}

pub struct SotwStream {
    proxy: String,
    types: HashMap<TypeKind, TypeState>,
    nonce: u64,
}

/// What one request produced: responses to send and events to record.
#[derive(Default)]
pub struct Output<R> {
    pub responses: Vec<R>,
    pub events: Vec<AdsEvent>,
}

impl SotwStream {
    pub fn new(proxy: impl Into<String>) -> Self {
        Self {
            proxy: proxy.into(),
            types: HashMap::new(),
            nonce: 0,
        }
    }

    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        config: Option<&ProxyConfig>,
    ) -> Output<DiscoveryResponse> {
        let mut out = Output::default();
        let Some(kind) = TypeKind::from_type_url(&req.type_url) else {
            tracing::debug!(proxy = %self.proxy, type_url = %req.type_url, "ignoring unknown type");
            return out;
        };
        let state = self.types.entry(kind).or_default();
        if !req.response_nonce.is_empty() {
            if req.response_nonce != state.sent_nonce {
                // A reply to a response we already superseded: the newer one is on its way.
                return out;
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
        let names: BTreeSet<String> = if wildcard {
            BTreeSet::new()
        } else {
            req.resource_names.iter().cloned().collect()
        };
        let resubscribed = !state.subscribed || wildcard != state.wildcard || names != state.names;
        state.subscribed = true;
        state.wildcard = wildcard;
        state.names = names;
        if resubscribed {
            // New names: the old version string no longer describes what the proxy holds.
            state.sent_version = None;
        }
        if let Some(config) = config {
            self.respond(kind, config, &mut out);
        }
        out
    }

    pub fn on_config(&mut self, config: &ProxyConfig) -> Output<DiscoveryResponse> {
        let mut out = Output::default();
        for kind in TypeKind::ALL {
            if self.types.get(&kind).is_some_and(|s| s.subscribed) {
                self.respond(kind, config, &mut out);
            }
        }
        out
    }

    fn respond(&mut self, kind: TypeKind, config: &ProxyConfig, out: &mut Output<DiscoveryResponse>) {
        let state = self
            .types
            .get_mut(&kind)
            .expect("respond is only called for subscribed types");
        let resources: Vec<&Arc<Resource>> = if state.wildcard {
            config.iter(kind).collect()
        } else {
            state.names.iter().filter_map(|n| config.get(kind, n)).collect()
        };
        // Named resources we do not have yet (or no names at all): wait rather than send an empty
        // answer; the config will catch up. A wildcard answer may be empty: it removes everything.
        if !state.wildcard && resources.is_empty() {
            return;
        }
        let version = version_of(&resources);
        if state.sent_version.as_deref() == Some(&version)
            || state.nacked_version.as_deref() == Some(&version)
        {
            return;
        }
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
            resources: resources.len(),
        });
        out.responses.push(DiscoveryResponse {
            version_info: version,
            resources: resources.iter().map(|r| r.body.clone()).collect(),
            type_url: kind.type_url().to_string(),
            nonce: state.sent_nonce.clone(),
            ..Default::default()
        });
    }
}

/// The version of a set of resources: a hash of their names and versions.
fn version_of(resources: &[&Arc<Resource>]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    for r in resources {
        r.name.hash(&mut h);
        r.version.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}
