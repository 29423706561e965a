//! EDS: the endpoints of one upstream cluster that this client may use.

use std::sync::Arc;

use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use osm_model::UpstreamCluster;

use crate::common::socket_address;
use crate::resource::{Resource, TypeKind};

pub fn load_assignment(cluster: &UpstreamCluster) -> Arc<Resource> {
    let name = cluster.name();
    let cla = ClusterLoadAssignment {
        cluster_name: name.clone(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: cluster
                .endpoints
                .iter()
                .map(|ip| lb_endpoint_for(&ip.to_string(), cluster.target_port))
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::encode(TypeKind::Endpoint, name, &cla)
}

pub(crate) fn lb_endpoint_for(ip: &str, port: u16) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(ip, port)),
            ..Default::default()
        })),
        ..Default::default()
    }
}
