//! The control plane's core loop, without any source or server attached: the current `MeshInput`
//! goes through the pure model and the memoising xDS generator into the ADS snapshot cache. A change
//! is applied with [`ControlPlane::replace`] or [`ControlPlane::update`], synchronously (no debounce
//! window): the model recomputes only what the change touched, only the proxies whose intent changed
//! get a new config, the memo tables make an unchanged resource free, and the cache wakes only proxies
//! whose config changed.
#![forbid(unsafe_code)]

mod certs;
pub mod http;
pub mod ingress_gateway;
pub mod runner;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use osm_ads::{AdsTls, ProxyRegistry, SnapshotCache};
use osm_api::config::IngressGatewayCertSpec;
use osm_api::contract::ads_server_name;
use osm_ca::{CertificateAuthority, IngressGatewayCertStore, TrustDomain, XdsClientIdentity};
use osm_model::{InputDelta, MeshInput, MeshState, ModelChange, Pod, ServiceIdentity};
use osm_xds::Generator;
use osm_xds::bootstrap::{self, AdsApi};

pub use certs::IdentityCerts;
pub use ingress_gateway::IngressGatewayCertKeeper;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("issuing a certificate for {what}")]
    Certificate {
        what: String,
        #[source]
        source: osm_ca::CaError,
    },
    #[error("rendering a bootstrap")]
    Bootstrap(#[source] osm_xds::proxy_bootstrap::BootstrapError),
    #[error("serving ADS")]
    Listener(#[source] std::io::Error),
}

/// Counters of one recompute, for logs and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecomputeStats {
    pub proxies: usize,
    /// Proxies whose config changed and were woken.
    pub changed: usize,
    pub removed: usize,
    pub warnings: usize,
    pub micros: u128,
}

struct State {
    input: MeshInput,
    model: MeshState,
    generator: Generator,
    certs: IdentityCerts,
    /// Proxy uuid → its cache key and identity, for every published proxy.
    published: HashMap<String, Published>,
    /// Proxies left with their last config because their certificate could not be issued: tried again
    /// on every publish, as a full recompute would, not only when their intent changes.
    unissued: BTreeSet<String>,
    last_warnings: Vec<String>,
}

struct Published {
    key: String,
    identity: ServiceIdentity,
}

/// Proxy uuid → (namespace, service account) of the pod, read by ADS stream authentication.
type PodIndex = HashMap<String, (String, String)>;

pub struct ControlPlane {
    state: Mutex<State>,
    pods: Arc<RwLock<PodIndex>>,
    cache: SnapshotCache,
    ca: Arc<CertificateAuthority>,
    trust_domain: TrustDomain,
    /// MeshConfig `spec.certificate.ingressGateway` of the current input, for the ingress gateway
    /// certificate's keeper.
    ingress_gateway: tokio::sync::watch::Sender<Option<IngressGatewayCertSpec>>,
    /// Every IngressBackend's status as the model last computed it, for the source to write back.
    ingress_backend_status: tokio::sync::watch::Sender<IngressBackendStatuses>,
}

/// IngressBackend statuses by object (see `osm_model::MeshModel::ingress_backend_status`).
pub type IngressBackendStatuses =
    Arc<std::collections::BTreeMap<osm_model::ObjectRef, osm_api::policy::IngressBackendStatus>>;

impl ControlPlane {
    pub fn new(ca: Arc<CertificateAuthority>, input: MeshInput) -> Self {
        let trust_domain = ca.trust_domain().clone();
        let generator = Generator::new(trust_domain.as_str(), ca.root_cert_pem());
        let mut input = input;
        input.trust_domain = trust_domain.to_string();
        let (ingress_gateway, _) =
            tokio::sync::watch::channel(input.mesh_config.certificate.ingress_gateway.clone());
        let cp = Self {
            state: Mutex::new(State {
                certs: IdentityCerts::new(ca.clone()),
                model: MeshState::new(&input),
                input,
                generator,
                published: HashMap::new(),
                unissued: BTreeSet::new(),
                last_warnings: Vec::new(),
            }),
            pods: Arc::default(),
            cache: SnapshotCache::new(),
            ca,
            trust_domain,
            ingress_gateway,
            ingress_backend_status: tokio::sync::watch::channel(IngressBackendStatuses::default()).0,
        };
        let mut state = cp.lock();
        cp.publish(&mut state, &everything());
        drop(state);
        cp
    }

    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the current input (for status and debugging).
    pub fn input(&self) -> MeshInput {
        self.lock().input.clone()
    }

