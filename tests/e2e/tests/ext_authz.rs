//! MeshConfig `traffic.inboundExternalAuthorization` with real Envoy sidecars and a real gRPC
//! authorization service (`osm-demo-app ext-authz-server`, outside the mesh, reached by host name):
//! the server's sidecar asks it about every inbound request — allowed → 200, denied → 403 with the
//! service's body, and the service saw the path and the caller's mesh principal; a service that is down
//! or slower than the timeout → 403, or the request goes through with `failureModeAllow: true`;
//! disabled → the filter and its cluster leave the config live.
//!
//! A connection between two sidecars keeps the filter chain it was accepted by, so each step after a
//! change of the filter itself uses a client/server pair that has not talked yet.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use osm_api::config::ExternalAuthzSpec;
use osm_demo_apps::ext_authz::{CheckRecord, DENIED_BODY};
use osm_e2e::{Mesh, require_or_skip};
use osm_harness::HttpResponse;
use osm_xds::bootstrap::AdsApi;

/// The authorization service as a cluster would name it, resolved through each pod's /etc/hosts.
const AUTHZ_HOST: &str = "ext-authz.auth.svc.cluster.local";
/// A second one that answers after [`SLOW_MS`], longer than the timeout.
const SLOW_HOST: &str = "ext-authz-slow.auth.svc.cluster.local";
const AUTHZ_PORT: u16 = 9002;
const SLOW_MS: u64 = 3000;
const FILTER: &str = "envoy.filters.http.ext_authz";

fn spec(host: &str, failure_mode_allow: bool) -> ExternalAuthzSpec {
    ExternalAuthzSpec {
        enable: true,
        address: Some(host.to_string()),
        port: Some(AUTHZ_PORT),
        failure_mode_allow,
        ..Default::default()
    }
}

