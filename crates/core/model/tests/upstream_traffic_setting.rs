//! UpstreamTrafficSettings → the connection limits every client's cluster for the upstream carries, and
//! what is reported instead of applied.
#![forbid(unsafe_code)]
use std::net::{IpAddr, Ipv4Addr};

use osm_api::policy::UpstreamTrafficSetting;
use osm_fixtures::bookstore;
use osm_model::*;

fn mesh(permissive: bool) -> MeshInput {
    bookstore(
        permissive,
        Some((50, 50)),
        |p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + p.len() as u8)),
        |s| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1 + s.len() as u8)),
    )
}

fn add(input: &mut MeshInput, ns: &str, name: &str, spec_yaml: &str) {
    let yaml = format!(
        "apiVersion: policy.openservicemesh.io/v1alpha1\nkind: UpstreamTrafficSetting\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec_yaml}"
    );
    let u: UpstreamTrafficSetting = serde_saphyr::from_str(&yaml).expect("UpstreamTrafficSetting YAML");
    input
        .upstream_traffic_settings
        .insert(ObjectRef::new(ns, name), u.spec);
}

/// The limits of every cluster of `service` in a proxy's outbound intent (split backends included).
fn limits_of(model: &MeshModel, proxy: &str, service: &str) -> Vec<Option<ConnectionLimits>> {
    model.proxies[proxy]
        .outbound
        .services
        .iter()
        .flat_map(|s| s.backends.iter())
        .filter(|b| b.cluster.service.name == service)
        .map(|b| b.cluster.limits.clone())
        .collect()
}

#[test]
fn upstream_traffic_setting_limits_every_clients_cluster_in_both_modes() {
    for permissive in [false, true] {
        let mut input = mesh(permissive);
        add(
            &mut input,
            "bookstore",
            "v1",
            "  host: bookstore-v1.bookstore.svc.cluster.local\n  connectionSettings:\n    tcp: {maxConnections: 10, connectTimeout: 250ms}\n    http: {maxRequests: 20, maxPendingRequests: 5, maxRetries: 2, maxRequestsPerConnection: 100}\n",
        );
        let model = compute(&input);
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);
        let want = Some(ConnectionLimits {
            max_connections: Some(10),
            connect_timeout_ms: Some(250),
            max_requests: Some(20),
            max_pending_requests: Some(5),
            max_retries: Some(2),
            max_requests_per_connection: Some(100),
        });
        let got = limits_of(&model, "bookbuyer", "bookstore-v1");
        assert!(
            !got.is_empty() && got.iter().all(|l| *l == want),
            "permissive {permissive}: {got:?}"
        );
        assert!(
            limits_of(&model, "bookbuyer", "bookstore-v2")
                .iter()
                .all(Option::is_none),
            "another service is untouched"
        );
    }
}

#[test]
fn upstream_traffic_setting_problems_are_reported() {
    let mut input = mesh(false);
    add(
        &mut input,
        "bookstore",
        "elsewhere",
        "  host: bookstore-v1.other.svc.cluster.local\n  connectionSettings: {tcp: {maxConnections: 1}}\n",
    );
    add(
        &mut input,
        "bookstore",
        "missing",
        "  host: nosuch\n  connectionSettings: {tcp: {maxConnections: 1}}\n",
    );
    add(
        &mut input,
        "bookstore",
        "a-first",
        "  host: bookstore-v1\n  connectionSettings: {tcp: {maxConnections: 7}}\n",
    );
    add(
        &mut input,
        "bookstore",
        "b-second",
        "  host: bookstore-v1.bookstore\n  connectionSettings: {tcp: {maxConnections: 8}}\n",
    );
    let model = compute(&input);
    let text = model.warnings.join("\n");
    assert!(
        text.contains("UpstreamTrafficSetting bookstore/elsewhere: spec.host"),
        "{text}"
    );
    assert!(text.contains("Service bookstore/nosuch does not exist"), "{text}");
    assert!(text.contains("UpstreamTrafficSetting bookstore/b-second: Service bookstore/bookstore-v1 already has UpstreamTrafficSetting bookstore/a-first"), "{text}");
    let got = limits_of(&model, "bookbuyer", "bookstore-v1");
    assert!(
        got.iter()
            .all(|l| l.as_ref().and_then(|l| l.max_connections) == Some(7)),
        "{got:?}"
    );
}

#[test]
fn upstream_traffic_setting_changes_update_incrementally_like_a_full_compute() {
    let before = mesh(false);
    let mut after = before.clone();
    add(
        &mut after,
        "bookstore",
        "v1",
        "  host: bookstore-v1\n  connectionSettings: {tcp: {maxConnections: 1}}\n",
    );
    let mut state = MeshState::new(&before);
    state.update(&before, &after);
    assert_eq!(state.model(), &compute(&after));
    state.update(&after, &before);
    assert_eq!(state.model(), &compute(&before));
}

/// `rateLimit.local` lands on the upstream's own inbound port (its sidecars enforce it), as token
/// buckets: `n` per unit, `n + burst` at most.
#[test]
fn upstream_traffic_setting_rate_limit_is_on_the_upstreams_inbound_port() {
    let mut input = mesh(false);
    add(
        &mut input,
        "bookstore",
        "v1",
        "  host: bookstore-v1\n  rateLimit:\n    local:\n      tcp: {connections: 5, unit: second}\n      http: {requests: 10, unit: minute, burst: 5, responseStatusCode: 503, responseHeadersToAdd: [{name: a, value: b}]}\n",
    );
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    let port = &model.proxies["bookstore-v1"].inbound.ports[0];
    let limit = port
        .rate_limit
        .as_deref()
        .expect("bookstore-v1's port is limited");
    assert_eq!(
        limit.connections,
        Some(TokenBucket {
            tokens_per_fill: 5,
            max_tokens: 5,
            fill_interval_secs: 1
        })
    );
    let requests = limit.requests.as_ref().expect("a request limit");
    assert_eq!(
        requests.bucket,
        TokenBucket {
            tokens_per_fill: 10,
            max_tokens: 15,
            fill_interval_secs: 60
        }
    );
    assert_eq!(requests.status, Some(503));
    assert_eq!(requests.response_headers, [("a".to_string(), "b".to_string())]);
    assert!(
        model.proxies["bookstore-v2"].inbound.ports[0]
            .rate_limit
            .is_none()
    );
    assert!(
        limits_of(&model, "bookbuyer", "bookstore-v1")
            .iter()
            .all(Option::is_none),
        "no connection settings: clients' clusters are unchanged"
    );
}