    /// Applies a change to the input and pushes the result to every affected proxy. The input is
    /// compared with a copy taken before the change; a caller holding a whole new input should use
    /// [`ControlPlane::replace`], which needs no copy.
    pub fn update(&self, change: impl FnOnce(&mut MeshInput)) -> RecomputeStats {
        let mut state = self.lock();
        let before = state.input.clone();
        change(&mut state.input);
        self.apply(&mut state, before)
    }

    /// Replaces the input (a source's fresh snapshot) and pushes the result to every affected proxy.
    pub fn replace(&self, input: MeshInput) -> RecomputeStats {
        let mut state = self.lock();
        let before = std::mem::replace(&mut state.input, input);
        self.apply(&mut state, before)
    }

    /// Applies a source's delta in place and pushes the result to every affected proxy: no copy of
    /// the input and no whole-map compare, so the model's part costs what the delta names.
    pub fn apply_delta(&self, delta: InputDelta) -> RecomputeStats {
        let mut state = self.lock();
        let started = Instant::now();
        let prior = delta.apply(&mut state.input);
        let State { input, model, .. } = &mut *state;
        let change = model.update_changed(&prior, input);
        drop(prior);
        let mut stats = self.publish(&mut state, &change);
        stats.micros = started.elapsed().as_micros();
        tracing::debug!(?stats, "recomputed from a delta");
        stats
    }

    fn apply(&self, state: &mut State, before: MeshInput) -> RecomputeStats {
        let started = Instant::now();
        state.input.trust_domain = self.trust_domain.to_string();
        let change = state.model.update(&before, &state.input);
        // Deltas never touch the MeshConfig: only whole inputs and updates can change the spec.
        let gateway = &state.input.mesh_config.certificate.ingress_gateway;
        self.ingress_gateway.send_if_modified(|current| {
            let changed = current != gateway;
            if changed {
                current.clone_from(gateway);
            }
            changed
        });
        // The previous input is freed outside the timing of the publish below, but still under the
        // lock: it is the caller's change being applied.
        drop(before);
        let mut stats = self.publish(state, &change);
        stats.micros = started.elapsed().as_micros();
        tracing::debug!(?stats, "recomputed");
        stats
    }

