//! CDS: upstream clusters (mTLS to other sidecars), local clusters (to the app), and the fixed ones.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, UpstreamTlsContext, common_tls_context,
};
use osm_model::{ServiceRef, UpstreamCluster};

use crate::common::{ads, sds, seconds, tls_transport_socket};
use crate::eds::lb_endpoint_for;
use crate::names;
use crate::resource::{Resource, TypeKind};

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
    let cluster = Cluster {
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
        ..Default::default()
    };
    Resource::encode(TypeKind::Cluster, name, &cluster)
}

/// `<ns>/<svc>|<port>|local`: the application in this pod.
pub fn local(service: &ServiceRef, target_port: u16) -> Arc<Resource> {
    static_cluster(
        &names::local_cluster(service, target_port),
        "127.0.0.1",
        target_port,
    )
}

/// Envoy's own admin endpoint, scraped through the prometheus listener.
pub fn metrics() -> Arc<Resource> {
    static_cluster(names::METRICS_CLUSTER, "127.0.0.1", names::ADMIN_PORT)
}

/// Connections to destinations outside the mesh go to their original address.
pub fn passthrough() -> Arc<Resource> {
    let cluster = Cluster {
        name: names::PASSTHROUGH_CLUSTER.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(seconds(1)),
        ..Default::default()
    };
    Resource::encode(TypeKind::Cluster, names::PASSTHROUGH_CLUSTER, &cluster)
}

fn static_cluster(name: &str, ip: &str, port: u16) -> Arc<Resource> {
    let cluster = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(seconds(1)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb_endpoint_for(ip, port)],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    Resource::encode(TypeKind::Cluster, name, &cluster)
}
