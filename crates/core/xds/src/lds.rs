//! LDS: `outbound-listener` (15001), `inbound-listener` (15003) and `inbound-prometheus-listener` (15010).

use std::collections::HashSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, common_tls_context,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use osm_model::{
    AppProtocol, EgressIntent, InboundAccess, InboundIntent, OutboundIntent, OutboundService, TcpAccess,
    Tracing, pod_service,
};
use prost::{Message, Name};

use crate::common::{ads, cidr, path_normalization, sds, socket_address, tls_transport_socket};
use crate::names;
use crate::rds::{HTTP_RBAC_FILTER, principals_policy, read_only_methods};
use crate::resource::{Resource, TypeKind, to_any};

/// Filter chains by original destination (ClusterIP:port), then the Egress policy chains (see
/// [`crate::egress`]); unknown destinations go to `passthrough-outbound` when egress is enabled, and
/// are closed otherwise. `None` when the proxy may reach nothing at all (Envoy refuses a listener
/// without filter chains; with no listener, intercepted connections are refused, which is the intent).
pub fn outbound(intent: &OutboundIntent, egress: &EgressIntent) -> Option<Arc<Resource>> {
    if intent.services.is_empty() && !intent.egress_passthrough && egress.is_empty() {
        return None;
    }
    let telemetry = Telemetry::outbound(intent);
    let mut filter_chains: Vec<FilterChain> = intent
        .services
        .iter()
        .flat_map(|s| outbound_chains(s, &telemetry))
        .collect();
    claim_each_address_once(&mut filter_chains);
    if !egress.is_empty() {
        // An Egress policy naming a mesh address exactly as a service chain does adds nothing (and
        // Envoy would refuse the duplicate match): the mesh chain wins.
        let mut matches: HashSet<Option<Vec<u8>>> = filter_chains
            .iter()
            .map(|c| c.filter_chain_match.as_ref().map(Message::encode_to_vec))
            .collect();
        filter_chains.extend(
            crate::egress::filter_chains(egress, &telemetry)
                .into_iter()
                .filter(|c| matches.insert(c.filter_chain_match.as_ref().map(Message::encode_to_vec))),
        );
    }
    let inspectors = crate::egress::inspectors(egress);
    let default_filter_chain = intent.egress_passthrough.then(|| FilterChain {
        name: names::OUTBOUND_EGRESS_FILTER_CHAIN.to_string(),
        filters: vec![tcp_proxy_filter(
            &format!(
                "{}.{}",
                names::EGRESS_TCP_PROXY_STAT_PREFIX,
                names::PASSTHROUGH_CLUSTER
            ),
            names::PASSTHROUGH_CLUSTER,
            intent.access_log,
        )],
        ..Default::default()
    });
    let listener = Listener {
        name: names::OUTBOUND_LISTENER.to_string(),
        address: Some(socket_address("0.0.0.0", names::OUTBOUND_PORT)),
        traffic_direction: TrafficDirection::Outbound as i32,
        // A connection the inspectors give up on still gets a chain (upstream OSM's setting).
        continue_on_listener_filters_timeout: !inspectors.is_empty(),
        listener_filters: std::iter::once(listener_filter(
            "envoy.filters.listener.original_dst",
            &OriginalDst::default(),
        ))
        .chain(inspectors)
        .collect(),
        filter_chains,
        default_filter_chain,
        ..Default::default()
    };
    Some(Resource::encode(
        TypeKind::Listener,
        names::OUTBOUND_LISTENER,
        &listener,
    ))
}

/// Gives each (port, address) to the first chain that matches it. Headless services that share pods
/// (two Services selecting overlapping pods) would otherwise match one address on one port from two
/// chains, and Envoy refuses the whole listener for it; the pod is the same whichever chain takes it.
/// A chain left with no address is dropped: without `prefix_ranges` it would match every address.
fn claim_each_address_once(chains: &mut Vec<FilterChain>) {
    let mut claimed: HashSet<(u32, String, u32)> = HashSet::new();
    chains.retain_mut(|chain| {
        let Some(m) = chain.filter_chain_match.as_mut() else {
            return false;
        };
        let port = m.destination_port.map_or(0, |p| p.value);
        m.prefix_ranges.retain(|r| {
            claimed.insert((
                port,
                r.address_prefix.clone(),
                r.prefix_len.map_or(0, |l| l.value),
            ))
        });
        !m.prefix_ranges.is_empty()
    });
}

