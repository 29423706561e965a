//! UpstreamTrafficSettings (`policy.openservicemesh.io/v1alpha1`) → the connection limits of each
//! upstream Service's clusters ([`ConnectionLimits`]), which every client's cluster for it carries.
//!
//! Upstream OSM's semantics (`pkg/envoy/cds/cluster.go`, `pkg/policy`): a setting applies to the
//! Service its `host` names, in the setting's own namespace — the FQDN `<svc>.<ns>.svc.cluster.local`
//! as upstream writes it (`<svc>.<ns>.svc`, `<svc>.<ns>` and `<svc>` are read the same way here).
//! `connectionSettings` become circuit-breaker thresholds and the connect timeout on every client's
//! cluster; `rateLimit.local` becomes token buckets in the upstream's own sidecars (connections after
//! RBAC, requests per virtual host, and per route for `httpRoutes`).

use std::collections::HashMap;

use std::sync::Arc;

use osm_api::policy::{KIND_UPSTREAM_TRAFFIC_SETTING, UpstreamTrafficSettingSpec};

use crate::input::{MeshInput, ObjectRef, ServiceRef};
use crate::intent::{ConnectionLimits, HttpRateLimit, LocalRateLimit, TokenBucket};

/// What the settings ask of each Service: connection limits for its clients' clusters, local rate
/// limits for its own sidecars.
#[derive(Default)]
pub(crate) struct UpstreamSettings {
    pub(crate) limits: HashMap<ServiceRef, ConnectionLimits>,
    pub(crate) rate_limits: HashMap<ServiceRef, Arc<LocalRateLimit>>,
}

/// The settings of every Service some setting names. Problems are pushed to `warnings`.
pub(crate) fn by_service(input: &MeshInput, warnings: &mut Vec<String>) -> UpstreamSettings {
    let mut limits: HashMap<ServiceRef, (ConnectionLimits, String)> = HashMap::new();
    let mut rate_limits: HashMap<ServiceRef, Arc<LocalRateLimit>> = HashMap::new();
    let mut claimed: HashMap<ServiceRef, String> = HashMap::new();
    for (id, spec) in &input.upstream_traffic_settings {
        let Some(service) = host_service(&id.namespace, &spec.host) else {
            // An Egress policy's setting names an external host; the Egress applies its connection
            // settings, and only those (as upstream): no sidecar of that host enforces rate limits.
            if !named_by_egress(input, id) {
                warnings.push(format!(
                    "UpstreamTrafficSetting {id}: spec.host {:?} names no Service of namespace {}; it is not applied",
                    spec.host, id.namespace
                ));
            } else if spec.rate_limit.is_some() || !spec.http_routes.is_empty() {
                warnings.push(format!(
                    "UpstreamTrafficSetting {id}: spec.rateLimit and spec.httpRoutes are not applied to egress \
                     traffic (an Egress policy applies spec.connectionSettings only)"
                ));
            }
            continue;
        };
        if !input.services.contains_key(&service) {
            warnings.push(format!(
                "UpstreamTrafficSetting {id}: spec.host {:?}: Service {service} does not exist (yet)",
                spec.host
            ));
        }
        if let Some(first) = claimed.get(&service) {
            warnings.push(format!(
                "UpstreamTrafficSetting {id}: Service {service} already has UpstreamTrafficSetting {first}; \
                 this one is not applied"
            ));
            continue;
        }
        claimed.insert(service.clone(), id.to_string());
        if let Some(found) = read(spec) {
            limits.insert(service.clone(), (found, id.to_string()));
        }
        if let Some(found) = read_rate_limit(spec) {
            rate_limits.insert(service, Arc::new(found));
        }
    }
    UpstreamSettings {
        limits: limits.into_iter().map(|(k, (v, _))| (k, v)).collect(),
        rate_limits,
    }
}

/// Seconds in a rate limit's `unit` (validation admits only these three).
fn unit_secs(unit: &str) -> u64 {
    match unit {
        "hour" => 3600,
        "minute" => 60,
        _ => 1,
    }
}

