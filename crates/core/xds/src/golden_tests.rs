//! Golden snapshots of the bookstore demo's xDS config, as `describe` prints it: what each sidecar is
//! served in SMI mode (50/50 split) and in permissive mode.
//! A unit-test module: `describe` is test-only code, kept out of the library.

use std::net::{IpAddr, Ipv4Addr};

use crate::describe::describe;
use crate::{Generator, identity_secrets, names};
use osm_fixtures::bookstore;
use osm_model::{MeshModel, compute};

const FAKE_CA: &str = "-----BEGIN CERTIFICATE-----\nFAKE-CA-BUNDLE\n-----END CERTIFICATE-----\n";
const FAKE_CERT: &str = "-----BEGIN CERTIFICATE-----\nFAKE-LEAF-CERT\n-----END CERTIFICATE-----\n";
const FAKE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nFAKE-PRIVATE-KEY\n-----END PRIVATE KEY-----\n";

const PODS: [&str; 5] = [
    "bookbuyer",
    "bookthief",
    "bookstore-v1",
    "bookstore-v2",
    "bookwarehouse",
];
const SERVICES: [&str; 4] = ["bookstore", "bookstore-v1", "bookstore-v2", "bookwarehouse"];

/// The bookstore demo with pods at 10.0.0.10.., services at 10.96.0.1.. (in the fixture's order).
fn bookstore_input(permissive: bool, split: Option<(u32, u32)>) -> osm_model::MeshInput {
    let index = |list: &[&str], name: &str| list.iter().position(|x| *x == name).expect("known name") as u8;
    bookstore(
        permissive,
        split,
        |p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + index(&PODS, p))),
        |s| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1 + index(&SERVICES, s))),
    )
}

/// [`bookstore_input`] computed, without warnings.
fn mesh(permissive: bool, split: Option<(u32, u32)>) -> MeshModel {
    let input = bookstore_input(permissive, split);
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    model
}

fn described(model: &MeshModel, proxy: &str) -> serde_json::Value {
    let mut generator = Generator::new("cluster.local", FAKE_CA);
    let config = generator.proxy_config(&model.proxies[proxy], identity_secrets(FAKE_CERT, FAKE_KEY));
    let v = describe(&config);
    let text = v.to_string();
    for secret in [
        "FAKE-PRIVATE-KEY",
        "FAKE-LEAF-CERT",
        "FAKE-CA-BUNDLE",
        "PRIVATE KEY",
    ] {
        assert!(!text.contains(secret), "describe printed {secret}");
    }
    v
}

/// SMI mode: bookbuyer reaches bookstore (split over v1/v2) and v1/v2 directly, nothing else.
#[test]
fn smi_bookbuyer() {
    let m = mesh(false, Some((50, 50)));
    insta::assert_yaml_snapshot!(described(&m, "bookbuyer"));
}

/// SMI mode: bookthief is named in no TrafficTarget, so it has no bookstore cluster at all.
#[test]
fn smi_bookthief() {
    let m = mesh(false, Some((50, 50)));
    let v = described(&m, "bookthief");
    let clusters = v["clusters"].as_object().expect("clusters is an object");
    assert!(
        clusters.keys().all(|name| !name.starts_with("bookstore/")),
        "{clusters:?}"
    );
    insta::assert_yaml_snapshot!(v);
}

/// SMI mode: bookstore-v1 accepts bookbuyer's two routes and reaches bookwarehouse.
#[test]
fn smi_bookstore_v1() {
    let m = mesh(false, Some((50, 50)));
    insta::assert_yaml_snapshot!(described(&m, "bookstore-v1"));
}

/// SMI mode: bookwarehouse accepts `POST /restock-books` from bookstore v1 and v2.
#[test]
fn smi_bookwarehouse() {
    let m = mesh(false, Some((50, 50)));
    insta::assert_yaml_snapshot!(described(&m, "bookwarehouse"));
}

/// Permissive mode: bookbuyer reaches every service; no RBAC anywhere.
#[test]
fn permissive_bookbuyer() {
    let m = mesh(true, None);
    insta::assert_yaml_snapshot!(described(&m, "bookbuyer"));
}

