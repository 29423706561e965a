//! A readable view of a proxy's xDS config, for golden tests and `osm proxy` debugging.
//!
//! The encoded resources are decoded again (envoy-types has no serde, and prost's `Debug` prints nested
//! `Any` configs as bytes) and summarised into a JSON tree: resources keyed by name under `clusters`,
//! `endpoints`, `listeners`, `routes` and `secrets`, each showing what a reviewer checks — addresses,
//! filter chain matches, TLS contexts by SDS secret name, RBAC principals, route matches and weights.
//! Fields we never set are left out. Private keys are never printed, nor are certificates; a secret shows
//! only that they are present.
//!
//! Decoding never panics: an unknown type URL becomes `{type_url, undecoded: true}` and bytes that do not
//! decode become `{type_url, error}`. Object keys are sorted, so the output is deterministic.

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::substitution_format_string;
use envoy_types::pb::envoy::config::core::v3::{
    Address, CidrRange, ConfigSource, DataSource, TrafficDirection, TransportSocket, address, config_source,
    data_source, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, ListenerFilterChainMatchPredicate,
    filter, listener_filter,
};
use envoy_types::pb::envoy::config::rbac::v3::{Permission, Policy, Principal, Rbac as RbacRules};
use envoy_types::pb::envoy::config::rbac::v3::{permission, principal, rbac};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, header_matcher, route,
    route_action, route_match,
};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{StdoutAccessLog, stdout_access_log};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::ExtAuthz;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac as HttpRbac, RbacPerRoute};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, Secret, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext, common_tls_context, secret, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{PathMatcher, StringMatcher, path_matcher, string_matcher};
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::{Message, Name};
use serde_json::{Map, Value, json};

use crate::rds::HTTP_RBAC_FILTER;
use crate::resource::{ProxyConfig, Resource, TypeKind};

/// The whole config of one proxy: `{clusters, endpoints, listeners, routes, secrets}`, each an object
/// keyed by resource name. A name served twice (a generator bug) shows up as `<name> (duplicate 2)`.
pub fn describe(config: &ProxyConfig) -> Value {
    let mut out = Map::new();
    for kind in TypeKind::ALL {
        let mut by_name = Map::new();
        for r in config.iter(kind) {
            insert_unique(&mut by_name, &r.name, describe_resource(r));
        }
        out.insert(section(kind).to_string(), Value::Object(by_name));
    }
    sorted(Value::Object(out))
}

/// One resource, decoded by the type URL of its body. The description leaves out the name (it is the
/// key in `describe`) unless the encoded name differs from the resource name.
pub fn describe_resource(r: &Resource) -> Value {
    let body = &r.body();
    let decoded = on(body, |m: Listener| (m.name.clone(), listener(&m)))
        .or_else(|| on(body, |m: Cluster| (m.name.clone(), cluster(&m))))
        .or_else(|| {
            on(body, |m: ClusterLoadAssignment| {
                (m.cluster_name.clone(), load_assignment(&m))
            })
        })
        .or_else(|| on(body, |m: RouteConfiguration| (m.name.clone(), route_config(&m))))
        .or_else(|| on(body, |m: Secret| (m.name.clone(), secret_summary(&m))));
    let mut v = match decoded {
        None => return undecoded(body),
        Some(Err(error)) => return error,
        Some(Ok((inner_name, v))) => {
            let mut v = v;
            if inner_name != r.name {
                v["name"] = json!(inner_name);
            }
            v
        }
    };
    if body.type_url != r.kind.type_url() {
        v["served_as"] = json!(r.kind.type_url());
    }
    sorted(v)
}

fn section(kind: TypeKind) -> &'static str {
    match kind {
        TypeKind::Cluster => "clusters",
        TypeKind::Endpoint => "endpoints",
        TypeKind::Listener => "listeners",
        TypeKind::Route => "routes",
        TypeKind::Secret => "secrets",
    }
}

fn insert_unique(map: &mut Map<String, Value>, name: &str, value: Value) {
    let mut key = name.to_string();
    let mut n = 1;
    while map.contains_key(&key) {
        n += 1;
        key = format!("{name} (duplicate {n})");
    }
    map.insert(key, value);
}

/// Rebuilds every object with its keys in order, whatever `serde_json` features the build enabled.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------------
// Any decoding

/// `None` when `any` is not an `M`; otherwise `f` of the decoded message, or an error entry.
fn on<M: Message + Name + Default, T>(any: &Any, f: impl FnOnce(M) -> T) -> Option<Result<T, Value>> {
    if any.type_url != M::type_url() {
        return None;
    }
    Some(
        M::decode(any.value.as_slice())
            .map(f)
            .map_err(|e| json!({"type_url": any.type_url, "error": e.to_string()})),
    )
}

fn undecoded(any: &Any) -> Value {
    json!({"type_url": any.type_url, "undecoded": true})
}

