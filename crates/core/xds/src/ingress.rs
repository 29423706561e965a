//! IngressBackend policy → the inbound listener's ingress filter chains and their route configs, with
//! upstream OSM's names:
//!
//! - `ingress_<ns>/<svc>_<port>_http`: plain HTTP to the application port from the admitted source
//!   ranges; no TLS, so no mesh SNI or ALPN to match.
//! - `ingress_<ns>/<svc>_<port>_https`: TLS (of the listed SNI hosts, if any) terminated with the
//!   backend's `service-cert`; unless client validation is skipped the client must present a
//!   certificate from the mesh CA, and each request's RBAC admits only the `AuthenticatedPrincipal`s.
//!
//! Both route every request through `rds-ingress.<port>` (virtual host
//! `ingress_virtual-host|<ns>/<svc>_from_<policy>`) to the port's `<ns>/<svc>|<port>|local` cluster.
//! Mesh chains match the service SNI and ALPN `osm`, so a sidecar's connection never lands on an ingress
//! chain, and a connection no chain matches (an address the policy does not list) is closed.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, common_tls_context,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use osm_model::{InboundIntent, IngressBackendIntent, IngressClients, IngressTransport};

use crate::common::{cidr, sds, tls_transport_socket};
use crate::lds::hcm_filter_with;
use crate::names;
use crate::rds::{HTTP_RBAC_FILTER, allow_principal_names, prefix_match};
use crate::resource::{Resource, TypeKind, to_any};

/// The ingress filter chains of the inbound listener, one per admitted application port.
pub fn filter_chains(intent: &InboundIntent) -> Vec<FilterChain> {
    let telemetry = crate::lds::Telemetry::inbound(intent);
    intent
        .ingress
        .iter()
        .map(|ing| {
            let name = names::ingress_filter_chain(&ing.service, ing.target_port, ing.protocol());
            let with_rbac = matches!(
                ing.transport,
                IngressTransport::Https {
                    clients: IngressClients::Principals(_),
                    ..
                }
            );
            let mut chain_match = FilterChainMatch {
                destination_port: Some(UInt32Value {
                    value: ing.target_port.into(),
                }),
                source_prefix_ranges: ing
                    .source_ranges
                    .iter()
                    .map(|r| cidr(r.addr, r.prefix_len))
                    .collect(),
                ..Default::default()
            };
            let mut transport_socket = None;
            if let IngressTransport::Https { sni_hosts, clients } = &ing.transport {
                chain_match.transport_protocol = "tls".to_string();
                chain_match.server_names = sni_hosts.clone();
                let verify = matches!(clients, IngressClients::Principals(_));
                let tls = DownstreamTlsContext {
                    common_tls_context: Some(CommonTlsContext {
                        tls_certificate_sds_secret_configs: vec![sds(names::SERVICE_CERT)],
                        validation_context_type: verify.then(|| {
                            common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(
                                &names::root_cert_inbound(&intent.identity),
                            ))
                        }),
                        ..Default::default()
                    }),
                    require_client_certificate: Some(BoolValue { value: verify }),
                    ..Default::default()
                };
                transport_socket = Some(tls_transport_socket(&tls));
            }
            FilterChain {
                filters: vec![hcm_filter_with(
                    &names::rds_ingress(ing.target_port),
                    with_rbac,
                    &telemetry,
                    // Ingress requests are checked too, as upstream does.
                    intent
                        .ext_authz
                        .as_deref()
                        .map(crate::ext_authz::http_filter)
                        .into_iter()
                        .collect(),
                )],
                name,
                filter_chain_match: Some(chain_match),
                transport_socket,
                ..Default::default()
            }
        })
        .collect()
}

/// `rds-ingress.<port>` for each admitted port: every request to the port's local cluster, for the
/// authenticated principals only when the client certificate is verified.
pub fn route_configs(intent: &InboundIntent) -> Vec<Arc<Resource>> {
    intent
        .ingress
        .iter()
        .filter_map(|ing| {
            let port = intent.ports.iter().find(|p| p.target_port == ing.target_port)?;
            let local = names::local_cluster(&port.services.first()?.service, ing.target_port);
            Some(route_config(ing, &local))
        })
        .collect()
}

fn route_config(ing: &IngressBackendIntent, local_cluster: &str) -> Arc<Resource> {
    let rbac = match &ing.transport {
        IngressTransport::Https {
            clients: IngressClients::Principals(principals),
            ..
        } => Some(allow_principal_names(principals.iter().map(String::as_str))),
        _ => None,
    };
    let name = names::rds_ingress(ing.target_port);
    let config = RouteConfiguration {
        name: name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: names::ingress_virtual_host(&ing.service, &ing.policy.name),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "ingress".to_string(),
                r#match: Some(prefix_match("/")),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        local_cluster.to_string(),
                    )),
                    ..Default::default()
                })),
                typed_per_filter_config: rbac
                    .map(|r| [(HTTP_RBAC_FILTER.to_string(), to_any(&r))].into_iter().collect())
                    .unwrap_or_default(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    Resource::encode(TypeKind::Route, name, &config)
}
