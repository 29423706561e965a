//! Golden snapshots of the bookstore demo's xDS config, as `describe` prints it: what each sidecar is
//! served in SMI mode (50/50 split) and in permissive mode.
//! A unit-test module: `describe` is test-only code, kept out of the library.

use std::net::{IpAddr, Ipv4Addr};

use crate::describe::describe;
use crate::{Generator, identity_secrets};
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

/// Pods at 10.0.0.10.., services at 10.96.0.1.. (in the fixture's order).
fn mesh(permissive: bool, split: Option<(u32, u32)>) -> MeshModel {
    let index = |list: &[&str], name: &str| list.iter().position(|x| *x == name).expect("known name") as u8;
    let input = bookstore(
        permissive,
        split,
        |p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + index(&PODS, p))),
        |s| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1 + index(&SERVICES, s))),
    );
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
            let routes = &metrics["route_config"]["virtual_hosts"]["prometheus"]["routes"];
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
    let index = |list: &[&str], name: &str| list.iter().position(|x| *x == name).expect("known name") as u8;
    let mut input = bookstore(
        false,
        Some((50, 50)),
        |p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + index(&PODS, p))),
        |s| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1 + index(&SERVICES, s))),
    );
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
    let index = |list: &[&str], name: &str| list.iter().position(|x| *x == name).expect("known name") as u8;
    let input = bookstore(
        false,
        Some((50, 50)),
        |p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + index(&PODS, p))),
        |s| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1 + index(&SERVICES, s))),
    );
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
    let index = |list: &[&str], name: &str| list.iter().position(|x| *x == name).expect("known name") as u8;
    let mut input = bookstore(
        false,
        Some((50, 50)),
        |p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + index(&PODS, p))),
        |s| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1 + index(&SERVICES, s))),
    );
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