/// The chains of one reachable service port. A TCP port of a headless service whose pods have
/// hostnames gets one chain per such pod (its address to its own cluster: a TCP client that resolved
/// `web-0.web.ns` reaches web-0, as it would without a mesh), and one for any other address; HTTP
/// ports tell pods apart by Host instead (`rds::outbound`).
fn outbound_chains(s: &OutboundService, telemetry: &Telemetry) -> Vec<FilterChain> {
    if s.protocol != AppProtocol::Tcp || s.pod_hosts.is_empty() {
        return vec![outbound_chain(s, telemetry)];
    }
    let mut chains: Vec<FilterChain> = s
        .pod_hosts
        .iter()
        .map(|p| {
            let name =
                names::outbound_filter_chain(&pod_service(&s.service, &p.hostname), s.port, AppProtocol::Tcp);
            FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value { value: s.port.into() }),
                    prefix_ranges: p.cluster.endpoints.iter().map(|ip| host_cidr(*ip)).collect(),
                    ..Default::default()
                }),
                filters: vec![tcp_proxy_filter(
                    &names::outbound_tcp_proxy_stat_prefix(&name),
                    &p.cluster.name(),
                    telemetry.access_log,
                )],
                name,
                ..Default::default()
            }
        })
        .collect();
    let by_pod: HashSet<std::net::IpAddr> = s
        .pod_hosts
        .iter()
        .flat_map(|p| p.cluster.endpoints.iter().copied())
        .collect();
    let rest: Vec<std::net::IpAddr> = s
        .addresses
        .iter()
        .copied()
        .filter(|ip| !by_pod.contains(ip))
        .collect();
    if !rest.is_empty() {
        chains.push(outbound_chain(
            &OutboundService {
                addresses: rest,
                ..s.clone()
            },
            telemetry,
        ));
    }
    chains
}

fn outbound_chain(s: &OutboundService, telemetry: &Telemetry) -> FilterChain {
    let name = names::outbound_filter_chain(&s.service, s.port, s.protocol);
    let access_log = telemetry.access_log;
    let filter = match s.protocol {
        AppProtocol::Http => hcm_filter(&names::rds_outbound(s.port), false, telemetry),
        AppProtocol::Tcp => {
            let cluster_specifier = match s.backends.as_slice() {
                [only] => tcp_proxy::ClusterSpecifier::Cluster(only.cluster.name()),
                many => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
                    clusters: many
                        .iter()
                        .map(|b| tcp_proxy::weighted_cluster::ClusterWeight {
                            name: b.cluster.name(),
                            weight: b.weight,
                            ..Default::default()
                        })
                        .collect(),
                }),
            };
            typed_filter(
                "envoy.filters.network.tcp_proxy",
                &TcpProxy {
                    stat_prefix: names::outbound_tcp_proxy_stat_prefix(&name),
                    cluster_specifier: Some(cluster_specifier),
                    access_log: crate::access_log::access_logs(access_log),
                    ..Default::default()
                },
            )
        }
    };
    FilterChain {
        name,
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(UInt32Value { value: s.port.into() }),
            prefix_ranges: s.addresses.iter().map(|ip| host_cidr(*ip)).collect(),
            ..Default::default()
        }),
        filters: vec![filter],
        ..Default::default()
    }
}

