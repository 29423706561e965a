//! The mesh's built-in certificate authority (upstream OSM calls it "Tresor").
//!
//! - [`identity`]: the names certificates carry — [`TrustDomain`], [`ServiceIdentity`]
//!   (`<sa>.<ns>`, principal `<sa>.<ns>.<trustDomain>`) and [`XdsClientIdentity`]
//!   (`<uuid>.sidecar.<sa>.<ns>.<trustDomain>`, the CN of a proxy's xDS client certificate).
//! - [`authority`]: [`CertificateAuthority`] — a self-signed ECDSA P-256 root, persisted so restarts keep
//!   identities, that issues short-lived leaf certificates ([`IssuedCert`]).
//! - [`peer`]: reading the identity out of a peer's DER certificate (the ADS server's mTLS check).
//! - [`rotation`]: a pure deadline queue telling the controller which certificates to renew when.
//! - [`ingress_gateway`]: where the ingress gateway's certificate (MeshConfig
//!   `spec.certificate.ingressGateway`) is kept: the [`IngressGatewayCertStore`] trait and the local
//!   mode's [`DirectoryStore`].
//!
//! Nothing here spawns threads or touches the network; the only I/O is reading and writing the root
//! files and the ingress gateway certificate's directory.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authority;
mod error;
pub mod identity;
pub mod ingress_gateway;
pub mod peer;
pub mod rotation;

pub use authority::{
    CertRequest, CertUsage, CertificateAuthority, IssuedCert, PrivateKeyPem, ROOT_CERT_FILE, ROOT_KEY_FILE,
};
pub use error::{CaError, Result};
pub use identity::{ServiceIdentity, TrustDomain, XdsClientIdentity};
pub use ingress_gateway::{CertStoreError, DirectoryStore, IngressGatewayCertStore, TlsBundle};
pub use peer::{peer_common_name, peer_dns_names};
pub use rotation::RotationQueue;
