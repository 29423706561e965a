//! The stat names a real Envoy emits under our config follow upstream OSM's naming rules, so dashboards
//! and `osm proxy get stats | grep` habits keep working: after one HTTP request and one TCP connection
//! through two sidecars, each name of the checked-in list below has counted it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use osm_e2e::{Mesh, require_or_skip, stat_value};
use osm_xds::bootstrap::AdsApi;

use osm_e2e::{TCP_ECHO_IP as ECHO_IP, TCP_ECHO_PORT as ECHO_PORT};

/// (pod, stat) per upstream's rules: `mesh-http-conn-manager.<route config>` for HTTP connection
/// managers, `outbound-mesh-tcp-proxy_<filter chain>` and `inbound-mesh-tcp-proxy.<local cluster>` for
/// TCP proxies, `<ns>/<svc>|<port>` and `…|local` clusters, `prometheus-http-conn-manager` on 15010.
const UPSTREAM_NAMES: &[(&str, &str)] = &[
    (
        "bookbuyer",
        "http.mesh-http-conn-manager.rds-outbound.14001.downstream_rq_completed",
    ),
    (
        "bookbuyer",
        "cluster.bookstore/bookstore-v1|14001.upstream_rq_completed",
    ),
    (
        "bookstore-v1",
        "http.mesh-http-conn-manager.rds-inbound.14001.downstream_rq_completed",
    ),
    // The local cluster is named by the first (sorted) service on the port: `bookstore`, the root.
    (
        "bookstore-v1",
        "cluster.bookstore/bookstore|14001|local.upstream_rq_completed",
    ),
    (
        "bookbuyer",
        "tcp.outbound-mesh-tcp-proxy_outbound_tcpecho/tcp-echo_7070_tcp.downstream_cx_total",
    ),
    (
        "tcp-echo",
        "tcp.inbound-mesh-tcp-proxy.tcpecho/tcp-echo|7070|local.downstream_cx_total",
    ),
    (
        "bookstore-v1",
        "http.prometheus-http-conn-manager.downstream_rq_completed",
    ),
];

fn stat_names(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let (mesh, ips) = Mesh::bookstore(
        prefix,
        api,
        true,
        None,
        &[("tcp-echo", Some(osm_e2e::tcp_echo_args()))],
        osm_e2e::add_tcp_echo,
    )
    .expect("mesh starts");

    let s = mesh
        .http_get(
            "bookbuyer",
            "http://bookstore-v1.bookstore:14001/books-bought",
            1,
            &[],
        )
        .expect("the client runs");
    assert_eq!(s.ok, 1, "{s:?}");
    let buyer = mesh.pod("bookbuyer").pod.netns().to_string();
    let echoed = osm_harness::in_netns(&buyer, || -> std::io::Result<String> {
        let mut c = TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(ECHO_IP), ECHO_PORT),
            Duration::from_secs(3),
        )?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        c.write_all(b"ping\n")?;
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })
    .expect("in the pod")
    .expect("an echo");
    assert_eq!(echoed, "ping\n");
    // A scrape, as Prometheus does, from outside the pod.
    let scrape = osm_e2e::nginx::http_get(
        &buyer,
        SocketAddr::new(ips["bookstore-v1"], 15010),
        "/stats/prometheus",
    )
    .expect("a scrape");
    assert_eq!(scrape.status, 200);

    let mut stats: BTreeMap<&str, String> = BTreeMap::new();
    let mut missing = Vec::new();
    for (pod, name) in UPSTREAM_NAMES {
        let text = stats
            .entry(pod)
            .or_insert_with(|| mesh.envoy(pod).admin_get("/stats").unwrap());
        if stat_value(text, name) == 0 {
            missing.push(format!("{pod}: {name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "stats that did not count under upstream's names: {missing:#?}"
    );
}

#[test]
fn stat_names_follow_upstream_sotw() {
    stat_names("e2sns", AdsApi::StateOfTheWorld);
}

#[test]
fn stat_names_follow_upstream_delta() {
    stat_names("e2snd", AdsApi::Delta);
}
