//! The bootstrap of one meshed pod's sidecar: a fresh xDS client certificate for the pod's identity,
//! rendered into [`crate::bootstrap`]. Used by the injector (bootstrap Secret), `osm bootstrap` (local
//! mode) and the controller, so none of them needs another's crate for it.

use std::time::Duration;

use osm_ca::{CaError, CertificateAuthority, ServiceIdentity, XdsClientIdentity};
use osm_model::Pod;

use crate::bootstrap::{self, AdsApi, BootstrapConfig, Probe};
use crate::names;

/// How long a bootstrap's xDS client certificate is valid: the sidecar keeps it for its life.
const XDS_CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("issuing the xDS client certificate of pod {pod}")]
    Certificate {
        pod: String,
        #[source]
        source: CaError,
    },
    #[error("pod {0} has no osm-proxy-uuid: it has no sidecar")]
    NotMeshed(String),
}

/// An Envoy bootstrap for `pod`, with a fresh xDS client certificate (CN
/// `<uuid>.sidecar.<sa>.<ns>.<trustDomain>`) from `ca`. The result contains a private key: store it
/// like one (mode 0600, or a Kubernetes Secret).
pub fn render(
    ca: &CertificateAuthority,
    pod: &Pod,
    ads_host: &str,
    ads_server_name: &str,
    api: AdsApi,
    probes: &[Probe],
) -> Result<String, BootstrapError> {
    let uuid = pod
        .proxy_uuid
        .clone()
        .ok_or_else(|| BootstrapError::NotMeshed(pod.id.to_string()))?;
    let identity = XdsClientIdentity {
        proxy_uuid: uuid,
        identity: ServiceIdentity::new(&pod.service_account, &pod.id.namespace),
        trust_domain: ca.trust_domain().clone(),
    };
    let cert = ca
        .issue_xds_client_cert(&identity, XDS_CLIENT_CERT_VALIDITY)
        .map_err(|source| BootstrapError::Certificate {
            pod: pod.id.to_string(),
            source,
        })?;
    let node_id = identity.common_name();
    Ok(bootstrap::render(&BootstrapConfig {
        node_id: &node_id,
        node_cluster: &format!("{}.{}", pod.service_account, pod.id.namespace),
        ads_host,
        ads_port: names::ADS_PORT,
        ads_server_name,
        api,
        client_cert_pem: &cert.cert_pem,
        client_key_pem: cert.private_key.expose_pem(),
        ca_bundle_pem: ca.root_cert_pem(),
        probes,
    }))
}
