//! CDS: upstream clusters (mTLS to other sidecars), local clusters (to the app), and the fixed ones.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, Cluster, circuit_breakers, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Http2ProtocolOptions, HttpProtocolOptions as HttpCommonOptions,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use envoy_types::pb::google::protobuf::UInt32Value;
use osm_model::{AppProtocol, ConnectionLimits, ServiceRef, UpstreamCluster};

use crate::common::{ads, sds, seconds, tls_transport_socket};
use crate::eds::lb_endpoint_for;
use crate::names;
use crate::resource::{Resource, TypeKind, to_any};

/// `<ns>/<svc>|<port>`: EDS-fed, mTLS with SNI `<svc>.<ns>.svc.cluster.local` and ALPN `osm`; the server
/// must present the CA-signed certificate of one of the service's identities. It does not depend on
/// the client, so every client with the same view of the service shares one encoded copy.
pub fn upstream(c: &UpstreamCluster, trust_domain: &str) -> Arc<Resource> {
    let name = c.name();
    let tls = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(names::SERVICE_CERT)],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: c
                                .server_identities
                                .iter()
                                .map(|id| crate::sds::san_exact(&id.principal(trust_domain)))
                                .collect(),
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds(names::ROOT_CERT_OUTBOUND)),
                        ..Default::default()
                    },
                ),
            ),
            alpn_protocols: vec![names::ALPN_OSM.to_string()],
            ..Default::default()
        }),
        sni: c.sni(),
        ..Default::default()
    };
    let mut cluster = Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(seconds(1)),
        transport_socket: Some(tls_transport_socket(&tls)),
        typed_extension_protocol_options: match c.protocol {
            AppProtocol::Http => follow_downstream_protocol(None),
            AppProtocol::Tcp => Default::default(),
        },
        ..Default::default()
    };
    if let Some(limits) = &c.limits {
        apply_limits(&mut cluster, limits, c.protocol);
    }
    Resource::encode(TypeKind::Cluster, name, &cluster)
}

/// An UpstreamTrafficSetting's `connectionSettings`, as upstream OSM applies them: one circuit-breaker
/// threshold set (unset limits at their maximum, remaining capacity tracked so `remaining_*` gauges
/// show how close clients are), the connect timeout, and requests per connection for HTTP.
fn apply_limits(cluster: &mut Cluster, limits: &ConnectionLimits, protocol: AppProtocol) {
    let max = |v: Option<u32>| {
        Some(UInt32Value {
            value: v.unwrap_or(u32::MAX),
        })
    };
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: max(limits.max_connections),
            max_pending_requests: max(limits.max_pending_requests),
            max_requests: max(limits.max_requests),
            max_retries: max(limits.max_retries),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    });
    if let Some(ms) = limits.connect_timeout_ms {
        cluster.connect_timeout = Some(crate::common::millis(ms));
    }
    if protocol == AppProtocol::Http && limits.max_requests_per_connection.is_some() {
        cluster.typed_extension_protocol_options =
            follow_downstream_protocol(limits.max_requests_per_connection);
    }
}

/// `<ns>/<svc>|<port>|local`: the application in this pod.
pub fn local(service: &ServiceRef, target_port: u16) -> Arc<Resource> {
    let name = names::local_cluster(service, target_port);
    let mut cluster = static_cluster_config(&name, "127.0.0.1", target_port);
    // Only HTTP connection managers read it; a TCP port's tcp_proxy ignores it.
    cluster.typed_extension_protocol_options = follow_downstream_protocol(None);
    Resource::encode(TypeKind::Cluster, name, &cluster)
}

/// Speak upstream what the client spoke downstream: HTTP/1.1 stays HTTP/1.1, HTTP/2 (gRPC, h2c)
/// stays HTTP/2 across both sidecars and to the app — upstream OSM's setting on every HTTP cluster.
/// With `max_requests_per_connection`, a connection is closed after that many requests.
fn follow_downstream_protocol(
    max_requests_per_connection: Option<u32>,
) -> std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any> {
    let options = HttpProtocolOptions {
        common_http_protocol_options: max_requests_per_connection.map(|n| HttpCommonOptions {
            max_requests_per_connection: Some(UInt32Value { value: n }),
            ..Default::default()
        }),
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                http_protocol_options::UseDownstreamHttpConfig {
                    http2_protocol_options: Some(Http2ProtocolOptions::default()),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    [(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        to_any(&options),
    )]
    .into()
}

/// Envoy's own admin endpoint, scraped through the prometheus listener.
pub fn metrics() -> Arc<Resource> {
    static_cluster(names::METRICS_CLUSTER, "127.0.0.1", names::ADMIN_PORT)
}

/// Connections to destinations outside the mesh go to their original address.
pub fn passthrough() -> Arc<Resource> {
    original_destination(names::PASSTHROUGH_CLUSTER, None)
}

/// A cluster that connects to each connection's original destination (passthrough, TLS and TCP
/// egress).
pub(crate) fn original_destination(name: &str, limits: Option<&ConnectionLimits>) -> Arc<Resource> {
    let mut cluster = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(seconds(1)),
        ..Default::default()
    };
    if let Some(limits) = limits {
        apply_limits(&mut cluster, limits, AppProtocol::Tcp);
    }
    Resource::encode(TypeKind::Cluster, name, &cluster)
}

/// `host:port` resolved by DNS (HTTP egress).
pub(crate) fn strict_dns(
    name: &str,
    host: &str,
    port: u16,
    limits: Option<&ConnectionLimits>,
) -> Arc<Resource> {
    let mut cluster = static_cluster_config(name, host, port);
    cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::StrictDns as i32,
    ));
    if let Some(limits) = limits {
        apply_limits(&mut cluster, limits, AppProtocol::Http);
    }
    Resource::encode(TypeKind::Cluster, name, &cluster)
}

fn static_cluster(name: &str, ip: &str, port: u16) -> Arc<Resource> {
    Resource::encode(TypeKind::Cluster, name, &static_cluster_config(name, ip, port))
}

pub(crate) fn static_cluster_config(name: &str, address: &str, port: u16) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(seconds(1)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb_endpoint_for(address, port)],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}
