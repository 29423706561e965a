//! Path security at every port the mesh opens, attacked as from outside it: a pod on the test bridge
//! with no sidecar, no certificate and no mesh membership (`curl --path-as-is` requests, sent with the
//! harness's raw HTTP client), and for SMI routes a meshed client plus a mesh-certificate client that
//! talks to the server sidecar directly.
//!
//! - 15010 (`inbound-prometheus-listener`): only `GET /stats/prometheus` reaches Envoy's admin
//!   interface; dot-segments, encoded slashes, doubled slashes and other methods never do — the sidecar
//!   keeps running, its counters are not reset, `config_dump` is never served.
//! - 15901–15903 (probe listeners): the app sees its probe path and nothing else.
//! - Inbound HTTP routes in SMI mode: a route allowing `pathRegex: /books.*` does not admit
//!   `/books/../admin` and its encoded forms; the app never sees `/admin`; denied paths get 403.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use osm_ca::ServiceIdentity as CaIdentity;
use osm_demo_apps::http::RECORDED_REQUEST;
use osm_e2e::mesh_tls::{MeshTlsTarget, mesh_tls_request};
use osm_e2e::{Mesh, require_or_skip};
use osm_fixtures::MeshBuilder;
use osm_harness::{HttpResponse, http_request};
use osm_model::AppProtocol;
use osm_xds::bootstrap::{AdsApi, Probe};
use osm_xds::names;

const TIMEOUT: Duration = Duration::from_secs(3);

/// `http-server --record-requests` arguments for an app named `name` on `port`.
fn recording_server(name: &str, port: u16) -> Vec<String> {
    let mut args = osm_e2e::http_server_args(name, port);
    args.push("--record-requests".into());
    args
}

/// Every `METHOD PATH` the pod's app recorded so far.
fn recorded(mesh: &Mesh, pod: &str) -> Vec<String> {
    let app = mesh.pod(pod).app.as_ref().expect("the pod runs an app");
    app.stdout()
        .lines()
        .filter_map(|l| l.strip_prefix(RECORDED_REQUEST))
        .map(|l| l.trim().to_string())
        .collect()
}

/// One raw request from `from` (a pod without sidecar) to `addr`; a refused or reset connection is
/// `None`.
fn raw(mesh: &Mesh, from: &str, addr: SocketAddr, method: &str, path: &str) -> Option<HttpResponse> {
    mesh.pod(from)
        .pod
        .in_netns(|| http_request(addr, method, path, TIMEOUT))
        .expect("entering the attacker's namespace")
        .ok()
}

/// A counter from the sidecar's own admin interface (inside its pod).
fn counter(mesh: &Mesh, pod: &str, name: &str) -> u64 {
    let stats = mesh
        .envoy(pod)
        .admin_get(&format!("/stats?filter=^{name}$"))
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in {stats:?}"))
}

/// A mesh of one web pod (service `web.shop`, HTTP 8080, recording app, probes on 15901–15903) and an
/// unmeshed `attacker` pod on the same bridge.
fn web_mesh(prefix: &str, probes: &[Probe]) -> Mesh {
    let (hub, pods) = Mesh::pods_for(prefix, &["web", "attacker"]).unwrap();
    let web_ip = IpAddr::V4(pods["web"].ip());
    let mut b = MeshBuilder::new(true);
    b.service(
        "shop",
        "web",
        Some(IpAddr::V4(Ipv4Addr::new(10, 96, 9, 1))),
        &[(8080, 8080, AppProtocol::Http)],
        &[("app", "web")],
    );
    b.pod("shop", "web", "web", &[("app", "web")], Some(web_ip), Some("web"));
    let apps = BTreeMap::from([("web".to_string(), recording_server("web-app", 8080))]);
    Mesh::start_with_probes(hub, pods, b.build(), AdsApi::StateOfTheWorld, &apps, probes)
        .expect("mesh starts")
}

