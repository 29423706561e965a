//! UpstreamTrafficSetting connection settings with real Envoy sidecars: circuit breaking on the client's
//! cluster for the upstream. With `tcp.maxConnections: 1` for a TCP echo service, a second concurrent
//! connection from bookbuyer is closed by its sidecar without reaching the server (the cluster's
//! `upstream_cx_overflow` counts it), while the first keeps working; once the first closes, a new one
//! works; without the setting, two connections work side by side. As upstream OSM's circuit-breaking
//! demo shows (overflowing requests refused by the client's sidecar, counted under the cluster).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use osm_e2e::{Mesh, require_or_skip, stat_value};
use osm_model::ObjectRef;
use osm_xds::bootstrap::AdsApi;

use osm_e2e::{TCP_ECHO_IP as ECHO_IP, TCP_ECHO_PORT as ECHO_PORT, add_tcp_echo};

const MAX_ONE_CONNECTION: &str = "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: tcp-echo, namespace: tcpecho}
spec:
  host: tcp-echo.tcpecho.svc.cluster.local
  connectionSettings:
    tcp: {maxConnections: 1}
";

/// An UpstreamTrafficSetting as an OSM user writes it, keyed as the model reads it.
fn setting(yaml: &str) -> (ObjectRef, osm_api::policy::UpstreamTrafficSettingSpec) {
    let uts: osm_api::policy::UpstreamTrafficSetting =
        serde_saphyr::from_str(yaml).expect("UpstreamTrafficSetting YAML");
    let id = ObjectRef::new(
        uts.metadata.namespace.clone().unwrap_or_default(),
        uts.metadata.name.clone().unwrap_or_default(),
    );
    (id, uts.spec)
}

