//! The Kubernetes source: watches the cluster and delivers the mesh's [`MeshInput`].
//!
//! [`KubeSource`] runs one kube-rs `watcher` (with the default backoff) feeding a reflector store per
//! kind, cluster-wide: Namespaces, Services, EndpointSlices (discovery.k8s.io/v1; core/v1 Endpoints
//! where the server does not serve that version, e.g. 1.20), Pods, the SMI kinds TrafficTarget,
//! HTTPRouteGroup, TCPRoute and TrafficSplit, and OSM Egress policies; plus MeshConfig
//! `osm-mesh-config` in the OSM namespace.
//! `managedFields` are trimmed before anything is stored.
//!
//! Delivery: the first input is assembled only after every watcher finished its initial list
//! (`InitDone`); after that, each burst of changes (events within ~20 ms of each other) is handled
//! once. A burst of Pod, Service, Endpoints and EndpointSlice events re-assembles only the entries
//! those objects touch, read from the stores by reference ([`Assembly::update`]), and delivers the
//! entries whose value changed as an [`osm_model::InputDelta`]: its cost follows the burst, not the
//! cluster. A Namespace, MeshConfig, SMI or Egress policy change (rare), or a relist, assembles
//! everything again and delivers the whole input if it differs. A watch restart relists into the
//! reflector's buffer, which replaces the store only at `InitDone`, so a relist never shows an empty
//! or partial input.
//!
//! Assembly rules ([`assemble`]): only monitored namespaces count (labelled
//! `openservicemesh.io/monitored-by=<mesh name>`, not `openservicemesh.io/ignore`); a pod's proxy
//! uuid is its `osm-proxy-uuid` label; invalid objects (e.g. a TrafficTarget outside its
//! destination's namespace, per `osm_api::validate::Validate`) are logged with namespace, name and
//! field and skipped — never fatal; each invalid object version is logged once, not at every
//! assembly. A missing or invalid `osm-mesh-config` keeps the last valid one (upstream defaults
//! before any was seen), so a bad edit never flips the mesh between SMI and permissive mode.
#![forbid(unsafe_code)]

pub mod assemble;
pub mod ca_secret;
pub mod ingress_backend_status;
pub mod ingress_gateway_secret;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use osm_api::config::MeshConfig;
use osm_api::contract::MESH_CONFIG_NAME;
use osm_api::policy::{Egress, IngressBackend, Retry, UpstreamTrafficSetting};
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::{HTTPRouteGroup, TCPRoute};
use osm_api::smi::split::TrafficSplit;
use osm_model::{MeshInput, ObjectRef, SourceEvent};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument as _;

pub use assemble::{Assembled, Assembly, Dirty, Lookup, Problem, Snapshot};

/// True when the server lists `resource` in API group version `group_version` (discovery). An
/// unanswered discovery counts as "not served": the fallback always exists.
async fn serves(client: &Client, group_version: &str, resource: &str) -> bool {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => list.resources.iter().any(|r| r.name == resource),
        Err(e) => {
            tracing::debug!(error = %e, "discovery of {group_version}");
            false
        }
    }
}

/// Why no client could be built for the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no cluster configured (use --kubeconfig or KUBECONFIG, or run in a pod): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client for the cluster in `kubeconfig`, or, without one, kube-rs's inference (`$KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster ServiceAccount). Shared by the CLI and the components.
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Client, ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| ConnectError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => kube::Config::infer().await.map_err(ConnectError::Infer)?,
    };
    Client::try_from(config).map_err(ConnectError::Client)
}

/// How long a burst of changes may last before the input is assembled once for all of them.
pub const COALESCE: Duration = Duration::from_millis(20);

/// What the source needs to know about the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeOptions {
    /// The mesh name namespaces are labelled with (`openservicemesh.io/monitored-by`).
    pub mesh_name: String,
    /// The namespace holding MeshConfig `osm-mesh-config`.
    pub osm_namespace: String,
    /// The trust domain of service identities (upstream default `cluster.local`).
    pub trust_domain: String,
}