/// Adds the entries of `extra` (an object) to `base`; anything else goes under `config`.
fn merged(mut base: Map<String, Value>, extra: Value) -> Value {
    match extra {
        Value::Object(m) => base.extend(m),
        Value::Null => {}
        other => {
            base.insert("config".to_string(), other);
        }
    }
    Value::Object(base)
}

fn flatten(r: Result<Value, Value>) -> Value {
    r.unwrap_or_else(|error| json!({ "config": error }))
}

// ---------------------------------------------------------------------------------------------------
// Listeners

fn listener(l: &Listener) -> Value {
    let mut m = Map::new();
    if let Some(a) = &l.address {
        m.insert("address".into(), json!(address_str(a)));
    }
    if l.traffic_direction != TrafficDirection::Unspecified as i32 {
        m.insert(
            "direction".into(),
            json!(enum_name(l.traffic_direction, TrafficDirection::try_from)),
        );
    }
    if !l.listener_filters.is_empty() {
        let filters: Vec<Value> = l.listener_filters.iter().map(listener_filter).collect();
        m.insert("listener_filters".into(), json!(filters));
    }
    if l.continue_on_listener_filters_timeout {
        m.insert("continue_on_listener_filters_timeout".into(), json!(true));
    }
    let mut chains = Map::new();
    for (i, c) in l.filter_chains.iter().enumerate() {
        let key = if c.name.is_empty() {
            format!("(unnamed {})", i + 1)
        } else {
            c.name.clone()
        };
        insert_unique(&mut chains, &key, filter_chain(c));
    }
    m.insert("filter_chains".into(), Value::Object(chains));
    if let Some(c) = &l.default_filter_chain {
        let mut v = filter_chain(c);
        if !c.name.is_empty() {
            v["name"] = json!(c.name);
        }
        m.insert("default_filter_chain".into(), v);
    }
    Value::Object(m)
}

/// Just the name when its config is one of the (empty) ones we use, and when it is disabled.
fn listener_filter(f: &ListenerFilter) -> Value {
    let Some(listener_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        return json!(f.name);
    };
    let known = on(any, |_: OriginalDst| ())
        .or_else(|| on(any, |_: TlsInspector| ()))
        .or_else(|| on(any, |_: HttpInspector| ()));
    let described = match known {
        Some(Ok(())) => json!(f.name),
        Some(Err(error)) => json!({"name": f.name, "config": error}),
        None => json!({"name": f.name, "config": undecoded(any)}),
    };
    match &f.filter_disabled {
        None => described,
        Some(p) => json!({"name": f.name, "disabled_when": predicate(p)}),
    }
}

/// A listener filter predicate as a short expression, e.g. `not (port 80 or port 443)`.
fn predicate(p: &ListenerFilterChainMatchPredicate) -> String {
    use envoy_types::pb::envoy::config::listener::v3::listener_filter_chain_match_predicate::Rule;
    match &p.rule {
        None => "(empty)".into(),
        Some(Rule::AnyMatch(_)) => "any".into(),
        Some(Rule::NotMatch(inner)) => format!("not ({})", predicate(inner)),
        Some(Rule::OrMatch(set)) => set.rules.iter().map(predicate).collect::<Vec<_>>().join(" or "),
        Some(Rule::AndMatch(set)) => set.rules.iter().map(predicate).collect::<Vec<_>>().join(" and "),
        Some(Rule::DestinationPortRange(r)) if r.end == r.start + 1 => format!("port {}", r.start),
        Some(Rule::DestinationPortRange(r)) => format!("port {}..{}", r.start, r.end),
    }
}

fn filter_chain(c: &FilterChain) -> Value {
    let mut m = Map::new();
    if let Some(fcm) = &c.filter_chain_match {
        let described = chain_match(fcm);
        if described.as_object().is_some_and(|o| !o.is_empty()) {
            m.insert("match".into(), described);
        }
    }
    if let Some(ts) = &c.transport_socket {
        m.insert("tls".into(), transport_socket_summary(ts));
    }
    let filters: Vec<Value> = c.filters.iter().map(network_filter).collect();
    m.insert("filters".into(), json!(filters));
    Value::Object(m)
}

fn chain_match(fcm: &FilterChainMatch) -> Value {
    let mut m = Map::new();
    if let Some(p) = &fcm.destination_port {
        m.insert("destination_port".into(), json!(p.value));
    }
    let cidrs = |ranges: &[CidrRange]| -> Value { ranges.iter().map(cidr_str).collect() };
    if !fcm.prefix_ranges.is_empty() {
        m.insert("prefix_ranges".into(), cidrs(&fcm.prefix_ranges));
    }
    if !fcm.source_prefix_ranges.is_empty() {
        m.insert("source_prefix_ranges".into(), cidrs(&fcm.source_prefix_ranges));
    }
    if !fcm.direct_source_prefix_ranges.is_empty() {
        m.insert(
            "direct_source_prefix_ranges".into(),
            cidrs(&fcm.direct_source_prefix_ranges),
        );
    }
    if !fcm.source_ports.is_empty() {
        m.insert("source_ports".into(), json!(fcm.source_ports));
    }
    if fcm.source_type != 0 {
        m.insert("source_type".into(), json!(fcm.source_type));
    }
    if !fcm.server_names.is_empty() {
        m.insert("server_names".into(), json!(fcm.server_names));
    }
    if !fcm.transport_protocol.is_empty() {
        m.insert("transport_protocol".into(), json!(fcm.transport_protocol));
    }
    if !fcm.application_protocols.is_empty() {
        m.insert("application_protocols".into(), json!(fcm.application_protocols));
    }
    Value::Object(m)
}

