//! `https-server`: the HTTP server's answers over TLS with a certificate of the app's own (PEM files),
//! for the HTTPS probe tests: the kubelet's TLS session must reach the app end to end through the
//! sidecar's probe listener, which only proxies TCP.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::http::{SERVED_BY, header_value};

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what)
}

/// A TLS server configuration from a PEM certificate chain and private key.
pub fn server_config(cert: &Path, key: &Path) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let chain = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or_else(|| invalid(format!("no private key in {}", key.display())))?;
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid(format!("certificate {}: {e}", cert.display())))?;
    Ok(Arc::new(config))
}

/// Serves HTTPS (HTTP/1.1) on `listener` forever: every request gets `200`, body `name`, header
/// `x-served-by: name`. A failed handshake ends only that connection.
pub async fn serve(
    listener: TcpListener,
    name: String,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let value = header_value(&name)?;
    let name: Arc<str> = name.into();
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let stream = crate::http::accept(&listener).await;
        let (acceptor, name, value) = (acceptor.clone(), Arc::clone(&name), value.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (name, value) = (Arc::clone(&name), value.clone());
                async move {
                    let _ = req.into_body().collect().await;
                    let mut resp = Response::new(Full::new(Bytes::from(name.as_bytes().to_vec())));
                    resp.headers_mut()
                        .insert(HeaderName::from_static(SERVED_BY), value);
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