/// One filter chain per local service port, matched by the SNI clients send for that service and by ALPN
/// `osm`; the client must present a mesh certificate (mTLS), and in SMI mode RBAC checks its identity.
/// Then the chains IngressBackend policies add (see [`crate::ingress`]). `None` when the pod backs no
/// service.
pub fn inbound(intent: &InboundIntent, trust_domain: &str) -> Option<Arc<Resource>> {
    let telemetry = Telemetry::inbound(intent);
    let mut filter_chains = Vec::new();
    for port in &intent.ports {
        let Some(first) = port.services.first() else {
            continue;
        };
        let local_cluster = names::local_cluster(&first.service, port.target_port);
        // Services are sorted; a service with several ports onto this target port gets one chain (named
        // by its lowest port): Envoy refuses a listener with two chains matching the same SNI and port.
        let mut services = port.services.iter().peekable();
        while let Some(svc) = services.next() {
            while services.next_if(|next| next.service == svc.service).is_some() {}
            let name = names::inbound_filter_chain(&svc.service, svc.port, port.protocol());
            let limit = port.rate_limit.as_deref();
            let connection_limit = limit
                .and_then(|l| l.connections.as_ref())
                .map(|b| crate::rate_limit::connections(b, &name));
            let filters = match &port.access {
                InboundAccess::Http(_) => {
                    // HTTP RBAC is per route, so the connection limit comes first here.
                    let request_limit = limit
                        .filter(|l| l.limits_requests())
                        .map(|_| crate::rate_limit::http_filter(&name));
                    let authz = intent.ext_authz.as_deref().map(crate::ext_authz::http_filter);
                    connection_limit
                        .into_iter()
                        .chain(std::iter::once(hcm_filter_with(
                            &names::rds_inbound(port.target_port),
                            true,
                            &telemetry,
                            request_limit.into_iter().chain(authz).collect(),
                        )))
                        .collect()
                }
                InboundAccess::Tcp(access) => {
                    let mut filters = Vec::new();
                    if let TcpAccess::Identities(allowed) = access {
                        filters.push(typed_filter(
                            "envoy.filters.network.rbac",
                            &NetworkRbac {
                                rules: Some(principals_policy(allowed.iter(), trust_domain)),
                                stat_prefix: names::NETWORK_RBAC_STAT_PREFIX.to_string(),
                                ..Default::default()
                            },
                        ));
                    }
                    // After RBAC: a refused client does not use up the allowed ones' connections.
                    filters.extend(connection_limit);
                    filters.push(tcp_proxy_filter(
                        &names::inbound_tcp_proxy_stat_prefix(&local_cluster),
                        &local_cluster,
                        intent.access_log,
                    ));
                    filters
                }
            };
            let tls = DownstreamTlsContext {
                common_tls_context: Some(CommonTlsContext {
                    tls_certificate_sds_secret_configs: vec![sds(names::SERVICE_CERT)],
                    validation_context_type: Some(
                        common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(
                            &names::root_cert_inbound(&intent.identity),
                        )),
                    ),
                    // No ALPN is negotiated (the chain matches the client's offered `osm`), as
                    // upstream: with a negotiated protocol the HTTP connection manager would take it as
                    // HTTP/1.1, while without one it detects HTTP/2 (gRPC) from the client's preface.
                    ..Default::default()
                }),
                require_client_certificate: Some(BoolValue { value: true }),
                ..Default::default()
            };
            filter_chains.push(FilterChain {
                name,
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value {
                        value: port.target_port.into(),
                    }),
                    server_names: vec![osm_model::service_sni(&svc.service)],
                    transport_protocol: "tls".to_string(),
                    application_protocols: vec![names::ALPN_OSM.to_string()],
                    ..Default::default()
                }),
                filters,
                transport_socket: Some(tls_transport_socket(&tls)),
                ..Default::default()
            });
        }
    }
    filter_chains.extend(crate::ingress::filter_chains(intent));
    if filter_chains.is_empty() {
        return None;
    }
    let listener = Listener {
        name: names::INBOUND_LISTENER.to_string(),
        address: Some(socket_address("0.0.0.0", names::INBOUND_PORT)),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: vec![
            listener_filter("envoy.filters.listener.original_dst", &OriginalDst::default()),
            listener_filter("envoy.filters.listener.tls_inspector", &TlsInspector::default()),
        ],
        filter_chains,
        ..Default::default()
    };
    Some(Resource::encode(
        TypeKind::Listener,
        names::INBOUND_LISTENER,
        &listener,
    ))
}