fn network_filter(f: &Filter) -> Value {
    let mut base = Map::new();
    base.insert("name".into(), json!(f.name));
    let extra = match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => on(any, |h: HttpConnectionManager| hcm(&h))
            .or_else(|| on(any, |t: TcpProxy| tcp_proxy_summary(&t)))
            .or_else(|| {
                on(
                    any,
                    |r: NetworkRbac| json!({ "rbac": rbac_rules(r.rules.as_ref()) }),
                )
            })
            .map(flatten)
            .unwrap_or_else(|| json!({ "config": undecoded(any) })),
        Some(filter::ConfigType::ConfigDiscovery(d)) => {
            json!({ "config_discovery": d.default_config.is_some() })
        }
        None => Value::Null,
    };
    merged(base, extra)
}

fn hcm(h: &HttpConnectionManager) -> Value {
    let mut m = Map::new();
    match &h.route_specifier {
        Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
            m.insert("rds".into(), json!(rds.route_config_name));
            if let Some(source) = rds.config_source.as_ref().and_then(non_ads_source) {
                m.insert("rds_source".into(), source);
            }
        }
        Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
            let mut v = route_config(rc);
            v["name"] = json!(rc.name);
            m.insert("route_config".into(), v);
        }
        Some(http_connection_manager::RouteSpecifier::ScopedRoutes(_)) => {
            m.insert("scoped_routes".into(), json!(true));
        }
        None => {}
    }
    let filters: Vec<Value> = h.http_filters.iter().map(http_filter_summary).collect();
    m.insert("http_filters".into(), json!(filters));
    if !h.access_log.is_empty() {
        m.insert("access_log".into(), access_log_summary(&h.access_log));
    }
    let escaped_slashes =
        http_connection_manager::PathWithEscapedSlashesAction::try_from(h.path_with_escaped_slashes_action)
            .ok()
            .filter(|a| {
                *a != http_connection_manager::PathWithEscapedSlashesAction::ImplementationSpecificDefault
            });
    let normalize = h.normalize_path.as_ref().is_some_and(|b| b.value);
    if normalize || h.merge_slashes || escaped_slashes.is_some() {
        m.insert(
            "path".into(),
            json!({
                "normalize": normalize,
                "merge_slashes": h.merge_slashes,
                "escaped_slashes": escaped_slashes.map(|a| a.as_str_name()).unwrap_or("default"),
            }),
        );
    }
    Value::Object(m)
}

/// Just the name for the router and for an RBAC filter without rules (enforcement then comes from
/// each route's `RBACPerRoute`); the rules otherwise.
fn http_filter_summary(f: &HttpFilter) -> Value {
    let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        return json!(f.name);
    };
    let described = on(any, |_: Router| Value::Null)
        .or_else(|| {
            on(any, |r: HttpRbac| {
                if r.rules.is_none() && r.shadow_rules.is_none() && r.matcher.is_none() {
                    Value::Null
                } else {
                    json!({ "rbac": rbac_rules(r.rules.as_ref()), "shadow": r.shadow_rules.is_some() })
                }
            })
        })
        .or_else(|| on(any, |a: ExtAuthz| ext_authz_summary(&a)));
    match described {
        Some(Ok(Value::Null)) => json!(f.name),
        Some(r) => merged(name_map(&f.name), flatten(r)),
        None => json!({ "name": f.name, "config": undecoded(any) }),
    }
}

fn ext_authz_summary(a: &ExtAuthz) -> Value {
    use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
    use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::ext_authz::Services;
    let service = match &a.services {
        Some(Services::GrpcService(g)) => json!({
            "grpc_cluster": match &g.target_specifier {
                Some(TargetSpecifier::EnvoyGrpc(e)) => json!(e.cluster_name),
                other => json!(format!("{other:?}")),
            },
            "timeout": g.timeout.as_ref().map(duration_str),
        }),
        Some(Services::HttpService(_)) => json!("http service"),
        None => Value::Null,
    };
    json!({
        "ext_authz": {
            "service": service,
            "api": enum_name(
                a.transport_api_version,
                envoy_types::pb::envoy::config::core::v3::ApiVersion::try_from,
            ),
            "failure_mode_allow": a.failure_mode_allow,
            "stat_prefix": a.stat_prefix,
            "include_peer_certificate": a.include_peer_certificate,
            "request_body": a.with_request_body.as_ref().map(|b| json!({
                "max_bytes": b.max_request_bytes,
                "allow_partial": b.allow_partial_message,
            })),
        }
    })
}

