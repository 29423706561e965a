//! The credentials one test apiserver needs, generated fresh per instance with rcgen (ECDSA P-256):
//! a CA, a serving certificate for `127.0.0.1`/`localhost`, an admin client certificate
//! (`CN=admin, O=system:masters`, bound to cluster-admin by the default RBAC policy), the
//! service-account signing key pair and a random admin bearer token.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

/// PEM material written into the instance's temp dir.
pub(crate) struct Credentials {
    pub ca_cert_pem: String,
    pub ca_cert_der: Vec<u8>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    pub sa_key_pem: String,
    pub sa_pub_pem: String,
    pub admin_token: String,
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn leaf_params(
    common_name: &str,
    organization: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, organization);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params
}

/// 128 random bits as hex, from the std hasher's per-process random keys (good enough for a token
/// that only ever travels over 127.0.0.1 to a throwaway apiserver).
fn random_token() -> String {
    let mut out = String::new();
    for i in 0..2u8 {
        let mut h = RandomState::new().build_hasher();
        h.write_u8(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

pub(crate) fn generate() -> Result<Credentials, rcgen::Error> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("osm-envtest-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut server_params = leaf_params("kube-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth);
    server_params.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into()?),
    ];
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let admin_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let admin_params = leaf_params(
        "admin",
        Some("system:masters"),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let admin_cert = admin_params.signed_by(&admin_key, &issuer)?;

    let sa_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;

    Ok(Credentials {
        ca_cert_pem: ca_cert.pem(),
        ca_cert_der: ca_cert.der().to_vec(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        admin_cert_pem: admin_cert.pem(),
        admin_key_pem: admin_key.serialize_pem(),
        sa_key_pem: sa_key.serialize_pem(),
        sa_pub_pem: sa_key.public_key_pem(),
        admin_token: random_token(),
    })
}
