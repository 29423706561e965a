//! RDS: outbound route configs (which service a request is for, and its weighted clusters) and inbound
//! route configs (which requests the local app accepts, and from whom, via per-route RBAC).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
    header_matcher, route, route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use osm_model::{HttpRouteMatch, InboundAccess, OutboundService, ServiceIdentity};

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
            hosts.extend(s.addresses.iter().map(|ip| ip.to_string()));
            let mut domains: Vec<String> = hosts.iter().map(|h| format!("{h}:{}", s.port)).collect();
            domains.extend(hosts);
            VirtualHost {
                name: svc.to_string(),
                domains,
                routes: vec![Route {
                    name: "default".to_string(),
                    r#match: Some(prefix_match("/")),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(cluster_specifier(s)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
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
pub fn inbound(
    target_port: u16,
    local_cluster: &str,
    access: &InboundAccess,
    trust_domain: &str,
) -> Arc<Resource> {
    let to_local = |name: String, m: RouteMatch, rbac: Option<RbacPerRoute>| Route {
        name,
        r#match: Some(m),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(local_cluster.to_string())),
            ..Default::default()
        })),
        typed_per_filter_config: rbac
            .map(|r| [(HTTP_RBAC_FILTER.to_string(), to_any(&r))].into_iter().collect())
            .unwrap_or_default(),
        ..Default::default()
    };
    let routes = match access {
        InboundAccess::AnyMeshIdentity | InboundAccess::TcpIdentities(_) => {
            vec![to_local("allow-all".to_string(), prefix_match("/"), None)]
        }
        InboundAccess::HttpRoutes(policies) => policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                to_local(
                    format!("route-{i}"),
                    http_route_match(&p.route),
                    Some(allow_principals(p.allowed.iter(), trust_domain)),
                )
            })
            .chain(std::iter::once(to_local(
                UNMATCHED_ROUTE.to_string(),
                prefix_match("/"),
                Some(allow_principals(std::iter::empty(), trust_domain)),
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
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    Resource::encode(TypeKind::Route, name, &config)
}

fn prefix_match(prefix: &str) -> RouteMatch {
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

fn http_route_match(m: &HttpRouteMatch) -> RouteMatch {
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|(name, value)| header_regex(name, value))
        .collect();
    if !m.methods.is_empty() {
        headers.push(header_regex(":method", &m.methods.join("|")));
    }
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex(&m.path_regex))),
        headers,
        ..Default::default()
    }
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
    let principals: Vec<Principal> = identities
        .map(|id| Principal {
            identifier: Some(principal::Identifier::Authenticated(principal::Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(id.principal(trust_domain))),
                    ignore_case: false,
                }),
            })),
        })
        .collect();
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