fn tcp_proxy_summary(t: &TcpProxy) -> Value {
    let mut v = tcp_proxy_cluster(t);
    if !t.access_log.is_empty() {
        v["tcp_proxy"]["access_log"] = access_log_summary(&t.access_log);
    }
    v
}

/// Each logger by name and format, e.g. `envoy.access_loggers.stdout: json`; the format's fields are
/// checked once, by `access_log`'s own tests.
fn access_log_summary(logs: &[AccessLog]) -> Value {
    logs.iter()
        .map(|l| {
            let format = match &l.config_type {
                Some(access_log::ConfigType::TypedConfig(any)) => {
                    on(any, |s: StdoutAccessLog| match s.access_log_format {
                        Some(stdout_access_log::AccessLogFormat::LogFormat(f)) => match f.format {
                            Some(substitution_format_string::Format::JsonFormat(_)) => "json",
                            Some(_) => "text",
                            None => "default",
                        },
                        None => "default",
                    })
                    .map_or("undecoded", |r| r.unwrap_or("undecodable"))
                }
                _ => "untyped",
            };
            json!(format!("{}: {format}", l.name))
        })
        .collect()
}

fn tcp_proxy_cluster(t: &TcpProxy) -> Value {
    match &t.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => json!({ "tcp_proxy": { "cluster": c } }),
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            let weights: Map<String, Value> = w
                .clusters
                .iter()
                .map(|c| (c.name.clone(), json!(c.weight)))
                .collect();
            json!({ "tcp_proxy": { "weighted_clusters": weights } })
        }
        None => json!({ "tcp_proxy": { "cluster": null } }),
    }
}

// ---------------------------------------------------------------------------------------------------
// RBAC

fn rbac_rules(rules: Option<&RbacRules>) -> Value {
    let Some(r) = rules else {
        return json!("no rules");
    };
    let policies: Map<String, Value> = r
        .policies
        .iter()
        .map(|(name, p)| (name.clone(), policy(p)))
        .collect();
    json!({ "action": enum_name(r.action, rbac::Action::try_from), "policies": policies })
}

fn policy(p: &Policy) -> Value {
    let permissions: Vec<Value> = p.permissions.iter().map(permission_summary).collect();
    let principals: Vec<Value> = p.principals.iter().map(principal_summary).collect();
    json!({ "permissions": permissions, "principals": principals })
}

fn permission_summary(p: &Permission) -> Value {
    match &p.rule {
        Some(permission::Rule::Any(true)) => json!("any"),
        other => json!({ "other": format!("{other:?}") }),
    }
}

fn principal_summary(p: &Principal) -> Value {
    match &p.identifier {
        Some(principal::Identifier::Any(true)) => json!("any"),
        Some(principal::Identifier::Authenticated(a)) => match &a.principal_name {
            Some(m) => json!({ "authenticated": string_matcher_value(m) }),
            None => json!({ "authenticated": "any" }),
        },
        // A later route's identities, on condition of its match (`rds::inbound`).
        Some(principal::Identifier::AndIds(set)) => {
            json!({ "and": set.ids.iter().map(principal_summary).collect::<Vec<_>>() })
        }
        Some(principal::Identifier::OrIds(set)) => {
            json!({ "or": set.ids.iter().map(principal_summary).collect::<Vec<_>>() })
        }
        Some(principal::Identifier::NotId(p)) => json!({ "not": principal_summary(p) }),
        Some(principal::Identifier::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(m)),
        })) => json!({ "url_path": string_matcher_value(m) }),
        Some(principal::Identifier::Header(h)) => json!({ "header": header_summary(h) }),
        other => json!({ "other": format!("{other:?}") }),
    }
}

// ---------------------------------------------------------------------------------------------------
// Clusters and endpoints

