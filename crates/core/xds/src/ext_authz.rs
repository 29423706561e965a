//! MeshConfig `traffic.inboundExternalAuthorization` → the HTTP `ext_authz` filter on every inbound HTTP
//! connection manager (mesh and ingress chains, after RBAC and the local rate limit, before the router,
//! as upstream OSM orders them) and the cluster it calls.
//!
//! As upstream: gRPC transport, API v3, the request body buffered up to 8 KiB (partial bodies allowed),
//! `failureModeAllow` and the timeout as configured; a refused or unanswered check is a 403 from the
//! sidecar. Where we differ: the service is reached through a cluster of ours
//! ([`names::EXT_AUTHZ_CLUSTER`], HTTP/2, DNS-resolved unless the address is an IP) rather than Envoy's
//! Google gRPC client, so its connections show up in `/clusters` and cluster stats, and the caller's
//! certificate is included, so the service can judge the mesh identity, not just the address.

use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster;
use envoy_types::pb::envoy::config::core::v3::{ApiVersion, GrpcService, Http2ProtocolOptions, grpc_service};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{BufferSettings, ExtAuthz, ext_authz};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use osm_model::ExternalAuthz;

use crate::cds::static_cluster_config;
use crate::common::millis;
use crate::names;
use crate::resource::{Resource, TypeKind, to_any};

pub const FILTER: &str = "envoy.filters.http.ext_authz";
/// Request body bytes sent along with a check (upstream's setting).
const MAX_REQUEST_BYTES: u32 = 8192;

/// The HTTP filter checking each request with the service.
pub fn http_filter(authz: &ExternalAuthz) -> HttpFilter {
    let config = ExtAuthz {
        services: Some(ext_authz::Services::GrpcService(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: names::EXT_AUTHZ_CLUSTER.to_string(),
                    ..Default::default()
                },
            )),
            timeout: Some(millis(authz.timeout_ms)),
            ..Default::default()
        })),
        transport_api_version: ApiVersion::V3 as i32,
        failure_mode_allow: authz.failure_mode_allow,
        with_request_body: Some(BufferSettings {
            max_request_bytes: MAX_REQUEST_BYTES,
            allow_partial_message: true,
            ..Default::default()
        }),
        // The caller's mesh identity (its certificate, and `source.principal` from its SAN).
        include_peer_certificate: true,
        stat_prefix: authz.stat_prefix.clone(),
        ..Default::default()
    };
    HttpFilter {
        name: FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(&config))),
        ..Default::default()
    }
}

/// [`names::EXT_AUTHZ_CLUSTER`]: plain-text HTTP/2 (gRPC) to `address:port`, resolved by DNS unless it
/// is an IP address. The sidecar's own connections are not intercepted, so it reaches the service
/// directly.
pub fn cluster(authz: &ExternalAuthz) -> Arc<Resource> {
    let name = names::EXT_AUTHZ_CLUSTER;
    let mut cluster = static_cluster_config(name, &authz.address, authz.port);
    if authz.address.parse::<IpAddr>().is_err() {
        cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
    }
    let h2 = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    cluster.typed_extension_protocol_options = [(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        to_any(&h2),
    )]
    .into();
    Resource::encode(TypeKind::Cluster, name, &cluster)
}
