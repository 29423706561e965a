//! RDS: outbound route configs (which service a request is for, and its weighted clusters) and inbound
//! route configs (which requests the local app accepts, and from whom, via per-route RBAC).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy as EnvoyRetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, WeightedCluster, header_matcher, retry_policy, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use osm_model::{
    HttpAccess, HttpRateLimit, HttpRouteMatch, HttpRoutePolicy, LocalRateLimit, OutboundService, PodHost,
    RetryPolicy, ServiceIdentity, pod_service,
};

use crate::names;
use crate::resource::{Resource, TypeKind, to_any};

pub const HTTP_RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// The last inbound route in SMI mode: whatever no allowed route matched, refused by RBAC (403).
pub const UNMATCHED_ROUTE: &str = "unmatched-denied";
/// The methods the metrics and probe listeners forward.
pub const READ_ONLY_METHODS: &str = "GET|HEAD";

/// `rds-outbound.<port>`: one virtual host per service reachable on this port.
///
/// Short names (`bookstore`, `bookstore:14001`) are only added when unique among the services in this
/// config, so one config serves clients in every namespace; an ambiguous short name must be qualified.
pub fn outbound(port: u16, services: &[&OutboundService]) -> Arc<Resource> {
    let mut short_count: HashMap<&str, usize> = HashMap::new();
    for s in services {
        *short_count.entry(s.service.name.as_str()).or_default() += 1;
    }
    let per_pod: Vec<VirtualHost> = services
        .iter()
        .flat_map(|s| {
            let unique = short_count[s.service.name.as_str()] == 1;
            s.pod_hosts.iter().map(move |p| pod_virtual_host(s, p, unique))
        })
        .collect();
    // A headless service is also reached by its pods' addresses; two such services sharing a pod would
    // name one address in two virtual hosts, which Envoy refuses. The first (by service) keeps it.
    let mut claimed_addresses = std::collections::HashSet::new();
    let virtual_hosts = services
        .iter()
        .map(|s| {
            let svc = &s.service;
            let mut hosts = vec![
                format!("{}.{}", svc.name, svc.namespace),
                format!("{}.{}.svc", svc.name, svc.namespace),
                format!("{}.{}.svc.cluster", svc.name, svc.namespace),
                format!("{}.{}.svc.cluster.local", svc.name, svc.namespace),
            ];
            if short_count[svc.name.as_str()] == 1 {
                hosts.insert(0, svc.name.clone());
            }
            hosts.extend(
                s.addresses
                    .iter()
                    .filter(|ip| claimed_addresses.insert(**ip))
                    .map(|ip| ip.to_string()),
            );
            let mut domains: Vec<String> = hosts.iter().map(|h| format!("{h}:{}", s.port)).collect();
            domains.extend(hosts);
            VirtualHost {
                name: names::outbound_virtual_host(svc),
                domains,
                routes: vec![Route {
                    name: "default".to_string(),
                    r#match: Some(prefix_match("/")),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(cluster_specifier(s)),
                        retry_policy: s.retry.as_deref().map(route_retry_policy),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .chain(per_pod)
        .collect();
    let name = names::rds_outbound(port);
    let config = RouteConfiguration {
        name: name.clone(),
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    Resource::encode(TypeKind::Route, name, &config)
}

/// `<ns>/<hostname>.<svc>`: one pod of a headless service by its DNS names (`<hostname>.<svc>.<ns>`
/// and longer; `<hostname>.<svc>` when the service's short name is unique in this config), to the
/// cluster holding only that pod.
fn pod_virtual_host(s: &OutboundService, p: &PodHost, short_unique: bool) -> VirtualHost {
    let pod = pod_service(&s.service, &p.hostname);
    let base = &pod.name;
    let mut hosts = vec![
        format!("{base}.{}", pod.namespace),
        format!("{base}.{}.svc", pod.namespace),
        format!("{base}.{}.svc.cluster", pod.namespace),
        format!("{base}.{}.svc.cluster.local", pod.namespace),
    ];
    if short_unique {
        hosts.insert(0, base.clone());
    }
    let mut domains: Vec<String> = hosts.iter().map(|h| format!("{h}:{}", s.port)).collect();
    domains.extend(hosts);
    VirtualHost {
        name: names::outbound_virtual_host(&pod),
        domains,
        routes: vec![Route {
            name: "default".to_string(),
            r#match: Some(prefix_match("/")),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(p.cluster.name())),
                retry_policy: s.retry.as_deref().map(route_retry_policy),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A Retry policy as upstream programs it on the route (`pkg/envoy/rds/route`): conditions, count,
/// per-try timeout and the exponential backoff's base interval (Envoy caps it at ten times that).
fn route_retry_policy(p: &RetryPolicy) -> EnvoyRetryPolicy {
    EnvoyRetryPolicy {
        retry_on: p.retry_on.clone(),
        num_retries: Some(UInt32Value { value: p.num_retries }),
        per_try_timeout: p.per_try_timeout_ms.map(crate::common::millis),
        retry_back_off: Some(retry_policy::RetryBackOff {
            base_interval: Some(crate::common::millis(p.backoff_base_interval_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cluster_specifier(s: &OutboundService) -> route_action::ClusterSpecifier {
    if let [only] = s.backends.as_slice() {
        return route_action::ClusterSpecifier::Cluster(only.cluster.name());
    }
    route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
        clusters: s
            .backends
            .iter()
            .map(|b| weighted_cluster::ClusterWeight {
                name: b.cluster.name(),
                weight: Some(UInt32Value { value: b.weight }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// `rds-inbound.<port>`: requests for the local app on `target_port`. Permissive: everything. SMI: one
/// route per allowed HTTPRouteGroup match, each with an RBAC policy naming the allowed principals, then
/// [`UNMATCHED_ROUTE`], which refuses everyone: a request no TrafficTarget allows gets 403 from Envoy.
/// Routes see the normalised path (see `common::path_normalization`).
///
/// Envoy takes the first route a request matches, but SMI allows a request when *any* match allowing
/// its source matches it. So a route's RBAC also lets in the identities of each later route, on
/// condition that the request matches that later route too (see [`later_routes`]).
pub fn inbound(
    target_port: u16,
    local_cluster: &str,
    access: &HttpAccess,
    rate_limit: Option<&LocalRateLimit>,
    trust_domain: &str,
) -> Arc<Resource> {
    // `httpRoutes` limits, by the path regex they name.
    let route_limits: HashMap<&str, &HttpRateLimit> = rate_limit
        .into_iter()
        .flat_map(|l| l.routes.iter().map(|(path, limit)| (path.as_str(), limit)))
        .collect();
    let to_local = |name: String, m: RouteMatch, rbac: Option<RbacPerRoute>, path: Option<&str>| {
        let mut per_filter: HashMap<String, envoy_types::pb::google::protobuf::Any> = HashMap::new();
        if let Some(r) = rbac {
            per_filter.insert(HTTP_RBAC_FILTER.to_string(), to_any(&r));
        }
        if let Some(limit) = path.and_then(|p| route_limits.get(p)) {
            per_filter.insert(
                crate::rate_limit::HTTP_FILTER.to_string(),
                crate::rate_limit::per_virtual_host(limit),
            );
        }
        Route {
            name,
            r#match: Some(m),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(local_cluster.to_string())),
                ..Default::default()
            })),
            typed_per_filter_config: per_filter,
            ..Default::default()
        }
    };
    let routes = match access {
        // Permissive: a route of its own for each limited path, then everything.
        HttpAccess::AnyMeshIdentity => rate_limit
            .into_iter()
            .flat_map(|l| l.routes.iter())
            .enumerate()
            .map(|(i, (path, _))| {
                to_local(
                    format!("rate-limited-{i}"),
                    http_route_match(&HttpRouteMatch {
                        path_regex: path.clone(),
                        methods: Vec::new(),
                        headers: Vec::new(),
                    }),
                    None,
                    Some(path),
                )
            })
            .chain(std::iter::once(to_local(
                "allow-all".to_string(),
                prefix_match("/"),
                None,
                None,
            )))
            .collect(),
        HttpAccess::Routes(policies) => policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut principals: Vec<Principal> = p
                    .allowed
                    .iter()
                    .map(|id| authenticated(id, trust_domain))
                    .collect();
                principals.extend(later_routes(p, &policies[i + 1..], trust_domain));
                to_local(
                    format!("route-{i}"),
                    http_route_match(&p.route),
                    Some(RbacPerRoute {
                        rbac: Some(Rbac {
                            rules: Some(allow(principals)),
                            ..Default::default()
                        }),
                    }),
                    Some(p.route.path_regex.as_str()),
                )
            })
            .chain(std::iter::once(to_local(
                UNMATCHED_ROUTE.to_string(),
                prefix_match("/"),
                Some(allow_principals(std::iter::empty(), trust_domain)),
                None,
            )))
            .collect(),
    };
    let name = names::rds_inbound(target_port);
    let config = RouteConfiguration {
        name: name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: "inbound_virtual-host".to_string(),
            domains: vec!["*".to_string()],
            routes,
            typed_per_filter_config: rate_limit
                .and_then(|l| l.requests.as_ref())
                .map(|l| {
                    [(
                        crate::rate_limit::HTTP_FILTER.to_string(),
                        crate::rate_limit::per_virtual_host(l),
                    )]
                    .into_iter()
                    .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    Resource::encode(TypeKind::Route, name, &config)
}

pub(crate) fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.to_string())),
        ..Default::default()
    }
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }
}

/// `:method` is `GET` or `HEAD`.
pub(crate) fn read_only_methods() -> HeaderMatcher {
    header_regex(":method", READ_ONLY_METHODS)
}

fn header_regex(name: &str, r: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex(r))),
            ignore_case: false,
        })),
        ..Default::default()
    }
}

pub(crate) fn http_route_match(m: &HttpRouteMatch) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex(&m.path_regex))),
        headers: header_matchers(m),
        ..Default::default()
    }
}

/// The header conditions of a route, then its methods (`:method`).
fn header_matchers(m: &HttpRouteMatch) -> Vec<HeaderMatcher> {
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|(name, value)| header_regex(name, value))
        .collect();
    if !m.methods.is_empty() {
        headers.push(header_regex(":method", &m.methods.join("|")));
    }
    headers
}

/// For a request that took route `first`: the identities each later route allows beyond `first`'s,
/// each only if the request matches that later route as well (its path regex — which, like the route's,
/// leaves out the query string — headers and methods). Empty when `first` already allows everyone the
/// later routes do, as is usual, so such configs stay as they were.
fn later_routes(first: &HttpRoutePolicy, later: &[HttpRoutePolicy], trust_domain: &str) -> Vec<Principal> {
    let methods_disjoint = |other: &HttpRouteMatch| {
        let (a, b) = (&first.route.methods, &other.methods);
        !a.is_empty() && !b.is_empty() && !a.iter().any(|m| b.contains(m))
    };
    later
        .iter()
        .filter(|p| !methods_disjoint(&p.route))
        .filter_map(|p| {
            let extra: Vec<Principal> = p
                .allowed
                .difference(&first.allowed)
                .map(|id| authenticated(id, trust_domain))
                .collect();
            if extra.is_empty() {
                return None;
            }
            let mut ids = vec![Principal {
                identifier: Some(principal::Identifier::OrIds(principal::Set { ids: extra })),
            }];
            ids.push(Principal {
                identifier: Some(principal::Identifier::UrlPath(PathMatcher {
                    rule: Some(path_matcher::Rule::Path(StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex(
                            &p.route.path_regex,
                        ))),
                        ignore_case: false,
                    })),
                })),
            });
            ids.extend(header_matchers(&p.route).into_iter().map(|h| Principal {
                identifier: Some(principal::Identifier::Header(h)),
            }));
            Some(Principal {
                identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
            })
        })
        .collect()
}