fn cluster(c: &Cluster) -> Value {
    let mut m = Map::new();
    let kind = match &c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => enum_name(*t, cluster::DiscoveryType::try_from),
        Some(cluster::ClusterDiscoveryType::ClusterType(t)) => format!("custom {}", t.name),
        None => "STATIC (default)".to_string(),
    };
    m.insert("type".into(), json!(kind));
    if c.lb_policy != cluster::LbPolicy::RoundRobin as i32 {
        m.insert(
            "lb_policy".into(),
            json!(enum_name(c.lb_policy, cluster::LbPolicy::try_from)),
        );
    }
    if let Some(t) = &c.connect_timeout {
        m.insert("connect_timeout".into(), json!(duration_str(t)));
    }
    if let Some(eds) = &c.eds_cluster_config {
        let source = eds
            .eds_config
            .as_ref()
            .map(|s| non_ads_source(s).unwrap_or_else(|| json!("ads")))
            .unwrap_or(json!("none"));
        m.insert("eds".into(), source);
        if !eds.service_name.is_empty() {
            m.insert("eds_service_name".into(), json!(eds.service_name));
        }
    }
    if let Some(cla) = &c.load_assignment {
        m.insert("endpoints".into(), json!(endpoint_addresses(cla)));
    }
    if let Some(ts) = &c.transport_socket {
        m.insert("tls".into(), transport_socket_summary(ts));
    }
    for any in c.typed_extension_protocol_options.values() {
        use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
            HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
        };
        let described = match on(any, |o: HttpProtocolOptions| o.upstream_protocol_options) {
            Some(Ok(Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(c)))) => json!(format!(
                "as downstream (HTTP/1.1{})",
                if c.http2_protocol_options.is_some() {
                    " or HTTP/2"
                } else {
                    ""
                }
            )),
            Some(Ok(Some(UpstreamProtocolOptions::ExplicitHttpConfig(c)))) => {
                use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
                match c.protocol_config {
                    Some(ProtocolConfig::Http2ProtocolOptions(_)) => json!("HTTP/2"),
                    _ => json!("explicit"),
                }
            }
            Some(Ok(Some(UpstreamProtocolOptions::AutoConfig(_)))) => json!("auto (ALPN)"),
            Some(Ok(None)) => json!("default"),
            Some(Err(error)) => json!(error),
            None => undecoded(any),
        };
        m.insert("upstream_http_protocol".into(), described);
        if let Some(Ok(Some(common))) = on(any, |o: HttpProtocolOptions| o.common_http_protocol_options)
            && let Some(n) = common.max_requests_per_connection
        {
            m.insert("max_requests_per_connection".into(), json!(n.value));
        }
    }
    if let Some(cb) = &c.circuit_breakers {
        let limit = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| match v {
            Some(v) if v.value == u32::MAX => json!("max"),
            Some(v) => json!(v.value),
            None => json!("default"),
        };
        let thresholds: Vec<Value> = cb
            .thresholds
            .iter()
            .map(|t| {
                json!({
                    "max_connections": limit(&t.max_connections),
                    "max_pending_requests": limit(&t.max_pending_requests),
                    "max_requests": limit(&t.max_requests),
                    "max_retries": limit(&t.max_retries),
                    "track_remaining": t.track_remaining,
                })
            })
            .collect();
        m.insert("circuit_breakers".into(), json!(thresholds));
    }
    Value::Object(m)
}

fn load_assignment(cla: &ClusterLoadAssignment) -> Value {
    json!({ "endpoints": endpoint_addresses(cla) })
}

/// Sorted `ip:port` strings; a non-zero priority, weight or health status is appended.
fn endpoint_addresses(cla: &ClusterLoadAssignment) -> Vec<String> {
    let mut out: Vec<String> = cla
        .endpoints
        .iter()
        .flat_map(|group| {
            group.lb_endpoints.iter().map(move |e| {
                let mut s = lb_endpoint_str(e);
                if group.priority != 0 {
                    s.push_str(&format!(" priority={}", group.priority));
                }
                s
            })
        })
        .collect();
    out.sort();
    out
}

fn lb_endpoint_str(e: &LbEndpoint) -> String {
    let mut s = match &e.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep
            .address
            .as_ref()
            .map(address_str)
            .unwrap_or_else(|| "(no address)".to_string()),
        Some(lb_endpoint::HostIdentifier::EndpointName(n)) => format!("named {n}"),
        None => "(none)".to_string(),
    };
    if let Some(w) = &e.load_balancing_weight {
        s.push_str(&format!(" weight={}", w.value));
    }
    if e.health_status != 0 {
        s.push_str(&format!(" health={}", e.health_status));
    }
    s
}

// ---------------------------------------------------------------------------------------------------
// TLS

fn transport_socket_summary(ts: &TransportSocket) -> Value {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        return json!({ "transport_socket": ts.name });
    };
    let described = on(any, |u: UpstreamTlsContext| {
        let mut m = common_tls(u.common_tls_context.as_ref());
        m.insert("context".into(), json!("upstream"));
        if !u.sni.is_empty() {
            m.insert("sni".into(), json!(u.sni));
        }
        Value::Object(m)
    })
    .or_else(|| {
        on(any, |d: DownstreamTlsContext| {
            let mut m = common_tls(d.common_tls_context.as_ref());
            m.insert("context".into(), json!("downstream"));
            m.insert(
                "require_client_certificate".into(),
                json!(d.require_client_certificate.is_some_and(|b| b.value)),
            );
            Value::Object(m)
        })
    });
    match described {
        Some(r) => flatten(r),
        None => json!({ "transport_socket": ts.name, "config": undecoded(any) }),
    }
}

