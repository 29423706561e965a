//! The Envoy bootstrap a sidecar starts with: admin on 127.0.0.1:15000, node id = its xDS certificate's
//! CN, and one static cluster (`osm-controller`) reaching the ADS server over mTLS. Everything else
//! comes over ADS. Written as JSON, which Envoy reads as YAML.

use serde_json::{Value, json};

use crate::names;

/// Which ADS flavour Envoy uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdsApi {
    /// State of the world (`GRPC`).
    StateOfTheWorld,
    /// Incremental (`DELTA_GRPC`).
    Delta,
}

/// What a sidecar's bootstrap needs. `client_key_pem` is a private key: the rendered bootstrap must be
/// stored like one (upstream keeps it in a Secret).
pub struct BootstrapConfig<'a> {
    pub node_id: &'a str,
    /// `<sa>.<ns>`
    pub node_cluster: &'a str,
    pub ads_host: &'a str,
    pub ads_port: u16,
    /// The DNS name on the ADS server's certificate, checked by Envoy.
    pub ads_server_name: &'a str,
    pub api: AdsApi,
    pub client_cert_pem: &'a str,
    pub client_key_pem: &'a str,
    pub ca_bundle_pem: &'a str,
    /// Probe listeners to add: (listener port, path, app port), as the injector rewrites probes.
    pub probes: &'a [Probe],
}

/// A probe the injector moved to the sidecar: the kubelet asks `listener_port` for
/// [`Probe::kubelet_path`], and Envoy forwards it to the app's `app_port` and original `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `liveness`, `readiness` or `startup`.
    pub name: &'static str,
    pub listener_port: u16,
    /// The app's own probe path.
    pub path: String,
    pub app_port: u16,
}

impl Probe {
    /// The path the rewritten pod spec gives the kubelet (upstream's `/osm-<name>-probe`).
    pub fn kubelet_path(&self) -> String {
        format!("/osm-{}-probe", self.name)
    }
}

pub fn render(c: &BootstrapConfig<'_>) -> String {
    let is_ip = c.ads_host.parse::<std::net::IpAddr>().is_ok();
    let ads = |api: &str| {
        json!({
            "api_type": api,
            "transport_api_version": "V3",
            "set_node_on_first_message_only": true,
            "grpc_services": [{"envoy_grpc": {"cluster_name": names::ADS_CLUSTER}}],
        })
    };
    let api_type = match c.api {
        AdsApi::StateOfTheWorld => "GRPC",
        AdsApi::Delta => "DELTA_GRPC",
    };
    let mut clusters = vec![json!({
        "name": names::ADS_CLUSTER,
        "type": if is_ip { "STATIC" } else { "LOGICAL_DNS" },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": endpoint(names::ADS_CLUSTER, c.ads_host, c.ads_port),
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": c.ads_server_name,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                    "tls_certificates": [{
                        "certificate_chain": {"inline_string": c.client_cert_pem},
                        "private_key": {"inline_string": c.client_key_pem},
                    }],
                    "validation_context": {
                        "trusted_ca": {"inline_string": c.ca_bundle_pem},
                        "match_typed_subject_alt_names": [{
                            "san_type": "DNS",
                            "matcher": {"exact": c.ads_server_name},
                        }],
                    },
                },
            },
        },
    })];
    let mut listeners = Vec::new();
    for p in c.probes {
        let cluster = format!("{}_cluster", p.name);
        clusters.push(json!({
            "name": cluster,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": endpoint(&cluster, "127.0.0.1", p.app_port),
        }));
        listeners.push(probe_listener(p, &cluster));
    }
    let bootstrap: Value = json!({
        "node": {"id": c.node_id, "cluster": c.node_cluster},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": names::ADMIN_PORT}},
        },
        "dynamic_resources": {
            "ads_config": ads(api_type),
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": clusters, "listeners": listeners},
    });
    serde_json::to_string_pretty(&bootstrap).expect("a json! value always serialises")
}

fn endpoint(cluster: &str, host: &str, port: u16) -> Value {
    json!({
        "cluster_name": cluster,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": host, "port_value": port}
        }}}]}],
    })
}

fn probe_listener(p: &Probe, cluster: &str) -> Value {
    json!({
        "name": format!("{}_listener", p.name),
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": p.listener_port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("health_probes_{}", p.name),
                "route_config": {"name": "local_route", "virtual_hosts": [{
                    "name": "local_service", "domains": ["*"],
                    "routes": [{"match": {"prefix": p.kubelet_path()}, "route": {"cluster": cluster, "prefix_rewrite": p.path}}],
                }]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    })
}
