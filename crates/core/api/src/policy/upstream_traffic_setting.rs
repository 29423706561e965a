//! `UpstreamTrafficSetting`: connection limits (circuit breaking) and local rate limits for traffic
//! to one upstream host, optionally per HTTP route.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;
use crate::validate::{Errors, Validate, ValidationErrors};

/// Units a rate limit may be expressed in.
pub const RATE_LIMIT_UNITS: [&str; 3] = ["second", "minute", "hour"];

/// Settings for traffic to `host`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "policy.openservicemesh.io",
    version = "v1alpha1",
    kind = "UpstreamTrafficSetting",
    plural = "upstreamtrafficsettings",
    shortname = "upstreamtrafficsetting",
    namespaced,
    status = "UpstreamTrafficSettingStatus",
    derive = "PartialEq",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.currentStatus",
        description = "Current status of the UpstreamTrafficSetting policy."
    ),
    doc = "OSM UpstreamTrafficSetting: connection and rate limits for traffic to an upstream host."
)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTrafficSettingSpec {
    /// The upstream host: a Service FQDN (`<svc>.<ns>.svc.cluster.local`) or a Service name in this
    /// namespace.
    pub host: String,
    /// Connection limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_settings: Option<ConnectionSettingsSpec>,
    /// Rate limits applied to the whole host (virtual host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Per-route settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<HttpRouteSpec>,
}

/// Connection limits for TCP and HTTP.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSettingsSpec {
    /// TCP-level limits (apply to HTTP too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpConnectionSettings>,
    /// HTTP-level limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConnectionSettings>,
}

/// TCP connection limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpConnectionSettings {
    /// Maximum number of connections (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Connection timeout (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<GoDuration>,
}

/// HTTP connection limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpConnectionSettings {
    /// Maximum number of parallel requests (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Maximum number of requests per connection (default unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Maximum number of pending requests (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Maximum number of parallel retries (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// Rate limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Local (per-proxy token bucket) rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRateLimitSpec>,
}

/// Local rate limits for TCP connections and HTTP requests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRateLimitSpec {
    /// Connections per unit of time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpLocalRateLimitSpec>,
    /// Requests per unit of time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpLocalRateLimitSpec>,
}

/// A connection rate limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpLocalRateLimitSpec {
    /// Connections allowed per unit.
    pub connections: u32,
    /// second, minute or hour.
    #[schemars(extend("enum" = ["second", "minute", "hour"]))]
    pub unit: String,
    /// Extra connections allowed in a burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// A request rate limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpLocalRateLimitSpec {
    /// Requests allowed per unit.
    pub requests: u32,
    /// second, minute or hour.
    #[schemars(extend("enum" = ["second", "minute", "hour"]))]
    pub unit: String,
    /// Extra requests allowed in a burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Status code of rate-limited responses, 400-599 (default 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 400, max = 599))]
    pub response_status_code: Option<u32>,
    /// Headers added to rate-limited responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HttpHeaderValue>,
}

/// An HTTP header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderValue {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Settings for one HTTP route of the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The route's path regex, as written in the HTTPRouteGroup that defines the route.
    pub path: String,
    /// Rate limit of the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<HttpPerRouteRateLimitSpec>,
}

/// Rate limit of one route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpPerRouteRateLimitSpec {
    /// Local rate limit of the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<HttpLocalRateLimitSpec>,
}

/// Status written by the control plane.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTrafficSettingStatus {
    /// Current status, e.g. committed or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_status: Option<String>,
    /// Reason of the current status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The 4xx and 5xx codes Envoy's `envoy.type.v3.StatusCode` defines: a local reply can only carry one