fn common_tls(c: Option<&CommonTlsContext>) -> Map<String, Value> {
    let mut m = Map::new();
    let Some(c) = c else {
        return m;
    };
    let mut certificates: Vec<Value> = c
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| json!(format!("sds {}", s.name)))
        .collect();
    certificates.extend(c.tls_certificates.iter().map(|_| json!("inline")));
    if !certificates.is_empty() {
        m.insert("certificates".into(), json!(certificates));
    }
    let validation = match &c.validation_context_type {
        Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            Some(json!(format!("sds {}", s.name)))
        }
        Some(common_tls_context::ValidationContextType::ValidationContext(_)) => Some(json!("inline")),
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
            let sds = c
                .validation_context_sds_secret_config
                .as_ref()
                .map(|s| s.name.as_str())
                .unwrap_or("");
            let sans: Vec<Value> = c
                .default_validation_context
                .iter()
                .flat_map(|v| v.match_typed_subject_alt_names.iter().map(san_summary))
                .collect();
            Some(json!({ "ca": format!("sds {sds}"), "subject_alt_names": sans }))
        }
        Some(_) => Some(json!("other")),
        None => None,
    };
    if let Some(v) = validation {
        m.insert("validation".into(), v);
    }
    if !c.alpn_protocols.is_empty() {
        m.insert("alpn".into(), json!(c.alpn_protocols));
    }
    m
}

// ---------------------------------------------------------------------------------------------------
// Routes

fn route_config(rc: &RouteConfiguration) -> Value {
    let mut vhosts = Map::new();
    for vh in &rc.virtual_hosts {
        insert_unique(&mut vhosts, &vh.name, virtual_host(vh));
    }
    let mut m = Map::new();
    m.insert("virtual_hosts".into(), Value::Object(vhosts));
    if let Some(v) = &rc.validate_clusters {
        m.insert("validate_clusters".into(), json!(v.value));
    }
    Value::Object(m)
}

fn virtual_host(vh: &VirtualHost) -> Value {
    let routes: Vec<Value> = vh.routes.iter().map(route_summary).collect();
    json!({ "domains": vh.domains, "routes": routes })
}

fn route_summary(r: &Route) -> Value {
    let mut m = Map::new();
    if !r.name.is_empty() {
        m.insert("name".into(), json!(r.name));
    }
    if let Some(rm) = &r.r#match {
        m.insert("match".into(), route_match_summary(rm));
    }
    let action = match &r.action {
        Some(route::Action::Route(a)) => route_action_summary(a),
        Some(other) => json!({ "other": format!("{other:?}") }),
        None => json!("none"),
    };
    m.insert("action".into(), action);
    let mut keys: Vec<&String> = r.typed_per_filter_config.keys().collect();
    keys.sort();
    let mut others = Map::new();
    for key in keys {
        let any = &r.typed_per_filter_config[key];
        let described = on(any, |p: RbacPerRoute| match p.rbac {
            Some(rbac) => rbac_rules(rbac.rules.as_ref()),
            None => json!("disabled"),
        });
        match described {
            Some(Ok(v)) if key == HTTP_RBAC_FILTER => {
                m.insert("rbac".into(), v);
            }
            Some(r) => {
                others.insert(key.clone(), flatten(r));
            }
            None => {
                others.insert(key.clone(), undecoded(any));
            }
        }
    }
    if !others.is_empty() {
        m.insert("per_filter_config".into(), Value::Object(others));
    }
    Value::Object(m)
}

fn route_match_summary(rm: &RouteMatch) -> Value {
    let mut m = Map::new();
    match &rm.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => {
            m.insert("prefix".into(), json!(p));
        }
        Some(route_match::PathSpecifier::Path(p)) => {
            m.insert("path".into(), json!(p));
        }
        Some(route_match::PathSpecifier::SafeRegex(r)) => {
            m.insert("path_regex".into(), json!(r.regex));
        }
        Some(other) => {
            m.insert("path_other".into(), json!(format!("{other:?}")));
        }
        None => {}
    }
    if !rm.headers.is_empty() {
        let headers: Vec<Value> = rm.headers.iter().map(header_summary).collect();
        m.insert("headers".into(), json!(headers));
    }
    Value::Object(m)
}

fn header_summary(h: &HeaderMatcher) -> Value {
    use header_matcher::HeaderMatchSpecifier as S;
    let mut m = name_map(&h.name);
    match &h.header_match_specifier {
        Some(S::StringMatch(s)) => m.extend(string_matcher_map(s)),
        Some(S::PresentMatch(p)) => {
            m.insert("present".into(), json!(p));
        }
        Some(S::RangeMatch(r)) => {
            m.insert("range".into(), json!(format!("[{}, {})", r.start, r.end)));
        }
        // The deprecated single-purpose matchers; we only generate `string_match`.
        Some(other) => {
            m.insert("deprecated".into(), json!(format!("{other:?}")));
        }
        None => {}
    }
    if h.invert_match {
        m.insert("invert".into(), json!(true));
    }
    Value::Object(m)
}

fn route_action_summary(a: &RouteAction) -> Value {
    let mut v = route_target(a);
    if !a.prefix_rewrite.is_empty() {
        v["prefix_rewrite"] = json!(a.prefix_rewrite);
    }
    if let Some(r) = &a.retry_policy {
        v["retry_policy"] = json!({
            "retry_on": r.retry_on,
            "num_retries": r.num_retries.as_ref().map(|n| n.value),
            "per_try_timeout": r.per_try_timeout.as_ref().map(duration_str),
            "backoff_base_interval": r
                .retry_back_off
                .as_ref()
                .and_then(|b| b.base_interval.as_ref())
                .map(duration_str),
        });
    }
    v
}

