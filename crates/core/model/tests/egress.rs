//! Egress policies → each proxy's egress intent: who gets them, how policies for one port merge, and
//! what is reported instead of applied.
#![forbid(unsafe_code)]
use std::net::{IpAddr, Ipv4Addr};

use osm_api::policy::{Egress, EgressSpec};
use osm_fixtures::bookstore;
use osm_model::*;

fn mesh() -> MeshInput {
    let mut input = bookstore(
        false,
        None,
        |_| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        |_| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
    );
    input.mesh_config.traffic.enable_egress = false;
    input
}

fn add(input: &mut MeshInput, name: &str, spec_yaml: &str) {
    let yaml = format!(
        "apiVersion: policy.openservicemesh.io/v1alpha1\nkind: Egress\nmetadata: {{name: {name}, namespace: bookbuyer}}\nspec:\n{spec_yaml}"
    );
    let e: Egress = serde_saphyr::from_str(&yaml).expect("Egress YAML");
    input.egresses.insert(ObjectRef::new("bookbuyer", name), e.spec);
}

const BUYER: &str = "  sources: [{kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}]\n";

fn range(s: &str) -> IpRange {
    IpRange::parse(s).expect("a CIDR")
}

#[test]
fn egress_applies_to_the_listed_service_accounts_only() {
    let mut input = mesh();
    add(
        &mut input,
        "http",
        &format!("{BUYER}  hosts: [httpbin.org]\n  ports: [{{number: 80, protocol: http}}]\n"),
    );
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    let buyer = &model.proxies["bookbuyer"].egress;
    assert_eq!(buyer.ports.len(), 1);
    assert_eq!(buyer.ports[0].port, 80);
    assert_eq!(
        buyer.ports[0].http_hosts,
        vec![EgressHttpHost {
            host: "httpbin.org".into(),
            routes: vec![HttpRouteMatch::any()],
            limits: None,
        }]
    );
    assert!(buyer.ports[0].http_ip_ranges.is_empty(), "any address");
    for other in ["bookthief", "bookstore-v1", "bookwarehouse"] {
        assert!(
            model.proxies[other].egress.is_empty(),
            "{other} got bookbuyer's egress"
        );
    }
}

#[test]
fn egress_policies_for_one_port_merge() {
    let mut input = mesh();
    add(
        &mut input,
        "a",
        &format!(
            "{BUYER}  hosts: [a.example]\n  ipAddresses: [203.0.113.0/24]\n  ports: [{{number: 443, protocol: https}}, {{number: 5432, protocol: tcp}}]\n"
        ),
    );
    add(
        &mut input,
        "b",
        &format!(
            "{BUYER}  hosts: [b.example]\n  ipAddresses: [198.51.100.7/32]\n  ports: [{{number: 443, protocol: https}}, {{number: 5432, protocol: tcp-server-first}}]\n"
        ),
    );
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    let ports = &model.proxies["bookbuyer"].egress.ports;
    assert_eq!(ports.iter().map(|p| p.port).collect::<Vec<_>>(), [443, 5432]);
    let https = &ports[0];
    assert_eq!(https.server_names, ["a.example", "b.example"]);
    assert_eq!(
        https.ip_ranges,
        Some(vec![range("198.51.100.7/32"), range("203.0.113.0/24")])
    );
    assert_eq!(https.ip_protocol, "https");
    let tcp = &ports[1];
    assert!(tcp.server_first, "one policy says the server speaks first");
    assert_eq!(tcp.ip_protocol, "tcp-server-first");
    assert!(tcp.server_names.is_empty() && tcp.http_hosts.is_empty());
}

#[test]
fn egress_tcp_without_addresses_reaches_any_address_and_http_honours_addresses() {
    let mut input = mesh();
    add(
        &mut input,
        "tcp",
        &format!("{BUYER}  ports: [{{number: 6379, protocol: tcp}}]\n"),
    );
    add(
        &mut input,
        "http",
        &format!(
            "{BUYER}  hosts: [api.example]\n  ipAddresses: [192.0.2.0/24]\n  ports: [{{number: 80, protocol: http}}]\n"
        ),
    );
    let model = compute(&input);
    let ports = &model.proxies["bookbuyer"].egress.ports;
    let http = ports.iter().find(|p| p.port == 80).expect("port 80");
    assert_eq!(http.http_ip_ranges, vec![range("192.0.2.0/24")]);
    assert_eq!(http.ip_ranges, None);
    let tcp = ports.iter().find(|p| p.port == 6379).expect("port 6379");
    assert_eq!(tcp.ip_ranges, Some(Vec::new()), "any address");
}