/// Per-route RBAC: allow exactly these mesh identities (by certificate principal).
pub(crate) fn allow_principals<'a>(
    identities: impl Iterator<Item = &'a ServiceIdentity>,
    trust_domain: &str,
) -> RbacPerRoute {
    RbacPerRoute {
        rbac: Some(Rbac {
            rules: Some(principals_policy(identities, trust_domain)),
            ..Default::default()
        }),
    }
}

/// An ALLOW policy for the given identities; with none, nothing is allowed.
pub(crate) fn principals_policy<'a>(
    identities: impl Iterator<Item = &'a ServiceIdentity>,
    trust_domain: &str,
) -> RbacRules {
    allow(identities.map(|id| authenticated(id, trust_domain)).collect())
}

/// Per-route RBAC: allow exactly these certificate principals (URI or DNS SAN).
pub(crate) fn allow_principal_names<'a>(names: impl Iterator<Item = &'a str>) -> RbacPerRoute {
    RbacPerRoute {
        rbac: Some(Rbac {
            rules: Some(allow(names.map(authenticated_name).collect())),
            ..Default::default()
        }),
    }
}

/// The mTLS peer is this identity.
fn authenticated(id: &ServiceIdentity, trust_domain: &str) -> Principal {
    authenticated_name(&id.principal(trust_domain))
}

