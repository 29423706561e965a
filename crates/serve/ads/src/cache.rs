//! The snapshot cache: the latest `ProxyConfig` of every proxy, one `watch` channel each. The
//! controller writes; each ADS stream reads its own proxy's channel and wakes only when that proxy's
//! config really changed (same shared sets → no wake-up).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use osm_xds::{PerType, ProxyConfig, TypeKind};
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

/// The proxy's stream has handled config `generation` and the proxy ACKed everything sent for it
/// (`SnapshotCache::in_sync` became true); announced once per generation and stream, on a channel of
/// its own (`SnapshotCache::synced`): a waiter for many proxies then reads one event per proxy, not
/// the three per proxy and change of `AdsEvent`s, and does not lose them behind those.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    pub proxy: String,
    pub generation: u64,
}

/// Per-proxy view of the last ACK and NACK, per type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStatus {
    /// At least one ADS stream of the proxy is open.
    pub connected: bool,
    /// The config generation the proxy's stream has handled last (see `SnapshotCache::in_sync`).
    pub handled_generation: u64,
    /// The generation a `Synced` event was last sent for (0: none on this stream).
    pub synced_generation: u64,
    /// Last version (SotW) or nonce (delta) sent per type on the newest stream.
    pub sent: PerType<Option<String>>,
    /// Last version (SotW) or nonce (delta) the proxy ACKed per type on the newest stream.
    pub acked: PerType<Option<String>>,
    /// NACKs over the proxy's lifetime in the cache, and the latest one's message.
    pub nacks: u64,
    pub last_nack: Option<String>,
}

/// Running totals of what the streams did, for metrics. Counted as each turn is recorded, so they
/// are exact whether anyone listens to the events or not (a lagging event subscriber loses events).
#[derive(Debug, Default)]
struct Counters {
    sent: PerType<AtomicU64>,
    acked: PerType<AtomicU64>,
    nacked: PerType<AtomicU64>,
    refused: AtomicU64,
}

/// A copy of the running totals (`SnapshotCache::totals`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdsTotals {
    /// Responses sent, per type.
    pub sent: PerType<u64>,
    /// Responses ACKed, per type.
    pub acked: PerType<u64>,
    /// Responses NACKed, per type.
    pub nacked: PerType<u64>,
    /// Streams refused (unauthenticated or mismatched proxy).
    pub refused: u64,
}

impl Counters {
    fn count(&self, event: &AdsEvent) {
        let one = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match event {
            AdsEvent::Sent { kind, .. } => one(&self.sent[*kind]),
            AdsEvent::Acked { kind, .. } => one(&self.acked[*kind]),
            AdsEvent::Nacked { kind, .. } => one(&self.nacked[*kind]),
            AdsEvent::Refused { .. } => one(&self.refused),
            AdsEvent::Connected { .. } | AdsEvent::Disconnected { .. } => {}
        }
    }

    fn totals(&self) -> AdsTotals {
        let mut t = AdsTotals {
            refused: self.refused.load(Ordering::Relaxed),
            ..Default::default()
        };
        for kind in TypeKind::ALL {
            t.sent[kind] = self.sent[kind].load(Ordering::Relaxed);
            t.acked[kind] = self.acked[kind].load(Ordering::Relaxed);
            t.nacked[kind] = self.nacked[kind].load(Ordering::Relaxed);
        }
        t
    }
}

/// A proxy's config with a per-proxy generation number that counts changes.
#[derive(Clone)]
pub(crate) struct Versioned {
    pub generation: u64,
    pub config: Arc<ProxyConfig>,
}

type Slot = watch::Sender<Option<Versioned>>;

/// A proxy's status behind its own lock. A stream holds its proxy's and records each turn there,
/// without the cache-wide lock or a lookup by name: 2000 streams taking one lock per turn, with a
/// hash and cold map entries each time, cost ~10 % of the controller's CPU during churn.
pub(crate) type StatusCell = Arc<Mutex<ProxyStatus>>;

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    status: HashMap<String, StatusCell>,
    /// Open streams per proxy: a reconnecting Envoy may open the new stream before the old one ends.
    streams: HashMap<String, usize>,
}