#[test]
fn egress_http_route_groups_narrow_the_routes() {
    let mut input = mesh();
    let group: osm_api::smi::specs::HTTPRouteGroup = serde_saphyr::from_str(
        "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: status, namespace: bookbuyer}
spec:
  matches: [{name: status, pathRegex: /status.*, methods: [get]}]
",
    )
    .unwrap();
    input
        .http_route_groups
        .insert(ObjectRef::new("bookbuyer", "status"), group.spec);
    add(
        &mut input,
        "http",
        &format!(
            "{BUYER}  hosts: [httpbin.org]\n  ports: [{{number: 80, protocol: http}}]\n  matches: [{{apiGroup: specs.smi-spec.io/v1alpha4, kind: HTTPRouteGroup, name: status}}]\n"
        ),
    );
    let model = compute(&input);
    let routes = &model.proxies["bookbuyer"].egress.ports[0].http_hosts[0].routes;
    assert_eq!(routes.len(), 1);
    assert!(routes[0].matches("GET", "/status/200", &[]));
    assert!(!routes[0].matches("GET", "/get", &[]));
    assert!(!routes[0].matches("POST", "/status/200", &[]));
}

/// Problems are reported, naming the object and field; nothing is applied more widely than written.
#[test]
fn egress_problems_are_reported_not_widened() {
    let mut input = mesh();
    add(
        &mut input,
        "missing-group",
        &format!(
            "{BUYER}  hosts: [httpbin.org]\n  ports: [{{number: 80, protocol: http}}]\n  matches: [{{apiGroup: specs.smi-spec.io/v1alpha4, kind: HTTPRouteGroup, name: nowhere}}]\n"
        ),
    );
    let mut bad = EgressSpec {
        ip_addresses: vec!["not-a-cidr".into()],
        ..input.egresses[&ObjectRef::new("bookbuyer", "missing-group")].clone()
    };
    bad.matches.clear();
    bad.ports[0].protocol = "tcp".into();
    input
        .egresses
        .insert(ObjectRef::new("bookbuyer", "bad-cidr"), bad);
    let model = compute(&input);
    let warnings = model.warnings.join("\n");
    assert!(
        warnings.contains(
            "Egress bookbuyer/missing-group: spec.matches[0] names HTTPRouteGroup bookbuyer/nowhere"
        ),
        "{warnings}"
    );
    assert!(
        warnings.contains("Egress bookbuyer/bad-cidr: spec.ipAddresses[0] \"not-a-cidr\" is not a CIDR"),
        "{warnings}"
    );
    let ports = &model.proxies["bookbuyer"].egress.ports;
    assert_eq!(ports.len(), 1, "the bad policy is not applied: {ports:?}");
    assert!(
        ports[0].http_hosts[0].routes.is_empty(),
        "a missing group matches nothing"
    );
    assert_eq!(ports[0].ip_ranges, None);
}

#[test]
fn egress_policies_wait_for_their_feature_flag() {
    let mut input = mesh();
    add(
        &mut input,
        "http",
        &format!("{BUYER}  hosts: [httpbin.org]\n  ports: [{{number: 80, protocol: http}}]\n"),
    );
    input.mesh_config.feature_flags.enable_egress_policy = false;
    let model = compute(&input);
    assert!(model.proxies["bookbuyer"].egress.is_empty());
    assert!(
        model
            .warnings
            .iter()
            .any(|w| w.contains("enableEgressPolicy is false")),
        "{:?}",
        model.warnings
    );
}