#[test]
fn path_security_metrics_port_reaches_only_prometheus_stats() {
    if require_or_skip("path_security_metrics_port_reaches_only_prometheus_stats").is_none() {
        return;
    }
    let mut mesh = web_mesh("e2psm", &[]);
    let web_ip = IpAddr::V4(mesh.pod("web").pod.ip());
    let metrics = SocketAddr::new(web_ip, names::PROMETHEUS_PORT);
    // A counter `reset_counters` would zero (it was counted while the sidecar started).
    const CREATED: &str = "listener_manager.listener_create_success";
    let created = counter(&mesh, "web", CREATED);
    assert!(created > 0, "{CREATED} is {created}");

    let attacks = [
        ("GET", "/stats/prometheus/../../config_dump"),
        ("POST", "/stats/prometheus/../../reset_counters"),
        ("POST", "/stats/prometheus/../../quitquitquit"),
        ("POST", "/stats/prometheus/../../../quitquitquit"),
        ("GET", "/stats/prometheus/..%2F..%2Fconfig_dump"),
        ("GET", "/stats/prometheus/%2e%2e/%2e%2e/config_dump"),
        ("GET", "//stats/prometheus/../../server_info"),
        ("GET", "/stats/prometheus%2F.."),
        ("GET", "/stats/prometheus%5C..%5Cconfig_dump"),
        ("GET", "/stats/prometheusX"),
        ("GET", "/stats/prometheus/x"),
        ("GET", "/config_dump"),
        ("POST", "/quitquitquit"),
        ("POST", "/stats/prometheus"),
        ("PUT", "/stats/prometheus"),
        ("DELETE", "/stats/prometheus"),
    ];
    for (method, path) in attacks {
        let resp = raw(&mesh, "attacker", metrics, method, path)
            .unwrap_or_else(|| panic!("{method} {path}: the metrics listener must answer, not drop"));
        assert!(
            resp.status == 404 || resp.status == 400,
            "{method} {path} must be refused by Envoy (404/400), got {}: {}",
            resp.status,
            &resp.body[..resp.body.len().min(300)]
        );
        assert!(
            !resp.body.contains("\"configs\"") && !resp.body.contains("envoy_") && resp.body.trim() != "OK",
            "{method} {path} reached the admin interface: {}",
            &resp.body[..resp.body.len().min(300)]
        );
    }

    // The scrape itself works, with a query string too.
    for path in ["/stats/prometheus", "/stats/prometheus?usedonly"] {
        let resp = raw(&mesh, "attacker", metrics, "GET", path).expect("metrics answer");
        assert_eq!(resp.status, 200, "GET {path}: {resp:?}");
        assert!(resp.body.contains("envoy_server_live"), "GET {path}: no metrics");
    }

    // The admin port itself is not reachable from outside the pod.
    let admin = SocketAddr::new(web_ip, names::ADMIN_PORT);
    for path in ["/ready", "/config_dump"] {
        let resp = raw(&mesh, "attacker", admin, "GET", path);
        assert!(
            resp.is_none(),
            "admin port {admin} answered from outside the pod: {resp:?}"
        );
    }

    // The sidecar kept running and its counters were not reset.
    let after = counter(&mesh, "web", CREATED);
    assert!(
        after >= created,
        "{CREATED} went from {created} to {after}: counters were reset"
    );
    let envoy = mesh.pods.get_mut("web").unwrap().envoy.as_mut().unwrap();
    assert!(
        envoy.process().try_wait().unwrap().is_none(),
        "the sidecar exited\n{}",
        envoy.log_tail()
    );
    assert_eq!(envoy.admin_get("/ready").unwrap().trim(), "LIVE");
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn path_security_probe_ports_forward_only_the_probe_path() {
    if require_or_skip("path_security_probe_ports_forward_only_the_probe_path").is_none() {
        return;
    }
    let probes = [
        Probe::http("liveness", names::LIVENESS_PROBE_PORT, "/healthz", 8080),
        Probe::http("readiness", names::READINESS_PROBE_PORT, "/ready?full=1", 8080),
        Probe::http("startup", names::STARTUP_PROBE_PORT, "/started", 8080),
    ];
    let mesh = web_mesh("e2psp", &probes);
    let web_ip = IpAddr::V4(mesh.pod("web").pod.ip());

    for p in &probes {
        let port = SocketAddr::new(web_ip, p.listener_port);
        let probe = p.kubelet_path.clone();
        let attacks = [
            ("GET", format!("{probe}/../secret")),
            ("GET", format!("{probe}/../../admin")),
            ("GET", format!("{probe}X")),
            ("GET", format!("{probe}/x")),
            ("GET", format!("{probe}/")),
            ("GET", format!("{probe}?x=/../admin")),
            ("GET", format!("{probe}/..%2Fsecret")),
            ("GET", format!("{probe}%2F..%2Fsecret")),
            ("GET", format!("{probe}/%2e%2e/secret")),
            ("GET", "/secret".to_string()),
            ("GET", "/".to_string()),
            ("POST", probe.clone()),
            ("PUT", probe.clone()),
            ("DELETE", probe.clone()),
        ];
        for (method, path) in &attacks {
            let resp = raw(&mesh, "attacker", port, method, path)
                .unwrap_or_else(|| panic!("{method} {path}: the probe listener must answer, not drop"));
            assert!(
                resp.status == 404 || resp.status == 400,
                "{method} {path} on {port} must be refused by Envoy, got {}: {}",
                resp.status,
                resp.body
            );
        }
        // The real probe still works (the kubelet's request, as the rewritten spec states it).
        let resp = raw(&mesh, "attacker", port, "GET", &probe).expect("probe answers");
        assert_eq!(resp.status, 200, "GET {probe} on {port}: {resp:?}");
        assert_eq!(resp.header("x-served-by"), Some("web-app"), "{resp:?}");
    }

    // The app saw its three probe paths (exactly as the pod spec named them) and nothing else.
    let seen = recorded(&mesh, "web");
    let expected: Vec<String> = probes.iter().map(|p| format!("GET {}", p.path)).collect();
    assert_eq!(seen, expected, "paths the app received");
}

/// The client's HTTPRouteGroup allows only `pathRegex: /books.*`.
const BOOKS_ONLY: &str = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: books-only, namespace: shop}
spec:
  matches:
  - name: books
    pathRegex: /books.*
    methods: ["GET"]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: client-to-books, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: books, namespace: shop}
  rules:
  - kind: HTTPRouteGroup
    name: books-only
    matches: [books]
  sources:
  - {kind: ServiceAccount, name: client, namespace: shop}
