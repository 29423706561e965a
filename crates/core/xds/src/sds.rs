//! SDS: the proxy's certificate and the CA bundles that validate its peers.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SubjectAltNameMatcher, TlsCertificate, secret,
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

use crate::common::inline;
use crate::names;
use crate::resource::{Resource, TypeKind};

/// The proxy's own certificate (`service-cert`), presented as server and as client.
pub fn service_cert(cert_chain_pem: &str, private_key_pem: &str) -> Arc<Resource> {
    let secret = Secret {
        name: names::SERVICE_CERT.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(cert_chain_pem)),
            private_key: Some(inline(private_key_pem)),
            ..Default::default()
        })),
    };
    Resource::encode(TypeKind::Secret, names::SERVICE_CERT, &secret)
}

/// A validation context: the mesh CA bundle and, when given, the exact principals a peer may have.
pub fn validation_context(name: &str, ca_bundle_pem: &str, peer_principals: &[String]) -> Arc<Resource> {
    let secret = Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(inline(ca_bundle_pem)),
            match_typed_subject_alt_names: peer_principals.iter().map(|p| san_exact(p)).collect(),
            ..Default::default()
        })),
    };
    Resource::encode(TypeKind::Secret, name, &secret)
}

/// A DNS SAN that must equal `principal` exactly.
pub fn san_exact(principal: &str) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: SanType::Dns as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(principal.to_string())),
            ignore_case: false,
        }),
        oid: String::new(),
    }
}