/// An egress edit is a policy change: an incremental update gives what a full compute gives.
#[test]
fn egress_changes_update_incrementally_like_a_full_compute() {
    let before = mesh();
    let mut after = before.clone();
    add(
        &mut after,
        "http",
        &format!("{BUYER}  hosts: [httpbin.org]\n  ports: [{{number: 80, protocol: http}}]\n"),
    );
    let mut state = MeshState::new(&before);
    state.update(&before, &after);
    assert_eq!(state.model(), &compute(&after));
    state.update(&after, &before);
    assert_eq!(state.model(), &compute(&before));
}

/// A port both server-first and HTTP cannot be inspected for Host: said, not silently half-applied.
#[test]
fn egress_server_first_and_http_on_one_port_is_reported() {
    let mut input = mesh();
    add(
        &mut input,
        "mixed",
        &format!(
            "{BUYER}  hosts: [db.example]\n  ipAddresses: [192.0.2.0/24]\n  ports: [{{number: 3306, protocol: http}}, {{number: 3306, protocol: tcp-server-first}}]\n"
        ),
    );
    let model = compute(&input);
    assert!(
        model
            .warnings
            .iter()
            .any(|w| w.contains("port 3306 is tcp-server-first and also http/https")),
        "{:?}",
        model.warnings
    );
    let port = &model.proxies["bookbuyer"].egress.ports[0];
    assert!(port.server_first);
    assert_eq!(port.ip_ranges, Some(vec![range("192.0.2.0/24")]));
}

/// An UpstreamTrafficSetting named in an Egress policy's `matches` (its host the external one, as in
/// upstream's egress circuit-breaking demo) limits that policy's clusters; a missing one leaves the
/// policy unapplied, as upstream does; the setting's host is not reported as naming no Service.
#[test]
fn egress_upstream_traffic_setting_limits_its_clusters() {
    let mut input = mesh();
    let uts: osm_api::policy::UpstreamTrafficSetting = serde_saphyr::from_str(
        "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {name: httpbin, namespace: bookbuyer}
spec:
  host: httpbin.org
  connectionSettings:
    tcp: {maxConnections: 1}
    http: {maxPendingRequests: 1, maxRequestsPerConnection: 1}
",
    )
    .expect("UpstreamTrafficSetting YAML");
    input
        .upstream_traffic_settings
        .insert(ObjectRef::new("bookbuyer", "httpbin"), uts.spec);
    let matches = "  matches:\n  - {apiGroup: policy.openservicemesh.io/v1alpha1, kind: UpstreamTrafficSetting, name: httpbin}\n";
    add(
        &mut input,
        "httpbin",
        &format!(
            "{BUYER}  hosts: [httpbin.org]\n  ports: [{{number: 80, protocol: http}}, {{number: 443, protocol: https}}]\n{matches}"
        ),
    );
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    let want = Some(ConnectionLimits {
        max_connections: Some(1),
        max_pending_requests: Some(1),
        max_requests_per_connection: Some(1),
        ..ConnectionLimits::default()
    });
    let ports = &model.proxies["bookbuyer"].egress.ports;
    assert_eq!(ports[0].http_hosts[0].limits, want, "the HTTP host's cluster");
    assert_eq!(ports[1].limits, want, "the https port's cluster");

    // Rate limits have no sidecar to enforce them on an external host: reported, not dropped.
    let mut with_rate_limit = input.clone();
    let setting = with_rate_limit
        .upstream_traffic_settings
        .get_mut(&ObjectRef::new("bookbuyer", "httpbin"))
        .expect("the setting");
    setting.rate_limit =
        serde_json::from_value(serde_json::json!({"local": {"tcp": {"connections": 1, "unit": "minute"}}}))
            .expect("a rate limit");
    let model = compute(&with_rate_limit);
    assert!(
        model
            .warnings
            .iter()
            .any(|w| w
                .contains("bookbuyer/httpbin: spec.rateLimit and spec.httpRoutes are not applied to egress")),
        "{:?}",
        model.warnings
    );

    input.upstream_traffic_settings.clear();
    let model = compute(&input);
    assert!(model.proxies["bookbuyer"].egress.is_empty());
    assert!(
        model
            .warnings
            .iter()
            .any(|w| w.contains("names UpstreamTrafficSetting bookbuyer/httpbin, which does not exist")),
        "{:?}",
        model.warnings
    );
}
