//! Identity names carried by mesh certificates.
//!
//! A workload's identity is its ServiceAccount: `<sa>.<ns>`, written into certificates as the principal
//! `<sa>.<ns>.<trustDomain>`. A proxy's xDS client certificate additionally names the pod's proxy UUID:
//! `<uuid>.sidecar.<sa>.<ns>.<trustDomain>` — the ADS server parses it back with
//! [`XdsClientIdentity::parse`] to decide which configuration a stream may receive.

use std::fmt;
use std::str::FromStr;

use crate::error::{CaError, Result};

/// The DNS-like suffix of every principal in the mesh (`cluster.local` unless configured).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The default trust domain, as in upstream OSM.
    pub const DEFAULT: &'static str = "cluster.local";

    /// Validates `domain` as a lowercase DNS name (labels of `a-z0-9-`, no empty labels).
    pub fn new(domain: impl Into<String>) -> Result<Self> {
        let domain = domain.into();
        let reason = if domain.is_empty() {
            Some("empty")
        } else if domain.len() > 253 {
            Some("longer than 253 characters")
        } else if !domain.split('.').all(is_dns_label) {
            Some(
                "every dot-separated label must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            )
        } else {
            None
        };
        match reason {
            Some(reason) => Err(CaError::InvalidTrustDomain { domain, reason }),
            None => Ok(Self(domain)),
        }
    }

    /// The domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// A workload identity: a Kubernetes ServiceAccount. Displays as `<sa>.<ns>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceIdentity {
    /// ServiceAccount name.
    pub service_account: String,
    /// Namespace of the ServiceAccount.
    pub namespace: String,
}

impl ServiceIdentity {
    /// Builds an identity from ServiceAccount name and namespace.
    pub fn new(service_account: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            service_account: service_account.into(),
            namespace: namespace.into(),
        }
    }

    /// `<sa>.<ns>.<trustDomain>`: the CN and DNS SAN of the identity's certificate, and what RBAC and
    /// SAN matchers compare against.
    pub fn principal(&self, td: &TrustDomain) -> String {
        format!("{self}.{td}")
    }
}

impl fmt::Display for ServiceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service_account, self.namespace)
    }
}

/// The identity of one proxy on the xDS (ADS) connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct XdsClientIdentity {
    /// The pod's proxy UUID (OSM's `osm-proxy-uuid` label); also the first label of the Envoy node id.
    pub proxy_uuid: String,
    /// The ServiceAccount the proxy's pod runs as.
    pub identity: ServiceIdentity,
    /// The mesh trust domain.
    pub trust_domain: TrustDomain,
}

impl XdsClientIdentity {
    /// `<uuid>.sidecar.<sa>.<ns>.<trustDomain>`: the CN of the proxy's xDS client certificate and its
    /// Envoy node id.
    pub fn common_name(&self) -> String {
        osm_api::contract::proxy_key(
            &self.proxy_uuid,
            &self.identity.service_account,
            &self.identity.namespace,
            self.trust_domain.as_str(),
        )
    }

    /// Parses a common name produced by [`Self::common_name`], strictly: the trust domain must be `td`,
    /// the second label the literal `sidecar`, ServiceAccount and namespace DNS labels (so they hold no
    /// dots), and the UUID non-empty letters, digits and `-`.
    pub fn parse(cn: &str, td: &TrustDomain) -> Result<Self> {
        let refuse = |reason| CaError::InvalidXdsCommonName {
            cn: cn.to_owned(),
            reason,
        };
        let head = cn
            .strip_suffix(td.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .ok_or_else(|| refuse("does not end with the trust domain"))?;
        let labels: Vec<&str> = head.split('.').collect();
        let [uuid, kind, sa, ns] = labels[..] else {
            return Err(refuse(
                "expected <uuid>.sidecar.<serviceaccount>.<namespace>.<trustDomain>",
            ));
        };
        if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(refuse("proxy uuid must be non-empty letters, digits and '-'"));
        }
        if kind != osm_api::contract::PROXY_KIND_SIDECAR {
            return Err(refuse("second label must be \"sidecar\""));
        }
        if !is_dns_label(sa) {
            return Err(refuse("service account is not a DNS label"));
        }
        if !is_dns_label(ns) {
            return Err(refuse("namespace is not a DNS label"));
        }
        Ok(Self {
            proxy_uuid: uuid.to_owned(),
            identity: ServiceIdentity::new(sa, ns),
            trust_domain: td.clone(),
        })
    }
}

