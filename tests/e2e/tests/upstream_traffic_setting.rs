//! UpstreamTrafficSetting connection settings with real Envoy sidecars: circuit breaking on the client's
//! cluster for the upstream. With `tcp.maxConnections: 1` for a TCP echo service, a second concurrent
//! connection from bookbuyer is closed by its sidecar without reaching the server (the cluster's
//! `upstream_cx_overflow` counts it), while the first keeps working; once the first closes, a new one
//! works; without the setting, two connections work side by side. As upstream OSM's circuit-breaking
//! demo shows (overflowing requests refused by the client's sidecar, counted under the cluster).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use osm_e2e::{Mesh, require_or_skip, stat_value};
use osm_fixtures::MeshBuilder;
use osm_model::{AppProtocol, MeshInput, ObjectRef};
use osm_xds::bootstrap::AdsApi;

const ECHO_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 1);
const ECHO_PORT: u16 = 7070;

fn add_tcp_echo(input: &mut MeshInput, ips: &BTreeMap<String, IpAddr>) {
    let mut b = MeshBuilder {
        input: std::mem::take(input),
    };
    b.service(
        "tcpecho",
        "tcp-echo",
        Some(IpAddr::V4(ECHO_IP)),
        &[(ECHO_PORT, ECHO_PORT, AppProtocol::Tcp)],
        &[("app", "tcp-echo")],
    );
    b.pod(
        "tcpecho",
        "tcp-echo",
        "tcp-echo",
        &[("app", "tcp-echo")],
        Some(ips["tcp-echo"]),
        Some("tcp-echo"),
    );
    *input = b.input;
}

const MAX_ONE_CONNECTION: &str = "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: tcp-echo, namespace: tcpecho}
spec:
  host: tcp-echo.tcpecho.svc.cluster.local
  connectionSettings:
    tcp: {maxConnections: 1}
";

/// The bookstore demo (permissive) with the TCP echo service and these UpstreamTrafficSettings (YAML).
fn mesh_with_settings(prefix: &str, api: AdsApi, settings: &[&str]) -> Mesh {
    let tcp_echo = vec!["tcp-echo".to_string(), "--port".into(), ECHO_PORT.to_string()];
    let (mesh, _ips) = Mesh::bookstore(
        prefix,
        api,
        true,
        None,
        &[("tcp-echo", Some(tcp_echo))],
        |input, ips| {
            add_tcp_echo(input, ips);
            for yaml in settings {
                let uts: osm_api::policy::UpstreamTrafficSetting =
                    serde_saphyr::from_str(yaml).expect("UpstreamTrafficSetting YAML");
                let id = ObjectRef::new(
                    uts.metadata.namespace.clone().unwrap_or_default(),
                    uts.metadata.name.clone().unwrap_or_default(),
                );
                input.upstream_traffic_settings.insert(id, uts.spec);
            }
        },
    )
    .expect("mesh starts");
    mesh
}

/// A connection from `netns` to the echo service (through that pod's sidecar).
fn connect(netns: &str) -> TcpStream {
    let addr = SocketAddr::new(IpAddr::V4(ECHO_IP), ECHO_PORT);
    let stream = osm_harness::in_netns(netns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
    })
    .expect("entering the pod's namespace")
    .expect("the sidecar accepts the connection");
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    stream
}

