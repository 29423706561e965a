//! A Service with several ports, HTTP and TCP mixed, two of them onto one container port, through real
//! Envoy sidecars: every port works, filter chains do not overlap (upstream #2237: no NACK), and
//! `Host: svc.ns:port` routes like `Host: svc.ns` (upstream #1245).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use osm_e2e::{Mesh, http_server_args, require_or_skip};
use osm_fixtures::MeshBuilder;
use osm_model::AppProtocol;
use osm_xds::bootstrap::AdsApi;

fn multi_port(prefix: &str, api: AdsApi, permissive: bool) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let (hub, pods) = Mesh::pods_for(prefix, &["web", "client"]).unwrap();
    let ip = |n: &str| Some(IpAddr::V4(pods[n].ip()));
    let mut b = MeshBuilder::new(permissive);
    b.service(
        "shop",
        "web",
        Some(IpAddr::V4(Ipv4Addr::new(10, 96, 8, 1))),
        &[
            (80, 8080, AppProtocol::Http),
            (8080, 8080, AppProtocol::Http),
            (9090, 9090, AppProtocol::Tcp),
        ],
        &[("app", "web")],
    );
    b.pod("shop", "web", "web", &[("app", "web")], ip("web"), Some("web"));
    b.pod(
        "clients",
        "client",
        "client",
        &[("app", "client")],
        ip("client"),
        Some("client"),
    );
    if !permissive {
        b.policies_yaml(
            "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: web-routes, namespace: shop}
spec:
  matches:
  - {name: all, pathRegex: .*, methods: ['*']}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: echo, namespace: shop}
spec:
  matches: {ports: [9090]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: client-to-web, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: shop}
  sources: [{kind: ServiceAccount, name: client, namespace: clients}]
  rules:
  - {kind: HTTPRouteGroup, name: web-routes, matches: [all]}
  - {kind: TCPRoute, name: echo}
",
        )
        .unwrap();
    }
    let apps = BTreeMap::from([("web".to_string(), http_server_args("web-app", 8080))]);
    let mesh = Mesh::start(hub, pods, b.build(), api, &apps).expect("mesh starts");
    // The same pod also serves a TCP echo on 9090.
    let bin = osm_harness::demo_app_bin().unwrap();
    let mut echo = mesh
        .pod("web")
        .pod
        .spawn(
            &[bin.to_string_lossy().as_ref(), "tcp-echo", "--port", "9090"],
            &[],
        )
        .unwrap();
    echo.wait_for_output("listening on", Duration::from_secs(10))
        .unwrap();

    for (url, host) in [
        ("http://web.shop/", None),
        ("http://web.shop:80/", Some("host: web.shop:80")),
        ("http://web.shop:8080/", None),
        ("http://web.shop:8080/", Some("host: web.shop")),
        ("http://web.shop.svc.cluster.local:8080/", None),
    ] {
        let headers: Vec<&str> = host.into_iter().collect();
        let s = mesh.http_get("client", url, 3, &headers).unwrap();
        assert_eq!((s.ok, s.errors), (3, 0), "{url} {host:?}: {s:?}");
        assert_eq!(s.served_by.get("web-app"), Some(&3), "{s:?}");
    }
    let s = mesh
        .run_client(
            "client",
            &[
                "tcp-client",
                "--addr",
                "web.shop:9090",
                "--message",
                "hello",
                "--count",
                "3",
            ],
        )
        .unwrap();
    assert_eq!((s.ok, s.errors), (3, 0), "TCP port of the same service: {s:?}");
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn multi_port_permissive() {
    multi_port("emp", AdsApi::StateOfTheWorld, true);
}

#[test]
fn multi_port_smi_delta() {
    multi_port("empd", AdsApi::Delta, false);
}
