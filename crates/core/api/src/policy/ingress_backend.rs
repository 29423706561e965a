//! `IngressBackend`: which ingress sources (a Service, an authenticated principal or an IP range)
//! may reach which backends of a meshed Service, over HTTP or HTTPS.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    KIND_AUTHENTICATED_PRINCIPAL, KIND_IP_RANGE, KIND_SERVICE, KIND_UPSTREAM_TRAFFIC_SETTING, PROTOCOL_HTTP,
    PROTOCOL_HTTPS, PortSpec, TypedLocalObjectReference, check_matches, check_port_spec,
};
use crate::validate::{Errors, Validate, ValidationErrors};

/// Protocols an IngressBackend port may name.
pub const INGRESS_BACKEND_PROTOCOLS: [&str; 2] = [PROTOCOL_HTTP, PROTOCOL_HTTPS];

/// Authorizes `sources` to send ingress traffic to `backends`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "policy.openservicemesh.io",
    version = "v1alpha1",
    kind = "IngressBackend",
    plural = "ingressbackends",
    shortname = "ingressbackend",
    namespaced,
    status = "IngressBackendStatus",
    derive = "PartialEq",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.currentStatus",
        description = "Current status of the IngressBackend policy."
    ),
    doc = "OSM IngressBackend policy: which ingress sources may reach which meshed backends."
)]
#[serde(rename_all = "camelCase")]
pub struct IngressBackendSpec {
    /// Backends (Services in this namespace) the policy applies to.
    pub backends: Vec<BackendSpec>,
    /// Sources allowed to reach the backends.
    pub sources: Vec<IngressSourceSpec>,
    /// UpstreamTrafficSettings refining the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TypedLocalObjectReference>,
}

/// A backend Service and how it is reached.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// Name of the backend Service.
    pub name: String,
    /// Port of the backend and its protocol (http or https).
    pub port: PortSpec,
    /// TLS settings when the protocol is https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// TLS settings of a backend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Do not validate the client certificate.
    pub skip_client_cert_validation: bool,
    /// SNI host names the backend accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
}

/// A source allowed to reach the backends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSourceSpec {
    /// Service, AuthenticatedPrincipal or IPRange.
    #[schemars(extend("enum" = ["Service", "AuthenticatedPrincipal", "IPRange"]))]
    pub kind: String,
    /// Service name, principal name, or CIDR range.
    pub name: String,
    /// Namespace of a Service source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Status written by the control plane.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressBackendStatus {
    /// Current status, e.g. committed or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_status: Option<String>,
    /// Reason of the current status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Validate for IngressBackendSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        if self.backends.is_empty() {
            errs.add("spec.backends", "must list at least one backend");
        }
        let has_principal = self
            .sources
            .iter()
            .any(|s| s.kind == KIND_AUTHENTICATED_PRINCIPAL);
        for (i, b) in self.backends.iter().enumerate() {
            let p = format!("spec.backends[{i}]");
            errs.non_empty(format!("{p}.name"), &b.name);
            if let Some(j) = self.backends[..i]
                .iter()
                .position(|o| o.name == b.name && o.port.number == b.port.number)
            {
                errs.add(
                    p.clone(),
                    format!(
                        "duplicates spec.backends[{j}] (service {:?} port {})",
                        b.name, b.port.number
                    ),
                );
            }
            let validates_clients = !b.tls.as_ref().is_some_and(|t| t.skip_client_cert_validation);
            if b.port.protocol.eq_ignore_ascii_case(PROTOCOL_HTTPS) && validates_clients && !has_principal {
                errs.add(
                    format!("{p}.tls.skipClientCertValidation"),
                    "is false (client certificates are validated), so spec.sources must list at least one \
                     AuthenticatedPrincipal",
                );
            }
            check_port_spec(
                &mut errs,
                &format!("{p}.port"),
                &b.port,
                &INGRESS_BACKEND_PROTOCOLS,
            );
            if let Some(tls) = &b.tls {
                for (j, h) in tls.sni_hosts.iter().enumerate() {
                    errs.non_empty(format!("{p}.tls.sniHosts[{j}]"), h);
                }
            }
        }
        if self.sources.is_empty() {
            errs.add("spec.sources", "must list at least one source");
        }
        for (i, s) in self.sources.iter().enumerate() {
            let p = format!("spec.sources[{i}]");
            errs.non_empty(format!("{p}.name"), &s.name);
            match s.kind.as_str() {
                KIND_SERVICE => {
                    if s.namespace.as_deref().unwrap_or("").is_empty() {
                        errs.add(format!("{p}.namespace"), "is required for a Service source");
                    }
                }
                KIND_AUTHENTICATED_PRINCIPAL => {}
                KIND_IP_RANGE => errs.cidr(format!("{p}.name"), &s.name),
                other => errs.add(
                    format!("{p}.kind"),
                    format!("must be one of Service, AuthenticatedPrincipal, IPRange (got {other:?})"),
                ),
            }
        }
        check_matches(&mut errs, &self.matches, &[KIND_UPSTREAM_TRAFFIC_SETTING]);
        errs.finish()
    }
}

impl Validate for IngressBackend {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}
