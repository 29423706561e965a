//! A simulated proxy's ADS call on HTTP/2 directly, driven in the proxy's own task: its TLS session,
//! its HTTP/2 connection and the one gRPC call on it.
//!
//! tonic's `Channel` ran a buffer task and hyper's connection task per proxy, and a request stream
//! piped through a third; each response and each ACK crossed them. The simulated proxies share the
//! machine's two cores with the controller, so their CPU per push is taken from the controller's and
//! shows up in every latency measured; one task per proxy keeps that share small.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{self, Poll};

use anyhow::{Context, anyhow, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::Connection;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
/// Envoy's default HTTP/2 windows are large; a 64 KiB stream window would throttle big responses.
const WINDOW: u32 = 16 << 20;

/// Where and how the proxies connect.
pub struct Dialer {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
}

/// An open ADS call (`StreamAggregatedResources` or `DeltaAggregatedResources`).
pub struct Call {
    conn: Connection<TlsStream<TcpStream>, Bytes>,
    /// The connection future finished (the server closed it); what was received is still read.
    closed: bool,
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    buf: BytesMut,
    ended: bool,
}

impl Dialer {
    /// Connects (TCP, TLS with the proxy's client certificate in `tls`, HTTP/2) and opens `method`.
    pub async fn open(&self, tls: Arc<rustls::ClientConfig>, method: &str) -> anyhow::Result<Call> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let (client, mut conn) = h2::client::Builder::new()
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .handshake::<_, Bytes>(tls)
            .await
            .context("HTTP/2 handshake")?;
        let request = http::Request::post(format!("https://{}/{SERVICE}/{method}", self.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let mut closed = false;
        let mut ready = pin!(client.ready());
        let mut client = drive(&mut conn, &mut closed, |cx| ready.as_mut().poll(cx)).await??;
        let (response, send) = client.send_request(request, false)?;
        let mut response = pin!(response);
        let response = drive(&mut conn, &mut closed, |cx| response.as_mut().poll(cx)).await??;
        if let Some(status) = grpc_error(response.headers()) {
            bail!("the server refused the call: {status}");
        }
        Ok(Call {
            conn,
            closed,
            send,
            recv: response.into_body(),
            buf: BytesMut::new(),
            ended: false,
        })
    }
}

/// Polls the connection, which does the I/O (flushing what was queued, reading what arrived), then
/// `poll`, until `poll` is ready. `closed` records that the server closed the connection; what it sent
/// before is still read.
async fn drive<T>(
    conn: &mut Connection<TlsStream<TcpStream>, Bytes>,
    closed: &mut bool,
    mut poll: impl FnMut(&mut task::Context<'_>) -> Poll<T>,
) -> anyhow::Result<T> {
    poll_fn(|cx| {
        if !*closed {
            match Pin::new(&mut *conn).poll(cx) {
                Poll::Ready(Ok(())) => *closed = true,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(anyhow!(e).context("the HTTP/2 connection failed")));
                }
                Poll::Pending => {}
            }
        }
        poll(cx).map(Ok)
    })
    .await
}

/// `grpc-status` and `grpc-message` of a call that did not end with OK.
fn grpc_error(headers: &http::HeaderMap) -> Option<String> {
    let status = headers.get("grpc-status")?.to_str().unwrap_or("?");
    (status != "0").then(|| {
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or("");
        format!("grpc-status {status}: {message}")
    })
}

impl Call {
    /// Queues a request; it goes out when the call is next polled (`message`).
    pub fn send<M: prost::Message>(&mut self, message: &M) -> anyhow::Result<()> {
        let len = message.encoded_len();
        let mut frame = BytesMut::with_capacity(5 + len);
        frame.put_u8(0);
        frame.put_u32(u32::try_from(len).context("a request over 4 GiB")?);
        message.encode(&mut frame)?;
        self.send.send_data(frame.freeze(), false)?;
        Ok(())
    }

    /// The next response and its size on the wire, or `None` once the server ended the call with OK.
    pub async fn message<M: prost::Message + Default>(&mut self) -> anyhow::Result<Option<(M, usize)>> {
        loop {
            if let Some(message) = self.take()? {
                return Ok(Some(message));
            }
            if self.ended {
                if !self.buf.is_empty() {
                    bail!("the call ended inside a message");
                }
                return Ok(None);
            }
            let data = drive(&mut self.conn, &mut self.closed, |cx| self.recv.poll_data(cx)).await?;
            match data {
                Some(data) => {
                    let data = data.context("reading the response stream")?;
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.buf.extend_from_slice(&data);
                }
                None => {
                    self.ended = true;
                    let trailers = drive(&mut self.conn, &mut self.closed, |cx| self.recv.poll_trailers(cx))
                        .await?
                        .context("reading the trailers")?;
                    if let Some(status) = trailers.as_ref().and_then(grpc_error) {
                        bail!("the server ended the call: {status}");
                    }
                }
            }
        }
    }

    fn take<M: prost::Message + Default>(&mut self) -> anyhow::Result<Option<(M, usize)>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            bail!("a compressed response");
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        // Frozen, so the light types' `bytes` fields are slices of it rather than copies.
        let message = self.buf.split_to(len).freeze();
        if self.buf.is_empty() {
            // Let the buffer go with the message rather than keep the largest response's size.
            self.buf = BytesMut::new();
        }
        Ok(Some((M::decode(message)?, len)))
    }
}

/// A proxy's TLS client config: the mesh root as the only trust anchor, its own certificate and key,
/// HTTP/2 (ALPN `h2`), the ring provider.
pub fn client_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.context("the mesh root")?)?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the client certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| anyhow!("the client key is not a PEM private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
