//! SMI (Service Mesh Interface) resources in the versions OSM serves: access control
//! ([`access::TrafficTarget`]), route specs ([`specs::HTTPRouteGroup`], [`specs::TCPRoute`]) and
//! traffic splitting ([`split::TrafficSplit`]).

pub mod access;
pub mod specs;
pub mod split;