impl KubeOptions {
    /// Options with the upstream trust domain `cluster.local`.
    pub fn new(mesh_name: impl Into<String>, osm_namespace: impl Into<String>) -> Self {
        Self {
            mesh_name: mesh_name.into(),
            osm_namespace: osm_namespace.into(),
            trust_domain: "cluster.local".into(),
        }
    }
}

/// Watches a cluster and delivers [`MeshInput`]s; see the crate docs.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    opts: KubeOptions,
}

impl KubeSource {
    pub fn new(client: Client, opts: KubeOptions) -> Self {
        Self { client, opts }
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped), calling `on_change` with the
    /// first complete input and then with every changed one. Each call gets a whole input (a copy
    /// kept here, with every delta applied): the [`osm_model::Source`] implementation delivers the
    /// deltas themselves and copies nothing.
    pub async fn run(self, shutdown: watch::Receiver<bool>, mut on_change: impl FnMut(MeshInput)) {
        let mut current = MeshInput::default();
        self.run_events(shutdown, move |event| match event {
            SourceEvent::Input(input) => {
                current = *input;
                on_change(current.clone());
            }
            SourceEvent::Delta(delta) => {
                delta.apply(&mut current);
                on_change(current.clone());
            }
            SourceEvent::Rejected(_) => {}
        })
        .await;
    }

    /// Runs until `shutdown`, delivering the first complete input as [`SourceEvent::Input`], then
    /// each burst's Pod, Service, Endpoints and EndpointSlice changes as a [`SourceEvent::Delta`] and
    /// any other change (or relist) as a whole input again.
    pub async fn run_events(self, shutdown: watch::Receiver<bool>, on_event: impl FnMut(SourceEvent)) {
        let c = &self.client;
        let mut events: SelectAll<BoxStream<'static, Signal>> = SelectAll::new();
        // One reflector per kind; its index in `events` order names it in signals.
        macro_rules! add {
            ($api:expr, $config:expr, $role:expr $(,)?) => {{
                let (store, stream) = watch_kind($api, $config, events.len(), $role);
                events.push(stream);
                store
            }};
        }
        let all = watcher::Config::default;
        let namespaces: Store<Namespace> = add!(Api::all(c.clone()), all(), Role::Rebuild);
        let services: Store<Service> = add!(Api::all(c.clone()), all(), Role::Service);
        // EndpointSlice v1 where the server serves it (1.21+), else core/v1 Endpoints.
        let slices_served = serves(c, "discovery.k8s.io/v1", "endpointslices").await;
        tracing::info!(
            source = if slices_served {
                "discovery.k8s.io/v1 EndpointSlice"
            } else {
                "core/v1 Endpoints"
            },
            "endpoints"
        );
        let (endpoints, endpoint_slices): (Option<Store<Endpoints>>, Option<Store<EndpointSlice>>) =
            if slices_served {
                (None, Some(add!(Api::all(c.clone()), all(), Role::EndpointSlice)))
            } else {
                (Some(add!(Api::all(c.clone()), all(), Role::Endpoints)), None)
            };
        let pods: Store<Pod> = add!(Api::all(c.clone()), all(), Role::Pod);
        let traffic_targets: Store<TrafficTarget> = add!(Api::all(c.clone()), all(), Role::Rebuild);
        let http_route_groups: Store<HTTPRouteGroup> = add!(Api::all(c.clone()), all(), Role::Rebuild);
        let tcp_routes: Store<TCPRoute> = add!(Api::all(c.clone()), all(), Role::Rebuild);
        let traffic_splits: Store<TrafficSplit> = add!(Api::all(c.clone()), all(), Role::Rebuild);
        let egresses: Store<Egress> = add!(Api::all(c.clone()), all(), Role::Rebuild);
        let ingress_backends: Store<IngressBackend> = add!(Api::all(c.clone()), all(), Role::Rebuild);
        let upstream_traffic_settings: Store<UpstreamTrafficSetting> =
            add!(Api::all(c.clone()), all(), Role::Rebuild);
        let retries: Store<Retry> = add!(Api::all(c.clone()), all(), Role::Rebuild);
        let mesh_configs: Store<MeshConfig> = add!(
            Api::namespaced(c.clone(), &self.opts.osm_namespace),
            all().fields(&format!("metadata.name={MESH_CONFIG_NAME}")),
            Role::Rebuild,
        );
        let kinds = events.len();
        let stores = KubeStores {
            namespaces,
            services,
            endpoints,
            endpoint_slices,
            pods,
            traffic_targets,
            http_route_groups,
            tcp_routes,
            traffic_splits,
            egresses,
            ingress_backends,
            upstream_traffic_settings,
            retries,
            mesh_configs,
        };

        let span = tracing::info_span!("kube_source", mesh = %self.opts.mesh_name);
        drive(events, kinds, &stores, &self.opts, shutdown, on_event)
            .instrument(span)
            .await;
    }
}