/// The bookstore demo (permissive) with the TCP echo service and these UpstreamTrafficSettings (YAML).
fn mesh_with_settings(prefix: &str, api: AdsApi, settings: &[&str]) -> Mesh {
    let tcp_echo = osm_e2e::tcp_echo_args();
    let (mesh, _ips) = Mesh::bookstore(
        prefix,
        api,
        true,
        None,
        &[("tcp-echo", Some(tcp_echo))],
        |input, ips| {
            add_tcp_echo(input, ips);
            input
                .upstream_traffic_settings
                .extend(settings.iter().map(|yaml| setting(yaml)));
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

const HTTP_ONE_AT_A_TIME: &str = "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: bookstore-v1, namespace: bookstore}
spec:
  host: bookstore-v1.bookstore.svc.cluster.local
  connectionSettings:
    tcp: {maxConnections: 1}
    http: {maxPendingRequests: 1, maxRequestsPerConnection: 1}
";

/// 3 clients × 50 requests, side by side (upstream's fortio load: `-c 3 -n 150`), from bookbuyer to
/// bookstore-v1: how many got each status (0: no answer).
fn concurrent_load(mesh: &Mesh) -> BTreeMap<u16, usize> {
    let buyer = mesh.pod("bookbuyer").pod.netns().to_string();
    let v1 = SocketAddr::new(mesh.service_ips["bookstore-v1"], osm_fixtures::BOOKSTORE_PORT);
    let start = std::sync::Arc::new(std::sync::Barrier::new(3));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (buyer, start) = (buyer.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                (0..50)
                    .map(|_| {
                        osm_e2e::nginx::http_get_host(
                            &buyer,
                            v1,
                            "bookstore-v1.bookstore:14001",
                            "/books-bought",
                        )
                        .map(|r| r.status)
                        .unwrap_or(0)
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let mut statuses = BTreeMap::new();
    for c in clients {
        for status in c.join().expect("a client thread") {
            *statuses.entry(status).or_default() += 1;
        }
    }
    statuses
}

/// HTTP circuit breaking, as upstream's circuit-breaking demo shows it: with maxConnections 1,
/// maxPendingRequests 1 and maxRequestsPerConnection 1 on bookstore-v1, a concurrent load from
/// bookbuyer sees 503s from its own sidecar, counted as `upstream_rq_pending_overflow`; with the
/// setting removed live, the same load has no failure.
fn http_circuit_breaking(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let mesh = mesh_with_settings(prefix, api, &[HTTP_ONE_AT_A_TIME]);
    let overflow = || {
        let stats = mesh.envoy("bookbuyer").admin_get("/stats").unwrap();
        stat_value(
            &stats,
            "cluster.bookstore/bookstore-v1|14001.upstream_rq_pending_overflow",
        )
    };
    let limited = concurrent_load(&mesh);
    assert!(
        limited.get(&503).copied().unwrap_or(0) > 0,
        "no request overflowed: {limited:?}"
    );
    assert!(
        limited.get(&200).copied().unwrap_or(0) > 0,
        "nothing got through: {limited:?}"
    );
    assert_eq!(limited.get(&0), None, "a request got no answer: {limited:?}");
    assert!(overflow() > 0, "the overflow is counted under the cluster");

    mesh.update(|i| i.upstream_traffic_settings.clear())
        .expect("the deletion is ACKed");
    // Envoy ACKs the updated cluster before it replaces the active one: wait for the limit to go.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clusters = mesh.envoy("bookbuyer").admin_get("/clusters").unwrap();
        let pending = clusters.lines().find_map(|l| {
            l.strip_prefix("bookstore/bookstore-v1|14001::default_priority::max_pending_requests::")
        });
        if pending.is_some_and(|v| v.trim() != "1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster without limits never became active"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let unlimited = concurrent_load(&mesh);
    assert_eq!(
        unlimited,
        BTreeMap::from([(200, 150)]),
        "without the setting the same load has no failure"
    );
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn upstream_traffic_setting_http_circuit_breaking_sotw() {
    http_circuit_breaking("utch", AdsApi::StateOfTheWorld);
}

#[test]
fn upstream_traffic_setting_http_circuit_breaking_delta() {
    http_circuit_breaking("utchd", AdsApi::Delta);
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
        requests: 3
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
      local:
        requests: 1
        unit: minute
        responseStatusCode: 503
        responseHeadersToAdd: [{name: x-limited-route, value: books-bought}]
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
    let answers: Vec<_> = (0..10).map(|_| get()).collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
    assert!(
        answers[3..]
            .iter()
            .all(|a| a.header("x-limited-by") == Some("osm")),
        "the configured header on every refusal: {:?}",
        answers[3]
    );
    assert_eq!(answers[0].header("x-limited-by"), None);
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
    let refused = osm_e2e::nginx::http_get_host(&buyer, v2, "bookstore-v2.bookstore:14001", "/books-bought")
        .expect("an answer");
    assert_eq!(
        refused.status, 503,
        "the limited route, with its configured status: {refused:?}"
    );
    assert_eq!(
        refused.header("x-limited-route"),
        Some("books-bought"),
        "{refused:?}"
    );
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
    let tcp_limited = || {
        let stats = mesh.envoy("tcp-echo").admin_get("/stats").unwrap();
        stats
            .lines()
            .find(|l| {
                l.starts_with("local_rate_limit.") && l.contains("tcp-echo") && l.contains(".rate_limited: ")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(tcp_limited() >= 1, "the refusal is counted as rate_limited");

    // `burst` adds to the bucket: with burst 1, two connections a minute (a new bucket, full).
    let (id, burst) = setting(
        "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: tcp-echo, namespace: tcpecho}
spec:
  host: tcp-echo.tcpecho.svc.cluster.local
  rateLimit:
    local:
      tcp: {connections: 1, unit: minute, burst: 1}
",
    );
    mesh.update(|i| {
        i.upstream_traffic_settings.insert(id.clone(), burst.clone());
    })
    .expect("the burst is ACKed");
    // The listener is replaced once drained of its old filter chain: new connections see the bucket.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut a, mut b) = loop {
        let mut a = connect(&buyer);
        let mut b = connect(&buyer);
        let (ra, rb) = (echo(&mut a, "a\n"), echo(&mut b, "b\n"));
        if ra.is_ok() && rb.is_ok() {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "burst 1 never let two connections through: {ra:?} {rb:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(echo(&mut a, "again\n"), Ok("again\n".into()));
    assert_eq!(echo(&mut b, "again\n"), Ok("again\n".into()));
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

/// Latency added by the local rate-limit filters (network and HTTP, limits never reached): GETs at a
/// fixed rate through two sidecars, alternating between bookstore-v1 (limited) and bookstore-v2 (not),
/// so both see the same machine; p50/p99 printed. Measures only; run with
/// `cargo test -p osm-e2e --test upstream_traffic_setting rate_limit_latency -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn upstream_traffic_setting_rate_limit_latency_benchmark() {
    const REQUESTS: usize = 1000;
    const INTERVAL: Duration = Duration::from_millis(5);
    if require_or_skip("utrb").is_none() {
        return;
    }
    let mesh = mesh_with_settings(
        "utrb",
        AdsApi::Delta,
        &["apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: bookstore-v1, namespace: bookstore}
spec:
  host: bookstore-v1.bookstore.svc.cluster.local
  rateLimit:
    local:
      tcp: {connections: 1000000, unit: second}
      http: {requests: 1000000, unit: second}
"],
    );
    let netns = mesh.pod("bookbuyer").pod.netns().to_string();
    let target = |svc: &str| {
        (
            SocketAddr::new(mesh.service_ips[svc], osm_fixtures::BOOKSTORE_PORT),
            format!("{svc}.bookstore:{}", osm_fixtures::BOOKSTORE_PORT),
        )
    };
    let (limited, plain) = (target("bookstore-v1"), target("bookstore-v2"));
    let (on, off) = osm_harness::in_netns(&netns, move || {
        let (mut on, mut off) = (Vec::with_capacity(REQUESTS), Vec::with_capacity(REQUESTS));
        let start = Instant::now();
        for i in 0..2 * (REQUESTS + 50) {
            // Fixed rate: each request at its slot, whatever the previous one took.
            if let Some(wait) = (start + INTERVAL * i as u32).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let (addr, host) = if i % 2 == 0 { &limited } else { &plain };
            let t = Instant::now();
            let stream = TcpStream::connect(addr).expect("connect");
            let r = osm_harness::http_exchange(stream, host, "GET", "/books-bought").expect("a response");
            assert_eq!(r.status, 200);
            // The first 50 of each warm the connection pools up.
            if i >= 100 {
                if i % 2 == 0 { &mut on } else { &mut off }.push(t.elapsed());
            }
        }
        (on, off)
    })
    .expect("in the pod");
    let pct = |mut v: Vec<Duration>| {
        v.sort();
        let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
        (at(0.50), at(0.99))
    };
    let (on, off) = (pct(on), pct(off));
    println!(
        "local rate-limit latency, {REQUESTS} GETs each at {} req/s in all through two sidecars: \
         limited p50 {:?} p99 {:?}; not limited p50 {:?} p99 {:?}",
        1000 / INTERVAL.as_millis(),
        on.0,
        on.1,
        off.0,
        off.1
    );
}
