//! Reading names out of a peer's DER certificate.
//!
//! The ADS server takes the client certificate rustls has already verified against the root, reads its
//! common name here and parses it with [`crate::XdsClientIdentity::parse`]. Parsing is strict: trailing
//! bytes, a missing CN or several CNs are errors rather than a guess.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::error::{CaError, Result};

fn parse(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CaError::InvalidPeerCert {
        reason: format!("not an X.509 certificate: {e}"),
    })?;
    if !rest.is_empty() {
        return Err(CaError::InvalidPeerCert {
            reason: "trailing bytes after the certificate".to_owned(),
        });
    }
    Ok(cert)
}

/// The subject common name of a DER certificate. Exactly one CN, as a string, is required.
pub fn peer_common_name(der: &[u8]) -> Result<String> {
    let cert = parse(der)?;
    let mut cns = cert.subject().iter_common_name();
    let cn = cns.next().ok_or_else(|| CaError::InvalidPeerCert {
        reason: "subject has no common name".to_owned(),
    })?;
    // Two CNs would let a certificate mean different identities to different readers.
    if cns.next().is_some() {
        return Err(CaError::InvalidPeerCert {
            reason: "subject has more than one common name".to_owned(),
        });
    }
    cn.as_str()
        .map(str::to_owned)
        .map_err(|e| CaError::InvalidPeerCert {
            reason: format!("common name is not a string: {e}"),
        })
}

/// The DNS subject alternative names of a DER certificate, in certificate order (empty when it has none).
pub fn peer_dns_names(der: &[u8]) -> Result<Vec<String>> {
    let cert = parse(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::InvalidPeerCert {
            reason: format!("subjectAltName: {e}"),
        })?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Garbage and certificates with trailing bytes are refused, not misread.
    #[test]
    fn refuses_garbage() {
        assert!(peer_common_name(b"").is_err());
        assert!(peer_common_name(b"not der").is_err());
        assert!(peer_dns_names(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
    }
}