/// of these (any other would be NACKed by every sidecar).
pub const ENVOY_ERROR_STATUS_CODES: [u32; 37] = [
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 423,
    424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

fn http_rate_limit(errs: &mut Errors, path: &str, rl: &HttpLocalRateLimitSpec) {
    errs.one_of(format!("{path}.unit"), &rl.unit, &RATE_LIMIT_UNITS);
    if let Some(code) = rl.response_status_code {
        if !(400..=599).contains(&code) {
            errs.add(
                format!("{path}.responseStatusCode"),
                format!("must be between 400 and 599 (got {code})"),
            );
        } else if !ENVOY_ERROR_STATUS_CODES.contains(&code) {
            errs.add(
                format!("{path}.responseStatusCode"),
                format!("{code} is not a status code Envoy can send (known: 400–417, 421–424, 426, 428, 429, 431, 500–508, 510, 511)"),
            );
        }
    }
    for (i, h) in rl.response_headers_to_add.iter().enumerate() {
        errs.non_empty(format!("{path}.responseHeadersToAdd[{i}].name"), &h.name);
    }
}

impl Validate for UpstreamTrafficSettingSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        errs.non_empty("spec.host", &self.host);
        if let Some(timeout) = self
            .connection_settings
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .and_then(|t| t.connect_timeout.as_ref())
        {
            errs.positive_duration("spec.connectionSettings.tcp.connectTimeout", timeout);
        }
        if let Some(local) = self.rate_limit.as_ref().and_then(|r| r.local.as_ref()) {
            if let Some(tcp) = &local.tcp {
                errs.one_of("spec.rateLimit.local.tcp.unit", &tcp.unit, &RATE_LIMIT_UNITS);
            }
            if let Some(http) = &local.http {
                http_rate_limit(&mut errs, "spec.rateLimit.local.http", http);
            }
        }
        for (i, route) in self.http_routes.iter().enumerate() {
            let p = format!("spec.httpRoutes[{i}]");
            errs.non_empty(format!("{p}.path"), &route.path);
            errs.regex(format!("{p}.path"), &route.path);
            if let Some(local) = route.rate_limit.as_ref().and_then(|r| r.local.as_ref()) {
                http_rate_limit(&mut errs, &format!("{p}.rateLimit.local"), local);
            }
        }
        errs.finish()
    }
}

/// The namespace a host names explicitly as a Service's (`<svc>.<ns>.svc` or
/// `<svc>.<ns>.svc.cluster.local`); `None` for any other spelling (a short name, or an external host).
pub fn host_service_namespace(host: &str) -> Option<&str> {
    match host.split('.').collect::<Vec<_>>().as_slice() {
        [_, ns, "svc"] | [_, ns, "svc", "cluster", "local"] => Some(ns),
        _ => None,
    }
}

/// The name of the Service of `namespace` a host names, in any spelling upstream's users write
/// (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`); `None` for another namespace's Service
/// or an external host.
pub fn host_service_name<'h>(namespace: &str, host: &'h str) -> Option<&'h str> {
    let labels: Vec<&str> = host.split('.').collect();
    let name = match labels.as_slice() {
        [name] => *name,
        [name, ns] | [name, ns, "svc"] | [name, ns, "svc", "cluster", "local"] if *ns == namespace => *name,
        _ => return None,
    };
    (!name.is_empty()).then_some(name)
}

/// What two settings of one namespace compare to find a duplicate: the Service name for every
/// spelling of a Service of `namespace` ([`host_service_name`]), else the host itself, lower-cased.
pub fn host_key(namespace: &str, host: &str) -> String {
    host_service_name(namespace, host).map_or_else(|| host.to_ascii_lowercase(), str::to_string)
}

impl Validate for UpstreamTrafficSetting {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let own = self.metadata.namespace.as_deref().unwrap_or_default();
        let mut errs = Errors::default();
        errs.extend(self.spec.validate());
        if let Some(ns) = host_service_namespace(&self.spec.host)
            && !own.is_empty()
            && ns != own
        {
            errs.add(
                "spec.host",
                format!(
                    "names a Service of namespace {ns}; an UpstreamTrafficSetting applies to the Services \
                     of its own namespace ({own}): create it in {ns}"
                ),
            );
        }
        errs.finish()
    }
}
