//! The snapshot cache: the latest `ProxyConfig` of every proxy, one `watch` channel each. The
//! controller writes; each ADS stream reads its own proxy's channel and wakes only when that proxy's
//! config really changed (same shared sets → no wake-up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use osm_xds::{ProxyConfig, TypeKind};
use tokio::sync::{broadcast, watch};

/// What streams report, for tests, metrics and `osm proxy` debugging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdsEvent {
    Connected {
        proxy: String,
    },
    Disconnected {
        proxy: String,
    },
    Sent {
        proxy: String,
        kind: TypeKind,
        version: String,
        resources: usize,
    },
    Acked {
        proxy: String,
        kind: TypeKind,
        version: String,
    },
    Nacked {
        proxy: String,
        kind: TypeKind,
        version: String,
        error: String,
    },
    Refused {
        reason: String,
    },
}

/// Per-proxy view of the last ACK and NACK, per type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStatus {
    pub connected: bool,
    /// The config generation the proxy's stream has handled last (see `SnapshotCache::in_sync`).
    pub handled_generation: u64,
    pub sent: HashMap<TypeKind, String>,
    pub acked: HashMap<TypeKind, String>,
    pub nacks: u64,
    pub last_nack: Option<String>,
}

/// A proxy's config with a per-proxy generation number that counts changes.
#[derive(Clone)]
pub(crate) struct Versioned {
    pub generation: u64,
    pub config: Arc<ProxyConfig>,
}

type Slot = watch::Sender<Option<Versioned>>;

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    status: HashMap<String, ProxyStatus>,
}

/// Shared between the controller (writer) and the ADS server (readers).
#[derive(Clone)]
pub struct SnapshotCache {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<AdsEvent>,
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotCache {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            events: broadcast::channel(4096).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps half-updated; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a proxy's config. Returns false (and wakes nobody) when it is made of the same sets.
    pub fn set(&self, proxy: &str, config: ProxyConfig) -> bool {
        let mut inner = self.lock();
        let slot = inner
            .slots
            .entry(proxy.to_string())
            .or_insert_with(|| watch::channel(None).0);
        slot.send_if_modified(|current| match current {
            Some(old) if old.config.same_sets(&config) => false,
            _ => {
                let generation = current.as_ref().map_or(1, |c| c.generation + 1);
                *current = Some(Versioned {
                    generation,
                    config: Arc::new(config),
                });
                true
            }
        })
    }

    /// Forgets a proxy (its pod is gone). Open streams see the channel close and end.
    pub fn remove(&self, proxy: &str) {
        let mut inner = self.lock();
        inner.slots.remove(proxy);
        inner.status.remove(proxy);
    }

    /// Proxies that currently have a config.
    pub fn proxies(&self) -> Vec<String> {
        self.lock().slots.keys().cloned().collect()
    }

    pub fn get(&self, proxy: &str) -> Option<Arc<ProxyConfig>> {
        self.lock()
            .slots
            .get(proxy)
            .and_then(|s| s.borrow().as_ref().map(|v| v.config.clone()))
    }

    /// True when the proxy's stream has handled its latest config and the proxy ACKed every type it
    /// was sent: what a test or `osm proxy` waits for after a change.
    pub fn in_sync(&self, proxy: &str) -> bool {
        let inner = self.lock();
        let Some(current) = inner
            .slots
            .get(proxy)
            .and_then(|s| s.borrow().as_ref().map(|v| v.generation))
        else {
            return false;
        };
        inner.status.get(proxy).is_some_and(|s| {
            s.connected
                && s.handled_generation == current
                && s.sent.iter().all(|(k, v)| s.acked.get(k) == Some(v))
        })
    }

    pub(crate) fn handled(&self, proxy: &str, generation: u64) {
        let mut inner = self.lock();
        inner
            .status
            .entry(proxy.to_string())
            .or_default()
            .handled_generation = generation;
    }

    pub(crate) fn subscribe(&self, proxy: &str) -> watch::Receiver<Option<Versioned>> {
        let mut inner = self.lock();
        inner
            .slots
            .entry(proxy.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    pub fn events(&self) -> broadcast::Receiver<AdsEvent> {
        self.events.subscribe()
    }

    pub fn status(&self, proxy: &str) -> Option<ProxyStatus> {
        self.lock().status.get(proxy).cloned()
    }

    pub(crate) fn record(&self, event: AdsEvent) {
        {
            let mut inner = self.lock();
            match &event {
                AdsEvent::Connected { proxy } => {
                    inner.status.entry(proxy.clone()).or_default().connected = true
                }
                AdsEvent::Disconnected { proxy } => {
                    if let Some(s) = inner.status.get_mut(proxy) {
                        s.connected = false;
                    }
                }
                AdsEvent::Acked { proxy, kind, version } => {
                    inner
                        .status
                        .entry(proxy.clone())
                        .or_default()
                        .acked
                        .insert(*kind, version.clone());
                }
                AdsEvent::Nacked { proxy, error, .. } => {
                    let s = inner.status.entry(proxy.clone()).or_default();
                    s.nacks += 1;
                    s.last_nack = Some(error.clone());
                }
                AdsEvent::Sent {
                    proxy, kind, version, ..
                } => {
                    inner
                        .status
                        .entry(proxy.clone())
                        .or_default()
                        .sent
                        .insert(*kind, version.clone());
                }
                AdsEvent::Refused { .. } => {}
            }
        }
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }
}
