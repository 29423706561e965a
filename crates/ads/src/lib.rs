//! The ADS server (`:15128`, mTLS only): a snapshot cache of every proxy's config, state-of-the-world
//! and delta streams with ACK/NACK tracking, and proxy authentication from the client certificate.
#![forbid(unsafe_code)]

mod cache;
pub mod delta;
mod server;
mod sets;
pub mod sotw;
pub mod wire;

pub use cache::{AdsEvent, ProxyStatus, SnapshotCache};
pub use server::{AdsService, ProxyRegistry};

use std::future::Future;

use std::time::Duration;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// The server's certificate and the CA that client certificates must chain to.
pub struct AdsTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdsError {
    #[error("configuring ADS TLS")]
    Tls(#[source] tonic::transport::Error),
    #[error("serving ADS")]
    Serve(#[source] tonic::transport::Error),
}

/// Serves ADS on `listener` until `shutdown` resolves. Clients without a certificate from the mesh CA
/// fail the TLS handshake; clients with one must still pass `ProxyRegistry::check`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: AdsTls,
    service: AdsService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AdsError> {
    let tls_config = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .client_ca_root(Certificate::from_pem(&tls.client_ca_pem));
    // Dead proxies are found by kernel TCP keepalive (60 s idle, then 3 probes 10 s apart), not HTTP/2
    // PINGs: with thousands of idle streams, PINGs were most of the controller's idle CPU (each is a
    // timer, a TLS record and a write), while the kernel's probes cost the process nothing.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
        .with_keepalive_interval(Some(Duration::from_secs(10)))
        .with_keepalive_retries(Some(3));
    Server::builder()
        .tls_config(tls_config)
        .map_err(AdsError::Tls)?
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(AdsError::Serve)
}
