//! The ADS server (`:15128`, mTLS only): a snapshot cache of every proxy's config, state-of-the-world
//! and delta streams with ACK/NACK tracking, and proxy authentication from the client certificate.
#![forbid(unsafe_code)]

mod cache;
pub mod delta;
mod server;
mod sets;
pub mod sotw;

pub use cache::{AdsEvent, ProxyStatus, SnapshotCache};
pub use server::{AdsService, ProxyRegistry};

use std::future::Future;

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
    Server::builder()
        .tls_config(tls_config)
        .map_err(AdsError::Tls)?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(AdsError::Serve)
}