/// The mTLS peer's certificate names this principal (Envoy reads its URI SAN, else its DNS SAN).
fn authenticated_name(name: &str) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(principal::Authenticated {
            principal_name: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(name.to_string())),
                ignore_case: false,
            }),
        })),
    }
}

/// An ALLOW policy for any request from these principals; with none, nothing is allowed. One policy
/// only: `policies` is a map, encoded in hash order, and one entry keeps the bytes deterministic.
fn allow(principals: Vec<Principal>) -> RbacRules {
    let policies: BTreeMap<String, Policy> = if principals.is_empty() {
        BTreeMap::new()
    } else {
        [(
            "allowed-identities".to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals,
                ..Default::default()
            },
        )]
        .into_iter()
        .collect()
    };
    RbacRules {
        action: rbac::Action::Allow as i32,
        policies: policies.into_iter().collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    fn policy(path: &str, methods: &[&str], allowed: &[&str]) -> HttpRoutePolicy {
        HttpRoutePolicy {
            route: HttpRouteMatch {
                path_regex: path.to_string(),
                methods: methods.iter().map(|m| m.to_string()).collect(),
                headers: Vec::new(),
            },
            allowed: allowed
                .iter()
                .map(|sa| ServiceIdentity::new("ns", *sa))
                .collect::<BTreeSet<_>>(),
        }
    }

    fn principals(policies: Vec<HttpRoutePolicy>) -> serde_json::Value {
        let r = inbound(8080, "local", &HttpAccess::Routes(policies), None, "td");
        let v = crate::describe::describe_resource(&r);
        let routes = &v["virtual_hosts"]["inbound_virtual-host"]["routes"];
        json!(
            routes
                .as_array()
                .unwrap()
                .iter()
                .map(|r| &r["rbac"]["policies"]["allowed-identities"]["principals"])
                .collect::<Vec<_>>()
        )
    }

    /// A request takes the first route it matches, so an earlier route also admits a later route's
    /// identities when the request matches that route too; the last route (before the refusal) and
    /// routes whose methods exclude each other need nothing extra.
    #[test]
    fn earlier_routes_admit_later_routes_identities_on_their_match() {
        let got = principals(vec![
            policy(".*", &[], &["a"]),
            policy("/b.*", &["GET"], &["b"]),
            policy("/c", &["POST"], &["a", "c"]),
        ]);
        let later = |sa: &str, path: &str, method: &str| {
            json!({"and": [
                {"or": [{"authenticated": format!("{sa}.ns.td")}]},
                {"url_path": {"regex": path}},
                {"header": {"name": ":method", "regex": method}},
            ]})
        };
        assert_eq!(
            got,
            json!([
                [{"authenticated": "a.ns.td"}, later("b", "/b.*", "GET"), later("c", "/c", "POST")],
                // GET and POST exclude each other.
                [{"authenticated": "b.ns.td"}],
                [{"authenticated": "a.ns.td"}, {"authenticated": "c.ns.td"}],
                null,
            ])
        );
    }

    /// Routes allowing the same identities stay plain lists of principals.
    #[test]
    fn same_identities_need_nothing_extra() {
        let got = principals(vec![policy(".*", &[], &["a"]), policy("/b", &[], &["a"])]);
        assert_eq!(
            got,
            json!([[{"authenticated": "a.ns.td"}], [{"authenticated": "a.ns.td"}], null])
        );
    }

    /// `httpRoutes` limits attach to the SMI route with that exact path regex (beside its RBAC), and
    /// to no other route; the virtual host keeps its own limit.
    #[test]
    fn smi_route_with_an_http_routes_limit_carries_it() {
        use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
        use osm_model::{LocalRateLimit, TokenBucket};
        use prost::Message;
        let limit = |n| HttpRateLimit {
            bucket: TokenBucket {
                tokens_per_fill: n,
                max_tokens: n,
                fill_interval_secs: 60,
            },
            status: None,
            response_headers: Vec::new(),
        };
        let rate_limit = LocalRateLimit {
            connections: None,
            requests: Some(limit(100)),
            routes: vec![("/books-bought".to_string(), limit(1))],
        };
        let access = HttpAccess::Routes(vec![
            policy("/books-bought", &["GET"], &["a"]),
            policy("/other", &[], &["a"]),
        ]);
        let r = inbound(8080, "local", &access, Some(&rate_limit), "td");
        let config = RouteConfiguration::decode(r.body().value.as_slice()).unwrap();
        let vhost = &config.virtual_hosts[0];
        assert!(
            vhost
                .typed_per_filter_config
                .contains_key(crate::rate_limit::HTTP_FILTER)
        );
        let limited: Vec<&str> = vhost
            .routes
            .iter()
            .filter(|r| {
                r.typed_per_filter_config
                    .contains_key(crate::rate_limit::HTTP_FILTER)
            })
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(limited, ["route-0"]);
        assert!(
            vhost.routes[0]
                .typed_per_filter_config
                .contains_key(HTTP_RBAC_FILTER)
        );
    }
}
