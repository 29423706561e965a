//! Envoy resource names and ports, as upstream OSM names them (see `osm-reference.md`), so that
//! dashboards, stats and habits carry over.

use osm_model::{AppProtocol, ServiceIdentity, ServiceRef};

pub const OUTBOUND_LISTENER: &str = "outbound-listener";
pub const INBOUND_LISTENER: &str = "inbound-listener";
pub const PROMETHEUS_LISTENER: &str = "inbound-prometheus-listener";
pub const PASSTHROUGH_CLUSTER: &str = "passthrough-outbound";
/// The outbound listener's default chain when egress is enabled: unknown destinations pass through.
pub const OUTBOUND_EGRESS_FILTER_CHAIN: &str = "outbound-egress-filter-chain";
/// Stat prefix of egress tcp_proxy filters: `egress-tcp-proxy.passthrough-outbound`,
/// `egress-tcp-proxy.<port>`.
pub const EGRESS_TCP_PROXY_STAT_PREFIX: &str = "egress-tcp-proxy";
pub const METRICS_CLUSTER: &str = "envoy-metrics-cluster";
/// Stat prefixes as upstream's, so `osm proxy get stats` greps and dashboards keep working: the mesh
/// HTTP connection managers (`mesh-http-conn-manager.<route config>`), the mesh TCP proxies
/// (`inbound-mesh-tcp-proxy.<local cluster>`, `outbound-mesh-tcp-proxy_<filter chain>`), the
/// prometheus listener's connection manager and the network RBAC filter.
pub const MESH_HTTP_CONN_MANAGER_STAT_PREFIX: &str = "mesh-http-conn-manager";
pub const INBOUND_MESH_TCP_PROXY_STAT_PREFIX: &str = "inbound-mesh-tcp-proxy";
pub const OUTBOUND_MESH_TCP_PROXY_STAT_PREFIX: &str = "outbound-mesh-tcp-proxy";
pub const PROMETHEUS_HTTP_CONN_MANAGER_STAT_PREFIX: &str = "prometheus-http-conn-manager";
pub const NETWORK_RBAC_STAT_PREFIX: &str = "network-";
/// The prometheus listener's only virtual host.
pub const PROMETHEUS_VIRTUAL_HOST: &str = "prometheus-inbound-virtual-host";

/// `outbound_virtual-host|<svc>.<ns>.svc.cluster.local`: a service's virtual host in an outbound route
/// config (upstream's name; a headless service's pod is `<hostname>.<svc>` in the service's namespace).
pub fn outbound_virtual_host(service: &ServiceRef) -> String {
    format!("outbound_virtual-host|{}", osm_model::service_sni(service))
}

/// `mesh-http-conn-manager.<route config>`
pub fn hcm_stat_prefix(route_config: &str) -> String {
    format!("{MESH_HTTP_CONN_MANAGER_STAT_PREFIX}.{route_config}")
}

/// `inbound-mesh-tcp-proxy.<local cluster>`
pub fn inbound_tcp_proxy_stat_prefix(local_cluster: &str) -> String {
    format!("{INBOUND_MESH_TCP_PROXY_STAT_PREFIX}.{local_cluster}")
}

