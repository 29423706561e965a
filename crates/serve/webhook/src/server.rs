//! The two admission webhooks over HTTPS: the [`Injector`] (`POST /mutate-pod-creation`, upstream's
//! `osm-injector` Service on 9090) and the [`Validator`] (`POST /validate`, `osm-validator` on 9093).
//! Both take AdmissionReview `admission.k8s.io/v1` or `v1beta1` and answer in the same version.
//!
//! A failure is an AdmissionResponse denial with a message naming what failed (never a panic, never
//! key material); the HTTP status is 200 whenever a review could be answered.

use osm_api::contract::{INJECTOR_PATH, VALIDATOR_PATH};
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use osm_ca::{CertificateAuthority, IssuedCert};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::inject::{self, InjectConfig, InjectDecision};
use crate::validate::{admission_warnings, error_chain, validate_object};

/// Why a webhook server could not be set up or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The CA refused to issue the serving certificate.
    #[error("issuing the serving certificate for {0}")]
    Certificate(String, #[source] osm_ca::CaError),
    /// The certificate or key PEM could not be read.
    #[error("reading the serving certificate: {0}")]
    Pem(String),
    /// rustls refused the certificate and key.
    #[error("building the TLS configuration")]
    Tls(#[source] rustls::Error),
    /// The listener failed.
    #[error("serving on {addr}")]
    Serve {
        /// The listener's address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

type Review = AdmissionReview<DynamicObject>;

/// The sidecar injector: reads the Pod's Namespace, decides, writes the bootstrap Secret (not for dry
/// runs) and answers with the patch. Needs RBAC `get` on namespaces and `create`/`update` on secrets.
#[derive(Clone)]
pub struct Injector {
    /// Reads Namespaces, writes Secrets.
    pub client: kube::Client,
    /// Issues each proxy's xDS client certificate.
    pub ca: Arc<CertificateAuthority>,
    /// The current configuration (MeshConfig changes are sent here).
    pub config: watch::Receiver<InjectConfig>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").finish_non_exhaustive()
    }
}

/// Why one Pod could not be admitted; becomes the denial message.
#[derive(Debug, thiserror::Error)]
enum AdmitError {
    #[error("the admission request has no object")]
    NoObject,
    #[error("the admission request names no namespace")]
    NoNamespace,
    #[error("decoding the pod")]
    Decode(#[source] serde_json::Error),
    #[error("reading namespace {0}")]
    Namespace(String, #[source] kube::Error),
    #[error(transparent)]
    Inject(#[from] inject::InjectError),
    #[error("writing Secret {0}")]
    Secret(String, #[source] kube::Error),
    #[error("encoding the patch")]
    Patch(#[source] kube::core::admission::SerializePatchError),
}

impl Injector {
    /// An injector using `client` and `ca`, configured by `config`.
    pub fn new(
        client: kube::Client,
        ca: Arc<CertificateAuthority>,
        config: watch::Receiver<InjectConfig>,
    ) -> Self {
        Injector { client, ca, config }
    }

    /// Answers one admission request: allowed unchanged, allowed with the sidecar patch, or denied.
    pub async fn admit(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let namespace = request.namespace.clone().unwrap_or_default();
        let name = if request.name.is_empty() {
            request
                .object
                .as_ref()
                .and_then(|o| o.metadata.generate_name.clone())
                .unwrap_or_default()
        } else {
            request.name.clone()
        };
        let span = info_span!("inject", %namespace, pod = %name, uid = %request.uid);
        async {
            match self.try_admit(request).await {
                Ok(response) => response,
                Err(e) => {
                    let message = error_chain(&e);
                    warn!(%message, "pod refused");
                    AdmissionResponse::from(request).deny(message)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn try_admit(
        &self,
        request: &AdmissionRequest<DynamicObject>,
    ) -> Result<AdmissionResponse, AdmitError> {
        let allow = AdmissionResponse::from(request);
        // The MutatingWebhookConfiguration sends only Pod CREATE; anything else passes untouched.
        if request.operation != Operation::Create || request.kind.kind != "Pod" {
            debug!(operation = ?request.operation, kind = %request.kind.kind, "not a pod creation");
            return Ok(allow);
        }
        let object = request.object.as_ref().ok_or(AdmitError::NoObject)?;
        let pod: Pod = serde_json::to_value(object)
            .and_then(serde_json::from_value)
            .map_err(AdmitError::Decode)?;
        let ns = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .filter(|n| !n.is_empty())
            .ok_or(AdmitError::NoNamespace)?;
        let namespace = Api::<Namespace>::all(self.client.clone())
            .get(&ns)
            .await
            .map_err(|e| AdmitError::Namespace(ns.clone(), e))?;
        let config = self.config.borrow().clone();
        match inject::decide(&namespace, &pod, &config)? {
            InjectDecision::Skip { reason } => {
                debug!(%reason, "no sidecar");
                return Ok(allow);
            }
            InjectDecision::Inject => {}
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        let injection = inject::mutate(&pod, &namespace, &uuid, &config)?;
        if request.dry_run {
            debug!(%uuid, "dry run: no bootstrap Secret");
        } else {
            let secret = inject::bootstrap_secret(
                &ns,
                &uuid,
                &injection.service_account,
                &injection.probes,
                &config,
                &self.ca,
            )?;
            create_or_replace(&self.client, &ns, &secret)
                .await
                .map_err(|e| AdmitError::Secret(format!("{ns}/{}", injection.bootstrap_secret_name), e))?;
        }
        info!(
            %uuid,
            service_account = %injection.service_account,
            probes = injection.probes.len(),
            dry_run = request.dry_run,
            "sidecar injected"
        );
        allow.with_patch(injection.patch).map_err(AdmitError::Patch)
    }
}

/// Creates `secret`; if one of that name exists already (a retried admission), replaces it.
async fn create_or_replace(
    client: &kube::Client,
    namespace: &str,
    secret: &Secret,
) -> Result<(), kube::Error> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let name = secret.metadata.name.as_deref().unwrap_or_default();
            api.replace(name, &PostParams::default(), secret).await.map(drop)
        }
        Err(e) => Err(e),
    }
}

/// The validating webhook: SMI and OSM objects must decode and pass `osm_api`'s semantic rules; with a
/// client, an object must not conflict with one already stored (an UpstreamTrafficSetting for a host
/// another one of its namespace sets, as upstream refuses).
#[derive(Clone, Default)]
pub struct Validator {
    client: Option<kube::Client>,
}

impl Validator {
    /// A validator that also checks new objects against the stored ones.
    pub fn with_client(client: kube::Client) -> Self {
        Self { client: Some(client) }
    }

    /// [`Validator::admit`], then the checks against stored objects (with a client).
    pub async fn admit_checking_conflicts(
        &self,
        request: &AdmissionRequest<DynamicObject>,
    ) -> AdmissionResponse {
        let response = self.admit(request);
        let (Some(client), Some(object)) = (&self.client, &request.object) else {
            return response;
        };
        if !response.allowed || request.kind.kind != "UpstreamTrafficSetting" {
            return response;
        }
        let Some(ns) = request
            .namespace
            .as_deref()
            .or(object.metadata.namespace.as_deref())
        else {
            return response;
        };
        let name = object.metadata.name.as_deref().unwrap_or(&request.name);
        let host = object.data["spec"]["host"].as_str().unwrap_or_default();
        let api: kube::Api<osm_api::policy::UpstreamTrafficSetting> =
            kube::Api::namespaced(client.clone(), ns);
        match api.list(&Default::default()).await {
            Ok(list) => {
                let key = osm_api::policy::host_key(ns, host);
                if let Some(other) = list.items.iter().find(|o| {
                    o.metadata.name.as_deref() != Some(name)
                        && osm_api::policy::host_key(ns, &o.spec.host) == key
                }) {
                    let other = other.metadata.name.as_deref().unwrap_or_default();
                    let message = format!(
                        "UpstreamTrafficSetting {ns}/{name}: spec.host: {host:?} is already set by \
                         UpstreamTrafficSetting {ns}/{other}; one host, one setting"
                    );
                    info!(kind = %request.kind.kind, name = %request.name, %message, "object refused");
                    return response.deny(message);
                }
                response
            }
            // The stored objects are unknown: admit (the model reports a duplicate and applies the first).
            Err(e) => {
                warn!(error = %e, "listing UpstreamTrafficSettings for the duplicate-host check");
                response
            }
        }
    }

    /// Answers one admission request from the object alone: allowed, or denied naming the offending
    /// field.
    pub fn admit(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let allow = AdmissionResponse::from(request);
        // DELETE carries no new object: nothing to check.
        let Some(object) = request.object.as_ref() else {
            return allow;
        };
        let mut value = match serde_json::to_value(object) {
            Ok(v) => v,
            Err(e) => return allow.deny(format!("decoding the object: {e}")),
        };
        // The object's namespace is the request's when the manifest did not say.
        if let (Some(ns), Some(meta)) = (&request.namespace, value.get_mut("metadata"))
            && meta.get("namespace").is_none_or(|n| n.is_null())
        {
            meta["namespace"] = serde_json::Value::String(ns.clone());
        }
        match validate_object(&value) {
            Ok(()) => {
                let warnings = admission_warnings(&value);
                if warnings.is_empty() {
                    return allow;
                }
                for warning in &warnings {
                    warn!(kind = %request.kind.kind, name = %request.name, %warning, "accepted, not supported yet");
                }
                let mut allow = allow;
                allow.warnings = Some(warnings);
                allow
            }
            Err(message) => {
                info!(kind = %request.kind.kind, name = %request.name, %message, "object refused");
                allow.deny(message)
            }
        }
    }
}

/// Decodes an AdmissionReview body and answers it with `admit`; an unreadable body is answered with an
/// `invalid` response (there is no uid to copy).
async fn review<F, Fut>(body: &[u8], admit: F) -> axum::Json<Review>
where
    F: FnOnce(AdmissionRequest<DynamicObject>) -> Fut,
    Fut: Future<Output = AdmissionResponse>,
{
    let request: Result<AdmissionRequest<DynamicObject>, String> = serde_json::from_slice::<Review>(body)
        .map_err(|e| format!("decoding the AdmissionReview: {e}"))
        .and_then(|r| {
            r.try_into()
                .map_err(|_| "the AdmissionReview has no request".to_owned())
        });
    let response = match request {
        Ok(request) => admit(request).await,
        Err(message) => {
            warn!(%message, "unreadable admission review");
            AdmissionResponse::invalid(message)
        }
    };
    axum::Json(response.into_review())
}

async fn mutate_handler(State(injector): State<Arc<Injector>>, body: Bytes) -> axum::Json<Review> {
    review(&body, |request| async move { injector.admit(&request).await }).await
}

async fn validate_handler(State(validator): State<Validator>, body: Bytes) -> axum::Json<Review> {
    review(&body, |request| async move {
        validator.admit_checking_conflicts(&request).await
    })
    .await
}

async fn healthz() -> &'static str {
    "Health OK"
}

/// `POST /mutate-pod-creation` (and `GET /healthz`) served by `injector`.
pub fn injector_router(injector: Injector) -> Router {
    Router::new()
        .route(INJECTOR_PATH, post(mutate_handler))
        .route("/healthz", axum::routing::get(healthz))
        .with_state(Arc::new(injector))
}

/// `POST /validate` (and `GET /healthz`) served by `validator`.
pub fn validator_router(validator: Validator) -> Router {
    Router::new()
        .route(VALIDATOR_PATH, post(validate_handler))
        .route("/healthz", axum::routing::get(healthz))
        .with_state(validator)
}

/// The DNS names the apiserver may use for `service` in `namespace`; the first,
/// `<service>.<namespace>.svc`, is the one it checks when calling a webhook by Service reference.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
    ]
}

/// A rustls server configuration (ring provider, TLS 1.2+, ALPN h2 and http/1.1) serving `cert`.
pub fn tls_config(cert: &IssuedCert) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WebhookError::Pem(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(WebhookError::Pem("no certificate in the PEM".into()));
    }
    // The error's text says only what kind of PEM problem it is, never the key.
    let key = PrivateKeyDer::from_pem_slice(cert.private_key.expose_pem().as_bytes())
        .map_err(|_| WebhookError::Pem("the private key is not a PEM private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(WebhookError::Tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(WebhookError::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Issues a serving certificate for `service` in `namespace` ([`service_dns_names`]) from `ca` and
/// builds its [`tls_config`].
pub fn service_tls_config(
    ca: &CertificateAuthority,
    service: &str,
    namespace: &str,
    validity: Duration,
) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
    let names = service_dns_names(service, namespace);
    let cert = ca
        .issue_server_cert(&names, validity)
        .map_err(|e| WebhookError::Certificate(names[0].clone(), e))?;
    tls_config(&cert)
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then lets requests in flight
/// finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebhookError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "<unknown>".into());
    let io = |source| WebhookError::Serve {
        addr: addr.clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(io)?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    let stop = tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    info!(%addr, "webhook server listening");
    let result = axum_server::from_tcp_rustls(listener, config)
        .map_err(io)?
        .handle(handle)
        .serve(router.into_make_service())
        .await
        .map_err(io);
    stop.abort();
    result
}