/// Every HTTP connection manager in every proxy's config, visited with its JSON description.
fn each_hcm(v: &serde_json::Value, visit: &mut impl FnMut(&serde_json::Value)) {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("name").and_then(|n| n.as_str()) == Some("envoy.filters.network.http_connection_manager")
            {
                visit(v);
            }
            m.values().for_each(|x| each_hcm(x, visit));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| each_hcm(x, visit)),
        _ => {}
    }
}

/// Inbound, outbound and metrics connection managers all normalise the path before routing and RBAC,
/// and refuse escaped slashes; the metrics route forwards exactly `GET|HEAD /stats/prometheus`.
#[test]
fn path_security_every_hcm_normalises() {
    for permissive in [false, true] {
        let m = mesh(permissive, Some((50, 50)));
        for proxy in PODS {
            let v = described(&m, proxy);
            let mut seen = 0;
            each_hcm(&v, &mut |hcm| {
                seen += 1;
                assert_eq!(
                    hcm["path"],
                    serde_json::json!({"normalize": true, "merge_slashes": true, "escaped_slashes": "REJECT_REQUEST"}),
                    "{proxy}: {hcm}"
                );
            });
            assert!(seen >= 1, "{proxy}: no connection manager");
            let metrics =
                &v["listeners"]["inbound-prometheus-listener"]["filter_chains"]["(unnamed 1)"]["filters"][0];
            let routes = &metrics["route_config"]["virtual_hosts"][names::PROMETHEUS_VIRTUAL_HOST]["routes"];
            assert_eq!(
                routes,
                &serde_json::json!([{
                    "action": {"cluster": "envoy-metrics-cluster", "prefix_rewrite": "/stats/prometheus"},
                    "match": {"path": "/stats/prometheus", "headers": [{"name": ":method", "regex": "GET|HEAD"}]},
                }]),
                "{proxy}: {metrics}"
            );
        }
    }
}

