//! The crate's error type.
//!
//! Every variant names what it was working on (a file, an identity, a certificate name) and none ever
//! carries key material: errors from parsing a private key are replaced by fixed reasons instead of being
//! passed through, because a parser's message may quote the input.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = CaError> = std::result::Result<T, E>;

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done ("reading", "writing", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The root certificate (a file path or "root certificate PEM") could not be used.
    #[error("root certificate {what} is invalid: {reason}")]
    InvalidRootCert {
        /// Which certificate: a file path or a description of the in-memory input.
        what: String,
        /// Why it was refused.
        reason: String,
    },

    /// The root private key could not be used. `reason` is one of a fixed set of texts, never parser output.
    #[error("root key {what} is invalid: {reason}")]
    InvalidRootKey {
        /// Which key: a file path or a description of the in-memory input.
        what: String,
        /// Why it was refused (fixed text).
        reason: &'static str,
    },

    /// The root key does not belong to the root certificate.
    #[error("root key {key} does not match root certificate {cert}")]
    RootKeyMismatch {
        /// The certificate (path or description).
        cert: String,
        /// The key (path or description).
        key: String,
    },

    /// Only one of the two root files exists, so the root can be neither loaded nor safely regenerated.
    #[error(
        "{} exists but {} is missing; restore it, or remove both to generate a new root (which invalidates every issued certificate)",
        present.display(),
        missing.display()
    )]
    IncompleteRoot {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },

    /// A trust domain is not a valid DNS name.
    #[error("invalid trust domain {domain:?}: {reason}")]
    InvalidTrustDomain {
        /// The refused value.
        domain: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A common name is not a valid xDS client identity.
    #[error("invalid xDS client common name {cn:?}: {reason}")]
    InvalidXdsCommonName {
        /// The refused common name.
        cn: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A certificate request was refused before signing.
    #[error("invalid certificate request for {subject:?}: {reason}")]
    InvalidRequest {
        /// The requested common name.
        subject: String,
        /// Why it was refused.
        reason: String,
    },

    /// Key generation or signing failed.
    #[error("issuing certificate for {subject:?} failed: {reason}")]
    Issue {
        /// The requested common name.
        subject: String,
        /// The signer's error text (it never contains key material).
        reason: String,
    },

    /// A peer certificate could not be parsed or lacks the expected names.
    #[error("invalid peer certificate: {reason}")]
    InvalidPeerCert {
        /// Why it was refused.
        reason: String,
    },
}
