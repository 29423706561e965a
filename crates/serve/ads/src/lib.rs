//! The ADS server (`:15128`, mTLS only): a snapshot cache of every proxy's config, state-of-the-world
//! and delta streams with ACK/NACK tracking, and proxy authentication from the client certificate.
#![forbid(unsafe_code)]

mod cache;
mod conn;
pub mod delta;
mod server;
mod sets;
pub mod sotw;
pub mod wire;

pub use cache::{AdsEvent, AdsTotals, ProxyStatus, SnapshotCache, Synced};
pub use conn::serve;
pub use server::{AdsService, ProxyRegistry};

/// The server's certificate and the CA that client certificates must chain to.
pub struct AdsTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdsError {
    /// The certificate, key or client CA cannot make a TLS config (the message never holds the key).
    #[error("configuring ADS TLS: {0}")]
    Tls(String),
}