/// `inbound-prometheus-listener` on 15010, the only port outside the pod that reaches Envoy's admin
/// interface: exactly `GET`/`HEAD /stats/prometheus` (any query string) is forwarded, as
/// `/stats/prometheus`, to the admin endpoint; every other path or method gets 404 from Envoy. Paths are
/// normalised first, so `/stats/prometheus/../../quitquitquit` is judged as `/quitquitquit`.
pub fn prometheus(access_log: bool) -> Arc<Resource> {
    let route_config = RouteConfiguration {
        name: "prometheus-route".to_string(),
        virtual_hosts: vec![VirtualHost {
            name: names::PROMETHEUS_VIRTUAL_HOST.to_string(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Path(
                        names::PROMETHEUS_SCRAPE_PATH.to_string(),
                    )),
                    headers: vec![read_only_methods()],
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        names::METRICS_CLUSTER.to_string(),
                    )),
                    // The admin endpoint sees this path, whatever reached the listener.
                    prefix_rewrite: names::PROMETHEUS_SCRAPE_PATH.to_string(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = path_normalization::apply(HttpConnectionManager {
        stat_prefix: names::PROMETHEUS_HTTP_CONN_MANAGER_STAT_PREFIX.to_string(),
        // Every scrape is logged, as upstream's sidecars do.
        access_log: crate::access_log::access_logs(access_log),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(route_config)),
        http_filters: vec![router_filter()],
        ..Default::default()
    });
    let listener = Listener {
        name: names::PROMETHEUS_LISTENER.to_string(),
        address: Some(socket_address("0.0.0.0", names::PROMETHEUS_PORT)),
        filter_chains: vec![FilterChain {
            filters: vec![typed_filter(
                "envoy.filters.network.http_connection_manager",
                &hcm,
            )],
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::encode(TypeKind::Listener, names::PROMETHEUS_LISTENER, &listener)
}

/// What every HTTP connection manager of an intent reports: access logs and, when configured, spans.
/// Built once per listener (the tracer's config is encoded here, not once per connection manager).
pub(crate) struct Telemetry {
    pub access_log: bool,
    tracing: Option<http_connection_manager::Tracing>,
}

impl Telemetry {
    fn of(access_log: bool, tracing: Option<&Tracing>) -> Self {
        Self {
            access_log,
            tracing: tracing.map(crate::tracing::hcm_tracing),
        }
    }

    pub(crate) fn inbound(intent: &InboundIntent) -> Self {
        Self::of(intent.access_log, intent.tracing.as_deref())
    }

    pub(crate) fn outbound(intent: &OutboundIntent) -> Self {
        Self::of(intent.access_log, intent.tracing.as_deref())
    }
}

pub(crate) fn hcm_filter(rds_name: &str, with_rbac: bool, telemetry: &Telemetry) -> Filter {
    hcm_filter_with(rds_name, with_rbac, telemetry, Vec::new())
}

/// [`hcm_filter`] with `extra` filters between RBAC and the router, in the order given (upstream's:
/// the local rate limit the routes enable, then ext_authz).
pub(crate) fn hcm_filter_with(
    rds_name: &str,
    with_rbac: bool,
    telemetry: &Telemetry,
    extra: Vec<HttpFilter>,
) -> Filter {
    let mut http_filters = Vec::new();
    if with_rbac {
        // Empty rules: enforcement comes from each route's RBAC override.
        http_filters.push(HttpFilter {
            name: HTTP_RBAC_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(to_any(&HttpRbac::default()))),
            ..Default::default()
        });
    }
    http_filters.extend(extra);
    http_filters.push(router_filter());
    let hcm = path_normalization::apply(HttpConnectionManager {
        stat_prefix: names::hcm_stat_prefix(rds_name),
        access_log: crate::access_log::access_logs(telemetry.access_log),
        tracing: telemetry.tracing.clone(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: rds_name.to_string(),
        })),
        http_filters,
        ..Default::default()
    });
    typed_filter("envoy.filters.network.http_connection_manager", &hcm)
}

fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(&Router::default()))),
        ..Default::default()
    }
}

pub(crate) fn tcp_proxy_filter(stat_prefix: &str, cluster: &str, access_log: bool) -> Filter {
    typed_filter(
        "envoy.filters.network.tcp_proxy",
        &TcpProxy {
            stat_prefix: stat_prefix.to_string(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
            access_log: crate::access_log::access_logs(access_log),
            ..Default::default()
        },
    )
}

fn typed_filter<M: Message + Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(to_any(config))),
    }
}

