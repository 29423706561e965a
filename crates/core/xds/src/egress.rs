//! Egress policy → the outbound listener's egress filter chains and inspectors, the `rds-egress.<port>`
//! route configs and the egress clusters, with upstream OSM's names:
//!
//! - `egress-http.<port>`: HTTP (`http/1.0`, `http/1.1`, `h2c`) on the port, routed by Host through
//!   `rds-egress.<port>` (virtual host `egress_virtual-host|<host>`, domains `host` and `host:port`) to
//!   the DNS cluster `<host>:<port>`; a request no route matches gets 404 from Envoy.
//! - `egress-https.<port>`: TLS whose SNI is one of the policy's hosts, to the original destination
//!   (cluster `<port>`).
//! - `egress-<tcp|tcp-server-first|https>.<port>`: connections to the listed IP ranges (any address when
//!   a `tcp` policy lists none), to the original destination (`egress-https-ip.<port>` when the port
//!   also has an SNI chain); tcp_proxy stat prefix `egress-tcp-proxy.<port>`.
//!
//! The TLS and HTTP inspectors these chains need run only on ports with HTTP or SNI chains and never on
//! a server-first port, where waiting for the client's first bytes would stall the connection; mesh
//! traffic on other ports is not inspected at all.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, ListenerFilter, ListenerFilterChainMatchPredicate,
    listener_filter_chain_match_predicate::{MatchSet, Rule},
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use osm_api::policy::{PROTOCOL_HTTP, PROTOCOL_HTTPS};
use osm_model::{EgressIntent, EgressPort};

use crate::cds;
use crate::common::cidr;
use crate::lds::{Telemetry, hcm_filter, listener_filter, tcp_proxy_filter};
use crate::names;
use crate::rds::http_route_match;
use crate::resource::{Resource, TypeKind};

/// Application protocols the HTTP inspector reports for plain-text HTTP.
const HTTP_PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// The egress filter chains of the outbound listener, port by port; `access_log` as the listener's.
pub(crate) fn filter_chains(egress: &EgressIntent, telemetry: &Telemetry) -> Vec<FilterChain> {
    let access_log = telemetry.access_log;
    let mut chains = Vec::new();
    for p in &egress.ports {
        if !p.http_hosts.is_empty() {
            let name = names::egress_filter_chain(PROTOCOL_HTTP, p.port);
            chains.push(FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value { value: p.port.into() }),
                    prefix_ranges: p
                        .http_ip_ranges
                        .iter()
                        .map(|r| cidr(r.addr, r.prefix_len))
                        .collect(),
                    application_protocols: HTTP_PROTOCOLS.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                filters: vec![hcm_filter(&names::rds_egress(p.port), false, telemetry)],
                name,
                ..Default::default()
            });
        }
        if !p.server_names.is_empty() {
            chains.push(FilterChain {
                name: names::egress_filter_chain(PROTOCOL_HTTPS, p.port),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value { value: p.port.into() }),
                    server_names: p.server_names.clone(),
                    ..Default::default()
                }),
                filters: vec![original_destination(p.port, access_log)],
                ..Default::default()
            });
        }
        if let Some(ranges) = &p.ip_ranges {
            // Chain names are unique in a listener: an https port with SNI and address chains names the
            // second by its addresses.
            let protocol = match (p.ip_protocol, p.server_names.is_empty()) {
                (PROTOCOL_HTTPS, false) => "https-ip",
                (protocol, _) => protocol,
            };
            chains.push(FilterChain {
                name: names::egress_filter_chain(protocol, p.port),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value { value: p.port.into() }),
                    prefix_ranges: ranges.iter().map(|r| cidr(r.addr, r.prefix_len)).collect(),
                    ..Default::default()
                }),
                filters: vec![original_destination(p.port, access_log)],
                ..Default::default()
            });
        }
    }
    chains
}

/// The TLS and HTTP inspectors, enabled only on the ports that need them (none: no inspectors).
pub fn inspectors(egress: &EgressIntent) -> Vec<ListenerFilter> {
    let ports: Vec<u16> = egress
        .ports
        .iter()
        .filter(|p| !p.server_first && (!p.http_hosts.is_empty() || !p.server_names.is_empty()))
        .map(|p| p.port)
        .collect();
    if ports.is_empty() {
        return Vec::new();
    }
    let port_rule = |port: u16| ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(Int32Range {
            start: port.into(),
            end: i32::from(port) + 1,
        })),
    };
    let inspected = match ports.as_slice() {
        [one] => port_rule(*one),
        many => ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet {
                rules: many.iter().map(|p| port_rule(*p)).collect(),
            })),
        },
    };
    let disabled = ListenerFilterChainMatchPredicate {
        rule: Some(Rule::NotMatch(Box::new(inspected))),
    };
    let mut tls = listener_filter("envoy.filters.listener.tls_inspector", &TlsInspector::default());
    tls.filter_disabled = Some(disabled.clone());
    let mut http = listener_filter("envoy.filters.listener.http_inspector", &HttpInspector::default());
    http.filter_disabled = Some(disabled);
    vec![tls, http]
}

/// `rds-egress.<port>` for every port with HTTP egress.
pub fn route_configs(egress: &EgressIntent) -> Vec<Arc<Resource>> {
    egress
        .ports
        .iter()
        .filter(|p| !p.http_hosts.is_empty())
        .map(route_config)
        .collect()
}

fn route_config(p: &EgressPort) -> Arc<Resource> {
    let virtual_hosts = p
        .http_hosts
        .iter()
        .map(|h| {
            let cluster = names::egress_http_cluster(&h.host, p.port);
            VirtualHost {
                name: names::egress_virtual_host(&h.host),
                domains: vec![h.host.clone(), format!("{}:{}", h.host, p.port)],
                routes: h
                    .routes
                    .iter()
                    .map(|m| Route {
                        r#match: Some(http_route_match(m)),
                        action: Some(route::Action::Route(RouteAction {
                            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.clone())),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    let name = names::rds_egress(p.port);
    let config = RouteConfiguration {
        name: name.clone(),
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    Resource::encode(TypeKind::Route, name, &config)
}

/// The egress clusters: `<host>:<port>` (DNS) per HTTP host, `<port>` (original destination) per port
/// with TLS or IP-range chains.
pub fn clusters(egress: &EgressIntent) -> Vec<Arc<Resource>> {
    let mut out = Vec::new();
    for p in &egress.ports {
        for h in &p.http_hosts {
            out.push(cds::strict_dns(
                &names::egress_http_cluster(&h.host, p.port),
                &h.host,
                p.port,
                h.limits.as_ref(),
            ));
        }
        if !p.server_names.is_empty() || p.ip_ranges.is_some() {
            out.push(cds::original_destination(
                &names::egress_port_cluster(p.port),
                p.limits.as_ref(),
            ));
        }
    }
    out
}

fn original_destination(port: u16, access_log: bool) -> envoy_types::pb::envoy::config::listener::v3::Filter {
    tcp_proxy_filter(
        &format!("{}.{port}", names::EGRESS_TCP_PROXY_STAT_PREFIX),
        &names::egress_port_cluster(port),
        access_log,
    )
}