fn route_target(a: &RouteAction) -> Value {
    match &a.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => json!({ "cluster": c }),
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            let weights: Map<String, Value> = w
                .clusters
                .iter()
                .map(|c| (c.name.clone(), json!(c.weight.as_ref().map(|w| w.value))))
                .collect();
            json!({ "weighted_clusters": weights })
        }
        Some(other) => json!({ "other": format!("{other:?}") }),
        None => json!({ "cluster": null }),
    }
}

// ---------------------------------------------------------------------------------------------------
// Secrets

fn secret_summary(s: &Secret) -> Value {
    match &s.r#type {
        Some(secret::Type::TlsCertificate(c)) => tls_certificate(c),
        Some(secret::Type::ValidationContext(v)) => {
            let mut m = Map::new();
            m.insert("kind".into(), json!("validation_context"));
            if let Some(ca) = &v.trusted_ca {
                m.insert("trusted_ca".into(), json!(certificates_source(ca)));
            }
            let sans: Vec<Value> = v.match_typed_subject_alt_names.iter().map(san_summary).collect();
            if !sans.is_empty() {
                m.insert("subject_alt_names".into(), json!(sans));
            }
            Value::Object(m)
        }
        // Session ticket keys and generic secrets are key material: name the kind only.
        Some(secret::Type::SessionTicketKeys(_)) => json!({ "kind": "session_ticket_keys" }),
        Some(secret::Type::GenericSecret(_)) => json!({ "kind": "generic_secret" }),
        None => json!({ "kind": "empty" }),
    }
}

fn tls_certificate(c: &TlsCertificate) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!("tls_certificate"));
    if let Some(chain) = &c.certificate_chain {
        m.insert("certificate".into(), json!(certificates_source(chain)));
    }
    // Whatever its source, a private key is only ever reported as present.
    let key_present = c.private_key.as_ref().is_some_and(|k| k.specifier.is_some())
        || c.private_key_provider.is_some()
        || c.pkcs12.is_some();
    m.insert(
        "private_key".into(),
        json!(if key_present { "present" } else { "absent" }),
    );
    Value::Object(m)
}

/// `present (N PEM certificates)` for inline data, never the data itself.
fn certificates_source(d: &DataSource) -> String {
    match &d.specifier {
        Some(data_source::Specifier::InlineString(s)) => present_pem(s.as_bytes()),
        Some(data_source::Specifier::InlineBytes(b)) => present_pem(b),
        Some(data_source::Specifier::Filename(f)) => format!("file {f}"),
        Some(data_source::Specifier::EnvironmentVariable(e)) => format!("env {e}"),
        None => "empty".to_string(),
    }
}

fn present_pem(data: &[u8]) -> String {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    let n = data.windows(BEGIN.len()).filter(|w| *w == BEGIN).count();
    match n {
        0 if data.is_empty() => "empty".to_string(),
        0 => "present (no PEM certificate)".to_string(),
        1 => "present (1 PEM certificate)".to_string(),
        n => format!("present ({n} PEM certificates)"),
    }
}

fn san_summary(s: &SubjectAltNameMatcher) -> Value {
    let kind = subject_alt_name_matcher::SanType::try_from(s.san_type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("SAN_TYPE_{}", s.san_type));
    let matcher = s
        .matcher
        .as_ref()
        .map(string_matcher_value)
        .unwrap_or(Value::Null);
    let mut m = Map::new();
    m.insert(kind, matcher);
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------------------
// Small values

/// `exact` matchers as the bare string; others as `{kind: pattern}`.
fn string_matcher_value(s: &StringMatcher) -> Value {
    let m = string_matcher_map(s);
    match (m.get("exact"), m.len()) {
        (Some(exact), 1) => exact.clone(),
        _ => Value::Object(m),
    }
}

fn string_matcher_map(s: &StringMatcher) -> Map<String, Value> {
    use string_matcher::MatchPattern as P;
    let mut m = Map::new();
    let (kind, pattern) = match &s.match_pattern {
        Some(P::Exact(x)) => ("exact", json!(x)),
        Some(P::Prefix(x)) => ("prefix", json!(x)),
        Some(P::Suffix(x)) => ("suffix", json!(x)),
        Some(P::SafeRegex(r)) => ("regex", json!(r.regex)),
        Some(P::Contains(x)) => ("contains", json!(x)),
        Some(P::Custom(c)) => ("custom", json!(c.name)),
        None => ("none", Value::Null),
    };
    m.insert(kind.into(), pattern);
    if s.ignore_case {
        m.insert("ignore_case".into(), json!(true));
    }
    m
}

fn name_map(name: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m
}

/// A config source other than ADS, described; `None` for ADS (what we always use).
fn non_ads_source(s: &ConfigSource) -> Option<Value> {
    match &s.config_source_specifier {
        Some(config_source::ConfigSourceSpecifier::Ads(_)) => None,
        other => Some(json!(format!("{other:?}"))),
    }
}

fn address_str(a: &Address) -> String {
    match &a.address {
        Some(address::Address::SocketAddress(sa)) => {
            let port = match &sa.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => p.to_string(),
                Some(socket_address::PortSpecifier::NamedPort(n)) => n.clone(),
                None => "?".to_string(),
            };
            if sa.address.contains(':') {
                format!("[{}]:{port}", sa.address)
            } else {
                format!("{}:{port}", sa.address)
            }
        }
        Some(address::Address::Pipe(p)) => format!("unix:{}", p.path),
        Some(address::Address::EnvoyInternalAddress(_)) => "envoy internal".to_string(),
        None => "(none)".to_string(),
    }
}

