//! The Envoy bootstrap a sidecar starts with: admin on 127.0.0.1:15000, node id = its xDS certificate's
//! CN, and one static cluster (`osm-controller`) reaching the ADS server over mTLS. Everything else
//! comes over ADS. Written as JSON, which Envoy reads as YAML.

use serde_json::{Value, json};

use crate::common::path_normalization;
use crate::names;
use crate::rds::READ_ONLY_METHODS;

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

/// How a probe listener reaches the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeScheme {
    /// `httpGet` over HTTP: Envoy answers the kubelet's exact path and forwards the app's path.
    Http,
    /// `httpGet` over HTTPS: a TCP proxy to the app port, so the kubelet's TLS session (and the path,
    /// which Envoy never sees) goes end to end to the app, as upstream.
    Https,
}

/// A probe the injector moved to the sidecar: the kubelet asks `listener_port` (for HTTP, the exact
/// path [`Probe::kubelet_path`]), and Envoy forwards it to the app's `app_port` (and, for HTTP, its
/// original `path`). TCP probes never come here: `osm-init healthcheck` answers them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Names the listener `<name>_listener` and cluster `<name>_cluster`: `liveness`, `readiness` or
    /// `startup` as upstream; `<kind>_<container>` for a later container's probe of the same kind.
    pub name: String,
    pub listener_port: u16,
    pub scheme: ProbeScheme,
    /// HTTP: the path the rewritten spec gives the kubelet, matched exactly. HTTPS: the app's own path,
    /// unchanged (the spec keeps it; Envoy does not read it).
    pub kubelet_path: String,
    /// The app's own probe path.
    pub path: String,
    pub app_port: u16,
}

impl Probe {
    /// An HTTP probe on upstream's listener for `kind` (`liveness`, ...): kubelet path
    /// `/osm-<kind>-probe`.
    pub fn http(kind: &str, listener_port: u16, path: impl Into<String>, app_port: u16) -> Probe {
        Probe {
            name: kind.to_owned(),
            listener_port,
            scheme: ProbeScheme::Http,
            kubelet_path: format!("/osm-{kind}-probe"),
            path: path.into(),
            app_port,
        }
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
        listeners.push(match p.scheme {
            ProbeScheme::Http => probe_listener(p, &cluster),
            ProbeScheme::Https => tls_probe_listener(p, &cluster),
        });
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

/// A probe listener forwards exactly one request shape: `GET`/`HEAD` of [`Probe::kubelet_path`] with no
/// query string (the `:path` header, query included, must equal it), sent to the app as exactly its own
/// probe path. Anything else — another path, `/osm-liveness-probe/x`, a dot-segment or encoded-slash
/// trick, another method — gets 404 (or 400) from Envoy and never reaches the app: these ports are
/// exempt from the inbound redirect, so they bypass mTLS and SMI.
fn probe_listener(p: &Probe, cluster: &str) -> Value {
    let kubelet_path = &p.kubelet_path;
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": format!("health_probes_{}", p.name),
        "route_config": {"name": "local_route", "virtual_hosts": [{
            "name": "local_service", "domains": ["*"],
            "routes": [{
                "match": {
                    "path": kubelet_path,
                    "headers": [
                        {"name": ":path", "string_match": {"exact": kubelet_path}},
                        {"name": ":method", "string_match": {"safe_regex": {"regex": READ_ONLY_METHODS}}},
                    ],
                },
                "route": {"cluster": cluster, "prefix_rewrite": p.path},
            }],
        }]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    });
    if let (Some(hcm), Value::Object(fields)) = (hcm.as_object_mut(), path_normalization::json_fields()) {
        hcm.extend(fields);
    }
    json!({
        "name": format!("{}_listener", p.name),
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": p.listener_port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]}],
    })
}

/// An HTTPS probe listener: TCP proxy to the app port. Anyone reaching the port reaches the app's TLS
/// port, as the kubelet must (upstream's design); the app's own TLS is the only gate there.
fn tls_probe_listener(p: &Probe, cluster: &str) -> Value {
    json!({
        "name": format!("{}_listener", p.name),
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": p.listener_port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": format!("health_probes_{}", p.name),
                "cluster": cluster,
            },
        }]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(probes: &[Probe]) -> Value {
        let text = render(&BootstrapConfig {
            node_id: "uuid-1.sidecar.web.shop.cluster.local",
            node_cluster: "web.shop",
            ads_host: "10.0.0.1",
            ads_port: names::ADS_PORT,
            ads_server_name: "osm-controller.osm-system.svc",
            api: AdsApi::StateOfTheWorld,
            client_cert_pem: "CERT",
            client_key_pem: "KEY",
            ca_bundle_pem: "CA",
            probes,
        });
        serde_json::from_str(&text).expect("the bootstrap is JSON")
    }