    /// Generates and publishes the configs of the proxies `change` names (every proxy if `all`), and
    /// forgets the removed ones.
    fn publish(&self, state: &mut State, change: &ModelChange) -> RecomputeStats {
        let model = state.model.model();
        if model.warnings != state.last_warnings {
            for w in &model.warnings {
                tracing::warn!(warning = %w, "policy not applied");
            }
            state.last_warnings = model.warnings.clone();
        }
        self.ingress_backend_status.send_if_modified(|current| {
            let changed = **current != model.ingress_backend_status;
            if changed {
                *current = Arc::new(model.ingress_backend_status.clone());
            }
            changed
        });
        let validity = service_cert_validity(&state.input);
        state.certs.set_validity(validity);

        let State {
            model,
            generator,
            certs,
            published,
            unissued,
            ..
        } = state;
        let model = model.model();
        let retry = std::mem::take(unissued);
        let mut stats = RecomputeStats {
            proxies: model.proxies.len(),
            warnings: model.warnings.len(),
            ..Default::default()
        };
        // The pod index is what ADS connection setup reads: it is edited here and written under its
        // lock only at the end, never held across certificate issuance or generation.
        let mut pods_removed: Vec<String> = Vec::new();
        let mut pods_added: Vec<(String, (String, String))> = Vec::new();
        // Whether some identity may have lost its last proxy (its certificate can then be forgotten).
        let mut identities_moved = !change.removed.is_empty();
        let unpublish = |published: &mut HashMap<String, Published>,
                         pods_removed: &mut Vec<String>,
                         uuid: &str,
                         stats: &mut RecomputeStats| {
            if let Some(gone) = published.remove(uuid) {
                self.cache.remove(&gone.key);
                stats.removed += 1;
            }
            pods_removed.push(uuid.to_owned());
        };
        for uuid in &change.removed {
            unpublish(published, &mut pods_removed, uuid, &mut stats);
        }
        let proxies: Box<dyn Iterator<Item = &osm_model::ProxyIntent>> = if change.all {
            Box::new(model.proxies.values())
        } else {
            let retried = retry.iter().filter(|uuid| !change.changed.contains(*uuid));
            Box::new(
                change
                    .changed
                    .iter()
                    .chain(retried)
                    .filter_map(|uuid| model.proxies.get(uuid)),
            )
        };
        for proxy in proxies {
            let secrets = match certs.secrets_for(&proxy.identity) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(identity = %proxy.identity, error = %e, "cannot issue certificate; proxy keeps its last config");
                    unissued.insert(proxy.proxy_uuid.clone());
                    continue;
                }
            };
            let config = generator.proxy_config(proxy, secrets);
            match published.get(&proxy.proxy_uuid) {
                // The usual case: the same proxy with a new config.
                Some(p) if p.identity == proxy.identity => {
                    if self.cache.set(&p.key, config) {
                        stats.changed += 1;
                    }
                }
                known => {
                    // The key names the identity: a pod whose ServiceAccount changed is a new ADS client.
                    if known.is_some() {
                        identities_moved = true;
                        unpublish(published, &mut pods_removed, &proxy.proxy_uuid, &mut stats);
                    }
                    let key = proxy_key(&proxy.proxy_uuid, &proxy.identity, &self.trust_domain);
                    if self.cache.set(&key, config) {
                        stats.changed += 1;
                    }
                    pods_added.push((
                        proxy.proxy_uuid.clone(),
                        (
                            proxy.identity.namespace.clone(),
                            proxy.identity.service_account.clone(),
                        ),
                    ));
                    published.insert(
                        proxy.proxy_uuid.clone(),
                        Published {
                            key,
                            identity: proxy.identity.clone(),
                        },
                    );
                }
            }
        }
        if !pods_removed.is_empty() || !pods_added.is_empty() {
            let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
            for uuid in &pods_removed {
                pods.remove(uuid);
            }
            pods.extend(pods_added);
        }
        generator.sweep(stats.changed + stats.removed);
        if identities_moved {
            certs.retain(model.proxies.values().map(|p| &p.identity));
        }
        stats
    }

    /// Rotates every certificate that is due and republishes; returns when the next one is due.
    pub fn rotate_due(&self, now: SystemTime) -> Option<SystemTime> {
        let (due, issuer) = {
            let mut state = self.lock();
            (state.certs.take_due(now), state.certs.issuer())
        };
        if due.is_empty() {
            return self.lock().certs.next_deadline();
        }
        // Key generation and signing happen without the lock, so a mass rotation does not hold up the
        // pushes of other changes; only installing the results and the recompute take it.
        let issued: Vec<_> = due
            .into_iter()
            .map(|id| {
                let cert = issuer.issue(&id);
                (id, cert)
            })
            .collect();
        let mut state = self.lock();
        let rotated = state.certs.install_rotated(now, issued);
        if rotated > 0 {
            tracing::info!(rotated, "rotated service certificates");
            self.publish(&mut state, &everything());
        }
        state.certs.next_deadline()
    }

    /// Rotates certificates as they come due until `shutdown` flips to true.
    pub async fn run_rotation(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let next = self.rotate_due(SystemTime::now());
            let wait = next
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Every IngressBackend's status (`committed`, or `error` with the reason) as last computed;
    /// changes as inputs are applied. The Kubernetes controller writes them back to the objects.
    pub fn ingress_backend_status(&self) -> tokio::sync::watch::Receiver<IngressBackendStatuses> {
        self.ingress_backend_status.subscribe()
    }

    /// MeshConfig `spec.certificate.ingressGateway` of the current input; changes as inputs are
    /// applied.
    pub fn ingress_gateway_spec(&self) -> tokio::sync::watch::Receiver<Option<IngressGatewayCertSpec>> {
        self.ingress_gateway.subscribe()
    }

    /// Keeps the ingress gateway certificate the MeshConfig asks for issued from this control plane's
    /// CA, current and written to `store` (see [`ingress_gateway`]), as a task on the current runtime,
    /// until `shutdown` changes. Call it before or after the first input: it acts on whatever the
    /// current MeshConfig says.
    pub fn spawn_ingress_gateway_cert(
        &self,
        store: Arc<dyn IngressGatewayCertStore>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let keeper = IngressGatewayCertKeeper::new(store);
        tokio::spawn(keeper.run(self.ca.clone(), self.ingress_gateway_spec(), shutdown))
    }

    /// Serves ADS on `listener` (mTLS; server name `osm-controller.<osm_namespace>.svc.cluster.local`)
    /// and rotates certificates as they come due, as tasks on `rt`, until `shutdown` turns true. Keep
    /// the shutdown sender alive: dropping it stops everything. The returned flag is true while ADS
    /// serves (what `/health/ready` reports).
    pub fn spawn_servers(
        self: &Arc<Self>,
        rt: &tokio::runtime::Handle,
        listener: std::net::TcpListener,
        osm_namespace: &str,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<std::sync::atomic::AtomicBool>, ControllerError> {
        let tls = self.ads_tls(&[ads_server_name(osm_namespace)])?;
        let service = osm_ads::AdsService::new(
            self.cache.clone(),
            self.registry(),
            self.trust_domain.clone(),
            shutdown.clone(),
        );
        listener
            .set_nonblocking(true)
            .map_err(ControllerError::Listener)?;
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener).map_err(ControllerError::Listener)?;
        let mut stop = shutdown.clone();
        let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = serving.clone();
        rt.spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = osm_ads::serve(listener, tls, service, stopped).await {
                tracing::error!(error = ?e, "ADS server stopped");
            }
            flag.store(false, std::sync::atomic::Ordering::SeqCst);
        });
        rt.spawn(self.clone().run_rotation(shutdown));
        Ok(serving)
    }

    /// The ADS server's TLS material: a server certificate for `dns_names` from the mesh CA.
    pub fn ads_tls(&self, dns_names: &[String]) -> Result<AdsTls, ControllerError> {
        let cert = self
            .ca
            .issue_server_cert(dns_names, Duration::from_secs(365 * 24 * 3600))
            .map_err(|source| ControllerError::Certificate {
                what: "the ADS server".into(),
                source,
            })?;
        Ok(AdsTls {
            cert_pem: cert.cert_pem,
            key_pem: cert.private_key.expose_pem().to_string(),
            client_ca_pem: self.ca.root_cert_pem().to_string(),
        })
    }

    /// The authenticator ADS streams use: the pod with the certificate's uuid must exist and run as the
    /// certificate's ServiceAccount.
    pub fn registry(&self) -> Arc<dyn ProxyRegistry> {
        Arc::new(PodRegistry {
            pods: self.pods.clone(),
        })
    }

    /// An Envoy bootstrap for `pod`; see [`osm_xds::proxy_bootstrap::render`].
    pub fn bootstrap_for(
        &self,
        pod: &Pod,
        ads_host: &str,
        ads_server_name: &str,
        api: AdsApi,
        probes: &[bootstrap::Probe],
    ) -> Result<String, ControllerError> {
        osm_xds::proxy_bootstrap::render(&self.ca, pod, ads_host, ads_server_name, api, probes)
            .map_err(ControllerError::Bootstrap)
    }
}

