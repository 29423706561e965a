//! The bookstore demo through the pure model: who may reach whom, with which routes and weights.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use osm_fixtures::{MeshBuilder, bookstore_numbered};
use osm_model::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn mesh(permissive: bool, split: Option<(u32, u32)>) -> MeshModel {
    let input = bookstore_numbered(permissive, split);
    compute(&input)
}

fn outbound_names(m: &MeshModel, proxy: &str) -> Vec<String> {
    m.proxies[proxy]
        .outbound
        .services
        .iter()
        .map(|s| s.service.to_string())
        .collect()
}

/// Permissive mode: every proxy may reach every service, and they all share one outbound intent.
#[test]
fn permissive_everyone_reaches_everything_with_one_shared_intent() {
    let m = mesh(true, None);
    assert_eq!(m.proxies.len(), 5);
    let all = vec![
        "bookstore/bookstore",
        "bookstore/bookstore-v1",
        "bookstore/bookstore-v2",
        "bookwarehouse/bookwarehouse",
    ];
    assert_eq!(outbound_names(&m, "bookthief"), all);
    let first = &m.proxies["bookbuyer"].outbound;
    assert!(m.proxies.values().all(|p| Arc::ptr_eq(&p.outbound, first)));
    assert!(
        m.proxies["bookstore-v1"]
            .inbound
            .ports
            .iter()
            .all(|p| p.access == InboundAccess::Http(HttpAccess::AnyMeshIdentity))
    );
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

/// SMI mode denies by default: bookthief has no TrafficTarget, so it reaches nothing.
#[test]
fn smi_bookthief_reaches_nothing() {
    let m = mesh(false, Some((50, 50)));
    assert!(outbound_names(&m, "bookthief").is_empty());
}

/// SMI mode: bookbuyer reaches the bookstore services only; bookstore reaches bookwarehouse only.
#[test]
fn smi_outbound_follows_traffic_targets() {
    let m = mesh(false, Some((50, 50)));
    assert_eq!(
        outbound_names(&m, "bookbuyer"),
        vec![
            "bookstore/bookstore",
            "bookstore/bookstore-v1",
            "bookstore/bookstore-v2"
        ]
    );
    assert_eq!(
        outbound_names(&m, "bookstore-v1"),
        vec!["bookwarehouse/bookwarehouse"]
    );
    assert!(outbound_names(&m, "bookwarehouse").is_empty());
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

/// The split apex routes to v1 and v2 clusters with the split's weights.
#[test]
fn split_weights_on_apex() {
    let m = mesh(false, Some((80, 20)));
    let apex = &m.proxies["bookbuyer"].outbound.services[0];
    let backends: Vec<(String, u32)> = apex
        .backends
        .iter()
        .map(|b| (b.cluster.name(), b.weight))
        .collect();
    assert_eq!(
        backends,
        vec![
            ("bookstore/bookstore-v1|14001".into(), 80),
            ("bookstore/bookstore-v2|14001".into(), 20)
        ]
    );
    // A zero weight drops the backend.
    let m = mesh(false, Some((100, 0)));
    assert_eq!(m.proxies["bookbuyer"].outbound.services[0].backends.len(), 1);
}

/// Inbound on bookstore-v1: both services that select it get a filter chain; only bookbuyer may call,
/// and only on the two routes its TrafficTarget names.
#[test]
fn smi_inbound_routes_and_identities() {
    let m = mesh(false, Some((50, 50)));
    let inbound = &m.proxies["bookstore-v1"].inbound;
    assert_eq!(inbound.ports.len(), 1);
    let port = &inbound.ports[0];
    let services: Vec<String> = port.services.iter().map(|s| s.service.to_string()).collect();
    assert_eq!(services, vec!["bookstore/bookstore", "bookstore/bookstore-v1"]);
    let InboundAccess::Http(HttpAccess::Routes(routes)) = &port.access else {
        panic!("expected HTTP routes, got {:?}", port.access)
    };
    let paths: Vec<&str> = routes.iter().map(|r| r.route.path_regex.as_str()).collect();
    assert_eq!(paths, vec![".*a-book.*new", "/books-bought"]);
    let bookbuyer = ServiceIdentity::new("bookbuyer", "bookbuyer");
    assert!(
        routes
            .iter()
            .all(|r| r.allowed.len() == 1 && r.allowed.contains(&bookbuyer))
    );
    assert_eq!(routes[1].route.methods, vec!["GET"]);
    assert_eq!(
        routes[1].route.headers[0],
        ("client-app".into(), "bookbuyer".into())
    );
}

/// Pods of the same identity and services share one inbound intent.
#[test]
fn identical_inbound_intents_are_shared() {
    let mut b = MeshBuilder::new(true);
    b.service(
        "ns",
        "web",
        Some(ip(200)),
        &[(80, 8080, AppProtocol::Http)],
        &[("app", "web")],
    );
    for i in 0..3 {
        b.pod(
            "ns",
            &format!("web-{i}"),
            "web",
            &[("app", "web")],
            Some(ip(i)),
            Some(&format!("u{i}")),
        );
    }
    let m = compute(&b.build());
    assert!(Arc::ptr_eq(&m.proxies["u0"].inbound, &m.proxies["u2"].inbound));
    assert_eq!(m.proxies["u0"].inbound.ports[0].target_port, 8080);
}

/// A TCPRoute opens its ports to the TrafficTarget's sources only, and an unknown route group is
/// reported instead of failing.
#[test]
fn tcp_route_and_missing_group() {
    let mut b = MeshBuilder::new(false);
    b.service(
        "db",
        "mysql",
        Some(ip(200)),
        &[(3306, 3306, AppProtocol::Tcp)],
        &[("app", "mysql")],
    );
    b.pod(
        "db",
        "mysql-0",
        "mysql",
        &[("app", "mysql")],
        Some(ip(1)),
        Some("m0"),
    );
    b.pod("app", "web-0", "web", &[], Some(ip(2)), Some("w0"));
    b.pod("app", "other-0", "other", &[], Some(ip(3)), Some("o0"));
    b.policies_yaml(
        r#"
kind: TCPRoute
metadata: {name: mysql, namespace: db}
spec:
  matches:
    ports: [3306]
---
kind: TrafficTarget
metadata: {name: web-to-mysql, namespace: db}
spec:
  destination: {kind: ServiceAccount, name: mysql, namespace: db}
  rules:
  - {kind: TCPRoute, name: mysql}
  - {kind: HTTPRouteGroup, name: does-not-exist}
  sources:
  - {kind: ServiceAccount, name: web, namespace: app}
"#,
    )
    .unwrap();
    let m = compute(&b.build());
    assert_eq!(outbound_names(&m, "w0"), vec!["db/mysql"]);
    assert!(outbound_names(&m, "o0").is_empty());
    let InboundAccess::Tcp(TcpAccess::Identities(ids)) = &m.proxies["m0"].inbound.ports[0].access else {
        panic!()
    };
    assert_eq!(
        ids.iter().cloned().collect::<Vec<_>>(),
        vec![ServiceIdentity::new("app", "web")]
    );
    assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
    assert!(m.warnings[0].contains("does-not-exist"));
}

/// Golden snapshots of the intents a reviewer reads: bookbuyer and bookstore-v1 in SMI mode.
#[test]
fn golden_smi_intents() {
    let m = mesh(false, Some((50, 50)));
    insta::assert_yaml_snapshot!("smi_bookbuyer", m.proxies["bookbuyer"]);
    insta::assert_yaml_snapshot!("smi_bookstore_v1", m.proxies["bookstore-v1"]);
    insta::assert_yaml_snapshot!("smi_bookthief", m.proxies["bookthief"]);
}