pub(crate) fn listener_filter<M: Message + Name>(name: &str, config: &M) -> ListenerFilter {
    ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(to_any(config))),
        ..Default::default()
    }
}

fn host_cidr(ip: std::net::IpAddr) -> CidrRange {
    cidr(ip, if ip.is_ipv4() { 32 } else { 128 })
}

#[cfg(test)]
mod overlap_tests {
    use std::collections::HashSet;
    use std::net::{IpAddr, Ipv4Addr};

    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use osm_fixtures::MeshBuilder;
    use osm_model::{AppProtocol, compute};
    use prost::Message;

    /// Two headless services over overlapping pods (web-a: p0, p1; web-b: p1, p2), TCP and HTTP, each
    /// with per-pod hostnames: every (port, address) is matched by exactly one chain, and no chain
    /// matches every address.
    #[test]
    fn overlapping_headless_services_claim_each_address_once() {
        let mut b = MeshBuilder::new(true);
        let ip = |i: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + i));
        for (svc, sel) in [("web-a", "a"), ("web-b", "b")] {
            b.service(
                "shop",
                svc,
                None,
                &[(8080, 8080, AppProtocol::Http), (9090, 9090, AppProtocol::Tcp)],
                &[(sel, "yes")],
            );
        }
        let labels: [&[(&str, &str)]; 3] = [&[("a", "yes")], &[("a", "yes"), ("b", "yes")], &[("b", "yes")]];
        for (i, l) in labels.iter().enumerate() {
            b.pod(
                "shop",
                &format!("p{i}"),
                "web",
                l,
                Some(ip(i as u8)),
                Some(&format!("p{i}")),
            );
        }
        b.pod("shop", "client", "client", &[], Some(ip(9)), Some("client"));
        let mut input = b.build();
        // Per-pod hostnames, as a StatefulSet's pods get them through their subdomain.
        for (i, svc) in ["web-a", "web-a", "web-b"].iter().enumerate() {
            let pod = input
                .pods
                .get_mut(&osm_model::ObjectRef::new("shop", format!("p{i}")))
                .unwrap();
            pod.hostname = Some(format!("p{i}"));
            pod.subdomain = Some(svc.to_string());
        }
        let model = compute(&input);
        let client = &model.proxies["client"];
        let listener = super::outbound(&client.outbound, &client.egress).expect("a listener");
        let listener = Listener::decode(listener.body().value.as_slice()).unwrap();
        let mut seen = HashSet::new();
        for c in &listener.filter_chain_match_all() {
            let (port, prefixes) = c;
            assert!(!prefixes.is_empty(), "a chain matching every address on {port}");
            for p in prefixes {
                assert!(seen.insert((*port, p.clone())), "{p} on {port} matched twice");
            }
        }
        // Every pod stays reachable on both ports.
        for i in 0..3u8 {
            for port in [8080, 9090] {
                assert!(seen.contains(&(port, ip(i).to_string())), "p{i}:{port} unmatched");
            }
        }
        // And no Host names two virtual hosts of the HTTP port's route config.
        let http: Vec<&osm_model::OutboundService> = client
            .outbound
            .services
            .iter()
            .filter(|s| s.port == 8080)
            .collect();
        let routes = crate::rds::outbound(8080, &http);
        let routes = RouteConfiguration::decode(routes.body().value.as_slice()).unwrap();
        let mut domains = HashSet::new();
        for vh in &routes.virtual_hosts {
            for d in &vh.domains {
                assert!(domains.insert(d.clone()), "{d} in two virtual hosts");
            }
        }
        assert!(
            domains.contains("10.0.0.11:8080") && domains.contains("p2.web-b.shop"),
            "{domains:?}"
        );
    }

    trait Chains {
        fn filter_chain_match_all(&self) -> Vec<(u32, Vec<String>)>;
    }

    impl Chains for Listener {
        fn filter_chain_match_all(&self) -> Vec<(u32, Vec<String>)> {
            self.filter_chains
                .iter()
                .filter_map(|c| c.filter_chain_match.as_ref())
                .map(|m| {
                    (
                        m.destination_port.map_or(0, |p| p.value),
                        m.prefix_ranges.iter().map(|r| r.address_prefix.clone()).collect(),
                    )
                })
                .collect()
        }
    }
}
