//! Access logs with real sidecars: one request through two sidecars leaves one JSON line on each
//! (upstream OSM's keys), with the same request id, the status the app answered and each side's
//! upstream cluster; MeshConfig `observability.enableAccessLog: false` silences them live, and turning
//! it back on brings them back.
//!
//! Envoy applies a listener change to new connections, while a pooled connection between two sidecars
//! stays on the filter chain it was accepted by until it drains. So each phase sends its requests
//! between sidecars that have not talked to each other yet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use osm_e2e::{Mesh, require_or_skip};
use osm_xds::bootstrap::AdsApi;
use serde_json::Value;

const STATUS: u16 = 418;

/// The JSON objects a sidecar logged so far (its stdout holds nothing else).
fn log_lines(mesh: &Mesh, pod: &str) -> Vec<BTreeMap<String, Value>> {
    mesh.envoy(pod)
        .stdout()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{pod}: not a JSON object ({e}): {l}")))
        .collect()
}

/// Waits until `pod`'s sidecar has logged `count` lines (Envoy flushes its access log about once a
/// second), then returns them.
fn wait_lines(mesh: &Mesh, pod: &str, count: usize) -> Vec<BTreeMap<String, Value>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = log_lines(mesh, pod);
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{pod}: {} of {count} access log lines: {lines:?}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every listener of `pod`'s sidecar that Envoy serves has access logs (`want`) or none,
/// with nothing warming: from then on new connections get that config.
fn wait_logging(mesh: &Mesh, pod: &str, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dump = mesh
            .envoy(pod)
            .admin_get("/config_dump?resource=dynamic_listeners")
            .expect("config_dump");
        let dump: Value = serde_json::from_str(&dump).expect("config_dump JSON");
        let listeners: Vec<&Value> = dump["configs"].as_array().into_iter().flatten().collect();
        let settled = !listeners.is_empty()
            && listeners.iter().all(|l| {
                l["warming_state"].is_null()
                    && l["active_state"].to_string().contains("StdoutAccessLog") == want
            });
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pod}: listeners not logging={want}: {dump}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One GET from `client` to `server`'s service; the app answers `STATUS`.
fn request(mesh: &Mesh, client: &str, server: &str) {
    let ns = mesh.pod(server).namespace.clone();
    let url = format!("http://{server}.{ns}:14001/status/{STATUS}");
    let s = mesh.http_get(client, &url, 1, &[]).expect("client runs");
    assert_eq!(
        s.status.get(&STATUS.to_string()),
        Some(&1),
        "{client} → {server}: {s:?}"
    );
}

fn access_log(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let (mesh, _) = Mesh::bookstore(prefix, api, true, None, &[], |_, _| {}).expect("mesh starts");

    // On by default: bookbuyer → bookstore-v1, one line on each sidecar.
    request(&mesh, "bookbuyer", "bookstore-v1");
    let client = wait_lines(&mesh, "bookbuyer", 1);
    let server = wait_lines(&mesh, "bookstore-v1", 1);
    assert_eq!((client.len(), server.len()), (1, 1), "{client:?}\n{server:?}");
    let (client, server) = (&client[0], &server[0]);
    let keys: Vec<&str> = osm_xds::access_log::FIELDS.iter().map(|(k, _)| *k).collect();
    for line in [client, server] {
        assert_eq!(
            line.keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            keys.iter().copied().collect(),
            "{line:?}"
        );
        assert_eq!(line["method"], "GET", "{line:?}");
        assert_eq!(line["path"], format!("/status/{STATUS}"), "{line:?}");
        assert_eq!(line["protocol"], "HTTP/1.1", "{line:?}");
        assert_eq!(line["response_code"], STATUS, "{line:?}");
        assert_eq!(line["response_flags"], "-", "{line:?}");
    }
    let request_id = client["request_id"].as_str().expect("a request id");
    assert!(
        request_id.len() >= 32,
        "no request id made up by the client sidecar: {client:?}"
    );
    assert_eq!(server["request_id"], request_id, "{server:?}");
    assert_eq!(
        client["upstream_cluster"], "bookstore/bookstore-v1|14001",
        "{client:?}"
    );
    // The pod's local cluster is named by the first of the Services it backs (bookstore, bookstore-v1).
    assert_eq!(
        server["upstream_cluster"], "bookstore/bookstore|14001|local",
        "{server:?}"
    );
    // The server's side came in over the mesh's mTLS chain, by the service's SNI, to the local app.
    assert_eq!(
        server["requested_server_name"], "bookstore-v1.bookstore.svc.cluster.local",
        "{server:?}"
    );
    assert_eq!(server["upstream_host"], "127.0.0.1:14001", "{server:?}");

    // Off, live: once every sidecar ACKed and serves listeners without logs, bookthief → bookwarehouse
    // (a pair that never talked) leaves nothing.
    mesh.update(|input| input.mesh_config.observability.enable_access_log = false)
        .expect("every sidecar ACKs");
    for pod in ["bookthief", "bookwarehouse"] {
        wait_logging(&mesh, pod, false);
    }
    request(&mesh, "bookthief", "bookwarehouse");

    // On again: bookthief → bookstore-v2 and bookbuyer → bookwarehouse (new pairs too) are logged. Their
    // lines come after anything the request above could have logged, so each of bookthief and
    // bookwarehouse holding exactly one line shows that request logged nothing.
    mesh.update(|input| input.mesh_config.observability.enable_access_log = true)
        .expect("every sidecar ACKs");
    for pod in ["bookthief", "bookwarehouse", "bookstore-v2", "bookbuyer"] {
        wait_logging(&mesh, pod, true);
    }
    request(&mesh, "bookthief", "bookstore-v2");
    request(&mesh, "bookbuyer", "bookwarehouse");
    let thief = wait_lines(&mesh, "bookthief", 1);
    let warehouse = wait_lines(&mesh, "bookwarehouse", 1);
    assert_eq!(thief.len(), 1, "bookthief logged with access logs off: {thief:?}");
    assert_eq!(
        thief[0]["upstream_cluster"], "bookstore/bookstore-v2|14001",
        "{thief:?}"
    );
    assert_eq!(
        warehouse.len(),
        1,
        "bookwarehouse logged with access logs off: {warehouse:?}"
    );
    assert_eq!(
        warehouse[0]["upstream_cluster"], "bookwarehouse/bookwarehouse|14001|local",
        "{warehouse:?}"
    );
    let buyer = wait_lines(&mesh, "bookbuyer", 2);
    assert_eq!(
        warehouse[0]["request_id"], buyer[1]["request_id"],
        "{buyer:?}\n{warehouse:?}"
    );
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn access_log_sotw() {
    access_log("e2al", AdsApi::StateOfTheWorld);
}

#[test]
fn access_log_delta() {
    access_log("e2ald", AdsApi::Delta);
}