fn cidr_str(c: &CidrRange) -> String {
    match &c.prefix_len {
        Some(len) => format!("{}/{}", c.address_prefix, len.value),
        None => c.address_prefix.clone(),
    }
}

fn duration_str(d: &Duration) -> String {
    if d.nanos == 0 {
        format!("{}s", d.seconds)
    } else {
        format!("{}s", d.seconds as f64 + f64::from(d.nanos) / 1e9)
    }
}

/// The proto name of an enum value (`OUTBOUND`, `EDS`), or the number when unknown.
fn enum_name<E: ProtoEnum>(
    value: i32,
    from: impl FnOnce(i32) -> Result<E, prost::UnknownEnumValue>,
) -> String {
    from(value)
        .map(|e| e.proto_name().to_string())
        .unwrap_or_else(|_| value.to_string())
}

/// prost enums carry `as_str_name` as an inherent method; this trait lets `enum_name` call it.
trait ProtoEnum {
    fn proto_name(&self) -> &'static str;
}

macro_rules! proto_enum {
    ($($t:ty),*) => {$(
        impl ProtoEnum for $t {
            fn proto_name(&self) -> &'static str {
                self.as_str_name()
            }
        }
    )*};
}
proto_enum!(
    TrafficDirection,
    cluster::DiscoveryType,
    cluster::LbPolicy,
    rbac::Action,
    envoy_types::pb::envoy::config::core::v3::ApiVersion
);

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
    use envoy_types::pb::google::protobuf::Any;
    use serde_json::json;

    use super::describe_resource;
    use crate::resource::{Resource, TypeKind};

    fn raw(kind: TypeKind, type_url: &str, value: Vec<u8>) -> std::sync::Arc<Resource> {
        Resource::from_any(
            kind,
            "r",
            Any {
                type_url: type_url.to_string(),
                value,
            },
        )
    }

    /// A type we do not know is named, not decoded.
    #[test]
    fn unknown_type_url_is_marked_undecoded() {
        let r = raw(
            TypeKind::Listener,
            "type.googleapis.com/some.Other",
            vec![1, 2, 3],
        );
        assert_eq!(
            describe_resource(&r),
            json!({"type_url": "type.googleapis.com/some.Other", "undecoded": true})
        );
    }

    /// Bytes that are not a valid message give an error entry, not a panic.
    #[test]
    fn garbage_bytes_give_an_error_entry() {
        let r = raw(
            TypeKind::Listener,
            TypeKind::Listener.type_url(),
            vec![0xff, 0xff, 0xff],
        );
        let v = describe_resource(&r);
        assert_eq!(v["type_url"], json!(TypeKind::Listener.type_url()));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }

    /// A nested config of an unknown type is marked where it sits; the rest is still described.
    #[test]
    fn unknown_nested_config_is_marked_in_place() {
        let listener = Listener {
            name: "r".to_string(),
            filter_chains: vec![FilterChain {
                name: "chain".to_string(),
                filters: vec![Filter {
                    name: "custom".to_string(),
                    config_type: Some(filter::ConfigType::TypedConfig(Any {
                        type_url: "type.googleapis.com/x.Custom".to_string(),
                        value: vec![],
                    })),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = Resource::encode(TypeKind::Listener, "r", &listener);
        let v = describe_resource(&r);
        assert_eq!(
            v["filter_chains"]["chain"]["filters"][0],
            json!({"name": "custom", "config": {"type_url": "type.googleapis.com/x.Custom", "undecoded": true}})
        );
    }

    /// The private key and the certificate itself never appear.
    #[test]
    fn secrets_print_no_key_material() {
        let r = crate::sds::service_cert("CERT-BYTES", "KEY-BYTES");
        let v = describe_resource(&r);
        assert_eq!(
            v,
            json!({"kind": "tls_certificate", "certificate": "present (no PEM certificate)", "private_key": "present"})
        );
    }

    /// A resource whose encoded name differs from its served name shows both.
    #[test]
    fn name_mismatch_is_shown() {
        let listener = Listener {
            name: "inner".to_string(),
            ..Default::default()
        };
        let r = Resource::encode(TypeKind::Listener, "outer", &listener);
        assert_eq!(describe_resource(&r)["name"], json!("inner"));
    }
}
