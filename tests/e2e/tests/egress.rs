//! Egress with real Envoy: a meshed pod reaches a host outside the mesh (a non-meshed namespace on
//! the test bridge serving HTTP, HTTPS with its own certificate, and a server-first TCP protocol)
//! through its sidecar's `outbound-egress-filter-chain` when `traffic.enableEgress` is on; with it off
//! the connection is refused, not hung; switched back on, it works again without restarting anything.
//! The observable outcomes follow upstream OSM's `e2e_egress_test.go` and `e2e_tcp_egress_test.go`.

use std::time::{Duration, Instant};

use osm_e2e::internet::{self, Internet, Outcome};
use osm_e2e::{Mesh, http_server_args, require_or_skip};
use osm_xds::bootstrap::AdsApi;

const INTERNET_HOST: &str = "internet.example";

fn egress_passthrough(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    // SMI mode: bookbuyer may reach bookstore, so its outbound listener exists with egress on or off.
    let (mesh, ips) = Mesh::bookstore(
        prefix,
        api,
        false,
        None,
        &[(
            "internet",
            Some(http_server_args("internet", internet::HTTP_PORT)),
        )],
        |input, _| input.mesh_config.traffic.enable_egress = true,
    )
    .expect("mesh starts");
    let net = Internet::start(&mesh.pod("internet").pod, INTERNET_HOST).expect("internet servers");
    let http_url = format!("http://{}:{}/", ips["internet"], internet::HTTP_PORT);
    let client = &mesh.pod("bookbuyer").pod;
    let pids = mesh.envoy_pids();

    let reachable = |when: &str| {
        let s = mesh.http_get("bookbuyer", &http_url, 5, &[]).unwrap();
        assert_eq!((s.ok, s.errors), (5, 0), "HTTP egress {when}: {s:?}");
        assert_eq!(s.served_by.get("internet"), Some(&5), "{s:?}");
        assert_eq!(
            net.https_get(client, INTERNET_HOST),
            Outcome::Answered("HTTP/1.1 200 OK".into()),
            "HTTPS egress {when}"
        );
        assert_eq!(
            net.server_first(client),
            Outcome::Answered(internet::GREETING.into()),
            "server-first TCP egress {when}"
        );
    };
    reachable("with enableEgress on");

    // The connections went through the sidecar's passthrough chain, under upstream's stat names.
    let stats = mesh.envoy("bookbuyer").admin_get("/stats").unwrap();
    let passthrough_cx = stat(
        &stats,
        "tcp.egress-tcp-proxy.passthrough-outbound.downstream_cx_total",
    );
    assert!(passthrough_cx >= 7, "passthrough connections {passthrough_cx}:\n{stats}");
    assert!(stat(&stats, "cluster.passthrough-outbound.upstream_cx_total") >= 7);

    // Off: every protocol is refused promptly — not answered, not hung.
    mesh.update(|i| i.mesh_config.traffic.enable_egress = false)
        .expect("egress off is ACKed");
    let started = Instant::now();
    let s = mesh.http_get("bookbuyer", &http_url, 3, &[]).unwrap();
    assert_eq!((s.ok, s.errors), (0, 3), "HTTP egress with enableEgress off: {s:?}");
    let https = net.https_get(client, INTERNET_HOST);
    assert!(https.is_refused(), "HTTPS egress with enableEgress off: {https:?}");
    let tcp = net.server_first(client);
    assert!(tcp.is_refused(), "server-first egress with enableEgress off: {tcp:?}");
    // The HTTP client's timeout is 3 s per request: refusals come well before any of them.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusals took {:?}",
        started.elapsed()
    );
    // Mesh traffic is unaffected.
    let s = mesh
        .http_get(
            "bookbuyer",
            "http://bookstore.bookstore:14001/books-bought",
            3,
            &[osm_e2e::BOOKBUYER_HEADER, osm_e2e::USER_AGENT],
        )
        .unwrap();
    assert_eq!(s.ok, 3, "bookbuyer → bookstore with egress off: {s:?}");

    // On again, live.
    mesh.update(|i| i.mesh_config.traffic.enable_egress = true)
        .expect("egress on is ACKed");
    reachable("switched back on");
    assert_eq!(mesh.envoy_pids(), pids, "no sidecar restarted");
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn egress_passthrough_sotw() {
    egress_passthrough("eeg", AdsApi::StateOfTheWorld);
}

#[test]
fn egress_passthrough_delta() {
    egress_passthrough("eegd", AdsApi::Delta);
}
