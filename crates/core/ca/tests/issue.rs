//! Issued certificates, checked by parsing them back with x509-parser: signature against the root,
//! names, validity, key usage.

use std::time::{Duration, SystemTime};

use osm_ca::{
    CaError, CertRequest, CertUsage, CertificateAuthority, ServiceIdentity, TrustDomain, XdsClientIdentity,
    peer_common_name, peer_dns_names,
};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::{FromDer as _, X509Certificate};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate(TrustDomain::default(), 365 * DAY).unwrap()
}

fn der_of(pem: &str) -> Vec<u8> {
    let (rest, pem) = parse_x509_pem(pem.as_bytes()).unwrap();
    assert!(rest.iter().all(u8::is_ascii_whitespace));
    assert_eq!(pem.label, "CERTIFICATE");
    pem.contents
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Asserts `leaf` is signed by `ca`'s root and returns nothing; panics with the reason otherwise.
fn assert_signed_by(leaf_der: &[u8], ca: &CertificateAuthority) {
    let (_, root) = X509Certificate::from_der(ca.root_cert_der()).unwrap();
    let (_, leaf) = X509Certificate::from_der(leaf_der).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(leaf.issuer(), root.subject());
}

/// The root is self-signed, a CA limited to signing leaves, with the upstream-style CN.
#[test]
fn root_is_a_self_signed_ca() {
    let ca = ca();
    let der = der_of(ca.root_cert_pem());
    assert_eq!(der, ca.root_cert_der());
    let (_, root) = X509Certificate::from_der(&der).unwrap();
    root.verify_signature(None).unwrap();
    let bc = root.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = root.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign());
    assert_eq!(peer_common_name(&der).unwrap(), "osm-ca.openservicemesh.io");
    let lifetime = secs(ca.root_not_after()) - secs(SystemTime::now());
    assert!((lifetime - (365 * DAY).as_secs() as i64).abs() <= 2, "{lifetime}");
    assert_eq!(ca.trust_domain(), &TrustDomain::default());
}

/// A service certificate: signed by the root, CN and only DNS SAN the principal, server+client EKU,
/// not a CA, validity as requested, serial and times as reported.
#[test]
fn service_cert_contents() {
    let ca = ca();
    let id = ServiceIdentity::new("bookstore", "bookstore-ns");
    let before = SystemTime::now();
    let issued = ca.issue_service_cert(&id, DAY).unwrap();
    let der = der_of(&issued.cert_pem);
    assert_signed_by(&der, &ca);

    let principal = "bookstore.bookstore-ns.cluster.local";
    assert_eq!(peer_common_name(&der).unwrap(), principal);
    assert_eq!(peer_dns_names(&der).unwrap(), vec![principal.to_owned()]);

    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!cert.is_ca());
    assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
    assert_eq!(cert.raw_serial_as_string().replace(':', ""), issued.serial_hex);
    assert_eq!(issued.serial_hex.len(), 32);

    assert_eq!(cert.validity().not_before.timestamp(), secs(issued.not_before));
    assert_eq!(cert.validity().not_after.timestamp(), secs(issued.not_after));
    assert!(issued.not_before <= before, "not_before is backdated");
    assert!(secs(before) - secs(issued.not_before) <= 61);
    let expected_after = secs(before) + DAY.as_secs() as i64;
    assert!((secs(issued.not_after) - expected_after).abs() <= 2);

    // The private key is the certificate's key.
    let key = rcgen::KeyPair::from_pem(issued.private_key.expose_pem()).unwrap();
    assert_eq!(
        key.public_key_raw(),
        cert.public_key().subject_public_key.data.as_ref()
    );
    assert!(
        issued
            .private_key
            .expose_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
}

/// Two issuances differ in key and serial.
#[test]
fn fresh_key_and_serial_each_time() {
    let ca = ca();
    let id = ServiceIdentity::new("sa", "ns");
    let a = ca.issue_service_cert(&id, DAY).unwrap();
    let b = ca.issue_service_cert(&id, DAY).unwrap();
    assert_ne!(a.serial_hex, b.serial_hex);
    assert_ne!(a.private_key, b.private_key);
}

/// A 60 s certificate rotates ~40 s after not_before, and is valid for ~60 s from issuance.
#[test]
fn renew_at_two_thirds() {
    let ca = ca();
    let now = SystemTime::now();
    let issued = ca
        .issue_service_cert(&ServiceIdentity::new("sa", "ns"), Duration::from_secs(60))
        .unwrap();
    let renew_after_start = issued.renew_at().duration_since(issued.not_before).unwrap();
    assert!(
        (Duration::from_secs(39)..=Duration::from_secs(42)).contains(&renew_after_start),
        "{renew_after_start:?}"
    );
    let remaining = issued.not_after.duration_since(now).unwrap();
    assert!(remaining >= Duration::from_secs(59), "{remaining:?}");
    // Renewal leaves a real overlap before expiry.
    let overlap = issued.not_after.duration_since(issued.renew_at()).unwrap();
    assert!(overlap >= Duration::from_secs(19), "{overlap:?}");
}

