//! The ingress controller of the IngressBackend tests, on its own: a real nginx in a non-meshed pod
//! proxies to a non-meshed backend pod — over plain HTTP (the demo app's server: 200 through nginx, 502
//! once the backend is gone) and over HTTPS with a client certificate (a rustls server that requires
//! one: 200 with a certificate of the CA it trusts, 502 with one of another CA or when the backend's
//! certificate does not carry `proxy_ssl_name`). Reconfiguring reloads the running nginx.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use osm_e2e::nginx::{Nginx, ProxyTls, Upstream, nginx_or_skip};
use osm_e2e::{Mesh, http_server_args};
use osm_harness::{Pod, require_netns_or_skip};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const BACKEND_PORT: u16 = 14001;
const INGRESS_PORT: u16 = 80;

fn prereqs(test: &str) -> bool {
    require_netns_or_skip(test) && nginx_or_skip(test)
}

/// Starts `osm-demo-app http-server` named `backend` in `pod` and waits until it listens.
fn demo_backend(pod: &Pod) -> osm_harness::PodProcess {
    let bin = osm_harness::demo_app_bin().expect("osm-demo-app (cargo build -p osm-demo-apps)");
    let mut argv = vec![bin.to_string_lossy().into_owned()];
    argv.extend(http_server_args("backend", BACKEND_PORT));
    let mut app = pod.spawn(&argv, &[]).expect("spawn the backend");
    app.wait_for_output("listening on", Duration::from_secs(10))
        .expect("backend listens");
    app
}

#[test]
fn ingress_backend_nginx_smoke_http() {
    let test = "ingress_backend_nginx_smoke_http";
    if !prereqs(test) {
        return;
    }
    let (hub, pods) = Mesh::pods_for("ings", &["ingress-nginx", "backend"]).expect("pods");
    let (ingress, backend) = (&pods["ingress-nginx"], &pods["backend"]);
    let backend_addr = SocketAddr::from((backend.ip(), BACKEND_PORT));
    let mut app = demo_backend(backend);

    // Workers as www-data (the master stays root): the temp dir and paths are reachable for them.
    let mut nginx = Nginx::start_as(ingress, INGRESS_PORT, Upstream::Http(backend_addr), "www-data")
        .expect("nginx starts");
    let workers = nginx.worker_pids();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", workers[0])).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("33")),
        "worker not running as www-data (33):\n{status}"
    );
    let from = hub.netns();
    let r = nginx.get(from, "/books").expect("GET through nginx");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.log_tail());
    assert_eq!(
        (r.body.as_str(), r.header("x-served-by")),
        ("backend", Some("backend")),
        "{r:?}"
    );
    // From another pod, too (the client side of the later ingress tests).
    assert_eq!(
        osm_e2e::nginx::http_status(backend.netns(), nginx.addr(), "/").unwrap(),
        200
    );
    assert!(
        nginx.access_log().contains(&backend_addr.to_string()),
        "{}",
        nginx.access_log()
    );

    // The backend stops: nginx answers 502 at once (connection refused), it does not hang.
    app.kill();
    let r = nginx.get(from, "/books").expect("GET through nginx");
    assert_eq!(r.status, 502, "{r:?}");

    // Reconfigured (a live reload) to a port where nothing listens: still 502; back to a running backend: 200.
    let master = nginx.pid();
    nginx
        .reconfigure(Upstream::Http(SocketAddr::from((backend.ip(), 9))))
        .expect("reload");
    assert_eq!(nginx.get(from, "/").unwrap().status, 502);
    let _app = demo_backend(backend);
    nginx.reconfigure(Upstream::Http(backend_addr)).expect("reload");
    let r = nginx.get(from, "/again").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "backend"), "{r:?}");
    assert_eq!(nginx.pid(), master, "reloaded, not restarted");
    assert!(
        nginx.error_log().contains("reconfiguring"),
        "{}",
        nginx.log_tail()
    );
}

/// A throwaway CA.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A leaf certificate and its key (PEM) for `name` (CN and DNS SAN).
    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key)
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Writes `tls.crt`, `tls.key` and `ca.crt` into `dir/<name>/` and returns nginx's view of them.
fn client_files(dir: &Path, name: &str, cert: &(String, KeyPair), trusted_ca: &str, sni: &str) -> ProxyTls {
    let d: PathBuf = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("tls.crt"), &cert.0).unwrap();
    std::fs::write(d.join("tls.key"), cert.1.serialize_pem()).unwrap();
    std::fs::write(d.join("ca.crt"), trusted_ca).unwrap();
    ProxyTls {
        cert: d.join("tls.crt"),
        key: d.join("tls.key"),
        trusted_ca: d.join("ca.crt"),
        name: sni.to_string(),
    }
}

