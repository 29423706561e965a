//! A client that speaks to a sidecar's inbound listener the way another sidecar does — TLS with a mesh
//! certificate, the service's SNI and ALPN `osm` — but sends whatever request line a test chooses, so
//! tests can judge the server sidecar alone (no client sidecar normalising the path first).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use osm_ca::IssuedCert;
use osm_harness::{HttpResponse, Pod, http_exchange};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where to connect and whom to expect there.
pub struct MeshTlsTarget<'a> {
    /// The service address (a ClusterIP is not routable here: use the pod's address and port).
    pub addr: SocketAddr,
    /// The SNI of the service, as clients send it (`osm_model::service_sni`).
    pub sni: &'a str,
    /// The DNS SAN the server's certificate must carry: the server's principal `<sa>.<ns>.<td>`.
    pub server_principal: &'a str,
}

/// One request over mTLS from inside `from` (a pod's network namespace), presenting `client` (a mesh
/// certificate) and trusting only `root_pem`.
pub fn mesh_tls_request(
    from: &Pod,
    target: &MeshTlsTarget<'_>,
    client: &IssuedCert,
    root_pem: &str,
    method: &str,
    path: &str,
) -> Result<HttpResponse> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots.add(cert.context("mesh root")?)?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let verifier = Arc::new(PrincipalVerifier {
        inner: webpki,
        principal: ServerName::try_from(target.server_principal.to_string())?,
    });
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut client.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("client certificate")?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut client.private_key.expose_pem().as_bytes())
            .context("client key")?
            .ok_or_else(|| anyhow!("no private key in the issued certificate"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![osm_xds::names::ALPN_OSM.as_bytes().to_vec()];
    let sni = ServerName::try_from(target.sni.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), sni)?;

    let addr = target.addr;
    let tcp = from
        .in_netns(|| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))?
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let stream = rustls::StreamOwned::new(conn, tcp);
    Ok(http_exchange(stream, target.sni, method, path)?)
}

/// Verifies the server's chain against the mesh root and its SAN against the expected principal, while
/// the SNI names the service (Envoy's upstream TLS does the same: SNI and SAN checks are separate).
#[derive(Debug)]
struct PrincipalVerifier {
    inner: Arc<WebPkiServerVerifier>,
    principal: ServerName<'static>,
}

impl ServerCertVerifier for PrincipalVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _sni: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.principal, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
