//! SMI mode with real Envoy and the bookstore demo's policies: deny by default, HTTP routes per
//! TrafficTarget, a TCPRoute for one identity, a 50/50 TrafficSplit changed live to 100/0, every
//! pushed version ACKed and no Envoy restarted.

use std::collections::BTreeMap;
use std::net::IpAddr;

use osm_e2e::{BOOKBUYER_HEADER, Mesh, USER_AGENT, require_or_skip};
use osm_fixtures::{MeshBuilder, bookstore_split};
use osm_model::{MeshInput, ObjectRef};
use osm_xds::bootstrap::AdsApi;

const BOOKS_BOUGHT: &str = "http://bookstore.bookstore:14001/books-bought";
const BUY_A_BOOK: &str = "http://bookstore.bookstore:14001/buy-a-book/new";
const TCP_ECHO: &str = "tcp-echo.tcpecho:7070";

/// Adds a TCP echo server that only bookbuyer may reach (TCPRoute on port 7070).
/// The shared TCP echo service, and the SMI policies letting bookbuyer reach it.
fn add_tcp_echo(input: &mut MeshInput, ips: &BTreeMap<String, IpAddr>) {
    osm_e2e::add_tcp_echo(input, ips);
    let mut b = MeshBuilder {
        input: std::mem::take(input),
    };
    b.policies_yaml(
        r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: tcp-echo-route, namespace: tcpecho}
spec:
  matches:
    ports: [7070]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: bookbuyer-to-tcp-echo, namespace: tcpecho}
spec:
  destination: {kind: ServiceAccount, name: tcp-echo, namespace: tcpecho}
  rules:
  - {kind: TCPRoute, name: tcp-echo-route}
  sources:
  - {kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}
"#,
    )
    .expect("policy parses");
    *input = b.input;
}

fn share(s: &osm_e2e::ClientSummary, name: &str) -> f64 {
    *s.served_by.get(name).unwrap_or(&0) as f64 / s.sent as f64
}