"#;

#[test]
fn path_security_smi_routes_judge_the_normalised_path() {
    if require_or_skip("path_security_smi_routes_judge_the_normalised_path").is_none() {
        return;
    }
    let (hub, pods) = Mesh::pods_for("e2psr", &["books", "client", "attacker"]).unwrap();
    let books_ip = IpAddr::V4(pods["books"].ip());
    let client_ip = IpAddr::V4(pods["client"].ip());
    let mut b = MeshBuilder::new(false);
    b.service(
        "shop",
        "books",
        Some(IpAddr::V4(Ipv4Addr::new(10, 96, 9, 2))),
        &[(8080, 8080, AppProtocol::Http)],
        &[("app", "books")],
    );
    b.pod(
        "shop",
        "books",
        "books",
        &[("app", "books")],
        Some(books_ip),
        Some("books"),
    );
    b.pod(
        "shop",
        "client",
        "client",
        &[("app", "client")],
        Some(client_ip),
        Some("client"),
    );
    b.policies_yaml(BOOKS_ONLY).expect("policy parses");
    let apps = BTreeMap::from([("books".to_string(), recording_server("books-app", 8080))]);
    let mesh = Mesh::start(hub, pods, b.build(), AdsApi::StateOfTheWorld, &apps).expect("mesh starts");

    // Through the client's own sidecar, as the app would send them.
    let get = |path: &str| {
        let url = format!("http://books.shop:8080{path}");
        mesh.http_get("client", &url, 1, &[]).unwrap()
    };
    let status_of = |path: &str| {
        let s = get(path);
        assert_eq!((s.sent, s.errors), (1, 0), "{path}: {s:?}");
        s.status.keys().next().cloned().unwrap_or_default()
    };
    assert_eq!(status_of("/books/1"), "200");
    for (path, expected) in [
        ("/books/../admin", "403"),
        ("/books/./../admin", "403"),
        ("/books/%2e%2e/admin", "403"),
        ("/books/%2E%2E/admin", "403"),
        ("/books/..%2Fadmin", "400"),
        ("/books%2F..%2Fadmin", "400"),
        ("/books/..%5Cadmin", "400"),
        ("//admin", "403"),
        ("/./admin", "403"),
        ("/admin", "403"),
    ] {
        assert_eq!(status_of(path), expected, "client → books {path}");
    }

    // Straight to the server's sidecar with the client's mesh identity: the server judges the path on
    // its own, whatever the client side did.
    let ca = mesh.cp.ca();
    let client_cert = ca
        .issue_service_cert(&CaIdentity::new("client", "shop"), Duration::from_secs(600))
        .unwrap();
    let principal = CaIdentity::new("books", "shop").principal(ca.trust_domain());
    let sni = osm_model::service_sni(&osm_model::ServiceRef::new("shop", "books"));
    let target = MeshTlsTarget {
        addr: SocketAddr::new(books_ip, 8080),
        sni: &sni,
        server_principal: &principal,
    };
    let direct = |method: &str, path: &str| {
        mesh_tls_request(
            &mesh.pod("attacker").pod,
            &target,
            &client_cert,
            ca.root_cert_pem(),
            method,
            path,
        )
        .unwrap_or_else(|e| panic!("{method} {path} over mTLS: {e:#}"))
    };
    assert_eq!(direct("GET", "/books/2").status, 200);
    for (path, expected) in [
        ("/books/../admin", 403),
        ("/books/%2e%2e/admin", 403),
        ("/books/..%2Fadmin", 400),
        ("/books%2F..%2Fadmin", 400),
        ("//admin", 403),
        ("/./admin", 403),
        ("/books/../../admin", 403),
    ] {
        let resp = direct("GET", path);
        assert_eq!(resp.status, expected, "mTLS {path}: {resp:?}");
    }
    // Another identity is refused on the allowed path too.
    let other = ca
        .issue_service_cert(&CaIdentity::new("other", "shop"), Duration::from_secs(600))
        .unwrap();
    let resp = mesh_tls_request(
        &mesh.pod("attacker").pod,
        &target,
        &other,
        ca.root_cert_pem(),
        "GET",
        "/books/3",
    )
    .unwrap();
    assert_eq!(resp.status, 403, "another identity on an allowed path: {resp:?}");

    assert_eq!(
        recorded(&mesh, "books"),
        vec!["GET /books/1".to_string(), "GET /books/2".to_string()],
        "the app received only the allowed requests"
    );
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}
