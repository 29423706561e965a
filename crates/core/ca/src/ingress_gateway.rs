//! Where the ingress gateway's certificate (MeshConfig `spec.certificate.ingressGateway`) is kept.
//!
//! The controller issues it with [`CertificateAuthority::issue_ingress_gateway_cert`] and hands it, as a
//! [`TlsBundle`] (`ca.crt`, `tls.crt`, `tls.key`, the keys of a `kubernetes.io/tls` Secret as upstream
//! writes it), to an [`IngressGatewayCertStore`]: on Kubernetes the Secret the spec names
//! (`osm_k8s::ingress_gateway_secret`), in local mode a directory ([`DirectoryStore`]).
//!
//! The trait's methods return boxed futures so that a store may be asynchronous (the Kubernetes API)
//! without this crate depending on an async runtime; [`DirectoryStore`]'s futures do their small,
//! synced file writes when polled, without yielding.

use std::fs;
use std::future::Future;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use osm_api::config::SecretReference;

use crate::authority::{CertificateAuthority, IssuedCert, PrivateKeyPem, io_err, write_atomically};
use crate::error::CaError;

/// Key (Secret data key, or file name) of the trust bundle: the mesh root, PEM.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Key of the certificate chain, PEM (the leaf; the root signs leaves directly).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Key of the certificate's private key, PEM PKCS#8.
pub const TLS_KEY_KEY: &str = "tls.key";

/// A certificate as stored for its user: trust bundle, chain and key. `Debug` redacts the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsBundle {
    /// The mesh root (the trust bundle the ingress controller verifies sidecars with), PEM.
    pub ca_cert_pem: String,
    /// The certificate chain, PEM.
    pub cert_chain_pem: String,
    /// The certificate's key.
    pub private_key: PrivateKeyPem,
}

impl TlsBundle {
    /// The bundle of `cert`, issued by `ca`.
    pub fn new(ca: &CertificateAuthority, cert: &IssuedCert) -> Self {
        Self {
            ca_cert_pem: ca.root_cert_pem().to_owned(),
            cert_chain_pem: cert.cert_pem.clone(),
            private_key: cert.private_key.clone(),
        }
    }

    /// `(key, PEM text)` for `ca.crt`, `tls.crt` and `tls.key`, in the order a reader of files should
    /// see them replaced (the key before the certificate it belongs to). Exposes the private key: call
    /// only to hand the bundle to its store.
    pub fn entries(&self) -> [(&'static str, &str); 3] {
        [
            (CA_CERT_KEY, &self.ca_cert_pem),
            (TLS_KEY_KEY, self.private_key.expose_pem()),
            (TLS_CERT_KEY, &self.cert_chain_pem),
        ]
    }
}

/// What [`IngressGatewayCertStore`]'s methods return.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CertStoreError>> + Send + 'a>>;

/// Where the ingress gateway certificate goes. `secret` is the spec's `secret` reference; a store may
/// ignore it (a directory store writes where it was configured to).
pub trait IngressGatewayCertStore: Send + Sync {
    /// Where `secret` is kept, for logs; two references with the same location are the same place.
    fn location(&self, secret: &SecretReference) -> String;
    /// Creates or replaces the stored bundle.
    fn store<'a>(&'a self, secret: &'a SecretReference, bundle: &'a TlsBundle) -> StoreFuture<'a>;
    /// Deletes the stored bundle; succeeds when there is none.
    fn remove<'a>(&'a self, secret: &'a SecretReference) -> StoreFuture<'a>;
}

/// A store operation failed. The message names the place, never the contents.
#[derive(Debug, thiserror::Error)]
#[error("{op} {location}: {source}")]
pub struct CertStoreError {
    /// What was being done ("writing", "deleting").
    pub op: &'static str,
    /// Where (as [`IngressGatewayCertStore::location`] says).
    pub location: String,
    /// The underlying error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Keeps the bundle as three files in one directory (local mode): `ca.crt`, `tls.crt` (mode 0644) and
/// `tls.key` (mode 0600), each replaced through a temporary file and a rename, the key before the
/// certificate. The directory is created (mode 0755) if missing.
#[derive(Clone, Debug)]
pub struct DirectoryStore {
    dir: PathBuf,
}

impl DirectoryStore {
    /// A store writing into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the three files (see the type's documentation).
    pub fn write(&self, bundle: &TlsBundle) -> Result<(), CaError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)
            .map_err(|source| io_err("creating", &self.dir, source))?;
        for (name, pem) in bundle.entries() {
            let mode = if name == TLS_KEY_KEY { 0o600 } else { 0o644 };
            write_atomically(&self.dir.join(name), pem.as_bytes(), mode)?;
        }
        self.sync_dir()
    }

    /// Deletes the three files; missing ones are fine.
    pub fn delete(&self) -> Result<(), CaError> {
        for name in [TLS_CERT_KEY, TLS_KEY_KEY, CA_CERT_KEY] {
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_err("deleting", &path, source)),
            }
        }
        match self.sync_dir() {
            Err(CaError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn sync_dir(&self) -> Result<(), CaError> {
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| io_err("syncing", &self.dir, source))
    }

    fn failed(&self, op: &'static str, e: CaError) -> CertStoreError {
        CertStoreError {
            op,
            location: self.dir.display().to_string(),
            source: Box::new(e),
        }
    }
}

impl IngressGatewayCertStore for DirectoryStore {
    fn location(&self, _secret: &SecretReference) -> String {
        self.dir.display().to_string()
    }

    fn store<'a>(&'a self, _secret: &'a SecretReference, bundle: &'a TlsBundle) -> StoreFuture<'a> {
        Box::pin(async move { self.write(bundle).map_err(|e| self.failed("writing", e)) })
    }

    fn remove<'a>(&'a self, _secret: &'a SecretReference) -> StoreFuture<'a> {
        Box::pin(async move { self.delete().map_err(|e| self.failed("deleting", e)) })
    }
}