/// What the delivery loop reads: every store at once (a full assembly), or one object by reference.
trait Stores: Lookup {
    fn snapshot(&self) -> Snapshot;
}

/// The reflector stores, one per kind.
struct KubeStores {
    namespaces: Store<Namespace>,
    services: Store<Service>,
    endpoints: Option<Store<Endpoints>>,
    endpoint_slices: Option<Store<EndpointSlice>>,
    pods: Store<Pod>,
    traffic_targets: Store<TrafficTarget>,
    http_route_groups: Store<HTTPRouteGroup>,
    tcp_routes: Store<TCPRoute>,
    traffic_splits: Store<TrafficSplit>,
    egresses: Store<Egress>,
    ingress_backends: Store<IngressBackend>,
    upstream_traffic_settings: Store<UpstreamTrafficSetting>,
    retries: Store<Retry>,
    mesh_configs: Store<MeshConfig>,
}

fn get<K>(store: &Store<K>, id: &ObjectRef) -> Option<std::sync::Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    store.get(&reflector::ObjectRef::new(&id.name).within(&id.namespace))
}

impl Lookup for KubeStores {
    fn pod(&self, id: &ObjectRef) -> Option<std::sync::Arc<Pod>> {
        get(&self.pods, id)
    }
    fn service(&self, id: &ObjectRef) -> Option<std::sync::Arc<Service>> {
        get(&self.services, id)
    }
    fn endpoints(&self, id: &ObjectRef) -> Option<std::sync::Arc<Endpoints>> {
        self.endpoints.as_ref().and_then(|s| get(s, id))
    }
    fn endpoint_slice(&self, id: &ObjectRef) -> Option<std::sync::Arc<EndpointSlice>> {
        self.endpoint_slices.as_ref().and_then(|s| get(s, id))
    }
}

impl Stores for KubeStores {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            namespaces: self.namespaces.state(),
            services: self.services.state(),
            endpoints: self.endpoints.as_ref().map(Store::state).unwrap_or_default(),
            endpoint_slices: self
                .endpoint_slices
                .as_ref()
                .map(Store::state)
                .unwrap_or_default(),
            pods: self.pods.state(),
            traffic_targets: self.traffic_targets.state(),
            http_route_groups: self.http_route_groups.state(),
            tcp_routes: self.tcp_routes.state(),
            traffic_splits: self.traffic_splits.state(),
            egresses: self.egresses.state(),
            ingress_backends: self.ingress_backends.state(),
            upstream_traffic_settings: self.upstream_traffic_settings.state(),
            retries: self.retries.state(),
            mesh_configs: self.mesh_configs.state(),
        }
    }
}