fn authz_app(extra: &[&str]) -> Vec<String> {
    ["ext-authz-server", "--port", &AUTHZ_PORT.to_string()]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// The bookstore demo (permissive) with the two authorization services as pods without sidecars,
/// external authorization enabled from the start.
fn mesh_with_authz(
    prefix: &str,
    api: AdsApi,
    initial: ExternalAuthzSpec,
) -> (Mesh, BTreeMap<String, IpAddr>) {
    let allow_deny = authz_app(&["--deny-header", "x-deny", "--deny-path-prefix", "/denied"]);
    let slow = authz_app(&["--delay-ms", &SLOW_MS.to_string()]);
    let (mut mesh, ips) = Mesh::bookstore_with_hosts(
        prefix,
        api,
        true,
        None,
        &[("ext-authz", Some(allow_deny)), ("ext-authz-slow", Some(slow))],
        |input, _| input.mesh_config.traffic.inbound_external_authorization = initial,
        |ips| {
            vec![
                (ips["ext-authz"], vec![AUTHZ_HOST.to_string()]),
                (ips["ext-authz-slow"], vec![SLOW_HOST.to_string()]),
            ]
        },
    )
    .expect("mesh starts");
    for pod in ["ext-authz", "ext-authz-slow"] {
        let app = mesh
            .pods
            .get_mut(pod)
            .and_then(|p| p.app.as_mut())
            .expect("the service");
        app.wait_for_output("listening on", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{pod} does not listen: {e}\n{}", app.log_tail(20)));
    }
    (mesh, ips)
}

/// GET `path` from `client`'s pod to `server`'s Service (through both sidecars).
fn get(mesh: &Mesh, client: &str, server: &str, path: &str) -> HttpResponse {
    let netns = mesh.pod(client).pod.netns().to_string();
    let addr = SocketAddr::new(mesh.service_ips[server], osm_fixtures::BOOKSTORE_PORT);
    let host = format!(
        "{server}.{}:{}",
        mesh.pod(server).namespace,
        osm_fixtures::BOOKSTORE_PORT
    );
    osm_e2e::nginx::http_get_host(&netns, addr, &host, path).expect("an answer")
}

/// What an authorization service pod has answered so far.
fn records(mesh: &Mesh, pod: &str) -> Vec<CheckRecord> {
    CheckRecord::parse_all(&mesh.pod(pod).app.as_ref().expect("the service").stdout())
}

/// Polls `done` every 20 ms until it holds, failing with `what()` after 20 s.
fn wait_until(what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {}", what());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `inbound-listener` entry of a sidecar's dynamic listeners (active and warming states).
fn inbound_listener(mesh: &Mesh, pod: &str) -> serde_json::Value {
    let dump = mesh
        .envoy(pod)
        .admin_get("/config_dump?resource=dynamic_listeners")
        .expect("config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("config_dump JSON");
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["name"] == "inbound-listener")
        .cloned()
        .unwrap_or_default()
}

/// Waits until `pod`'s sidecar serves an inbound listener with the ext_authz filter whose
/// `failure_mode_allow` is `want` (`None`: no filter) and nothing is warming, and its `/clusters` lists
/// the service at `endpoint` (`None`: no such cluster).
fn wait_serving(mesh: &Mesh, pod: &str, want: Option<bool>, endpoint: Option<SocketAddr>) {
    let cluster = osm_xds::names::EXT_AUTHZ_CLUSTER;
    let clusters = || mesh.envoy(pod).admin_get("/clusters").unwrap_or_default();
    wait_until(
        || format!("{pod}: inbound listener {}", inbound_listener(mesh, pod)),
        || {
            let l = inbound_listener(mesh, pod);
            let active = l["active_state"].to_string();
            l["warming_state"].is_null()
                && match want {
                    // The dump leaves out fields at their default (false).
                    Some(allow) => {
                        active.contains(FILTER) && active.contains("\"failure_mode_allow\":true") == allow
                    }
                    None => !active.contains(FILTER) && active.contains("inbound_"),
                }
        },
    );
    wait_until(
        || format!("{pod}: /clusters\n{}", clusters()),
        || {
            let c = clusters();
            match endpoint {
                Some(ep) => c.contains(&format!("{cluster}::{ep}::")),
                None => !c.contains(&format!("{cluster}::")),
            }
        },
    );
}

fn ext_authz(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let (mut mesh, ips) = mesh_with_authz(prefix, api, spec(AUTHZ_HOST, false));
    let authz = SocketAddr::new(ips["ext-authz"], AUTHZ_PORT);
    let slow = SocketAddr::new(ips["ext-authz-slow"], AUTHZ_PORT);
    wait_serving(&mesh, "bookstore-v1", Some(false), Some(authz));

    // Allowed, and denied by path: the service's own 403.
    let ok = get(&mesh, "bookbuyer", "bookstore-v1", "/books-bought");
    assert_eq!(ok.status, 200, "{ok:?}");
    let denied = get(&mesh, "bookbuyer", "bookstore-v1", "/denied/books");
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (403, DENIED_BODY),
        "{denied:?}"
    );
    // Denied by header.
    let by_header = mesh
        .http_get(
            "bookbuyer",
            "http://bookstore-v1.bookstore:14001/books",
            1,
            &["x-deny: yes"],
        )
        .expect("the client runs");
    assert_eq!(by_header.status.get("403"), Some(&1), "{by_header:?}");
    // The service saw each request's path and the caller's mesh identity, from its certificate.
    let seen = records(&mesh, "ext-authz");
    let principal = "bookbuyer.bookbuyer.cluster.local";
    for (path, allowed) in [
        ("/books-bought", true),
        ("/denied/books", false),
        ("/books", false),
    ] {
        assert!(
            seen.iter().any(|r| r.path == path
                && r.allowed == allowed
                && r.principal == principal
                && r.peer_certificate),
            "no check of {path} by {principal}: {seen:?}"
        );
    }
    // Counted under the configured stat prefix, per connection manager.
    let stats = mesh.envoy("bookstore-v1").admin_get("/stats").expect("stats");
    let denied = osm_e2e::stat_value(
        &stats,
        "http.mesh-http-conn-manager.rds-inbound.14001.ext_authz.inboundExtAuthz.denied",
    );
    assert_eq!(
        denied,
        2,
        "{}",
        stats
            .lines()
            .filter(|l| l.contains("ext_authz"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The service is down: refused.
    let app = mesh
        .pods
        .get_mut("ext-authz")
        .and_then(|p| p.app.as_mut())
        .expect("the service");
    app.terminate(Duration::from_secs(5)).expect("the service stops");
    let down = get(&mesh, "bookbuyer", "bookstore-v1", "/books-bought");
    assert_eq!(down.status, 403, "service down: {down:?}");

    // Slower than the timeout (1 s): refused, although the service was asked and would have allowed it.
    mesh.update(|i| i.mesh_config.traffic.inbound_external_authorization = spec(SLOW_HOST, false))
        .expect("the change is ACKed");
    wait_serving(&mesh, "bookstore-v1", Some(false), Some(slow));
    let timed_out = get(&mesh, "bookbuyer", "bookstore-v1", "/slow");
    assert_eq!(timed_out.status, 403, "too slow: {timed_out:?}");
    wait_until(
        || {
            format!(
                "the slow service never saw /slow: {:?}",
                records(&mesh, "ext-authz-slow")
            )
        },
        || {
            records(&mesh, "ext-authz-slow")
                .iter()
                .any(|r| r.path == "/slow" && r.allowed)
        },
    );

    // failureModeAllow: down or slow, the request goes through (a pair that has not talked yet, so
    // its connection gets the changed filter chain).
    mesh.update(|i| i.mesh_config.traffic.inbound_external_authorization = spec(AUTHZ_HOST, true))
        .expect("the change is ACKed");
    wait_serving(&mesh, "bookstore-v2", Some(true), Some(authz));
    let allowed = get(&mesh, "bookthief", "bookstore-v2", "/books-bought");
    assert_eq!(
        allowed.status, 200,
        "failureModeAllow with the service down: {allowed:?}"
    );

    // Disabled: the filter and the cluster leave every sidecar's config, live.
    mesh.update(|i| i.mesh_config.traffic.inbound_external_authorization = ExternalAuthzSpec::default())
        .expect("the change is ACKed");
    for pod in ["bookstore-v1", "bookstore-v2", "bookwarehouse"] {
        wait_serving(&mesh, pod, None, None);
    }
    let unchecked = mesh
        .http_get(
            "bookwarehouse",
            "http://bookstore-v1.bookstore:14001/denied/books",
            1,
            &["x-deny: yes"],
        )
        .expect("the client runs");
    assert_eq!(unchecked.status.get("200"), Some(&1), "{unchecked:?}");
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn ext_authz_sotw() {
    ext_authz("eaz", AdsApi::StateOfTheWorld);
}

#[test]
fn ext_authz_delta() {
    ext_authz("eazd", AdsApi::Delta);
}

/// Latency added by ext_authz: `REQUESTS` GETs at a fixed rate through two sidecars, with the filter
/// (an allowing service) and then without it (a pair that has not talked yet), p50/p99 printed.
/// Measures only; run with `cargo test -p osm-e2e --test ext_authz -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn ext_authz_latency_benchmark() {
    const REQUESTS: usize = 1000;
    const INTERVAL: Duration = Duration::from_millis(5);
    if require_or_skip("eazb").is_none() {
        return;
    }
    let (mesh, ips) = mesh_with_authz("eazb", AdsApi::Delta, spec(AUTHZ_HOST, false));
    let authz = SocketAddr::new(ips["ext-authz"], AUTHZ_PORT);
    wait_serving(&mesh, "bookstore-v1", Some(false), Some(authz));
    let measure = |client: &str, server: &str| -> Vec<Duration> {
        let netns = mesh.pod(client).pod.netns().to_string();
        let addr = SocketAddr::new(mesh.service_ips[server], osm_fixtures::BOOKSTORE_PORT);
        let host = format!("{server}.bookstore:{}", osm_fixtures::BOOKSTORE_PORT);
        osm_harness::in_netns(&netns, move || {
            let mut took = Vec::with_capacity(REQUESTS);
            let start = Instant::now();
            for i in 0..REQUESTS + 50 {
                // Fixed rate: each request at its slot, whatever the previous one took.
                if let Some(wait) = (start + INTERVAL * i as u32).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let t = Instant::now();
                let stream = std::net::TcpStream::connect(addr).expect("connect");
                let r =
                    osm_harness::http_exchange(stream, &host, "GET", "/books-bought").expect("a response");
                assert_eq!(r.status, 200);
                // The first 50 warm the connection pools up.
                if i >= 50 {
                    took.push(t.elapsed());
                }
            }
            took
        })
        .expect("in the pod")
    };
    let pct = |mut v: Vec<Duration>| {
        v.sort();
        let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
        (at(0.50), at(0.99))
    };
    let on = pct(measure("bookbuyer", "bookstore-v1"));
    mesh.update(|i| i.mesh_config.traffic.inbound_external_authorization = ExternalAuthzSpec::default())
        .expect("the change is ACKed");
    wait_serving(&mesh, "bookstore-v2", None, None);
    let off = pct(measure("bookthief", "bookstore-v2"));
    println!(
        "ext_authz latency, {REQUESTS} GETs at {} req/s through two sidecars: \
         on p50 {:?} p99 {:?}; off p50 {:?} p99 {:?}",
        1000 / INTERVAL.as_millis(),
        on.0,
        on.1,
        off.0,
        off.1
    );
}