/// The local rate limits a setting asks for; `None` when it asks for none.
fn read_rate_limit(spec: &UpstreamTrafficSettingSpec) -> Option<LocalRateLimit> {
    let local = spec.rate_limit.as_ref().and_then(|r| r.local.as_ref());
    let limit = LocalRateLimit {
        connections: local.and_then(|l| l.tcp.as_ref()).map(|t| TokenBucket {
            tokens_per_fill: t.connections,
            max_tokens: t.connections.saturating_add(t.burst.unwrap_or(0)),
            fill_interval_secs: unit_secs(&t.unit),
        }),
        requests: local.and_then(|l| l.http.as_ref()).map(http_limit),
        routes: {
            let mut routes: Vec<(String, HttpRateLimit)> = spec
                .http_routes
                .iter()
                .filter_map(|r| Some((r.path.clone(), http_limit(r.rate_limit.as_ref()?.local.as_ref()?))))
                .collect();
            routes.sort_by(|a, b| a.0.cmp(&b.0));
            routes.dedup_by(|a, b| a.0 == b.0);
            routes
        },
    };
    (limit != LocalRateLimit::default()).then_some(limit)
}

fn http_limit(h: &osm_api::policy::HttpLocalRateLimitSpec) -> HttpRateLimit {
    HttpRateLimit {
        bucket: TokenBucket {
            tokens_per_fill: h.requests,
            max_tokens: h.requests.saturating_add(h.burst.unwrap_or(0)),
            fill_interval_secs: unit_secs(&h.unit),
        },
        status: h.response_status_code,
        response_headers: h
            .response_headers_to_add
            .iter()
            .map(|hv| (hv.name.clone(), hv.value.clone()))
            .collect(),
    }
}

/// The Service `host` names in `namespace`, if it is one of the accepted spellings.
/// Whether a setting's `host` names this Service.
pub(crate) fn refers_to(input: &MeshInput, service: &ServiceRef) -> bool {
    input
        .upstream_traffic_settings
        .iter()
        .any(|(id, spec)| host_service(&id.namespace, &spec.host).as_ref() == Some(service))
}

fn host_service(namespace: &str, host: &str) -> Option<ServiceRef> {
    osm_api::policy::host_service_name(namespace, host).map(|name| ServiceRef::new(namespace, name))
}

/// Whether an Egress policy of the setting's namespace names it in `matches`.
fn named_by_egress(input: &MeshInput, id: &ObjectRef) -> bool {
    input.egresses.iter().any(|(egress, spec)| {
        egress.namespace == id.namespace
            && spec
                .matches
                .iter()
                .any(|m| m.kind == KIND_UPSTREAM_TRAFFIC_SETTING && m.name == id.name)
    })
}

/// The connection limits a setting asks for; `None` when it asks for none.
pub(crate) fn read(spec: &UpstreamTrafficSettingSpec) -> Option<ConnectionLimits> {
    let c = spec.connection_settings.as_ref()?;
    let tcp = c.tcp.clone().unwrap_or_default();
    let http = c.http.clone().unwrap_or_default();
    let limits = ConnectionLimits {
        max_connections: tcp.max_connections,
        connect_timeout_ms: tcp
            .connect_timeout
            .map(|d| u64::try_from(std::time::Duration::from(d).as_millis()).unwrap_or(u64::MAX)),
        max_requests: http.max_requests,
        max_pending_requests: http.max_pending_requests,
        max_retries: http.max_retries,
        max_requests_per_connection: http.max_requests_per_connection,
    };
    (limits != ConnectionLimits::default()).then_some(limits)
}

#[cfg(test)]
mod tests {
    use super::host_service;
    use crate::input::ServiceRef;

    #[test]
    fn upstream_traffic_setting_host_spellings() {
        let web = Some(ServiceRef::new("shop", "web"));
        for host in ["web", "web.shop", "web.shop.svc", "web.shop.svc.cluster.local"] {
            assert_eq!(host_service("shop", host), web, "{host}");
        }
        for host in [
            "web.other.svc.cluster.local",
            "web.shop.svc.cluster",
            "",
            "a.b.c.d",
        ] {
            assert_eq!(host_service("shop", host), None, "{host}");
        }
    }
}