/// The delivery loop over any signal stream: waits for every kind's first `InitDone`, then, once per
/// burst, re-assembles what the burst's objects touch and delivers the changed entries (a whole
/// input at first, and after a Namespace, MeshConfig or policy change or a relist). Separate from
/// the watchers so the gating, coalescing and incremental assembly are tested without a server.
async fn drive(
    mut events: impl Stream<Item = Signal> + Unpin,
    kinds: usize,
    stores: &impl Stores,
    opts: &KubeOptions,
    mut shutdown: watch::Receiver<bool>,
    mut on_event: impl FnMut(SourceEvent),
) {
    let mut listed = vec![false; kinds];
    let mut assembly: Option<Assembly> = None;
    // What changed since the last assembly: objects re-assembled one by one, or `rebuild` for all.
    let mut dirty = Dirty::default();
    let mut rebuild = false;
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let due_at = due;
        let timer = async move {
            match due_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    tracing::debug!("kubernetes source: shutting down");
                    return;
                }
            }
            signal = events.next() => {
                let Some(Signal { kind, name, role, news }) = signal else {
                    // Watchers never end on their own; nothing left to watch.
                    return;
                };
                match news {
                    News::Listed => {
                        if listed[kind] {
                            // A relist after a watch restart: anything may have changed meanwhile.
                            rebuild = true;
                        } else {
                            listed[kind] = true;
                            tracing::debug!(kind = name, "initial list complete");
                        }
                    }
                    News::Changed(id) => match role {
                        Role::Pod => drop(dirty.pods.insert(id)),
                        Role::Service => drop(dirty.services.insert(id)),
                        Role::Endpoints => drop(dirty.endpoints.insert(id)),
                        Role::EndpointSlice => drop(dirty.endpoint_slices.insert(id)),
                        Role::Rebuild => rebuild = true,
                    },
                    // The relist lands in the store only at its `InitDone`.
                    News::Relisting => {}
                }
                let pending = assembly.is_none() || rebuild || !dirty.is_empty();
                if listed.iter().all(|l| *l) && pending && due.is_none() {
                    due = Some(tokio::time::Instant::now() + COALESCE);
                }
            }
            () = timer => {
                due = None;
                let dirt = std::mem::take(&mut dirty);
                match assembly.as_mut().filter(|_| !rebuild) {
                    Some(current) => {
                        let (delta, fresh) = current.update(&dirt, stores);
                        // Each invalid object (version) is reported once, not at every assembly.
                        fresh.iter().for_each(Problem::log);
                        if !delta.is_empty() {
                            tracing::debug!(
                                services = delta.services.len(),
                                endpoints = delta.endpoints.len(),
                                pods = delta.pods.len(),
                                "delivering changed mesh input entries"
                            );
                            on_event(SourceEvent::Delta(Box::new(delta)));
                        }
                    }
                    None => {
                        rebuild = false;
                        // A missing or invalid MeshConfig keeps the last valid one.
                        let fallback = assembly
                            .as_ref()
                            .map(|a| a.input().mesh_config.clone())
                            .unwrap_or_default();
                        let next = Assembly::new(
                            &stores.snapshot(),
                            &opts.mesh_name,
                            &opts.trust_domain,
                            &fallback,
                        );
                        let reported: BTreeSet<&Problem> =
                            assembly.iter().flat_map(Assembly::problems).collect();
                        next.problems()
                            .filter(|p| !reported.contains(*p))
                            .for_each(Problem::log);
                        if assembly.as_ref().map(Assembly::input) != Some(next.input()) {
                            let input = next.input();
                            tracing::debug!(
                                services = input.services.len(),
                                pods = input.pods.len(),
                                "delivering a changed mesh input"
                            );
                            on_event(SourceEvent::Input(Box::new(input.clone())));
                        }
                        assembly = Some(next);
                    }
                }
            }
        }
    }
}

/// Convenience for [`KubeSource::run`].
pub async fn run(
    client: Client,
    opts: KubeOptions,
    shutdown: watch::Receiver<bool>,
    on_change: impl FnMut(MeshInput),
) {
    KubeSource::new(client, opts).run(shutdown, on_change).await;
}

/// How the delivery loop treats a kind's changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    /// Namespaces, MeshConfig, SMI and Egress policies (rare): a change assembles everything again.
    Rebuild,
}

/// What one watcher event says.
#[derive(Clone, Debug, PartialEq, Eq)]
enum News {
    /// This object was applied or deleted (the store already holds the result).
    Changed(ObjectRef),
    /// An initial list (or a relist) completed and is now the store's content.
    Listed,
    /// A relist is under way (its objects are buffered, not yet in the store).
    Relisting,
}

/// One watcher's news about store `kind`.
struct Signal {
    kind: usize,
    /// The kind's type name, for logs.
    name: &'static str,
    role: Role,
    news: News,
}

