//! The Kubernetes source: watches the cluster and delivers the mesh's [`MeshInput`].
//!
//! [`KubeSource`] runs one kube-rs `watcher` (with the default backoff) feeding a reflector store per
//! kind, cluster-wide: Namespaces, Services, EndpointSlices (discovery.k8s.io/v1; core/v1 Endpoints
//! where the server does not serve that version, e.g. 1.20), Pods and the SMI kinds TrafficTarget,
//! HTTPRouteGroup, TCPRoute and TrafficSplit; plus MeshConfig `osm-mesh-config` in the OSM namespace.
//! `managedFields` are trimmed before anything is stored.
//!
//! Delivery: the first input is assembled only after every watcher finished its initial list
//! (`InitDone`); after that, each burst of changes (events within ~20 ms of each other) is assembled
//! once and delivered only when it differs from the last input delivered. A watch restart relists
//! into the reflector's buffer, which replaces the store only at `InitDone`, so a relist never
//! shows an empty or partial input.
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
use osm_api::config::{MeshConfig, MeshConfigSpec};
use osm_api::contract::MESH_CONFIG_NAME;
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::{HTTPRouteGroup, TCPRoute};
use osm_api::smi::split::TrafficSplit;
use osm_model::MeshInput;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument as _;

pub use assemble::{Assembled, Problem, Snapshot};

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
    /// first complete input and then with every changed one.
    pub async fn run(self, shutdown: watch::Receiver<bool>, on_change: impl FnMut(MeshInput)) {
        let c = &self.client;
        let mut events: SelectAll<BoxStream<'static, Signal>> = SelectAll::new();
        // One reflector per kind; its index in `events` order names it in signals.
        macro_rules! add {
            ($api:expr, $config:expr $(,)?) => {{
                let (store, stream) = watch_kind($api, $config, events.len());
                events.push(stream);
                store
            }};
        }
        let all = watcher::Config::default;
        let namespaces: Store<Namespace> = add!(Api::all(c.clone()), all());
        let services: Store<Service> = add!(Api::all(c.clone()), all());
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
                (None, Some(add!(Api::all(c.clone()), all())))
            } else {
                (Some(add!(Api::all(c.clone()), all())), None)
            };
        let pods: Store<Pod> = add!(Api::all(c.clone()), all());
        let traffic_targets: Store<TrafficTarget> = add!(Api::all(c.clone()), all());
        let http_route_groups: Store<HTTPRouteGroup> = add!(Api::all(c.clone()), all());
        let tcp_routes: Store<TCPRoute> = add!(Api::all(c.clone()), all());
        let traffic_splits: Store<TrafficSplit> = add!(Api::all(c.clone()), all());
        let mesh_configs: Store<MeshConfig> = add!(
            Api::namespaced(c.clone(), &self.opts.osm_namespace),
            all().fields(&format!("metadata.name={MESH_CONFIG_NAME}")),
        );
        let kinds = events.len();

        let snapshot = || Snapshot {
            namespaces: namespaces.state(),
            services: services.state(),
            endpoints: endpoints.as_ref().map(Store::state).unwrap_or_default(),
            endpoint_slices: endpoint_slices.as_ref().map(Store::state).unwrap_or_default(),
            pods: pods.state(),
            traffic_targets: traffic_targets.state(),
            http_route_groups: http_route_groups.state(),
            tcp_routes: tcp_routes.state(),
            traffic_splits: traffic_splits.state(),
            mesh_configs: mesh_configs.state(),
        };

        let span = tracing::info_span!("kube_source", mesh = %self.opts.mesh_name);
        drive(events, kinds, snapshot, &self.opts, shutdown, on_change)
            .instrument(span)
            .await;
    }
}