fn smi(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let tcp_echo_app = osm_e2e::tcp_echo_args();
    let (mesh, _) = Mesh::bookstore(
        prefix,
        api,
        false,
        Some((50, 50)),
        &[("tcp-echo", Some(tcp_echo_app))],
        add_tcp_echo,
    )
    .expect("mesh starts");
    let pids = mesh.envoy_pids();
    let bookbuyer = [BOOKBUYER_HEADER, USER_AGENT];

    // bookbuyer on the two routes its TrafficTargets allow.
    let s = mesh.http_get("bookbuyer", BOOKS_BOUGHT, 20, &bookbuyer).unwrap();
    assert_eq!((s.ok, s.errors), (20, 0), "bookbuyer GET /books-bought: {s:?}");
    let s = mesh.http_get("bookbuyer", BUY_A_BOOK, 20, &bookbuyer).unwrap();
    assert_eq!(s.ok, 20, "bookbuyer GET /buy-a-book/new: {s:?}");

    // bookbuyer outside the route group: wrong path, wrong method, missing header.
    let s = mesh
        .http_get(
            "bookbuyer",
            "http://bookstore.bookstore:14001/restock-books",
            5,
            &bookbuyer,
        )
        .unwrap();
    assert_eq!(s.ok, 0, "path not in the route group must be refused: {s:?}");
    let s = mesh
        .run_client(
            "bookbuyer",
            &[
                "http-client",
                "--url",
                BOOKS_BOUGHT,
                "--method",
                "POST",
                "--count",
                "5",
                "--header",
                BOOKBUYER_HEADER,
                "--header",
                USER_AGENT,
            ],
        )
        .unwrap();
    assert_eq!(s.ok, 0, "method not in the route group must be refused: {s:?}");
    let s = mesh
        .http_get("bookbuyer", BOOKS_BOUGHT, 5, &[USER_AGENT])
        .unwrap();
    assert_eq!(s.ok, 0, "missing client-app header must be refused: {s:?}");

    // bookthief has no TrafficTarget: refused, and its Envoy knows nothing of bookstore.
    let s = mesh.http_get("bookthief", BOOKS_BOUGHT, 10, &bookbuyer).unwrap();
    assert_eq!(s.ok, 0, "bookthief must be refused in SMI mode: {s:?}");
    let clusters = mesh.envoy("bookthief").admin_get("/clusters").unwrap();
    assert!(
        !clusters.contains("bookstore/"),
        "bookthief holds a bookstore cluster:\n{clusters}"
    );
    let clusters = mesh.envoy("bookbuyer").admin_get("/clusters").unwrap();
    assert!(
        clusters.contains("bookstore/bookstore-v1|14001::"),
        "bookbuyer lacks bookstore-v1:\n{clusters}"
    );
    assert!(
        !clusters.contains("bookwarehouse/"),
        "bookbuyer may not reach bookwarehouse:\n{clusters}"
    );

    // bookstore → bookwarehouse on POST /restock-books only.
    let s = mesh
        .run_client(
            "bookstore-v1",
            &[
                "http-client",
                "--url",
                "http://bookwarehouse.bookwarehouse:14001/restock-books",
                "--method",
                "POST",
                "--count",
                "5",
            ],
        )
        .unwrap();
    assert_eq!(s.ok, 5, "bookstore-v1 POST /restock-books: {s:?}");

    // The TCPRoute opens 7070 for bookbuyer only.
    let tcp = |pod: &str| {
        mesh.run_client(
            pod,
            &[
                "tcp-client",
                "--addr",
                TCP_ECHO,
                "--count",
                "5",
                "--timeout-ms",
                "2000",
            ],
        )
        .unwrap()
    };
    let s = tcp("bookbuyer");
    assert_eq!((s.ok, s.errors), (5, 0), "bookbuyer → tcp-echo: {s:?}");
    let s = tcp("bookthief");
    assert_eq!(s.ok, 0, "bookthief → tcp-echo must be refused: {s:?}");

    // TrafficSplit 50/50: each backend gets 40–60 % of 1000 requests.
    let s = mesh
        .http_get("bookbuyer", BOOKS_BOUGHT, 1000, &bookbuyer)
        .unwrap();
    assert_eq!(s.ok, 1000, "{s:?}");
    let v1 = share(&s, "bookstore-v1");
    assert!(
        (0.4..=0.6).contains(&v1),
        "v1 share {v1} of 1000 with a 50/50 split: {s:?}"
    );
    assert!((0.4..=0.6).contains(&share(&s, "bookstore-v2")), "{s:?}");

    // Change the split to 100/0 live; every proxy ACKs it, then ≥ 99 % of 500 go to v1.
    mesh.update(|input| {
        let yaml = bookstore_split(100, 0);
        let mut b = MeshBuilder {
            input: std::mem::take(input),
        };
        b.policies_yaml(&yaml).unwrap();
        *input = b.input;
        assert!(
            input
                .traffic_splits
                .contains_key(&ObjectRef::new("bookstore", "bookstore-split"))
        );
    })
    .unwrap();
    let s = mesh.http_get("bookbuyer", BOOKS_BOUGHT, 500, &bookbuyer).unwrap();
    assert!(share(&s, "bookstore-v1") >= 0.99, "after 100/0: {s:?}");

    // Switching the mesh to permissive lets bookthief in, again without restarting anything.
    mesh.update(|input| input.mesh_config.traffic.enable_permissive_traffic_policy_mode = true)
        .unwrap();
    let s = mesh.http_get("bookthief", BOOKS_BOUGHT, 10, &[]).unwrap();
    assert_eq!(s.ok, 10, "bookthief in permissive mode: {s:?}");

    assert_eq!(mesh.envoy_pids(), pids, "an Envoy was restarted");
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn smi_sotw() {
    smi("e2s", AdsApi::StateOfTheWorld);
}

#[test]
fn smi_delta() {
    smi("e2sd", AdsApi::Delta);
}