/// Sends `msg` and returns what came back: the echo, or what went wrong (closed, reset, timed out).
fn echo(stream: &mut TcpStream, msg: &str) -> Result<String, String> {
    stream.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; msg.len()];
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(format!("closed after {got} bytes")),
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The active cluster's `max_connections` as Envoy's admin `/clusters` reports it.
fn cluster_max_connections(mesh: &Mesh) -> String {
    let clusters = mesh.envoy("bookbuyer").admin_get("/clusters").unwrap();
    clusters
        .lines()
        .find_map(|l| l.strip_prefix("tcpecho/tcp-echo|7070::default_priority::max_connections::"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn circuit_breaking(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let mesh = mesh_with_settings(prefix, api, &[MAX_ONE_CONNECTION]);
    let buyer = mesh.pod("bookbuyer").pod.netns().to_string();
    let overflow = || {
        let stats = mesh.envoy("bookbuyer").admin_get("/stats").unwrap();
        stat_value(&stats, "cluster.tcpecho/tcp-echo|7070.upstream_cx_overflow")
    };

    let mut first = connect(&buyer);
    assert_eq!(echo(&mut first, "first\n"), Ok("first\n".into()));
    let before = overflow();
    let mut second = connect(&buyer);
    let refused = echo(&mut second, "second\n");
    assert!(
        refused.is_err(),
        "a second connection got through maxConnections 1: {refused:?}"
    );
    assert!(overflow() > before, "the overflow is counted under the cluster");
    assert_eq!(
        echo(&mut first, "still\n"),
        Ok("still\n".into()),
        "the first connection is unaffected"
    );

    // The first one closed, a new connection gets the slot (once the sidecar has let go of it).
    drop(first);
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = connect(&buyer);
        if echo(&mut next, "next\n") == Ok("next\n".into()) {
            break;
        }
        assert!(Instant::now() < deadline, "no connection got the freed slot");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Without the setting: two at once — once the updated cluster has replaced the warm one (Envoy
    // ACKs a cluster before its endpoints arrive; until then the old one, limits and all, serves).
    mesh.update(|i| i.upstream_traffic_settings.clear())
        .expect("the deletion is ACKed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster_max_connections(&mesh) == "1" {
        assert!(
            Instant::now() < deadline,
            "the cluster without limits never became active: {}",
            mesh.envoy("bookbuyer")
                .admin_get("/config_dump?resource=dynamic_warming_clusters")
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut a = connect(&buyer);
    let mut b = connect(&buyer);
    assert_eq!(echo(&mut a, "a\n"), Ok("a\n".into()));
    assert_eq!(echo(&mut b, "b\n"), Ok("b\n".into()));
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn upstream_traffic_setting_circuit_breaking_sotw() {
    circuit_breaking("utc", AdsApi::StateOfTheWorld);
}

#[test]
fn upstream_traffic_setting_circuit_breaking_delta() {
    circuit_breaking("utcd", AdsApi::Delta);
}

/// Local rate limits in the upstream's sidecar, as upstream's `e2e_local_ratelimit_test.go` checks them:
/// with `http {requests: 1, unit: minute}` on bookstore-v1, bookbuyer's first request is served and the
/// next is answered 429 by bookstore-v1's sidecar (with the configured header; counted under
/// `http_local_rate_limiter`); with `httpRoutes` limiting `/books-bought` on bookstore-v2, only that
/// path is limited; with `tcp {connections: 1, unit: minute}` on the echo service, the first
/// connection works and the next is closed.
fn local_rate_limit(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let mesh = mesh_with_settings(
        prefix,
        api,
        &[
            "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: bookstore-v1, namespace: bookstore}
spec:
  host: bookstore-v1.bookstore.svc.cluster.local
  rateLimit:
    local:
      http:
        requests: 1
        unit: minute
        responseHeadersToAdd: [{name: x-limited-by, value: osm}]
",
            "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: bookstore-v2, namespace: bookstore}
spec:
  host: bookstore-v2.bookstore.svc.cluster.local
  httpRoutes:
  - path: /books-bought
    rateLimit:
      local: {requests: 1, unit: minute}
",
            "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: tcp-echo, namespace: tcpecho}
spec:
  host: tcp-echo.tcpecho.svc.cluster.local
  rateLimit:
    local:
      tcp: {connections: 1, unit: minute}
",
        ],
    );
    let buyer = mesh.pod("bookbuyer").pod.netns().to_string();

    // HTTP: one request a minute.
    let v1 = SocketAddr::new(mesh.service_ips["bookstore-v1"], osm_fixtures::BOOKSTORE_PORT);
    let get = || {
        osm_e2e::nginx::http_get_host(&buyer, v1, "bookstore-v1.bookstore:14001", "/books-bought")
            .expect("an answer")
    };
    let first = get();
    assert_eq!(first.status, 200, "{first:?}");
    let second = get();
    assert_eq!(second.status, 429, "{second:?}");
    assert_eq!(second.header("x-limited-by"), Some("osm"), "{second:?}");
    let stats = mesh.envoy("bookstore-v1").admin_get("/stats").unwrap();
    assert!(
        stat_value(
            &stats,
            "http_local_rate_limiter.http_local_rate_limit.rate_limited"
        ) >= 1,
        "{stats}"
    );

    // httpRoutes: one request a minute on /books-bought only (permissive: a route of its own).
    let v2 = SocketAddr::new(mesh.service_ips["bookstore-v2"], osm_fixtures::BOOKSTORE_PORT);
    let get_v2 = |path: &str| {
        osm_e2e::nginx::http_get_host(&buyer, v2, "bookstore-v2.bookstore:14001", path)
            .expect("an answer")
            .status
    };
    assert_eq!(get_v2("/books-bought"), 200);
    assert_eq!(get_v2("/books-bought"), 429, "the limited route");
    assert_eq!(
        (get_v2("/"), get_v2("/"), get_v2("/")),
        (200, 200, 200),
        "other paths are not limited"
    );

    // TCP: one connection a minute.
    let mut first = connect(&buyer);
    assert_eq!(echo(&mut first, "first\n"), Ok("first\n".into()));
    let mut second = connect(&buyer);
    let refused = echo(&mut second, "second\n");
    assert!(
        refused.is_err(),
        "a second connection within the minute got through: {refused:?}"
    );
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn upstream_traffic_setting_local_rate_limit_sotw() {
    local_rate_limit("utr", AdsApi::StateOfTheWorld);
}

#[test]
fn upstream_traffic_setting_local_rate_limit_delta() {
    local_rate_limit("utrd", AdsApi::Delta);
}