const MTLS_BODY: &str = "mtls backend";

/// An HTTPS server that requires a client certificate of `client_ca`; answers 200 [`MTLS_BODY`].
struct MtlsBackend {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MtlsBackend {
    fn start(pod: &Pod, port: u16, server: &(String, KeyPair), client_ca: &str) -> MtlsBackend {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut client_ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut server.0.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::try_from(server.1.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = pod.bind_tcp(Ipv4Addr::UNSPECIFIED, port).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || accept_loop(listener, &stop, &config))
        };
        MtlsBackend {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for MtlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, stop: &AtomicBool, config: &Arc<rustls::ServerConfig>) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((tcp, _)) => {
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = serve_one(tcp, config);
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return,
        }
    }
}

fn serve_one(mut tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    write!(
        tls,
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{MTLS_BODY}",
        MTLS_BODY.len()
    )?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()
}

#[test]
fn ingress_backend_nginx_smoke_https() {
    let test = "ingress_backend_nginx_smoke_https";
    if !prereqs(test) {
        return;
    }
    const SNI: &str = "backend.backend.svc.cluster.local";
    let ca = Ca::new("smoke-ca");
    let rogue = Ca::new("rogue-ca");
    let server_cert = ca.issue(SNI, ExtendedKeyUsagePurpose::ServerAuth);
    let files = tempfile::tempdir().unwrap();
    let good = client_files(
        files.path(),
        "good",
        &ca.issue("ingress-nginx", ExtendedKeyUsagePurpose::ClientAuth),
        &ca.pem,
        SNI,
    );
    let bad = client_files(
        files.path(),
        "rogue",
        &rogue.issue("ingress-nginx", ExtendedKeyUsagePurpose::ClientAuth),
        &ca.pem,
        SNI,
    );

    let (hub, pods) = Mesh::pods_for("ingt", &["ingress-nginx", "backend"]).expect("pods");
    let (ingress, backend) = (&pods["ingress-nginx"], &pods["backend"]);
    let addr = SocketAddr::from((backend.ip(), BACKEND_PORT));
    let _server = MtlsBackend::start(backend, BACKEND_PORT, &server_cert, &ca.pem);
    let https = |tls: &ProxyTls| Upstream::Https {
        addr,
        tls: tls.clone(),
    };
    let from = hub.netns();

    let mut nginx = Nginx::start(ingress, INGRESS_PORT, https(&good)).expect("nginx starts");
    let r = nginx.get(from, "/").expect("GET through nginx");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, MTLS_BODY),
        "{r:?}\n{}",
        nginx.log_tail()
    );

    // A client certificate of another CA: the backend refuses the handshake, nginx answers 502.
    nginx.reconfigure(https(&bad)).expect("reload");
    let r = nginx.get(from, "/").unwrap();
    assert_eq!(r.status, 502, "{r:?}\n{}", nginx.log_tail());
    assert!(
        nginx.error_log().contains("alert unknown ca"),
        "{}",
        nginx.log_tail()
    );

    // nginx verifies the backend: a proxy_ssl_name its certificate does not carry is a 502, too.
    let mut wrong_name = good.clone();
    wrong_name.name = "other.backend.svc.cluster.local".into();
    nginx.reconfigure(https(&wrong_name)).expect("reload");
    let r = nginx.get(from, "/").unwrap();
    assert_eq!(r.status, 502, "{r:?}\n{}", nginx.log_tail());
    assert!(
        nginx
            .error_log()
            .contains("upstream SSL certificate does not match"),
        "{}",
        nginx.log_tail()
    );

    // And the right certificate again: 200.
    nginx.reconfigure(https(&good)).expect("reload");
    let r = nginx.get(from, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, MTLS_BODY), "{r:?}");
    drop(nginx);

    // A fresh nginx started with the rogue certificate: 502 from the first request.
    let nginx = Nginx::start(ingress, INGRESS_PORT, https(&bad)).expect("nginx starts");
    assert_eq!(nginx.get(from, "/").unwrap().status, 502);
}
