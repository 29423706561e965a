//! ADS on HTTP/2 directly: one task per connection runs its TLS session, its HTTP/2 connection and
//! every ADS stream on it.
//!
//! Why not tonic's server: it spreads a push over three tasks (the stream, hyper's body pipe, the
//! connection), and each push and each ACK woke several of them. At 2000 proxies those wake-ups were
//! a quarter of the controller's CPU per config change. Here a push is one wake-up (the proxy's config
//! channel) and an ACK one more (the socket), and the connection's buffers are ours to size.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::server::{AdsService, Inner};
use crate::{AdsError, AdsTls};

/// A client that has not finished its TLS (and then its HTTP/2) handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections to close after their streams ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Envoy opens one ADS stream per connection; a bound keeps a client from opening thousands.
const MAX_STREAMS: u32 = 16;
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// How much a client may send before we read it (as hyper's default): a delta subscription to a
/// thousand clusters is ~40 kB, more than HTTP/2's default 64 KiB window leaves room for twice.
const RECEIVE_WINDOW: u32 = 1 << 20;
/// What h2 buffers per stream before a call waits for the socket.
const MAX_SEND_BUFFER: usize = 64 * 1024;

/// The server's rustls config: its certificate, client certificates required and verified against
/// the mesh root, HTTP/2 only (ALPN `h2`), the ring provider.
pub(crate) fn tls_config(tls: &AdsTls) -> Result<Arc<rustls::ServerConfig>, AdsError> {
    let pem = |what: &str, e: rustls::pki_types::pem::Error| AdsError::Tls(format!("{what}: {e}"));
    let chain = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("the server certificate", e))?;
    if chain.is_empty() {
        return Err(AdsError::Tls("no server certificate in the PEM".into()));
    }
    // The error says only that the key is unreadable, never what it holds.
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|_| AdsError::Tls("the server key is not a PEM private key".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| pem("the client CA", e))?;
        roots
            .add(ca)
            .map_err(|e| AdsError::Tls(format!("the client CA: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| AdsError::Tls(format!("verifying client certificates: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AdsError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| AdsError::Tls(format!("the server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Serves ADS on `listener` until `shutdown` resolves. Clients without a certificate from the mesh CA
/// fail the TLS handshake; clients with one must still pass `ProxyRegistry::check`.
///
/// On shutdown it stops accepting, asks each connection to close (GOAWAY) and waits up to
/// `DRAIN_TIMEOUT` for them; the streams themselves end on the service's shutdown signal.
pub async fn serve(
    listener: TcpListener,
    tls: AdsTls,
    service: AdsService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AdsError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(&tls)?);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let (acceptor, inner, stopping) = (acceptor.clone(), service.inner.clone(), stopping.clone());
                    let span = tracing::debug_span!("ads_connection", %peer);
                    connections.spawn(connection(tcp, peer, acceptor, inner, stopping).instrument(span));
                }
                Err(e) => {
                    // Out of file descriptors and the like: the listener stays usable, but retrying at
                    // once would spin.
                    tracing::warn!(error = %e, "accepting an ADS connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "ADS connections still open after shutdown; closing them"
        );
        connections.abort_all();
    }
    Ok(())
}

/// One accepted TCP connection: socket options, the TLS handshake, then HTTP/2.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    inner: Arc<Inner>,
    stopping: watch::Receiver<bool>,
) {
    if let Err(e) = tune(&tcp) {
        tracing::debug!(%peer, error = %e, "setting socket options");
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| Arc::new(leaf.clone().into_owned()));
    serve_connection(tls, client_cert, inner, stopping).await;
}

/// No Nagle delay (responses and ACKs are single writes); dead peers found by kernel TCP keepalive
/// (60 s idle, then 3 probes 10 s apart) rather than HTTP/2 PINGs: with thousands of idle streams,
/// PINGs were most of the controller's idle CPU (each a timer, a TLS record and a write), while the
/// kernel's probes cost the process nothing.
fn tune(tcp: &TcpStream) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

type Call = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the HTTP/2 connection and its calls in this one task until the client closes it (or it
/// fails); `stopping` turns it into a graceful close. `client_cert` is the verified leaf the client
/// presented, which every call authenticates against.
pub(crate) async fn serve_connection<IO>(
    io: IO,
    client_cert: Option<Arc<CertificateDer<'static>>>,
    inner: Arc<Inner>,
    mut stopping: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .initial_window_size(RECEIVE_WINDOW)
        .initial_connection_window_size(RECEIVE_WINDOW)
        .handshake::<_, Bytes>(io);
    // The client's preface and SETTINGS are due right after TLS; a client that sends nothing does not
    // get to hold a task.
    let mut conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return tracing::debug!(error = %e, "HTTP/2 handshake failed"),
        Err(_) => return tracing::debug!("HTTP/2 handshake timed out"),
    };
    let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
    let mut stop = pin!(async move {
        // A dropped sender means the server is gone: stop as well.
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    let mut closing = false;
    poll_fn(|cx| {
        loop {
            if !closing && stop.as_mut().poll(cx).is_ready() {
                conn.graceful_shutdown();
                closing = true;
            }
            // Calls first: what they write is flushed by polling the connection right after.
            while let Poll::Ready(Some(())) = calls.poll_next_unpin(cx) {}
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    calls.push(Box::pin(inner.clone().call(req, respond, client_cert.clone())));
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "HTTP/2 connection failed");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use osm_ca::{CertificateAuthority, ServiceIdentity, TrustDomain, XdsClientIdentity};
    use tokio::sync::broadcast;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::server::{DELTA_PATH, SOTW_PATH};
    use crate::{AdsEvent, ProxyRegistry, SnapshotCache};

    const TIMEOUT: Duration = Duration::from_secs(10);

    struct AnyPod;

    impl ProxyRegistry for AnyPod {
        fn check(&self, _: &XdsClientIdentity) -> Result<(), String> {
            Ok(())
        }
    }

    /// A client certificate from a fresh mesh CA, as TLS would hand it over, and the proxy it names.
    fn client_cert() -> (Arc<CertificateDer<'static>>, String) {
        let validity = Duration::from_secs(3600);
        let ca = CertificateAuthority::generate(TrustDomain::default(), validity).expect("a test CA");
        let id = XdsClientIdentity {
            proxy_uuid: "u1".into(),
            identity: ServiceIdentity::new("bookbuyer", "bookbuyer"),
            trust_domain: TrustDomain::default(),
        };
        let cert = ca.issue_xds_client_cert(&id, validity).expect("a client cert");
        let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("PEM");
        (Arc::new(der), id.common_name())
    }

    struct Pipe {
        client: h2::client::SendRequest<Bytes>,
        client_conn: JoinHandle<()>,
        server: JoinHandle<()>,
        proxy: String,
        _stop: watch::Sender<bool>,
    }

    /// The server's side of a connection over an in-memory pipe, an HTTP/2 client on the other end.
    async fn connect(cache: SnapshotCache) -> Pipe {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (cert, proxy) = client_cert();
        let (stop, stopping) = watch::channel(false);
        let service = AdsService::new(cache, Arc::new(AnyPod), TrustDomain::default(), stopping.clone());
        let server = tokio::spawn(serve_connection(
            server_io,
            Some(cert),
            service.inner.clone(),
            stopping,
        ));
        let (client, conn) = h2::client::handshake(client_io).await.expect("HTTP/2 handshake");
        let client_conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Pipe {
            client,
            client_conn,
            server,
            proxy,
            _stop: stop,
        }
    }

    fn call(path: &str) -> http::Request<()> {
        http::Request::post(format!("http://ads{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a valid request")
    }

    async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn event(events: &mut broadcast::Receiver<AdsEvent>, pred: impl Fn(&AdsEvent) -> bool) {
        within("an ADS event", async {
            while !pred(&events.recv().await.expect("the cache is alive")) {}
        })
        .await
    }

    #[tokio::test]
    async fn an_unknown_method_is_unimplemented() {
        let mut pipe = connect(SnapshotCache::new()).await;
        let (response, _) = pipe.client.send_request(call("/x.Y/Z"), true).expect("sent");
        let response = within("the response", response).await.expect("a response");
        assert_eq!(response.headers()["grpc-status"], "12", "{response:?}");
    }

    /// A request the stream cannot read ends the call with the reason, not with a silent OK.
    #[tokio::test]
    async fn an_unreadable_request_ends_the_call_with_its_status() {
        let mut pipe = connect(SnapshotCache::new()).await;
        let (response, mut body) = pipe.client.send_request(call(SOTW_PATH), false).expect("sent");
        let mut compressed = vec![1u8];
        compressed.extend_from_slice(&3u32.to_be_bytes());
        compressed.extend_from_slice(&[0; 3]);
        body.send_data(Bytes::from(compressed), false).expect("sent");
        let response = within("the response", response).await.expect("a response");
        let mut received = response.into_body();
        while let Some(data) = within("data", received.data()).await {
            data.expect("readable");
        }
        let trailers = within("trailers", received.trailers()).await.expect("readable");
        let trailers = trailers.expect("trailers end the call");
        assert_eq!(trailers["grpc-status"], "12", "UNIMPLEMENTED: {trailers:?}");
    }

    /// A stream whose connection goes away ends and is recorded as disconnected, though it never
    /// saw its request stream end.
    #[tokio::test]
    async fn a_dropped_connection_ends_its_streams() {
        let cache = SnapshotCache::new();
        let mut events = cache.events();
        let mut pipe = connect(cache.clone()).await;
        let (_response, _body) = pipe.client.send_request(call(DELTA_PATH), false).expect("sent");
        event(&mut events, |e| matches!(e, AdsEvent::Connected { .. })).await;
        assert!(cache.status(&pipe.proxy).expect("a status").connected);

        pipe.client_conn.abort();
        drop(pipe.client);
        within("the server's side to close", pipe.server)
            .await
            .expect("no panic");
        event(&mut events, |e| matches!(e, AdsEvent::Disconnected { .. })).await;
        assert!(!cache.status(&pipe.proxy).expect("a status").connected);
    }
}