impl ProxyStatus {
    fn is_in_sync(&self, current: u64) -> bool {
        self.connected
            && self.handled_generation == current
            && self
                .sent
                .iter()
                .all(|(k, sent)| sent.is_none() || self.acked[k] == *sent)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps half-updated; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn in_sync(&self, proxy: &str) -> bool {
        self.generation(proxy).is_some_and(|current| {
            self.status
                .get(proxy)
                .is_some_and(|s| lock(s).is_in_sync(current))
        })
    }

    /// The proxy's status cell, created on first use; looked up without allocating a key when it exists.
    fn status_cell(&mut self, proxy: &str) -> &StatusCell {
        if !self.status.contains_key(proxy) {
            self.status.insert(proxy.to_string(), StatusCell::default());
        }
        &self.status[proxy]
    }

    fn generation(&self, proxy: &str) -> Option<u64> {
        self.slots
            .get(proxy)
            .and_then(|s| s.borrow().as_ref().map(|v| v.generation))
    }
}

/// Shared between the controller (writer) and the ADS server (readers).
#[derive(Clone)]
pub struct SnapshotCache {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<AdsEvent>,
    synced: broadcast::Sender<Synced>,
    counters: Arc<Counters>,
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
            synced: broadcast::channel(4096).0,
            counters: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Publishes a proxy's config. Returns false (and wakes nobody) when it is made of the same sets.
    pub fn set(&self, proxy: &str, config: ProxyConfig) -> bool {
        let mut inner = self.lock();
        // Most calls update an existing slot: look it up without allocating a key.
        if !inner.slots.contains_key(proxy) {
            inner.slots.insert(proxy.to_string(), watch::channel(None).0);
        }
        let slot = &inner.slots[proxy];
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

    /// The generation of each proxy's config (counts its changes; `None`: no config), under one lock.
    /// `Synced` events name the generation they are for.
    pub fn generation_each(&self, proxies: &[&str]) -> Vec<Option<u64>> {
        let inner = self.lock();
        proxies.iter().map(|p| inner.generation(p)).collect()
    }

    /// True when the proxy's stream has handled its latest config and the proxy ACKed every type it
    /// was sent: what a test or `osm proxy` waits for after a change.
    pub fn in_sync(&self, proxy: &str) -> bool {
        self.lock().in_sync(proxy)
    }

    /// `in_sync` of each proxy, under one lock (for waiting on many proxies at once).
    pub fn in_sync_each(&self, proxies: &[&str]) -> Vec<bool> {
        let inner = self.lock();
        proxies.iter().map(|p| inner.in_sync(p)).collect()
    }

    #[cfg(test)]
    pub(crate) fn handled(&self, proxy: &str, generation: u64) {
        self.turn_for_test(proxy, Vec::new(), Some(generation));
    }

    #[cfg(test)]
    fn turn_for_test(&self, proxy: &str, events: Vec<AdsEvent>, handled: Option<u64>) {
        let (rx, status) = self.subscribe(proxy);
        let latest = rx.borrow().as_ref().map(|v| v.generation);
        self.record_turn(proxy, &status, events, handled, latest);
    }

    /// A stream's view of its proxy: the config channel, and the status cell its turns are recorded in.
    pub(crate) fn subscribe(&self, proxy: &str) -> (watch::Receiver<Option<Versioned>>, StatusCell) {
        let mut inner = self.lock();
        let rx = inner
            .slots
            .entry(proxy.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        (rx, inner.status_cell(proxy).clone())
    }

    pub fn events(&self) -> broadcast::Receiver<AdsEvent> {
        self.events.subscribe()
    }

    /// Responses sent, ACKed and NACKed per type, and streams refused, since the cache was made.
    pub fn totals(&self) -> AdsTotals {
        self.counters.totals()
    }

    /// Proxies getting in sync with a generation of their config (see [`Synced`]).
    pub fn synced(&self) -> broadcast::Receiver<Synced> {
        self.synced.subscribe()
    }

    pub fn status(&self, proxy: &str) -> Option<ProxyStatus> {
        self.lock().status.get(proxy).map(|s| lock(s).clone())
    }

    pub(crate) fn record(&self, event: AdsEvent) {
        // `OSM_LOG=osm_ads=debug` shows each stream's conversation.
        tracing::debug!(?event, "ads");
        self.counters.count(&event);
        apply_event(&mut self.lock(), &event);
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    /// What one turn of a stream produced, recorded in its proxy's status cell: its events, then the
    /// config generation it has handled (`handled`); `latest` is the proxy's newest generation. Events
    /// come first: `in_sync` must never see the generation handled before what was sent for it.
    ///
    /// A turn that may have brought the proxy in sync (it handled a generation, or carried an ACK) is
    /// checked here, where the proxy's status is at hand, and announced with [`Synced`]: waiting for
    /// a change to reach many proxies then means counting those, not polling `in_sync` per proxy.
    pub(crate) fn record_turn(
        &self,
        proxy: &str,
        status: &StatusCell,
        events: Vec<AdsEvent>,
        handled: Option<u64>,
        latest: Option<u64>,
    ) {
        let synced = {
            let mut s = lock(status);
            let mut acked = false;
            for event in &events {
                tracing::debug!(?event, "ads");
                self.counters.count(event);
                acked |= matches!(event, AdsEvent::Acked { .. });
                apply_turn_event(&mut s, event);
            }
            if let Some(generation) = handled {
                s.handled_generation = generation;
            }
            match latest {
                Some(current)
                    if (acked || handled.is_some())
                        && s.is_in_sync(current)
                        && s.synced_generation != current =>
                {
                    s.synced_generation = current;
                    Some(current)
                }
                _ => None,
            }
        };
        // Events are for whoever subscribed (tests, debugging); metrics read the counters. Without a
        // subscriber, sending would only take the channel's lock once per event.
        if self.events.receiver_count() > 0 {
            for event in events {
                let _ = self.events.send(event);
            }
        }
        if let Some(generation) = synced {
            let _ = self.synced.send(Synced {
                proxy: proxy.to_string(),
                generation,
            });
        }
    }
}

/// What a stream's own turns record (`record_turn`).
fn apply_turn_event(s: &mut ProxyStatus, event: &AdsEvent) {
    match event {
        AdsEvent::Acked { kind, version, .. } => {
            s.acked[*kind] = Some(version.clone());
        }
        AdsEvent::Nacked { error, .. } => {
            s.nacks += 1;
            s.last_nack = Some(error.clone());
        }
        AdsEvent::Sent { kind, version, .. } => {
            s.sent[*kind] = Some(version.clone());
        }
        AdsEvent::Connected { .. } | AdsEvent::Disconnected { .. } | AdsEvent::Refused { .. } => {}
    }
}

/// Stream lifecycle events (`record`); a turn's own events go through `apply_turn_event`.
fn apply_event(inner: &mut Inner, event: &AdsEvent) {
    match event {
        AdsEvent::Connected { proxy } => {
            *inner.streams.entry(proxy.clone()).or_default() += 1;
            let mut s = lock(inner.status_cell(proxy));
            s.connected = true;
            // A new stream starts from nothing: versions sent and ACKed on an earlier one (delta
            // nonces restart at 1) must not make it look in sync before it ACKed anything.
            s.sent = PerType::default();
            s.acked = PerType::default();
            s.synced_generation = 0;
        }
        AdsEvent::Disconnected { proxy } => {
            let open = match inner.streams.get_mut(proxy) {
                Some(n) => {
                    *n = n.saturating_sub(1);
                    *n
                }
                None => 0,
            };
            if open == 0 {
                inner.streams.remove(proxy);
            }
            if let Some(s) = inner.status.get(proxy) {
                lock(s).connected = open > 0;
            }
        }
        AdsEvent::Acked { proxy, .. } | AdsEvent::Nacked { proxy, .. } | AdsEvent::Sent { proxy, .. } => {
            apply_turn_event(&mut lock(inner.status_cell(proxy)), event);
        }
        AdsEvent::Refused { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY: &str = "u1.sidecar.bookbuyer.bookbuyer.cluster.local";

    fn connected() -> AdsEvent {
        AdsEvent::Connected { proxy: PROXY.into() }
    }

    fn disconnected() -> AdsEvent {
        AdsEvent::Disconnected { proxy: PROXY.into() }
    }

    fn sent(version: &str) -> AdsEvent {
        AdsEvent::Sent {
            proxy: PROXY.into(),
            kind: TypeKind::Cluster,
            version: version.into(),
            resources: 1,
        }
    }

    fn acked(version: &str) -> AdsEvent {
        AdsEvent::Acked {
            proxy: PROXY.into(),
            kind: TypeKind::Cluster,
            version: version.into(),
        }
    }

    /// A reconnected stream is not in sync on the strength of the previous stream's ACKs (delta
    /// nonces restart at 1, so "sent 1" would match the old "acked 1").
    #[test]
    fn new_stream_is_not_in_sync_until_it_acks() {
        let cache = SnapshotCache::new();
        assert!(cache.set(PROXY, ProxyConfig::default()));
        for e in [connected(), sent("1"), acked("1")] {
            cache.record(e);
        }
        cache.handled(PROXY, 1);
        assert!(cache.in_sync(PROXY));

        cache.record(disconnected());
        assert!(!cache.in_sync(PROXY));
        cache.record(connected());
        cache.record(sent("1"));
        cache.handled(PROXY, 1);
        assert!(!cache.in_sync(PROXY), "the new stream has not ACKed yet");
        cache.record(acked("1"));
        assert!(cache.in_sync(PROXY));
    }

    /// Envoy may open its new stream before the old one is torn down: the old one ending leaves the
    /// proxy connected.
    #[test]
    fn proxy_stays_connected_while_any_stream_is_open() {
        let cache = SnapshotCache::new();
        cache.record(connected());
        cache.record(connected());
        cache.record(disconnected());
        assert!(cache.status(PROXY).expect("a status").connected);
        cache.record(disconnected());
        assert!(!cache.status(PROXY).expect("a status").connected);
        // A stray extra Disconnected does not underflow into "connected".
        cache.record(disconnected());
        cache.record(connected());
        assert!(cache.status(PROXY).expect("a status").connected);
    }

    /// A stream announces once per generation that its proxy got in sync, and only once it is.
    #[test]
    fn synced_is_announced_once_per_generation() {
        let cache = SnapshotCache::new();
        let mut events = cache.synced();
        let mut synced = move || -> Vec<u64> {
            std::iter::from_fn(|| events.try_recv().ok())
                .map(|e| e.generation)
                .collect()
        };
        assert!(cache.set(PROXY, ProxyConfig::default()));
        cache.record(connected());
        cache.turn_for_test(PROXY, vec![sent("1")], Some(1));
        assert_eq!(synced(), Vec::<u64>::new(), "sent, not yet ACKed");
        cache.turn_for_test(PROXY, vec![acked("1")], None);
        cache.turn_for_test(PROXY, vec![acked("1")], None);
        assert_eq!(synced(), vec![1], "once, though ACKed twice");
        assert!(cache.set(
            PROXY,
            ProxyConfig {
                sets: vec![Arc::default()]
            }
        ));
        cache.turn_for_test(PROXY, vec![sent("2")], Some(2));
        cache.turn_for_test(PROXY, vec![acked("2")], None);
        assert_eq!(synced(), vec![2]);
        // A new stream must get in sync again.
        cache.record(connected());
        cache.turn_for_test(PROXY, vec![sent("1")], Some(2));
        assert_eq!(synced(), Vec::<u64>::new());
        cache.turn_for_test(PROXY, vec![acked("1")], None);
        assert_eq!(synced(), vec![2]);
    }

    /// The totals count every turn's events, with or without an event subscriber.
    #[test]
    fn totals_count_without_subscribers() {
        let cache = SnapshotCache::new();
        assert!(cache.set(PROXY, ProxyConfig::default()));
        cache.record(connected());
        cache.turn_for_test(PROXY, vec![sent("1"), sent("2")], Some(1));
        cache.turn_for_test(PROXY, vec![acked("1")], None);
        cache.record(AdsEvent::Refused { reason: "no".into() });
        let t = cache.totals();
        assert_eq!(t.sent[TypeKind::Cluster], 2);
        assert_eq!(t.acked[TypeKind::Cluster], 1);
        assert_eq!(t.sent[TypeKind::Endpoint], 0);
        assert_eq!((t.nacked[TypeKind::Cluster], t.refused), (0, 1));
    }

    /// Republishing the same sets wakes nobody; other sets bump the generation.
    #[test]
    fn set_detects_changes_by_set_identity() {
        let cache = SnapshotCache::new();
        let config = ProxyConfig {
            sets: vec![Arc::default()],
        };
        let (mut rx, _) = cache.subscribe(PROXY);
        assert!(cache.set(PROXY, config.clone()));
        assert!(rx.has_changed().expect("the slot exists"));
        assert_eq!(rx.borrow_and_update().as_ref().map(|v| v.generation), Some(1));
        assert!(!cache.set(PROXY, config));
        assert!(!rx.has_changed().expect("the slot exists"));
        assert!(cache.set(PROXY, ProxyConfig::default()));
        assert_eq!(rx.borrow_and_update().as_ref().map(|v| v.generation), Some(2));
        cache.remove(PROXY);
        assert!(rx.has_changed().is_err(), "removal closes the channel");
        assert!(cache.get(PROXY).is_none());
    }
}