/// The xDS client certificate carries the proxy CN, which parses back; client auth only.
#[test]
fn xds_client_cert() {
    let ca = ca();
    let id = XdsClientIdentity {
        proxy_uuid: "0b9c5c4e-5d2f-4e7a-9a43-6c1e8b3f2a10".into(),
        identity: ServiceIdentity::new("bookbuyer", "bookbuyer"),
        trust_domain: TrustDomain::default(),
    };
    let issued = ca.issue_xds_client_cert(&id, DAY).unwrap();
    let der = der_of(&issued.cert_pem);
    assert_signed_by(&der, &ca);
    let cn = peer_common_name(&der).unwrap();
    assert_eq!(cn, id.common_name());
    assert_eq!(XdsClientIdentity::parse(&cn, ca.trust_domain()).unwrap(), id);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
}

/// An xDS identity in another trust domain, or one whose CN would not parse back, is not issued.
#[test]
fn xds_client_cert_refusals() {
    let ca = ca();
    let mut id = XdsClientIdentity {
        proxy_uuid: "u1".into(),
        identity: ServiceIdentity::new("sa", "ns"),
        trust_domain: TrustDomain::new("other.domain").unwrap(),
    };
    assert!(matches!(
        ca.issue_xds_client_cert(&id, DAY),
        Err(CaError::InvalidRequest { .. })
    ));
    id.trust_domain = TrustDomain::default();
    id.identity.service_account = "has.dot".into();
    let err = ca.issue_xds_client_cert(&id, DAY).unwrap_err();
    assert!(
        err.to_string().contains("u1.sidecar.has.dot.ns.cluster.local"),
        "{err}"
    );
}

/// A server certificate: CN is the first name, DNS and IP SANs, server auth only.
#[test]
fn server_cert() {
    let ca = ca();
    let names = vec![
        "osm-controller.osm-system.svc".to_owned(),
        "localhost".to_owned(),
        "10.0.0.1".to_owned(),
    ];
    let issued = ca.issue_server_cert(&names, DAY).unwrap();
    let der = der_of(&issued.cert_pem);
    assert_signed_by(&der, &ca);
    assert_eq!(peer_common_name(&der).unwrap(), names[0]);
    assert_eq!(peer_dns_names(&der).unwrap(), names[..2].to_vec());
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert!(
        san.general_names
            .contains(&GeneralName::IPAddress(&[10, 0, 0, 1]))
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(ca.issue_server_cert(&[], DAY).is_err());
}

/// A general request with URI SANs and client usage.
#[test]
fn generic_request_with_uri() {
    let ca = ca();
    let req = CertRequest {
        common_name: "spiffe-test".into(),
        dns_names: vec![],
        uri_names: vec!["spiffe://cluster.local/ns/default/sa/web".into()],
        validity: Duration::from_secs(3600),
        usage: CertUsage::Client,
    };
    let issued = ca.issue(&req).unwrap();
    let der = der_of(&issued.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        san.general_names,
        vec![GeneralName::URI("spiffe://cluster.local/ns/default/sa/web")]
    );
    assert!(peer_dns_names(&der).unwrap().is_empty());
}

/// Bad requests are refused with the subject named.
#[test]
fn request_refusals() {
    let ca = ca();
    let base = CertRequest {
        common_name: "x".into(),
        dns_names: vec![],
        uri_names: vec![],
        validity: DAY,
        usage: CertUsage::Server,
    };
    let cases = [
        CertRequest {
            common_name: String::new(),
            ..base.clone()
        },
        CertRequest {
            validity: Duration::ZERO,
            ..base.clone()
        },
        CertRequest {
            validity: Duration::from_millis(999),
            ..base.clone()
        },
        CertRequest {
            dns_names: vec![String::new()],
            ..base.clone()
        },
        CertRequest {
            dns_names: vec!["ünïcode".into()],
            ..base.clone()
        },
    ];
    for req in cases {
        let err = ca.issue(&req).expect_err(&format!("{req:?}"));
        assert!(matches!(err, CaError::InvalidRequest { .. }), "{err}");
    }
    let err = ca
        .issue_service_cert(&ServiceIdentity::new("a.b", "ns"), DAY)
        .unwrap_err();
    assert!(err.to_string().contains("a.b.ns.cluster.local"), "{err}");
}

/// A leaf never outlives its root.
#[test]
fn leaf_clamped_to_root_expiry() {
    let ca = CertificateAuthority::generate(TrustDomain::default(), Duration::from_secs(3600)).unwrap();
    let issued = ca
        .issue_service_cert(&ServiceIdentity::new("sa", "ns"), 10 * DAY)
        .unwrap();
    assert_eq!(issued.not_after, ca.root_not_after());
    let issued = ca
        .issue_service_cert(&ServiceIdentity::new("sa", "ns"), Duration::MAX)
        .unwrap();
    assert_eq!(issued.not_after, ca.root_not_after());
}

/// Debug output never contains key material.
#[test]
fn debug_is_redacted() {
    let ca = ca();
    let issued = ca
        .issue_service_cert(&ServiceIdentity::new("sa", "ns"), DAY)
        .unwrap();
    let dbg = format!("{issued:?}");
    assert!(dbg.contains("PrivateKeyPem(<redacted>)"), "{dbg}");
    assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
    let key_body = issued.private_key.expose_pem().lines().nth(1).unwrap();
    assert!(!dbg.contains(key_body));
    let ca_dbg = format!("{ca:?}");
    assert!(
        !ca_dbg.contains("PRIVATE KEY") && ca_dbg.contains("<redacted>"),
        "{ca_dbg}"
    );
}

/// The CA can be shared across threads (the controller keeps it in an `Arc`).
#[test]
fn ca_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
    assert_send_sync::<osm_ca::IssuedCert>();
}

