//! A host "on the internet" for egress tests: a pod namespace on the test bridge with no sidecar and no
//! interception, serving HTTPS with its own self-signed certificate and a server-first TCP protocol
//! (the server speaks first, like MySQL or SMTP). Plain HTTP comes from `osm-demo-app http-server`,
//! started as the pod's app. Clients here run inside a meshed pod's network namespace, so their
//! connections are intercepted and go through that pod's Envoy.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use osm_harness::Pod;
use rustls::pki_types::{PrivateKeyDer, ServerName};

/// Plain HTTP (served by the demo app).
pub const HTTP_PORT: u16 = 8080;
/// HTTPS with the host's self-signed certificate.
pub const HTTPS_PORT: u16 = 8443;
/// The server-first protocol: the server sends [`GREETING`] as soon as a connection is accepted.
pub const SERVER_FIRST_PORT: u16 = 3306;
/// What the server-first server says first.
pub const GREETING: &str = "220 internet ready\r\n";
/// The body of every HTTPS answer.
pub const HTTPS_BODY: &str = "internet over tls";

/// How long a client waits for a connection or an answer. A refused connection is answered well within
/// it; only a hang reaches it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The exchange completed; what the server said (HTTP status line, or the greeting).
    Answered(String),
    /// The connection was refused, reset or closed before any answer.
    Refused(String),
    /// Nothing happened within the client's timeout.
    Hung,
}

impl Outcome {
    pub fn is_refused(&self) -> bool {
        matches!(self, Outcome::Refused(_))
    }
}

/// The servers; dropping it stops them.
pub struct Internet {
    pub ip: Ipv4Addr,
    /// The self-signed certificate of the HTTPS server (PEM), which clients trust.
    pub cert_pem: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Internet {
    /// Starts the HTTPS and server-first servers in `pod` (which must have no interception rules). The
    /// certificate names every host in `hosts` (so a client that reaches the server with any of them
    /// completes its handshake: a refusal is the mesh's doing, not a name mismatch).
    pub fn start(pod: &Pod, hosts: &[&str]) -> Result<Internet> {
        let cert =
            rcgen::generate_simple_self_signed(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .context("self-signed certificate")?;
        let cert_pem = cert.cert.pem();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                PrivateKeyDer::try_from(cert.signing_key.serialize_der())
                    .map_err(|e| anyhow::anyhow!("server key: {e}"))?,
            )?;
        let tls = Arc::new(tls);
        let stop = Arc::new(AtomicBool::new(false));
        let ip = pod.ip();
        let https = pod.bind_tcp(ip, HTTPS_PORT)?;
        let server_first = pod.bind_tcp(ip, SERVER_FIRST_PORT)?;
        let threads = vec![
            serve(https, stop.clone(), move |mut tcp| {
                let mut conn = rustls::ServerConnection::new(tls.clone())?;
                let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                read_request_head(&mut tls)?;
                write!(
                    tls,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{HTTPS_BODY}",
                    HTTPS_BODY.len()
                )?;
                tls.flush()?;
                tls.conn.send_close_notify();
                tls.flush()?;
                Ok(())
            }),
            serve(server_first, stop.clone(), |mut tcp| {
                tcp.write_all(GREETING.as_bytes())?;
                // Then echo, so a client can also speak.
                let mut buf = [0u8; 1024];
                loop {
                    match tcp.read(&mut buf)? {
                        0 => return Ok(()),
                        n => tcp.write_all(&buf[..n])?,
                    }
                }
            }),
        ];
        Ok(Internet {
            ip,
            cert_pem,
            stop,
            threads,
        })
    }

    /// An HTTPS GET from inside `from`, to this host's address with SNI `sni`, verifying the server's
    /// certificate against this host's own (so a man in the middle would fail the handshake).
    pub fn https_get(&self, from: &Pod, sni: &str) -> Outcome {
        let addr = SocketAddr::from((self.ip, HTTPS_PORT));
        let tcp = match connect(from, addr) {
            Ok(tcp) => tcp,
            Err(outcome) => return outcome,
        };
        let result = (|| -> std::io::Result<String> {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut self.cert_pem.as_bytes()) {
                roots.add(cert?).map_err(std::io::Error::other)?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
            let mut conn =
                rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
            let mut tcp = tcp;
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            write!(tls, "GET / HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n")?;
            let mut answer = Vec::new();
            match tls.read_to_end(&mut answer) {
                Ok(_) => {}
                // The server closes after its answer; some stacks report that as an unexpected EOF.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof && !answer.is_empty() => {}
                Err(e) => return Err(e),
            }
            let answer = String::from_utf8_lossy(&answer).to_string();
            if !answer.ends_with(HTTPS_BODY) {
                return Err(std::io::Error::other(format!("unexpected answer {answer:?}")));
            }
            Ok(answer.lines().next().unwrap_or_default().to_string())
        })();
        classify(result)
    }

    /// Connects from inside `from` to the server-first port and reads what the server says first.
    pub fn server_first(&self, from: &Pod) -> Outcome {
        let addr = SocketAddr::from((self.ip, SERVER_FIRST_PORT));
        let mut tcp = match connect(from, addr) {
            Ok(tcp) => tcp,
            Err(outcome) => return outcome,
        };
        let mut greeting = vec![0u8; GREETING.len()];
        classify(
            tcp.read_exact(&mut greeting)
                .map(|()| String::from_utf8_lossy(&greeting).to_string()),
        )
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accepts connections until `stop`, each handled on its own thread.
fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handle: impl Fn(TcpStream) -> Result<()> + Send + Sync + Clone + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking listener");
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nonblocking(false);
                    let _ = tcp.set_read_timeout(Some(CLIENT_TIMEOUT));
                    let handle = handle.clone();
                    std::thread::spawn(move || {
                        let _ = handle(tcp);
                    });
                }
                // Polling keeps shutdown simple: the listener's namespace goes away with the test.
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return,
            }
        }
    })
}

fn read_request_head(r: &mut impl Read) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(())
}

/// A TCP connection made from inside `from` (so it is intercepted by that pod's rules).
fn connect(from: &Pod, addr: SocketAddr) -> Result<TcpStream, Outcome> {
    let connected = from
        .in_netns(move || TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT))
        .map_err(|e| Outcome::Refused(format!("entering the pod: {e}")))?;
    let tcp = connected.map_err(|e| classify_error(&e))?;
    let _ = tcp.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(CLIENT_TIMEOUT));
    Ok(tcp)
}

fn classify(result: std::io::Result<String>) -> Outcome {
    match result {
        Ok(answer) => Outcome::Answered(answer),
        Err(e) => classify_error(&e),
    }
}

fn classify_error(e: &std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Outcome::Hung,
        _ => Outcome::Refused(e.to_string()),
    }
}