/// The ADS cache key of a proxy: its xDS certificate CN (also its Envoy node id).
pub fn proxy_key(uuid: &str, identity: &ServiceIdentity, td: &TrustDomain) -> String {
    osm_api::contract::proxy_key(uuid, &identity.service_account, &identity.namespace, td.as_str())
}

/// A change that reaches every proxy.
fn everything() -> ModelChange {
    ModelChange {
        all: true,
        ..Default::default()
    }
}

fn service_cert_validity(input: &MeshInput) -> Duration {
    let d: Duration = input
        .mesh_config
        .certificate
        .service_cert_validity_duration
        .into();
    if d.is_zero() {
        Duration::from_secs(24 * 3600)
    } else {
        d
    }
}

struct PodRegistry {
    pods: Arc<RwLock<PodIndex>>,
}

impl ProxyRegistry for PodRegistry {
    fn check(&self, id: &XdsClientIdentity) -> Result<(), String> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        match pods.get(&id.proxy_uuid) {
            None => Err("no known pod has this proxy uuid".to_string()),
            Some((ns, sa)) if *ns == id.identity.namespace && *sa == id.identity.service_account => Ok(()),
            Some((ns, sa)) => Err(format!(
                "the pod with this proxy uuid runs as {sa}.{ns}, not {}.{}",
                id.identity.service_account, id.identity.namespace
            )),
        }
    }
}
