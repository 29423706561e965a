//! Builders shared by the ADS test binaries: small resources whose content (and so version) is set by
//! a `tag`, configs made of them, and readers for what a response carried.
// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::google::protobuf::Any;
use osm_xds::{ProxyConfig, Resource, ResourceSet, TypeKind};
use prost::Message;

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// A CDS cluster; `tag` goes into `alt_stat_name`, so another tag is another version.
pub fn cluster(name: &str, tag: &str) -> Arc<Resource> {
    let msg = Cluster {
        name: name.to_string(),
        alt_stat_name: tag.to_string(),
        ..Default::default()
    };
    Resource::encode(TypeKind::Cluster, name, &msg)
}

/// An EDS assignment; `priority` is its content tag.
pub fn cla(name: &str, priority: u32) -> Arc<Resource> {
    let msg = ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            priority,
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::encode(TypeKind::Endpoint, name, &msg)
}

/// A config of one fresh set holding `resources` (fresh `Arc`s, as the controller would publish).
pub fn config(resources: impl IntoIterator<Item = Arc<Resource>>) -> ProxyConfig {
    let mut set = ResourceSet::default();
    for r in resources {
        set.insert(r);
    }
    ProxyConfig {
        sets: vec![Arc::new(set)],
    }
}

/// The resource name inside an encoded CDS or EDS resource.
pub fn name_of(any: &Any) -> String {
    match any.type_url.as_str() {
        CDS => Cluster::decode(any.value.as_slice()).expect("a Cluster").name,
        EDS => {
            ClusterLoadAssignment::decode(any.value.as_slice())
                .expect("a ClusterLoadAssignment")
                .cluster_name
        }
        other => panic!("unexpected resource type {other}"),
    }
}

/// The `alt_stat_name` tag of an encoded cluster.
pub fn cluster_tag(any: &Any) -> String {
    Cluster::decode(any.value.as_slice())
        .expect("a Cluster")
        .alt_stat_name
}

/// Sorted names, for order-independent comparison.
pub fn sorted<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = names.into_iter().map(str::to_string).collect();
    v.sort();
    v
}

/// One shared set holding `resources`.
pub fn set(resources: impl IntoIterator<Item = Arc<Resource>>) -> Arc<ResourceSet> {
    let mut set = ResourceSet::default();
    for r in resources {
        set.insert(r);
    }
    Arc::new(set)
}

/// A config made of the given (possibly shared) sets.
pub fn of_sets(sets: &[&Arc<ResourceSet>]) -> ProxyConfig {
    ProxyConfig {
        sets: sets.iter().map(|s| Arc::clone(s)).collect(),
    }
}

/// The single response of `out`, decoded as the proxy would.
pub fn only<M: prost::Message + Default>(out: osm_ads::sotw::Output<osm_ads::wire::Encoded<M>>) -> M {
    assert_eq!(out.responses.len(), 1, "expected exactly one response");
    out.responses[0].decode()
}

/// Asserts `out` carries no response.
pub fn nothing<T: std::fmt::Debug>(out: &osm_ads::sotw::Output<T>) {
    assert!(
        out.responses.is_empty(),
        "unexpected responses: {:?}",
        out.responses
    );
}