/// SMI mode with Egress policies for bookbuyer (passthrough off): HTTP by Host narrowed by an
/// HTTPRouteGroup, HTTPS by SNI and by address, TCP and server-first TCP by range. Inspectors run only
/// on the HTTP and SNI ports; the server-first port is never inspected.
#[test]
fn smi_bookbuyer_egress() {
    let mut input = bookstore_input(false, Some((50, 50)));
    input.mesh_config.traffic.enable_egress = false;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(
        "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: status-routes, namespace: bookbuyer}
spec:
  matches:
  - {name: status, pathRegex: /status.*, methods: [GET]}
---
apiVersion: policy.openservicemesh.io/v1alpha1
kind: Egress
metadata: {name: httpbin, namespace: bookbuyer}
spec:
  sources: [{kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}]
  hosts: [httpbin.org]
  ports: [{number: 80, protocol: http}]
  matches:
  - {apiGroup: specs.smi-spec.io/v1alpha4, kind: HTTPRouteGroup, name: status-routes}
---
apiVersion: policy.openservicemesh.io/v1alpha1
kind: Egress
metadata: {name: https, namespace: bookbuyer}
spec:
  sources: [{kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}]
  hosts: [github.com, openservicemesh.io]
  ipAddresses: [203.0.113.0/24]
  ports: [{number: 443, protocol: https}]
---
apiVersion: policy.openservicemesh.io/v1alpha1
kind: Egress
metadata: {name: databases, namespace: bookbuyer}
spec:
  sources: [{kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}]
  ipAddresses: [198.51.100.0/24, 192.0.2.7/32]
  ports: [{number: 3306, protocol: tcp-server-first}, {number: 6379, protocol: tcp}]
  matches:
  - {apiGroup: policy.openservicemesh.io/v1alpha1, kind: UpstreamTrafficSetting, name: databases}
---
apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: databases, namespace: bookbuyer}
spec:
  host: db.example.com
  connectionSettings:
    tcp: {maxConnections: 10, connectTimeout: 3s}
",
    )
    .expect("egress documents");
    for doc in docs {
        let id = osm_model::ObjectRef::new(
            doc["metadata"]["namespace"].as_str().unwrap(),
            doc["metadata"]["name"].as_str().unwrap(),
        );
        match doc["kind"].as_str() {
            Some("Egress") => {
                let e: osm_api::policy::Egress = serde_json::from_value(doc).unwrap();
                input.egresses.insert(id, e.spec);
            }
            Some("HTTPRouteGroup") => {
                let g: osm_api::smi::specs::HTTPRouteGroup = serde_json::from_value(doc).unwrap();
                input.http_route_groups.insert(id, g.spec);
            }
            Some("UpstreamTrafficSetting") => {
                let u: osm_api::policy::UpstreamTrafficSetting = serde_json::from_value(doc).unwrap();
                input.upstream_traffic_settings.insert(id, u.spec);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    assert!(model.proxies["bookthief"].egress.is_empty());
    insta::assert_yaml_snapshot!(described(&model, "bookbuyer"));
}

/// SMI mode with IngressBackends from a non-meshed ingress controller (`ingress-ns/ingress-nginx` at
/// 10.0.9.9): bookstore-v1 admits its plain HTTP, bookstore-v2 its TLS with a client certificate naming
/// `ingress-nginx.ingress-ns.example.com`. Each gets an `ingress_…` chain beside the mesh chains and
/// an `rds-ingress.14001` route config to its local cluster.
#[test]
fn smi_bookstore_ingress_backend() {
    use osm_model::ObjectRef;
    let input = bookstore_input(false, Some((50, 50)));
    let mut b = osm_fixtures::MeshBuilder { input };
    b.ingress_controller(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 9)));
    let mut input = b.input;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(
        "apiVersion: policy.openservicemesh.io/v1alpha1
kind: IngressBackend
metadata: {name: bookstore-v1-http, namespace: bookstore}
spec:
  backends: [{name: bookstore-v1, port: {number: 14001, protocol: http}}]
  sources: [{kind: Service, name: ingress-nginx, namespace: ingress-ns}]
---
apiVersion: policy.openservicemesh.io/v1alpha1
kind: IngressBackend
metadata: {name: bookstore-v2-https, namespace: bookstore}
spec:
  backends:
  - name: bookstore-v2
    port: {number: 14001, protocol: https}
    tls: {skipClientCertValidation: false, sniHosts: [bookstore-v2.bookstore.cluster.local]}
  sources:
  - {kind: Service, name: ingress-nginx, namespace: ingress-ns}
  - {kind: IPRange, name: 192.0.2.0/24}
  - {kind: AuthenticatedPrincipal, name: ingress-nginx.ingress-ns.example.com}
",
    )
    .expect("IngressBackend documents");
    for doc in docs {
        let id = ObjectRef::new(
            doc["metadata"]["namespace"].as_str().unwrap(),
            doc["metadata"]["name"].as_str().unwrap(),
        );
        let ib: osm_api::policy::IngressBackend = serde_json::from_value(doc).unwrap();
        input.ingress_backends.insert(id, ib.spec);
    }
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    insta::assert_yaml_snapshot!(
        "smi_bookstore_v1_ingress_backend_http",
        described(&model, "bookstore-v1")
    );
    insta::assert_yaml_snapshot!(
        "smi_bookstore_v2_ingress_backend_https",
        described(&model, "bookstore-v2")
    );
}

/// SMI mode with an UpstreamTrafficSetting for bookstore-v1 (as upstream's circuit-breaking demo
/// writes it): bookbuyer's `bookstore/bookstore-v1|14001` cluster carries the thresholds (unset ones at
/// their maximum, remaining capacity tracked), the connect timeout and requests per connection; the
/// other clusters are unchanged.
#[test]
fn smi_bookbuyer_upstream_traffic_setting() {
    let mut input = bookstore_input(false, Some((50, 50)));
    let uts: osm_api::policy::UpstreamTrafficSetting = serde_saphyr::from_str(
        "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: bookstore-v1, namespace: bookstore}
spec:
  host: bookstore-v1.bookstore.svc.cluster.local
  connectionSettings:
    tcp: {maxConnections: 100, connectTimeout: 5s}
    http: {maxPendingRequests: 16, maxRequestsPerConnection: 32}
",
    )
    .expect("UpstreamTrafficSetting YAML");
    input
        .upstream_traffic_settings
        .insert(osm_model::ObjectRef::new("bookstore", "bookstore-v1"), uts.spec);
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    let v = described(&model, "bookbuyer");
    let clusters = &v["clusters"];
    assert!(
        clusters["bookstore/bookstore-v2|14001"]
            .get("circuit_breakers")
            .is_none()
    );
    insta::assert_yaml_snapshot!(clusters["bookstore/bookstore-v1|14001"]);
}