/// `outbound-mesh-tcp-proxy_<filter chain>`
pub fn outbound_tcp_proxy_stat_prefix(filter_chain: &str) -> String {
    format!("{OUTBOUND_MESH_TCP_PROXY_STAT_PREFIX}_{filter_chain}")
}
/// The Zipkin collector of MeshConfig `observability.tracing` (upstream's name).
pub const TRACING_CLUSTER: &str = "envoy-tracing-cluster";
/// The external authorization service of MeshConfig `traffic.inboundExternalAuthorization` (upstream
/// reached it without a cluster, through Envoy's Google gRPC client; named like its fixed clusters).
pub const EXT_AUTHZ_CLUSTER: &str = "envoy-ext-authz-cluster";
pub const ADS_CLUSTER: &str = "osm-controller";
/// The proxy's own certificate. Upstream calls it `service-cert:<ns>/<sa>`; one name for every identity
/// lets clusters be shared by all clients (ARCHITECTURE.md, "Secrets").
pub const SERVICE_CERT: &str = "service-cert";
pub const ALPN_OSM: &str = "osm";
// Ports and the scrape path belong to the upstream contract (osm_api::contract); here for the
// xDS builders' convenience.
pub use osm_api::contract::{
    ADMIN_PORT, ADS_PORT, HEALTHCHECK_PORT, INBOUND_PORT, LIVENESS_PROBE_PORT, OUTBOUND_PORT,
    PROMETHEUS_PORT, PROMETHEUS_SCRAPE_PATH, READINESS_PROBE_PORT, STARTUP_PROBE_PORT,
};

pub fn outbound_filter_chain(svc: &ServiceRef, port: u16, protocol: AppProtocol) -> String {
    format!("outbound_{svc}_{port}_{}", protocol.as_str())
}

pub fn inbound_filter_chain(svc: &ServiceRef, port: u16, protocol: AppProtocol) -> String {
    format!("inbound_{svc}_{port}_{}", protocol.as_str())
}

/// An ingress filter chain: `ingress_<ns>/<svc>_<port>_<protocol>` (protocol as the IngressBackend
/// names it).
pub fn ingress_filter_chain(svc: &ServiceRef, target_port: u16, protocol: &str) -> String {
    format!("ingress_{svc}_{target_port}_{protocol}")
}

/// The route config of ingress on an application port. Upstream has one `rds-ingress` per proxy, whose
/// catch-all virtual hosts collide (Envoy refuses the config) once a pod backs two ingress ports; one per
/// port, like `rds-inbound.<port>`, cannot collide.
pub fn rds_ingress(target_port: u16) -> String {
    format!("rds-ingress.{target_port}")
}

/// `ingress_virtual-host|<ns>/<svc>_from_<IngressBackend name>`
pub fn ingress_virtual_host(svc: &ServiceRef, policy: &str) -> String {
    format!("ingress_virtual-host|{svc}_from_{policy}")
}

pub fn local_cluster(svc: &ServiceRef, target_port: u16) -> String {
    format!("{svc}|{target_port}|local")
}

pub fn rds_inbound(port: u16) -> String {
    format!("rds-inbound.{port}")
}

pub fn rds_outbound(port: u16) -> String {
    format!("rds-outbound.{port}")
}

/// The mesh CA bundle that validates upstream servers. Upstream OSM has one per upstream service
/// (`root-cert-for-mtls-outbound:<ns>/<svc>`, each embedding the CA and the service's SANs); here the SAN
/// matchers live in each cluster and every cluster shares this one secret, so a proxy that can reach
/// 1000 services gets one copy of the CA instead of 1000.
pub const ROOT_CERT_OUTBOUND: &str = "root-cert-for-mtls-outbound";

pub fn root_cert_inbound(identity: &ServiceIdentity) -> String {
    format!(
        "root-cert-for-mtls-inbound:{}/{}",
        identity.namespace, identity.service_account
    )
}

/// An egress filter chain: `egress-<protocol>.<port>` (protocol as the Egress policy names it).
pub fn egress_filter_chain(protocol: &str, port: u16) -> String {
    format!("egress-{protocol}.{port}")
}

/// The route config of HTTP egress on a port.
pub fn rds_egress(port: u16) -> String {
    format!("rds-egress.{port}")
}

pub fn egress_virtual_host(host: &str) -> String {
    format!("egress_virtual-host|{host}")
}

/// The DNS-resolved cluster of an external HTTP host.
pub fn egress_http_cluster(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// The original-destination cluster of TLS and TCP egress on a port.
pub fn egress_port_cluster(port: u16) -> String {
    port.to_string()
}