    fn liveness() -> Probe {
        Probe::http("liveness", names::LIVENESS_PROBE_PORT, "/healthz?verbose=1", 8080)
    }

    /// An HTTPS probe is a TCP proxy to the app port (no HTTP filter: TLS stays end to end), named per
    /// probe so a second container's probe gets its own listener and cluster.
    #[test]
    fn https_probe_is_a_tcp_proxy() {
        let https = Probe {
            name: "readiness_tls".into(),
            listener_port: 15905,
            scheme: ProbeScheme::Https,
            kubelet_path: "/ready".into(),
            path: "/ready".into(),
            app_port: 8443,
        };
        let b = rendered(&[liveness(), https]);
        let listeners = b["static_resources"]["listeners"].as_array().unwrap();
        let l = &listeners[1];
        assert_eq!(l["name"], "readiness_tls_listener");
        assert_eq!(l["address"]["socket_address"]["port_value"], 15905);
        let filters = l["filter_chains"][0]["filters"].as_array().unwrap();
        assert_eq!(filters.len(), 1);
        assert_eq!(filters[0]["name"], "envoy.filters.network.tcp_proxy");
        assert_eq!(filters[0]["typed_config"]["cluster"], "readiness_tls_cluster");
        let cluster = b["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "readiness_tls_cluster")
            .expect("the probe's cluster");
        let addr = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!(addr["address"], "127.0.0.1");
        assert_eq!(addr["port_value"], 8443);
    }

    /// The admin interface listens on loopback only, and no static listener is bound to its port.
    #[test]
    fn path_security_admin_is_loopback_only() {
        let b = rendered(&[liveness()]);
        let admin = &b["admin"]["address"]["socket_address"];
        assert_eq!(admin["address"], "127.0.0.1");
        assert_eq!(admin["port_value"], names::ADMIN_PORT);
        for l in b["static_resources"]["listeners"].as_array().unwrap() {
            assert_ne!(
                l["address"]["socket_address"]["port_value"],
                names::ADMIN_PORT,
                "{l}"
            );
        }
    }

    /// A probe listener matches exactly the kubelet path (no query), GET/HEAD only, and rewrites it to
    /// exactly the app's probe path, after the mesh's path normalisation.
    #[test]
    fn path_security_probe_listener_forwards_one_exact_path() {
        let b = rendered(&[liveness()]);
        let listeners = b["static_resources"]["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 1);
        let hcm = &listeners[0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["normalize_path"], true);
        assert_eq!(hcm["merge_slashes"], true);
        assert_eq!(hcm["path_with_escaped_slashes_action"], "REJECT_REQUEST");
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap();
        assert_eq!(routes.len(), 1, "one route: anything else is 404");
        let m = &routes[0]["match"];
        assert_eq!(m["path"], "/osm-liveness-probe");
        assert!(m.get("prefix").is_none(), "{m}");
        assert_eq!(
            m["headers"],
            json!([
                {"name": ":path", "string_match": {"exact": "/osm-liveness-probe"}},
                {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}},
            ])
        );
        assert_eq!(routes[0]["route"]["prefix_rewrite"], "/healthz?verbose=1");
        assert_eq!(routes[0]["route"]["cluster"], "liveness_cluster");
    }

    /// The JSON settings are the typed ones, field for field.
    #[test]
    fn path_security_bootstrap_and_xds_normalise_alike() {
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
        let typed = path_normalization::apply(HttpConnectionManager::default());
        let fields = path_normalization::json_fields();
        assert_eq!(fields["normalize_path"], typed.normalize_path.unwrap().value);
        assert_eq!(fields["merge_slashes"], typed.merge_slashes);
        assert_eq!(
            fields["path_with_escaped_slashes_action"],
            typed.path_with_escaped_slashes_action().as_str_name()
        );
    }
}