/// RFC 1123 label as Kubernetes uses it: 1-63 of `a-z0-9-`, starting and ending alphanumeric.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let edge_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| edge_ok(c) || *c == b'-')
        && b.first().is_some_and(edge_ok)
        && b.last().is_some_and(edge_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::default()
    }

    fn xds(uuid: &str, sa: &str, ns: &str) -> XdsClientIdentity {
        XdsClientIdentity {
            proxy_uuid: uuid.into(),
            identity: ServiceIdentity::new(sa, ns),
            trust_domain: td(),
        }
    }

    /// Display and principal follow upstream naming.
    #[test]
    fn service_identity_names() {
        let id = ServiceIdentity::new("bookbuyer", "bookbuyer-ns");
        assert_eq!(id.to_string(), "bookbuyer.bookbuyer-ns");
        assert_eq!(id.principal(&td()), "bookbuyer.bookbuyer-ns.cluster.local");
        let custom: TrustDomain = "mesh.example.com".parse().unwrap();
        assert_eq!(id.principal(&custom), "bookbuyer.bookbuyer-ns.mesh.example.com");
    }

    /// The default trust domain is cluster.local; malformed domains are refused.
    #[test]
    fn trust_domain_validation() {
        assert_eq!(TrustDomain::default().as_str(), "cluster.local");
        assert_eq!(TrustDomain::new("cluster.local").unwrap(), TrustDomain::default());
        for bad in ["", ".", "a..b", "-a.b", "a-.b", "Cluster.local", "a b", "a.b."] {
            assert!(TrustDomain::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// A CN built by common_name parses back to the same identity.
    #[test]
    fn xds_cn_round_trip() {
        let id = xds(
            "6f3a9c2e-1b2d-4c5e-8f90-0123456789ab",
            "bookbuyer",
            "bookbuyer-ns",
        );
        let cn = id.common_name();
        assert_eq!(
            cn,
            "6f3a9c2e-1b2d-4c5e-8f90-0123456789ab.sidecar.bookbuyer.bookbuyer-ns.cluster.local"
        );
        assert_eq!(XdsClientIdentity::parse(&cn, &td()).unwrap(), id);
    }

    /// Anything not exactly `<uuid>.sidecar.<sa>.<ns>.<td>` is refused.
    #[test]
    fn xds_cn_refusals() {
        let bad = [
            "",
            "cluster.local",
            ".cluster.local",
            "u.sidecar.sa.ns",                             // no trust domain
            "u.sidecar.sa.ns.other.domain",                // wrong trust domain
            "u.sidecar.sa.nscluster.local",                // suffix without the dot
            ".sidecar.sa.ns.cluster.local",                // empty uuid
            "u.gateway.sa.ns.cluster.local",               // not a sidecar
            "u.sidecar.sa.cluster.local",                  // missing namespace
            "u.sidecar.sa.extra.ns.cluster.local",         // extra label
            "a.u.sidecar.sa.ns.cluster.local",             // dotted uuid
            "u.sidecar..ns.cluster.local",                 // empty sa
            "u.sidecar.sa..cluster.local",                 // empty ns
            "u.sidecar.SA.ns.cluster.local",               // uppercase sa
            "u.sidecar.sa.-ns.cluster.local",              // ns starts with '-'
            "u_1.sidecar.sa.ns.cluster.local",             // '_' in uuid
            "u.sidecar.sa.ns.cluster.local.",              // trailing dot
            "u.sidecar.sa.ns.cluster.local.cluster.local", // doubled domain
        ];
        for cn in bad {
            let err = XdsClientIdentity::parse(cn, &td()).expect_err(cn);
            assert!(
                err.to_string().contains("invalid xDS client common name"),
                "{err}"
            );
        }
    }

    /// The trust domain in the CN must be the one the server expects.
    #[test]
    fn xds_cn_custom_trust_domain() {
        let other = TrustDomain::new("mesh.example").unwrap();
        let cn = "u1.sidecar.sa.ns.mesh.example";
        assert_eq!(XdsClientIdentity::parse(cn, &other).unwrap().trust_domain, other);
        assert!(XdsClientIdentity::parse(cn, &td()).is_err());
    }
}
