//! The ingress gateway certificate (MeshConfig `spec.certificate.ingressGateway`) kept in the Secret
//! the spec names, as upstream's `pkg/ingress/gateway.go` writes it: type `kubernetes.io/tls`, keys
//! `ca.crt` (the mesh root), `tls.crt` and `tls.key`. Created, or its data and type replaced when it
//! exists; deleted when the spec goes. The controller's keeper
//! (`osm_controller::ingress_gateway`) decides when.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use osm_api::config::SecretReference;
use osm_ca::ingress_gateway::{CertStoreError, IngressGatewayCertStore, StoreFuture, TlsBundle};

/// The Secret type upstream writes.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Writes the ingress gateway certificate into Secrets through the API server.
#[derive(Clone)]
pub struct IngressGatewaySecretStore {
    client: Client,
}

impl std::fmt::Debug for IngressGatewaySecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressGatewaySecretStore")
            .finish_non_exhaustive()
    }
}

impl IngressGatewaySecretStore {
    /// A store using `client` (it needs create, get, update and delete on Secrets in the namespace
    /// the MeshConfig names).
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Creates Secret `secret` holding `bundle`, or replaces the data and type of the existing one
    /// (its other metadata is kept).
    pub async fn write(&self, secret: &SecretReference, bundle: &TlsBundle) -> Result<(), kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        let data: BTreeMap<String, ByteString> = bundle
            .entries()
            .into_iter()
            .map(|(key, pem)| (key.to_owned(), ByteString(pem.as_bytes().to_vec())))
            .collect();
        let desired = Secret {
            metadata: ObjectMeta {
                name: Some(secret.name.clone()),
                namespace: Some(secret.namespace.clone()),
                ..ObjectMeta::default()
            },
            type_: Some(TLS_SECRET_TYPE.to_owned()),
            data: Some(data.clone()),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &desired).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(e),
        }
        // It exists: replace its data (resourceVersion from the read, so a concurrent writer's change
        // is a conflict, retried by the caller, rather than silently lost).
        let mut existing = api.get(&secret.name).await?;
        existing.type_ = Some(TLS_SECRET_TYPE.to_owned());
        existing.data = Some(data);
        existing.string_data = None;
        api.replace(&secret.name, &PostParams::default(), &existing)
            .await
            .map(drop)
    }

    /// Deletes Secret `secret`; a missing one is fine.
    pub async fn delete(&self, secret: &SecretReference) -> Result<(), kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        match api.delete(&secret.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn failed(&self, op: &'static str, secret: &SecretReference, e: kube::Error) -> CertStoreError {
        CertStoreError {
            op,
            location: self.location(secret),
            source: Box::new(e),
        }
    }
}

impl IngressGatewayCertStore for IngressGatewaySecretStore {
    fn location(&self, secret: &SecretReference) -> String {
        format!("Secret {}/{}", secret.namespace, secret.name)
    }

    fn store<'a>(&'a self, secret: &'a SecretReference, bundle: &'a TlsBundle) -> StoreFuture<'a> {
        Box::pin(async move {
            self.write(secret, bundle)
                .await
                .map_err(|e| self.failed("writing", secret, e))
        })
    }

    fn remove<'a>(&'a self, secret: &'a SecretReference) -> StoreFuture<'a> {
        Box::pin(async move {
            self.delete(secret)
                .await
                .map_err(|e| self.failed("deleting", secret, e))
        })
    }
}
