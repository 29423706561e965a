//! Permissive mode with real Envoy: plain HTTP from an app reaches another pod's app through both
//! sidecars, and the hop between them is mTLS with the expected identities.

use osm_e2e::{BOOKBUYER_HEADER, Mesh, USER_AGENT, require_or_skip, stat_value};
use osm_xds::bootstrap::AdsApi;

fn permissive(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    // "outsider" has no sidecar and no interception: a client without a mesh certificate.
    let (mesh, ips) =
        Mesh::bookstore(prefix, api, true, None, &[("outsider", None)], |_, _| {}).expect("mesh starts");

    // The app in bookbuyer calls the service by name over plain HTTP; both Envoys are in the path.
    let s = mesh
        .http_get(
            "bookbuyer",
            "http://bookwarehouse.bookwarehouse:14001/restock-books",
            20,
            &[BOOKBUYER_HEADER, USER_AGENT],
        )
        .unwrap();
    assert_eq!(
        (s.ok, s.errors),
        (20, 0),
        "bookbuyer → bookwarehouse in permissive mode: {s:?}"
    );
    assert_eq!(s.served_by.get("bookwarehouse"), Some(&20));

    // Permissive mode lets even bookthief through.
    let s = mesh
        .http_get(
            "bookthief",
            "http://bookstore.bookstore:14001/books-bought",
            10,
            &[],
        )
        .unwrap();
    assert_eq!(s.ok, 10, "bookthief → bookstore in permissive mode: {s:?}");

    // A client without a mesh certificate, straight at bookwarehouse's pod port (redirected to the
    // inbound listener), is refused: the inbound filter chains only accept TLS with ALPN osm.
    let url = format!("http://{}:14001/restock-books", ips["bookwarehouse"]);
    let s = mesh.http_get("outsider", &url, 5, &[]).unwrap();
    assert_eq!(
        s.ok, 0,
        "plain-text client reached the app behind the sidecar: {s:?}"
    );

    // Envoy's own stats show the mTLS handshakes on both ends of the bookbuyer → bookwarehouse hop
    // (Envoy pools the upstream connection, so one handshake may carry all requests), and every
    // upstream connection of that cluster was TLS.
    let client_stats = mesh
        .envoy("bookbuyer")
        .admin_get("/stats?filter=bookwarehouse")
        .unwrap();
    let handshakes = stat_value(
        &client_stats,
        "cluster.bookwarehouse/bookwarehouse|14001.ssl.handshake",
    );
    let connections = stat_value(
        &client_stats,
        "cluster.bookwarehouse/bookwarehouse|14001.upstream_cx_total",
    );
    assert!(handshakes >= 1 && handshakes == connections, "{client_stats}");
    let server_stats = mesh
        .envoy("bookwarehouse")
        .admin_get("/stats?filter=15003")
        .unwrap();
    assert!(
        stat_value(&server_stats, "listener.0.0.0.0_15003.ssl.handshake") >= 1,
        "{server_stats}"
    );
    // The outsider's plain-text connections matched no filter chain.
    assert!(
        stat_value(&server_stats, "listener.0.0.0.0_15003.no_filter_chain_match") >= 5,
        "{server_stats}"
    );
    // Envoy's JSON access log on bookwarehouse has one line per request, each come in over the
    // mesh's mTLS chain (the one matching the service's SNI, which requires a mesh client certificate).
    // (Envoy flushes access logs periodically: wait for the lines to appear.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let lines = loop {
        let lines: Vec<serde_json::Value> = mesh
            .envoy("bookwarehouse")
            .stdout()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .filter(|l: &serde_json::Value| l["path"] == "/restock-books")
            .collect();
        if lines.len() >= 20 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(lines.len(), 20, "access log on bookwarehouse: {lines:?}");
    for l in lines {
        assert_eq!(
            (&l["requested_server_name"], &l["response_code"]),
            (
                &serde_json::json!("bookwarehouse.bookwarehouse.svc.cluster.local"),
                &serde_json::json!(200)
            ),
            "{l}"
        );
    }
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn permissive_sotw() {
    permissive("e2p", AdsApi::StateOfTheWorld);
}

#[test]
fn permissive_delta() {
    permissive("e2pd", AdsApi::Delta);
}