/// The delivery loop over any signal stream: waits for every kind's first `InitDone`, then
/// assembles once per burst and delivers changed inputs. Separate from the watchers so the gating
/// and coalescing are tested without a server.
async fn drive(
    mut events: impl Stream<Item = Signal> + Unpin,
    kinds: usize,
    snapshot: impl Fn() -> Snapshot,
    opts: &KubeOptions,
    mut shutdown: watch::Receiver<bool>,
    mut on_change: impl FnMut(MeshInput),
) {
    let mut listed = vec![false; kinds];
    let mut last: Option<MeshInput> = None;
    let mut last_config = MeshConfigSpec::default();
    let mut reported: BTreeSet<assemble::Problem> = BTreeSet::new();
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
                let Some(Signal { kind, name, listed: done }) = signal else {
                    // Watchers never end on their own; nothing left to watch.
                    return;
                };
                if done && !listed[kind] {
                    listed[kind] = true;
                    tracing::debug!(kind = name, "initial list complete");
                }
                if listed.iter().all(|l| *l) && due.is_none() {
                    due = Some(tokio::time::Instant::now() + COALESCE);
                }
            }
            () = timer => {
                due = None;
                let assemble::Assembled { input, problems } = assemble::assemble(
                    &snapshot(),
                    &opts.mesh_name,
                    &opts.trust_domain,
                    &last_config,
                );
                // Each invalid object (version) is reported once, not at every assembly.
                for p in problems.iter().filter(|p| !reported.contains(*p)) {
                    p.log();
                }
                reported = problems.into_iter().collect();
                last_config = input.mesh_config.clone();
                if last.as_ref() != Some(&input) {
                    tracing::debug!(
                        services = input.services.len(),
                        pods = input.pods.len(),
                        "delivering a changed mesh input"
                    );
                    last = Some(input.clone());
                    on_change(input);
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

/// One watcher's news: something changed in store `kind`; `listed` when an initial list (or relist)
/// just completed.
struct Signal {
    kind: usize,
    /// The kind's type name, for logs.
    name: &'static str,
    listed: bool,
}

/// A reflector for one kind: its store, and a stream of signals that drives it.
fn watch_kind<K>(api: Api<K>, config: watcher::Config, kind: usize) -> (Store<K>, BoxStream<'static, Signal>)
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let name = std::any::type_name::<K>().rsplit("::").next().unwrap_or("?");
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .reflect(writer)
        .map_ok(move |event| Signal {
            kind,
            name,
            listed: matches!(event, watcher::Event::InitDone),
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
/// every change, until `stop`.
impl osm_model::Source for KubeSource {
    async fn run_until(self, stop: osm_model::Stop, mut sink: Box<dyn FnMut(osm_model::SourceEvent) + Send>) {
        let (tx, rx) = watch::channel(false);
        let stopper = async move {
            stop.await;
            let _ = tx.send(true);
        };
        let watching = KubeSource::run(self, rx, move |input| {
            sink(osm_model::SourceEvent::Input(Box::new(input)))
        });
        tokio::join!(stopper, watching);
    }
}

#[cfg(test)]
mod tests {
    //! The delivery loop with scripted signals and a hand-set snapshot, in paused time.

    use std::sync::{Arc, Mutex};

    use futures::channel::mpsc as fmpsc;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;

    struct Rig {
        signals: fmpsc::UnboundedSender<Signal>,
        snapshot: Arc<Mutex<Snapshot>>,
        delivered: mpsc::UnboundedReceiver<MeshInput>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    fn rig(kinds: usize) -> Rig {
        let (signals, events) = fmpsc::unbounded();
        let snapshot = Arc::new(Mutex::new(Snapshot {
            namespaces: vec![Arc::new(
                serde_json::from_value::<Namespace>(
                    json!({"metadata": {"name": "shop", "labels": {osm_api::contract::MONITORED_BY_LABEL: "osm"}}}),
                )
                .expect("namespace decodes"),
            )],
            ..Snapshot::default()
        }));
        let (tx, delivered) = mpsc::unbounded_channel();
        let (stop, shutdown) = watch::channel(false);
        let shared = snapshot.clone();
        let task = tokio::spawn(async move {
            let opts = KubeOptions::new("osm", "osm-system");
            let snapshot = move || shared.lock().expect("snapshot lock").clone();
            drive(events, kinds, snapshot, &opts, shutdown, move |i| {
                let _ = tx.send(i);
            })
            .await;
        });
        Rig {
            signals,
            snapshot,
            delivered,
            stop,
            task,
        }
    }

    impl Rig {
        fn signal(&self, kind: usize, listed: bool) {
            self.signals
                .unbounded_send(Signal {
                    kind,
                    name: "test",
                    listed,
                })
                .expect("loop runs");
        }

        fn add_pod(&self, name: &str) {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"namespace": "shop", "name": name},
                "status": {"podIP": "10.1.0.1"},
            }))
            .expect("pod decodes");
            self.snapshot
                .lock()
                .expect("snapshot lock")
                .pods
                .push(Arc::new(pod));
        }

        /// What was delivered after letting (virtual) time run well past the coalescing window.
        async fn settle(&mut self) -> Vec<MeshInput> {
            tokio::time::sleep(Duration::from_secs(1)).await;
            std::iter::from_fn(|| self.delivered.try_recv().ok()).collect()
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
            rig.signal(0, false);
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
