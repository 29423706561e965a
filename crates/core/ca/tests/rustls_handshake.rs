//! Issued certificates interoperate with rustls (ring provider): a server presenting an issued server
//! certificate and requiring client certificates from the root completes an in-memory mTLS handshake
//! with a client presenting an issued xDS client certificate — the ADS server's setup.

use std::sync::Arc;
use std::time::Duration;

use osm_ca::{
    CertificateAuthority, IssuedCert, ServiceIdentity, TrustDomain, XdsClientIdentity, peer_common_name,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

const HOUR: Duration = Duration::from_secs(3600);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain_and_key(issued: &IssuedCert) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut issued.private_key.expose_pem().as_bytes())
        .unwrap()
        .expect("a private key block");
    (chain, key)
}

fn roots(ca: &CertificateAuthority) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.root_cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(roots)
}

fn server_config(ca: &CertificateAuthority, server: &IssuedCert) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap();
    let (chain, key) = chain_and_key(server);
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

fn client_config(ca: &CertificateAuthority, client: &IssuedCert) -> Arc<ClientConfig> {
    let (chain, key) = chain_and_key(client);
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(ca))
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

/// Shuttles TLS records between the two ends until both finish handshaking or one fails.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
        }
        server.process_new_packets()?;

        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
        }
        client.process_new_packets()?;
    }
    panic!("handshake did not finish");
}

fn connect(
    server_cfg: Arc<ServerConfig>,
    client_cfg: Arc<ClientConfig>,
    name: &str,
) -> Result<ServerConnection, rustls::Error> {
    let mut client =
        ClientConnection::new(client_cfg, ServerName::try_from(name.to_owned()).unwrap()).unwrap();
    let mut server = ServerConnection::new(server_cfg).unwrap();
    handshake(&mut client, &mut server)?;
    Ok(server)
}

/// The ADS server case: mTLS succeeds and the server reads the proxy identity from the client cert.
#[test]
fn mtls_handshake_with_xds_client_cert() {
    let ca = CertificateAuthority::generate(TrustDomain::default(), 24 * HOUR).unwrap();
    let server_cert = ca
        .issue_server_cert(&["osm-controller.osm-system.svc".to_owned()], HOUR)
        .unwrap();
    let id = XdsClientIdentity {
        proxy_uuid: "5f1c2e0a-9b7d-4c3e-8a6f-1d2e3f4a5b6c".into(),
        identity: ServiceIdentity::new("bookbuyer", "bookbuyer"),
        trust_domain: TrustDomain::default(),
    };
    let client_cert = ca.issue_xds_client_cert(&id, HOUR).unwrap();

    let server = connect(
        server_config(&ca, &server_cert),
        client_config(&ca, &client_cert),
        "osm-controller.osm-system.svc",
    )
    .unwrap();
    let peer = &server
        .peer_certificates()
        .expect("client presented a certificate")[0];
    let cn = peer_common_name(peer).unwrap();
    assert_eq!(XdsClientIdentity::parse(&cn, ca.trust_domain()).unwrap(), id);
}

/// Workload certificates (server+client usage) work on both ends of a mesh mTLS connection.
#[test]
fn mtls_handshake_between_service_certs() {
    let ca = CertificateAuthority::generate(TrustDomain::default(), 24 * HOUR).unwrap();
    let store = ca
        .issue_service_cert(&ServiceIdentity::new("bookstore", "bookstore"), HOUR)
        .unwrap();
    let buyer = ca
        .issue_service_cert(&ServiceIdentity::new("bookbuyer", "bookbuyer"), HOUR)
        .unwrap();
    let server = connect(
        server_config(&ca, &store),
        client_config(&ca, &buyer),
        "bookstore.bookstore.cluster.local",
    )
    .unwrap();
    let peer = &server.peer_certificates().unwrap()[0];
    assert_eq!(
        peer_common_name(peer).unwrap(),
        "bookbuyer.bookbuyer.cluster.local"
    );
}

/// A client certificate from another CA is rejected by the server.
#[test]
fn foreign_client_cert_rejected() {
    let ca = CertificateAuthority::generate(TrustDomain::default(), 24 * HOUR).unwrap();
    let other = CertificateAuthority::generate(TrustDomain::default(), 24 * HOUR).unwrap();
    let server_cert = ca.issue_server_cert(&["ads.local".to_owned()], HOUR).unwrap();
    let id = XdsClientIdentity {
        proxy_uuid: "u".into(),
        identity: ServiceIdentity::new("sa", "ns"),
        trust_domain: TrustDomain::default(),
    };
    let foreign = other.issue_xds_client_cert(&id, HOUR).unwrap();
    // The client trusts `ca` (so it accepts the server) but presents a certificate from `other`.
    let (chain, key) = chain_and_key(&foreign);
    let client_cfg = Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&ca))
            .with_client_auth_cert(chain, key)
            .unwrap(),
    );
    assert!(connect(server_config(&ca, &server_cert), client_cfg, "ads.local").is_err());
}

/// The ingress gateway certificate works as the client certificate of an ingress controller's
/// connection to a meshed backend: a sidecar-like server requiring client certificates from the root
/// accepts it, and sees the first SAN as the client's name.
#[test]
fn mtls_handshake_with_ingress_gateway_cert() {
    let ca = CertificateAuthority::generate(TrustDomain::default(), 24 * HOUR).unwrap();
    let backend = ca
        .issue_service_cert(&ServiceIdentity::new("bookstore", "bookstore"), HOUR)
        .unwrap();
    let sans = vec!["ingress-nginx.ingress-nginx.cluster.local".to_owned()];
    let gateway = ca.issue_ingress_gateway_cert(&sans, HOUR).unwrap();
    let server = connect(
        server_config(&ca, &backend),
        client_config(&ca, &gateway),
        "bookstore.bookstore.cluster.local",
    )
    .unwrap();
    let peer = &server.peer_certificates().unwrap()[0];
    assert_eq!(osm_ca::peer_dns_names(peer).unwrap(), sans);
}
