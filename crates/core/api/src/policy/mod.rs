//! `policy.openservicemesh.io/v1alpha1` resources: [`Egress`] (access to destinations outside the
//! mesh), [`IngressBackend`] (which ingress sources may reach a backend), [`Retry`] (retry policy
//! between services) and [`UpstreamTrafficSetting`] (connection limits and rate limits for an
//! upstream host). Also the small types they share.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::Errors;

mod egress;
mod ingress_backend;
mod retry;
mod upstream_traffic_setting;

pub use egress::{Egress, EgressSourceSpec, EgressSpec};
pub use ingress_backend::{
    BackendSpec, IngressBackend, IngressBackendSpec, IngressBackendStatus, IngressSourceSpec, TlsSpec,
};
pub use retry::{Retry, RetryPolicySpec, RetrySpec, RetrySrcDstSpec};
pub use upstream_traffic_setting::{
    ConnectionSettingsSpec, ENVOY_ERROR_STATUS_CODES, HttpConnectionSettings, HttpHeaderValue,
    HttpLocalRateLimitSpec, HttpPerRouteRateLimitSpec, HttpRouteSpec, LocalRateLimitSpec, RateLimitSpec,
    TcpConnectionSettings, TcpLocalRateLimitSpec, UpstreamTrafficSetting, UpstreamTrafficSettingSpec,
    UpstreamTrafficSettingStatus, host_key, host_service_name, host_service_namespace,
};

/// Source/destination kind for a ServiceAccount.
pub const KIND_SERVICE_ACCOUNT: &str = "ServiceAccount";
/// Source/destination kind for a Service.
pub const KIND_SERVICE: &str = "Service";
/// IngressBackend source kind for a client identified by its certificate.
pub const KIND_AUTHENTICATED_PRINCIPAL: &str = "AuthenticatedPrincipal";
/// IngressBackend source kind for a CIDR range.
pub const KIND_IP_RANGE: &str = "IPRange";

/// Kinds a policy's `matches` may name.
pub use crate::smi::access::RULE_KIND_HTTP_ROUTE_GROUP as KIND_HTTP_ROUTE_GROUP;
pub const KIND_UPSTREAM_TRAFFIC_SETTING: &str = "UpstreamTrafficSetting";

/// Port protocols of Egress and IngressBackend.
pub const PROTOCOL_HTTP: &str = "http";
pub const PROTOCOL_HTTPS: &str = "https";
pub const PROTOCOL_TCP: &str = "tcp";
/// TCP where the server speaks first (MySQL, SMTP): the sidecar must not wait for the client's first
/// bytes to inspect them.
pub const PROTOCOL_TCP_SERVER_FIRST: &str = "tcp-server-first";

/// A port and the protocol spoken on it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// Port number.
    #[schemars(range(min = 1, max = 65535))]
    pub number: u16,
    /// Protocol served on the port, e.g. http, https, tcp.
    pub protocol: String,
}

/// A reference to another resource in the same namespace (Kubernetes `TypedLocalObjectReference`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypedLocalObjectReference {
    /// API group of the referenced resource, e.g. `specs.smi-spec.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind of the referenced resource.
    pub kind: String,
    /// Name of the referenced resource.
    pub name: String,
}

pub(crate) fn check_port_spec(errs: &mut Errors, path: &str, port: &PortSpec, protocols: &[&str]) {
    errs.port(format!("{path}.number"), i64::from(port.number));
    errs.one_of(format!("{path}.protocol"), &port.protocol, protocols);
}

pub(crate) fn check_matches(errs: &mut Errors, matches: &[TypedLocalObjectReference], kinds: &[&str]) {
    for (i, m) in matches.iter().enumerate() {
        errs.one_of(format!("spec.matches[{i}].kind"), &m.kind, kinds);
        errs.non_empty(format!("spec.matches[{i}].name"), &m.name);
    }
}
