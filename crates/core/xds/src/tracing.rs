//! Distributed tracing (MeshConfig `observability.tracing`), as upstream OSM configures it: every HTTP
//! connection manager reports its spans to a Zipkin collector over HTTP/JSON v2 through the
//! `envoy-tracing-cluster`; Envoy generates the request id and propagates B3 headers, so one request
//! through two sidecars is one trace.

use std::sync::Arc;

use envoy_types::pb::envoy::config::trace::v3::{self as trace, ZipkinConfig, zipkin_config};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
use osm_model::Tracing;

use crate::names;
use crate::resource::{Resource, to_any};

/// Envoy's Zipkin tracer extension.
pub const ZIPKIN_TRACER: &str = "envoy.tracers.zipkin";

/// The connection manager's tracing settings.
pub(crate) fn hcm_tracing(t: &Tracing) -> http_connection_manager::Tracing {
    http_connection_manager::Tracing {
        verbose: true,
        provider: Some(trace::tracing::Http {
            name: ZIPKIN_TRACER.to_string(),
            config_type: Some(trace::tracing::http::ConfigType::TypedConfig(to_any(
                &ZipkinConfig {
                    collector_cluster: names::TRACING_CLUSTER.to_string(),
                    collector_endpoint: t.endpoint.clone(),
                    collector_endpoint_version: zipkin_config::CollectorEndpointVersion::HttpJson as i32,
                    ..Default::default()
                },
            ))),
        }),
        ..Default::default()
    }
}

/// `envoy-tracing-cluster`: the collector, resolved by DNS (an address works too).
pub fn cluster(t: &Tracing) -> Arc<Resource> {
    crate::cds::strict_dns(names::TRACING_CLUSTER, &t.address, t.port, None)
}