/// A reflector for one kind: its store, and a stream of signals that drives it.
fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: usize,
    role: Role,
) -> (Store<K>, BoxStream<'static, Signal>)
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let name = std::any::type_name::<K>().rsplit("::").next().unwrap_or("?");
    let id = |o: &K| {
        let m = o.meta();
        ObjectRef::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .reflect(writer)
        .map_ok(move |event| Signal {
            kind,
            name,
            role,
            news: match &event {
                watcher::Event::Apply(o) | watcher::Event::Delete(o) => News::Changed(id(o)),
                watcher::Event::Init | watcher::Event::InitApply(_) => News::Relisting,
                watcher::Event::InitDone => News::Listed,
            },
        })
        .filter_map(move |r| async move {
            match r {
                Ok(signal) => Some(signal),
                Err(e) => {
                    // The backoff retries; keep serving the last complete store meanwhile.
                    tracing::warn!(kind = name, error = %e, "watch failed, retrying");
                    None
                }
            }
        });
    (store, stream.boxed())
}

/// The Kubernetes watchers as a [`osm_model::Source`]: the first complete view of the cluster, then
/// every change (Pod, Service, Endpoints and EndpointSlice changes as deltas), until `stop`.
impl osm_model::Source for KubeSource {
    async fn run_until(self, stop: osm_model::Stop, sink: Box<dyn FnMut(SourceEvent) + Send>) {
        let (tx, rx) = watch::channel(false);
        let stopper = async move {
            stop.await;
            let _ = tx.send(true);
        };
        tokio::join!(stopper, KubeSource::run_events(self, rx, sink));
    }
}

#[cfg(test)]
mod tests {
    //! The delivery loop with scripted signals and hand-set stores, in paused time.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use futures::channel::mpsc as fmpsc;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;

    /// A snapshot behind a lock, counting full reads and lookups.
    #[derive(Default)]
    struct FakeStores {
        snapshot: Mutex<Snapshot>,
        full_reads: AtomicUsize,
        lookups: AtomicUsize,
    }

    fn find<K: Resource>(objects: &[Arc<K>], id: &ObjectRef) -> Option<Arc<K>> {
        objects
            .iter()
            .find(|o| {
                o.meta().namespace.as_deref().unwrap_or_default() == id.namespace
                    && o.meta().name.as_deref() == Some(id.name.as_str())
            })
            .cloned()
    }

    impl FakeStores {
        fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            f(&self.snapshot.lock().expect("snapshot lock"))
        }
    }

    impl Lookup for FakeStores {
        fn pod(&self, id: &ObjectRef) -> Option<Arc<Pod>> {
            self.read(|s| find(&s.pods, id))
        }
        fn service(&self, id: &ObjectRef) -> Option<Arc<Service>> {
            self.read(|s| find(&s.services, id))
        }
        fn endpoints(&self, id: &ObjectRef) -> Option<Arc<Endpoints>> {
            self.read(|s| find(&s.endpoints, id))
        }
        fn endpoint_slice(&self, id: &ObjectRef) -> Option<Arc<EndpointSlice>> {
            self.read(|s| find(&s.endpoint_slices, id))
        }
    }

    impl Stores for Arc<FakeStores> {
        fn snapshot(&self) -> Snapshot {
            self.full_reads.fetch_add(1, Ordering::SeqCst);
            self.snapshot.lock().expect("snapshot lock").clone()
        }
    }

    impl Lookup for Arc<FakeStores> {
        fn pod(&self, id: &ObjectRef) -> Option<Arc<Pod>> {
            self.as_ref().pod(id)
        }
        fn service(&self, id: &ObjectRef) -> Option<Arc<Service>> {
            self.as_ref().service(id)
        }
        fn endpoints(&self, id: &ObjectRef) -> Option<Arc<Endpoints>> {
            self.as_ref().endpoints(id)
        }
        fn endpoint_slice(&self, id: &ObjectRef) -> Option<Arc<EndpointSlice>> {
            self.as_ref().endpoint_slice(id)
        }
    }

    struct Rig {
        signals: fmpsc::UnboundedSender<Signal>,
        stores: Arc<FakeStores>,
        delivered: mpsc::UnboundedReceiver<SourceEvent>,
        /// Every delivery applied in order: what a control plane holds.
        current: MeshInput,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    fn obj<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<K> {
        Arc::new(serde_json::from_value(v).expect("test object decodes"))
    }

    fn rig(kinds: usize) -> Rig {
        let (signals, events) = fmpsc::unbounded();
        let stores = Arc::new(FakeStores::default());
        stores.snapshot.lock().expect("snapshot lock").namespaces = vec![obj::<Namespace>(
            json!({"metadata": {"name": "shop", "labels": {osm_api::contract::MONITORED_BY_LABEL: "osm"}}}),
        )];
        let (tx, delivered) = mpsc::unbounded_channel();
        let (stop, shutdown) = watch::channel(false);
        let shared = stores.clone();
        let task = tokio::spawn(async move {
            let opts = KubeOptions::new("osm", "osm-system");
            drive(events, kinds, &shared, &opts, shutdown, move |e| {
                let _ = tx.send(e);
            })
            .await;
        });
        Rig {
            signals,
            stores,
            delivered,
            current: MeshInput::default(),
            stop,
            task,
        }
    }

    impl Rig {
        fn send(&self, kind: usize, role: Role, news: News) {
            self.signals
                .unbounded_send(Signal {
                    kind,
                    name: "test",
                    role,
                    news,
                })
                .expect("loop runs");
        }

        /// Kind `kind` (a pod watcher) listed, or changed pod `shop/<name>` if `listed` is false.
        fn signal(&self, kind: usize, listed: bool) {
            let news = if listed {
                News::Listed
            } else {
                News::Changed(ObjectRef::new("shop", "a"))
            };
            self.send(kind, Role::Pod, news);
        }

        fn edit(&self, f: impl FnOnce(&mut Snapshot)) {
            f(&mut self.stores.snapshot.lock().expect("snapshot lock"));
        }

        fn add_pod(&self, name: &str) {
            self.edit(|s| {
                s.pods.push(obj(json!({
                    "metadata": {"namespace": "shop", "name": name},
                    "status": {"podIP": "10.1.0.1"},
                })))
            });
        }

        /// What was delivered after letting (virtual) time run well past the coalescing window.
        async fn settle_events(&mut self) -> Vec<SourceEvent> {
            tokio::time::sleep(Duration::from_secs(1)).await;
            std::iter::from_fn(|| self.delivered.try_recv().ok()).collect()
        }

        /// The input after each delivery.
        async fn settle(&mut self) -> Vec<MeshInput> {
            let mut inputs = Vec::new();
            for event in self.settle_events().await {
                match event {
                    SourceEvent::Input(input) => self.current = *input,
                    SourceEvent::Delta(delta) => drop(delta.apply(&mut self.current)),
                    SourceEvent::Rejected(r) => panic!("rejected: {r}"),
                }
                inputs.push(self.current.clone());
            }
            inputs
        }
    }

    /// Nothing is delivered until every kind listed; then the complete input, once.
    #[tokio::test(start_paused = true)]
    async fn first_delivery_waits_for_every_initial_list() {
        let mut rig = rig(2);
        rig.signal(0, false);
        rig.signal(0, true);
        rig.signal(0, false);
        assert!(rig.settle().await.is_empty(), "delivered before kind 1 listed");
        rig.add_pod("a");
        rig.signal(1, true);
        let got = rig.settle().await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pods.len(), 1);
    }

    /// A burst of changes is one delivery of the final state; a change that assembles to the same
    /// input (e.g. a relist of the same objects) delivers nothing.
    #[tokio::test(start_paused = true)]
    async fn bursts_coalesce_and_unchanged_inputs_are_not_delivered() {
        let mut rig = rig(1);
        rig.signal(0, true);
        assert_eq!(rig.settle().await.len(), 1);
        for name in ["a", "b", "c"] {
            rig.add_pod(name);
            rig.send(0, Role::Pod, News::Changed(ObjectRef::new("shop", name)));
        }
        let got = rig.settle().await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pods.len(), 3);
        rig.signal(0, false);
        rig.signal(0, true);
        assert!(
            rig.settle().await.is_empty(),
            "an unchanged input was delivered again"
        );
    }

    /// The whole input a full assembly of the rig's stores gives now.
    fn assembled(rig: &Rig) -> MeshInput {
        let snap = rig.stores.snapshot.lock().expect("snapshot lock").clone();
        Assembly::new(&snap, "osm", "cluster.local", &Default::default())
            .input()
            .clone()
    }

    fn service(name: &str, target: serde_json::Value) -> Arc<Service> {
        obj(json!({
            "metadata": {"namespace": "shop", "name": name},
            "spec": {"clusterIP": "10.0.0.7", "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": target}]},
        }))
    }

    fn endpoints(name: &str, ips: &[&str]) -> Arc<Endpoints> {
        let addresses: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        obj(json!({
            "metadata": {"namespace": "shop", "name": name},
            "subsets": [{"addresses": addresses}],
        }))
    }

    fn pod(name: &str, app: &str, ip: &str, port: i32) -> Arc<Pod> {
        obj(json!({
            "metadata": {"namespace": "shop", "name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "web", "containerPort": port}]}]},
            "status": {"podIP": ip},
        }))
    }

    /// A mesh of `n` services, each with its Endpoints, listed and delivered whole.
    async fn listed_mesh(n: usize) -> Rig {
        let mut rig = rig(1);
        rig.edit(|s| {
            for i in 0..n {
                let name = format!("svc-{i}");
                s.services.push(service(&name, json!(8080)));
                s.endpoints
                    .push(endpoints(&name, &[&format!("10.1.0.{}", i + 1)]));
            }
        });
        rig.signal(0, true);
        let first = rig.settle_events().await;
        assert!(
            matches!(first.as_slice(), [SourceEvent::Input(i)] if i.endpoints.len() == n),
            "{first:?}"
        );
        rig.current = assembled(&rig);
        rig
    }

    /// An Endpoints event re-assembles that one service's endpoints: one lookup, no full read of the
    /// stores, and a delta naming only that entry, which brings the input where a full assembly is.
    #[tokio::test(start_paused = true)]
    async fn an_endpoints_event_reassembles_only_its_service() {
        let mut rig = listed_mesh(50).await;
        assert_eq!(rig.stores.full_reads.load(Ordering::SeqCst), 1);
        let lookups = rig.stores.lookups.load(Ordering::SeqCst);

        rig.edit(|s| s.endpoints[7] = endpoints("svc-7", &["10.1.0.8", "10.1.0.99"]));
        rig.send(0, Role::Endpoints, News::Changed(ObjectRef::new("shop", "svc-7")));
        let events = rig.settle_events().await;
        let [SourceEvent::Delta(delta)] = events.as_slice() else {
            panic!("one delta expected: {events:?}");
        };
        let keys: Vec<_> = delta.endpoints.keys().cloned().collect();
        assert_eq!(keys, [ObjectRef::new("shop", "svc-7")]);
        assert!(delta.services.is_empty() && delta.pods.is_empty(), "{delta:?}");
        assert_eq!(
            rig.stores.full_reads.load(Ordering::SeqCst),
            1,
            "no full assembly"
        );
        assert_eq!(
            rig.stores.lookups.load(Ordering::SeqCst) - lookups,
            1,
            "one lookup"
        );
        delta.clone().apply(&mut rig.current);
        assert_eq!(rig.current, assembled(&rig));

        // The same object again, unchanged: nothing to deliver.
        rig.send(0, Role::Endpoints, News::Changed(ObjectRef::new("shop", "svc-7")));
        assert!(rig.settle_events().await.is_empty());
    }

    /// Deltas track a full assembly through pods, services (named target ports resolved against
    /// the pods), endpoints and EndpointSlices coming and going; a Namespace change or a relist
    /// assembles everything again.
    #[tokio::test(start_paused = true)]
    async fn deltas_agree_with_a_full_assembly() {
        let mut rig = listed_mesh(3).await;
        let slice = |name: &str, service: &str, ip: &str| -> Arc<EndpointSlice> {
            obj(json!({
                "metadata": {"namespace": "shop", "name": name,
                             "labels": {assemble::SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip]}],
            }))
        };
        let changed = |name: &str| News::Changed(ObjectRef::new("shop", name));
        type Edit<'a> = Box<dyn Fn(&mut Snapshot) + 'a>;
        let steps: Vec<(Edit, Role, &str)> = vec![
            (
                Box::new(|s| s.services.push(service("named", json!("web")))),
                Role::Service,
                "named",
            ),
            (
                Box::new(|s| s.pods.push(pod("named-1", "named", "10.2.0.1", 9090))),
                Role::Pod,
                "named-1",
            ),
            (
                Box::new(|s| s.pods[0] = pod("named-1", "named", "10.2.0.1", 9191)),
                Role::Pod,
                "named-1",
            ),
            (
                Box::new(|s| s.endpoint_slices.push(slice("named-a", "named", "10.2.0.5"))),
                Role::EndpointSlice,
                "named-a",
            ),
            (
                Box::new(|s| s.endpoint_slices.push(slice("named-b", "named", "10.2.0.6"))),
                Role::EndpointSlice,
                "named-b",
            ),
            (
                Box::new(|s| s.endpoint_slices[0] = slice("named-a", "svc-0", "10.2.0.7")),
                Role::EndpointSlice,
                "named-a",
            ),
            (
                Box::new(|s| drop(s.endpoints.remove(1))),
                Role::Endpoints,
                "svc-1",
            ),
            (Box::new(|s| drop(s.services.remove(3))), Role::Service, "named"),
            (Box::new(|s| s.pods.clear()), Role::Pod, "named-1"),
            (
                Box::new(|s| s.services.push(service("named", json!("web")))),
                Role::Service,
                "named",
            ),
        ];
        for (i, (edit, role, name)) in steps.iter().enumerate() {
            rig.edit(edit);
            rig.send(0, *role, changed(name));
            let events = rig.settle_events().await;
            assert!(!events.is_empty(), "step {i} changed something");
            for event in events {
                let SourceEvent::Delta(delta) = event else {
                    panic!("step {i}: a delta expected: {event:?}");
                };
                if i == 2 {
                    // The pod's port renumbered: the Service resolving its name moves with it.
                    let named = ObjectRef::new("shop", "named");
                    assert!(delta.services.contains_key(&named), "{delta:?}");
                }
                delta.apply(&mut rig.current);
            }
            assert_eq!(rig.current, assembled(&rig), "step {i}");
        }
        assert_eq!(rig.stores.full_reads.load(Ordering::SeqCst), 1);

        rig.edit(|s| s.namespaces.clear());
        rig.send(0, Role::Rebuild, News::Changed(ObjectRef::new("", "shop")));
        assert!(matches!(
            rig.settle_events().await.as_slice(),
            [SourceEvent::Input(i)] if i.services.is_empty()
        ));
        rig.send(0, Role::Pod, News::Relisting);
        rig.send(0, Role::Pod, News::Listed);
        assert!(rig.settle_events().await.is_empty());
        assert_eq!(rig.stores.full_reads.load(Ordering::SeqCst), 3);
    }

    /// An Egress change is a rebuild, like an SMI policy change: the whole input is assembled again
    /// and delivered, with the policy in it, then without it once deleted.
    #[tokio::test(start_paused = true)]
    async fn an_egress_change_rebuilds_the_input() {
        let mut rig = rig(1);
        rig.signal(0, true);
        assert_eq!(rig.settle().await.len(), 1);
        let id = ObjectRef::new("shop", "allow");
        rig.edit(|s| {
            s.egresses.push(obj(json!({
                "metadata": {"namespace": "shop", "name": "allow"},
                "spec": {
                    "sources": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}],
                    "hosts": ["example.com"],
                    "ports": [{"number": 443, "protocol": "https"}],
                },
            })))
        });
        rig.send(0, Role::Rebuild, News::Changed(id.clone()));
        let events = rig.settle_events().await;
        assert!(
            matches!(events.as_slice(), [SourceEvent::Input(i)] if i.egresses.contains_key(&id)),
            "{events:?}"
        );
        rig.edit(|s| s.egresses.clear());
        rig.send(0, Role::Rebuild, News::Changed(id.clone()));
        let events = rig.settle_events().await;
        assert!(
            matches!(events.as_slice(), [SourceEvent::Input(i)] if i.egresses.is_empty()),
            "{events:?}"
        );
        assert_eq!(rig.stores.full_reads.load(Ordering::SeqCst), 3);
    }

    /// Shutdown ends the loop.
    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_loop() {
        let rig = rig(1);
        rig.stop.send(true).expect("loop runs");
        tokio::time::timeout(Duration::from_secs(5), rig.task)
            .await
            .expect("loop stopped")
            .expect("loop did not panic");
    }
}