/// A Retry from bookbuyer to bookstore (the split apex): its route to bookstore carries upstream's
/// retry policy (conditions, count, per-try timeout, backoff), in both modes; other routes do not.
#[test]
fn retry_bookbuyer_route() {
    for permissive in [false, true] {
        let mut input = bookstore_input(permissive, Some((50, 50)));
        input.mesh_config.feature_flags.enable_retry_policy = true;
        let retry: osm_api::policy::Retry = serde_saphyr::from_str(
            "apiVersion: policy.openservicemesh.io/v1alpha1
kind: Retry
metadata: {name: retry, namespace: bookbuyer}
spec:
  source: {kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}
  destinations:
  - {kind: Service, name: bookstore, namespace: bookstore}
  retryPolicy: {retryOn: '5xx,connect-failure', perTryTimeout: 2500ms, numRetries: 3, retryBackoffBaseInterval: 25ms}
",
        )
        .expect("Retry YAML");
        input
            .retries
            .insert(osm_model::ObjectRef::new("bookbuyer", "retry"), retry.spec);
        let model = compute(&input);
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);
        let v = described(&model, "bookbuyer");
        let vhosts = &v["routes"]["rds-outbound.14001"]["virtual_hosts"];
        let action = |name: &str| {
            vhosts[format!("outbound_virtual-host|{name}.svc.cluster.local")]["routes"][0]["action"].clone()
        };
        assert!(action("bookstore.bookstore").is_object(), "{vhosts}");
        assert!(action("bookstore-v1.bookstore").get("retry_policy").is_none());
        insta::assert_yaml_snapshot!(
            "retry_bookbuyer_route",
            action("bookstore.bookstore")["retry_policy"]
        );
        // Nobody else retries.
        let thief = described(&model, "bookthief");
        assert!(
            !thief.to_string().contains("retry_policy"),
            "permissive {permissive}"
        );
    }
}

/// The bookstore mesh with MeshConfig `traffic.inboundExternalAuthorization` enabled.
fn ext_authz_mesh(
    permissive: bool,
    address: &str,
    edit: impl FnOnce(&mut osm_model::MeshInput),
) -> MeshModel {
    let mut input = bookstore_input(permissive, Some((50, 50)));
    input.mesh_config.traffic.inbound_external_authorization = osm_api::config::ExternalAuthzSpec {
        enable: true,
        address: Some(address.to_string()),
        port: Some(9002),
        stat_prefix: "inboundExtAuthz".into(),
        timeout: "2500ms".parse().expect("a Go duration"),
        failure_mode_allow: true,
    };
    edit(&mut input);
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    model
}

/// The HTTP filters of the connection managers on every filter chain in `v` whose name starts with
/// `prefix`.
fn http_filters(v: &serde_json::Value, prefix: &str) -> Vec<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for listener in v["listeners"].as_object().expect("listeners").values() {
        for (name, chain) in listener["filter_chains"].as_object().into_iter().flatten() {
            if name.starts_with(prefix) {
                each_hcm(chain, &mut |hcm| {
                    out.push(hcm["http_filters"].as_array().expect("http_filters").clone())
                });
            }
        }
    }
    out
}

/// [`http_filters`] by name.
fn http_filter_names(v: &serde_json::Value, prefix: &str) -> Vec<Vec<String>> {
    http_filters(v, prefix)
        .into_iter()
        .map(|filters| {
            filters
                .iter()
                .map(|f| {
                    f.as_str()
                        .or(f["name"].as_str())
                        .expect("a filter name")
                        .to_string()
                })
                .collect()
        })
        .collect()
}