/// An absurd root validity is refused rather than producing an unencodable certificate.
#[test]
fn root_validity_bounds() {
    assert!(CertificateAuthority::generate(TrustDomain::default(), Duration::ZERO).is_err());
    assert!(CertificateAuthority::generate(TrustDomain::default(), Duration::MAX).is_err());
    assert!(CertificateAuthority::generate(TrustDomain::default(), 10_000 * 365 * DAY).is_err());
}

/// The ingress gateway certificate (MeshConfig `spec.certificate.ingressGateway`): signed by the
/// root, CN the first SAN, every SAN a DNS SAN as written (an IP-looking one too; no URI or IP SAN:
/// sidecars match the DNS SAN as the principal), client and server auth, validity as requested.
#[test]
fn ingress_gateway_cert() {
    let ca = ca();
    let sans = vec![
        "ingress-nginx.ingress-ns.cluster.local".to_owned(),
        "ingress.example.com".to_owned(),
        "10.0.0.7".to_owned(),
    ];
    let validity = Duration::from_secs(30);
    let before = SystemTime::now();
    let issued = ca.issue_ingress_gateway_cert(&sans, validity).unwrap();
    let der = der_of(&issued.cert_pem);
    assert_signed_by(&der, &ca);

    assert_eq!(peer_common_name(&der).unwrap(), sans[0]);
    assert_eq!(peer_dns_names(&der).unwrap(), sans);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names.len(), sans.len());
    assert!(
        san.general_names
            .iter()
            .all(|n| matches!(n, GeneralName::DNSName(_))),
        "{:?}",
        san.general_names
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth, "usable as a TLS client certificate");
    assert!(eku.server_auth);
    assert!(!cert.is_ca());

    // Validity: 30 s from issuance (backdated by at most 1/30 of it), as reported.
    assert_eq!(cert.validity().not_before.timestamp(), secs(issued.not_before));
    assert_eq!(cert.validity().not_after.timestamp(), secs(issued.not_after));
    assert!((secs(issued.not_after) - (secs(before) + 30)).abs() <= 2);
    assert!(secs(before) - secs(issued.not_before) <= 2);
    assert!(issued.renew_at() < issued.not_after);

    let key = rcgen::KeyPair::from_pem(issued.private_key.expose_pem()).unwrap();
    assert_eq!(
        key.public_key_raw(),
        cert.public_key().subject_public_key.data.as_ref()
    );

    // A day-long one is a day long.
    let day = ca.issue_ingress_gateway_cert(&sans[..1], DAY).unwrap();
    assert!((secs(day.not_after) - (secs(before) + DAY.as_secs() as i64)).abs() <= 2);
}

/// An ingress gateway certificate needs a name and a positive validity.
#[test]
fn ingress_gateway_cert_refusals() {
    let ca = ca();
    for (sans, validity) in [
        (vec![], DAY),
        (vec![String::new()], DAY),
        (vec!["gw.example.com".to_owned()], Duration::ZERO),
    ] {
        let err = ca
            .issue_ingress_gateway_cert(&sans, validity)
            .expect_err(&format!("{sans:?} {validity:?}"));
        assert!(matches!(err, CaError::InvalidRequest { .. }), "{err}");
    }
}
