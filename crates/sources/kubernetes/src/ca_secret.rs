//! The mesh CA kept in a Kubernetes Secret (upstream `osm-ca-bundle` in the OSM namespace), so every
//! control-plane component and replica signs with the same root and restarts keep identities.
//!
//! Keys: `ca.crt` (root certificate, PEM) and `private.key` (its PKCS#8 key, PEM). The first component
//! to start creates it; a concurrent creator that loses the race (`AlreadyExists`) loads the winner's.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use osm_ca::{CertificateAuthority, TrustDomain};

/// Upstream's default name of the CA Secret.
pub const DEFAULT_CA_SECRET: &str = "osm-ca-bundle";
/// The root certificate's key in the Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The root private key's key in the Secret.
pub const CA_KEY_KEY: &str = "private.key";
/// Validity of a root this module generates.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why the CA Secret could not be loaded or created. Messages name the Secret, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("reading or writing Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} has no `{key}` entry")]
    MissingKey {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("Secret {namespace}/{name} does not hold a usable CA: {source}")]
    Invalid {
        namespace: String,
        name: String,
        #[source]
        source: osm_ca::CaError,
    },
}

/// Loads the CA from Secret `namespace/name`, or generates one and creates the Secret.
pub async fn load_or_create_ca(
    client: &Client,
    namespace: &str,
    name: &str,
    trust_domain: TrustDomain,
) -> Result<CertificateAuthority, CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api_err = |source| CaSecretError::Api {
        namespace: namespace.into(),
        name: name.into(),
        source,
    };
    if let Some(secret) = api.get_opt(name).await.map_err(api_err)? {
        return from_secret(&secret, namespace, name, trust_domain);
    }
    let ca = CertificateAuthority::generate(trust_domain.clone(), ROOT_VALIDITY).map_err(|source| {
        CaSecretError::Invalid {
            namespace: namespace.into(),
            name: name.into(),
            source,
        }
    })?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                CA_CERT_KEY.to_string(),
                ByteString(ca.root_cert_pem().as_bytes().to_vec()),
            ),
            (
                CA_KEY_KEY.to_string(),
                ByteString(ca.root_key_pem().expose_pem().as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "created the mesh CA");
            Ok(ca)
        }
        // Another component created it first: use theirs, so there is one root.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api.get(name).await.map_err(api_err)?;
            from_secret(&secret, namespace, name, trust_domain)
        }
        Err(e) => Err(api_err(e)),
    }
}

fn from_secret(
    secret: &Secret,
    namespace: &str,
    name: &str,
    trust_domain: TrustDomain,
) -> Result<CertificateAuthority, CaSecretError> {
    let entry = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| CaSecretError::MissingKey {
                namespace: namespace.into(),
                name: name.into(),
                key,
            })
    };
    CertificateAuthority::from_pem(&entry(CA_CERT_KEY)?, &entry(CA_KEY_KEY)?, trust_domain).map_err(
        |source| CaSecretError::Invalid {
            namespace: namespace.into(),
            name: name.into(),
            source,
        },
    )
}