/// SMI mode, external authorization on and bookstore-v1 rate limited: its inbound connection manager
/// runs upstream's order — RBAC, local rate limit, ext_authz, router — with the filter calling
/// `envoy-ext-authz-cluster` (HTTP/2, DNS-resolved for a host name) with the configured timeout,
/// failure mode and stat prefix and the caller's certificate; outbound connection managers never check.
#[test]
fn ext_authz_smi_bookstore_v1() {
    let model = ext_authz_mesh(false, "ext-authz.auth.svc.cluster.local", |input| {
        let uts: osm_api::policy::UpstreamTrafficSetting = serde_saphyr::from_str(
            "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: bookstore-v1, namespace: bookstore}
spec:
  host: bookstore-v1.bookstore.svc.cluster.local
  rateLimit:
    local:
      http: {requests: 10, unit: minute}
",
        )
        .expect("UpstreamTrafficSetting YAML");
        input
            .upstream_traffic_settings
            .insert(osm_model::ObjectRef::new("bookstore", "bookstore-v1"), uts.spec);
    });
    let v = described(&model, "bookstore-v1");
    let inbound = http_filter_names(&v, "inbound_");
    assert_eq!(inbound.len(), 2, "bookstore-v1 and the bookstore apex: {v}");
    for filters in inbound {
        assert_eq!(
            filters,
            [
                "envoy.filters.http.rbac",
                "envoy.filters.http.local_ratelimit",
                crate::ext_authz::FILTER,
                "envoy.filters.http.router",
            ],
            "{v}"
        );
    }
    for outbound in http_filter_names(&v, "outbound_") {
        assert!(
            !outbound.iter().any(|f| f == crate::ext_authz::FILTER),
            "{outbound:?}"
        );
    }
    insta::assert_yaml_snapshot!("ext_authz_filter", http_filters(&v, "inbound_")[0][2]);
    insta::assert_yaml_snapshot!(
        "ext_authz_cluster",
        v["clusters"][crate::names::EXT_AUTHZ_CLUSTER]
    );
}

/// Without an HTTP port to check (bookbuyer serves nothing) there is no filter and no cluster; an IP
/// address makes a STATIC cluster; ingress chains are checked too.
#[test]
fn ext_authz_cluster_only_where_http_is_served() {
    let model = ext_authz_mesh(true, "10.0.9.2", |input| {
        let mut b = osm_fixtures::MeshBuilder {
            input: std::mem::take(input),
        };
        b.ingress_controller(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 9)));
        *input = b.input;
        let ib: osm_api::policy::IngressBackend = serde_saphyr::from_str(
            "apiVersion: policy.openservicemesh.io/v1alpha1
kind: IngressBackend
metadata: {name: bookstore-v2-http, namespace: bookstore}
spec:
  backends: [{name: bookstore-v2, port: {number: 14001, protocol: http}}]
  sources: [{kind: Service, name: ingress-nginx, namespace: ingress-ns}]
",
        )
        .expect("IngressBackend YAML");
        input.ingress_backends.insert(
            osm_model::ObjectRef::new("bookstore", "bookstore-v2-http"),
            ib.spec,
        );
    });
    let buyer = described(&model, "bookbuyer");
    assert!(
        buyer["clusters"].get(crate::names::EXT_AUTHZ_CLUSTER).is_none(),
        "{buyer}"
    );
    let v2 = described(&model, "bookstore-v2");
    let cluster = &v2["clusters"][crate::names::EXT_AUTHZ_CLUSTER];
    assert_eq!(cluster["type"], "STATIC", "{cluster}");
    for prefix in ["inbound_", "ingress_"] {
        let chains = http_filter_names(&v2, prefix);
        assert!(!chains.is_empty(), "no {prefix} connection manager: {v2}");
        for filters in chains {
            assert!(
                filters.ends_with(&[
                    crate::ext_authz::FILTER.to_string(),
                    "envoy.filters.http.router".to_string()
                ]),
                "{prefix}: {filters:?}"
            );
        }
    }
}

/// Permissive bookstore with a TCP port (`bookwarehouse/tcp-store:9000`) and egress passthrough, so that
/// every kind of filter that logs is present: inbound and outbound connection managers and TCP proxies,
/// the metrics listener's connection manager and the passthrough TCP proxy.
fn access_log_mesh(enabled: bool) -> osm_model::MeshInput {
    let mut b = osm_fixtures::MeshBuilder {
        input: osm_fixtures::bookstore_numbered(true, Some((50, 50))),
    };
    b.service(
        "bookwarehouse",
        "tcp-store",
        Some(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 50))),
        &[(9000, 9000, osm_model::AppProtocol::Tcp)],
        &[("app", "bookwarehouse")],
    );
    let mut input = b.input;
    input.mesh_config.traffic.enable_egress = true;
    input.mesh_config.observability.enable_access_log = enabled;
    input
}

/// Every connection manager and TCP proxy under `v`, as (filter name, its access logs).
fn logging_filters(v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) => {
            match m.get("name").and_then(|n| n.as_str()) {
                Some(name @ "envoy.filters.network.http_connection_manager") => {
                    out.push((name.to_string(), v["access_log"].clone()));
                }
                Some(name @ "envoy.filters.network.tcp_proxy") => {
                    out.push((name.to_string(), v["tcp_proxy"]["access_log"].clone()));
                }
                _ => {}
            }
            m.values().for_each(|x| logging_filters(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| logging_filters(x, out)),
        _ => {}
    }
}

/// By default every connection manager and TCP proxy of every sidecar logs JSON to stdout; with
/// MeshConfig `observability.enableAccessLog: false` none does.
#[test]
fn access_log_on_every_filter_unless_turned_off() {
    for enabled in [true, false] {
        let model = compute(&access_log_mesh(enabled));
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);
        for proxy in PODS {
            let mut filters = Vec::new();
            logging_filters(&described(&model, proxy), &mut filters);
            for kind in [
                "envoy.filters.network.http_connection_manager",
                "envoy.filters.network.tcp_proxy",
            ] {
                assert!(filters.iter().any(|(k, _)| k == kind), "{proxy}: no {kind}");
            }
            for (kind, logs) in filters {
                let expected = if enabled {
                    serde_json::json!(["envoy.access_loggers.stdout: json"])
                } else {
                    serde_json::Value::Null
                };
                assert_eq!(logs, expected, "{proxy} {kind} (enabled: {enabled})");
            }
        }
        // bookwarehouse's inbound TCP chain and bookbuyer's outbound one are among them.
        let inbound = described(&model, "bookwarehouse");
        let tcp = &inbound["listeners"]["inbound-listener"]["filter_chains"]["inbound_bookwarehouse/tcp-store_9000_tcp"]
            ["filters"];
        assert!(tcp.is_array(), "{inbound}");
    }
}

/// Turning access logs off live (a MeshConfig update) re-sends every sidecar its listeners, and only
/// them: clusters, endpoints, routes and secrets keep their versions.
#[test]
fn access_log_switch_changes_only_listeners() {
    let on = access_log_mesh(true);
    let off = access_log_mesh(false);
    let mut state = osm_model::MeshState::new(&on);
    let mut generator = Generator::new("cluster.local", FAKE_CA);
    let secrets = identity_secrets(FAKE_CERT, FAKE_KEY);
    let before: Vec<_> = PODS
        .iter()
        .map(|p| generator.proxy_config(&state.model().proxies[*p], secrets.clone()))
        .collect();
    assert!(state.update(&on, &off).all);
    for (proxy, before) in PODS.iter().zip(before) {
        let after = generator.proxy_config(&state.model().proxies[*proxy], secrets.clone());
        for kind in crate::TypeKind::ALL {
            let bytes = |c: &crate::ProxyConfig| -> std::collections::BTreeMap<String, bytes::Bytes> {
                c.iter(kind).map(|r| (r.name.clone(), r.any_bytes())).collect()
            };
            let (old, new) = (bytes(&before), bytes(&after));
            assert_eq!(
                old.keys().collect::<Vec<_>>(),
                new.keys().collect::<Vec<_>>(),
                "{proxy} {kind:?}"
            );
            for (name, old_bytes) in &old {
                let changed = *old_bytes != new[name];
                assert_eq!(
                    changed,
                    kind == crate::TypeKind::Listener,
                    "{proxy} {kind:?} {name}"
                );
            }
        }
    }
}
