//! The demo apps in harness pods: a server in pod B, a client in pod A reaching it by name (through the
//! pod's hosts file) or by IP. Lives here rather than in osm-harness because cargo builds
//! `osm-demo-app` for this crate's tests. Needs root: skipped loudly when missing, failed under `CI=true`.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use osm_demo_apps::Summary;
use osm_harness::{Hub, PodProcess, PodSpec, require_netns_or_skip};

const BIN: &str = env!("CARGO_BIN_EXE_osm-demo-app");
const PREFIX: &str = "osmdemo";
const TIMEOUT: Duration = Duration::from_secs(20);

fn summary(mut client: PodProcess) -> Summary {
    let status = client.wait_timeout(TIMEOUT).unwrap();
    assert!(status.success(), "{status}\n{}", client.log_tail(20));
    Summary::from_output(&client.stdout()).unwrap_or_else(|| panic!("no summary\n{}", client.log_tail(20)))
}

/// An HTTP server in pod B answers a client in pod A that calls it by a Service-like name.
#[test]
fn http_between_pods_by_name() {
    if !require_netns_or_skip("http_between_pods_by_name") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let buyer = hub.add_pod(PodSpec::named("bookbuyer")).unwrap();
    let store = hub.add_pod(PodSpec::named("bookstore")).unwrap();
    let mut server = store
        .spawn(
            &[BIN, "http-server", "--port", "14001", "--name", "bookstore-v1"],
            &[],
        )
        .unwrap();
    server.wait_for_output("listening on", TIMEOUT).unwrap();
    buyer
        .set_hosts(&[(IpAddr::V4(store.ip()), vec!["bookstore.bookstore".into()])])
        .unwrap();

    let url = "http://bookstore.bookstore:14001/books-bought";
    let client = buyer
        .spawn(
            &[
                BIN,
                "http-client",
                "--url",
                url,
                "--count",
                "5",
                "--header",
                "client-app: bookbuyer",
            ],
            &[],
        )
        .unwrap();
    let s = summary(client);
    assert_eq!((s.sent, s.ok, s.errors), (5, 5, 0), "{s:?}");
    assert_eq!(s.served_by.get("bookstore-v1"), Some(&5));
}

/// A TCP echo server in pod B, a client in pod A by IP, running as the app UID rather than root.
#[test]
fn tcp_between_pods_by_ip() {
    if !require_netns_or_skip("tcp_between_pods_by_ip") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let a = hub.add_pod(PodSpec::named("client")).unwrap();
    let b = hub.add_pod(PodSpec::named("echo")).unwrap();
    let mut server = b.spawn(&[BIN, "tcp-echo", "--port", "7070"], &[]).unwrap();
    server.wait_for_output("listening on", TIMEOUT).unwrap();
    let addr = format!("{}:7070", b.ip());
    let client = a
        .spawn_as(
            1000,
            &[
                BIN,
                "tcp-client",
                "--addr",
                &addr,
                "--message",
                "hi",
                "--count",
                "3",
            ],
            &[],
        )
        .unwrap();
    let s = summary(client);
    assert_eq!((s.sent, s.ok, s.errors), (3, 3, 0), "{s:?}");
}

/// A continuous client in a pod stops on `PodProcess::terminate` and still reports, without failures.
#[test]
fn continuous_client_in_pod_stops_on_sigterm() {
    if !require_netns_or_skip("continuous_client_in_pod_stops_on_sigterm") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let a = hub.add_pod(PodSpec::named("client")).unwrap();
    let b = hub.add_pod(PodSpec::named("server")).unwrap();
    let mut server = b
        .spawn(&[BIN, "http-server", "--port", "8080", "--name", "b"], &[])
        .unwrap();
    server.wait_for_output("listening on", TIMEOUT).unwrap();
    let url = format!("http://{}:8080/", b.ip());
    let mut client = a
        .spawn(&[BIN, "http-client", "--url", &url, "--interval-ms", "10"], &[])
        .unwrap();
    client.wait_for_output("first-result", TIMEOUT).unwrap();
    assert!(client.terminate(TIMEOUT).unwrap().success());
    let s = Summary::from_output(&client.stdout()).unwrap();
    assert!(s.sent >= 1 && s.ok == s.sent, "{s:?}");
}

/// The whole interception path with real Envoy: pod A has the OSM rules and an Envoy (UID 1500) whose
/// outbound listener (15001) sends everything to pod B. A client in pod A calls a virtual Service IP that
/// exists nowhere; iptables hands the connection to Envoy, and Envoy's own upstream connection is not
/// redirected again (UID 1500 exemption), so the server in pod B answers.
#[test]
fn envoy_sidecar_intercepts_outbound() {
    let Some(_prereqs) = osm_harness::require_or_skip("envoy_sidecar_intercepts_outbound") else {
        return;
    };
    let hub = Hub::create(PREFIX).unwrap();
    let a = hub.add_pod(PodSpec::named("bookbuyer")).unwrap();
    let b = hub.add_pod(PodSpec::named("bookstore")).unwrap();
    let mut server = b
        .spawn(
            &[BIN, "http-server", "--port", "14001", "--name", "bookstore-v1"],
            &[],
        )
        .unwrap();
    server.wait_for_output("listening on", TIMEOUT).unwrap();

    a.apply_init(&osm_init::InitConfig::default()).unwrap();
    let mut envoy = a.spawn_envoy(&outbound_bootstrap(&b.ip().to_string())).unwrap();
    envoy.wait_ready(Duration::from_secs(60)).unwrap();
    a.set_hosts(&[("10.96.0.10".parse().unwrap(), vec!["bookstore.bookstore".into()])])
        .unwrap();

    let url = "http://bookstore.bookstore:14001/books-bought";
    let client = a
        .spawn(&[BIN, "http-client", "--url", url, "--count", "3"], &[])
        .unwrap();
    let s = summary(client);
    assert_eq!((s.ok, s.errors), (3, 0), "{s:?}\n{}", envoy.log_tail());
    assert_eq!(s.served_by.get("bookstore-v1"), Some(&3));
    // The requests really went through Envoy.
    let stats = envoy.admin_get("/stats?filter=upstream_rq_200").unwrap();
    assert!(stats.contains("cluster.bookstore.upstream_rq_200: 3"), "{stats}");
}

/// gRPC over h2c through real Envoy (HTTP/2 on both sides): both methods answered from pod B; Envoy's
/// own refusals of gRPC calls (RBAC deny, unreachable cluster) arrive as gRPC statuses.
#[test]
fn grpc_through_envoy() {
    let Some(_prereqs) = osm_harness::require_or_skip("grpc_through_envoy") else {
        return;
    };
    let hub = Hub::create(PREFIX).unwrap();
    let a = hub.add_pod(PodSpec::named("client")).unwrap();
    let b = hub.add_pod(PodSpec::named("echo")).unwrap();
    let mut server = b
        .spawn(&[BIN, "grpc-server", "--port", "14001", "--name", "echo-v1"], &[])
        .unwrap();
    server.wait_for_output("listening on", TIMEOUT).unwrap();

    a.apply_init(&osm_init::InitConfig::default()).unwrap();
    let mut envoy = a.spawn_envoy(&grpc_bootstrap(&b.ip().to_string())).unwrap();
    envoy.wait_ready(Duration::from_secs(60)).unwrap();
    a.set_hosts(&[("10.96.0.10".parse().unwrap(), vec!["echo.demo".into()])])
        .unwrap();

    let client = |method: &str, path: Option<&str>| {
        let mut args = vec![
            BIN,
            "grpc-client",
            "--target",
            "echo.demo:14001",
            "--method",
            method,
            "--count",
            "2",
        ];
        if let Some(path) = path {
            args.extend(["--path", path]);
        }
        summary(a.spawn(&args, &[]).unwrap())
    };
    for method in ["unary", "server-stream"] {
        let s = client(method, None);
        assert_eq!((s.ok, s.errors), (2, 0), "{method}: {s:?}\n{}", envoy.log_tail());
        assert_eq!(s.served_by.get("echo-v1"), Some(&2), "{s:?}");
    }
    for (path, status) in [
        ("/demo.Echo/Denied", "grpc-7"),
        ("/demo.Echo/Unavailable", "grpc-14"),
    ] {
        let s = client("unary", Some(path));
        assert_eq!((s.ok, s.errors), (0, 0), "{path}: {s:?}\n{}", envoy.log_tail());
        assert_eq!(s.status.get(status), Some(&2), "{path}: {s:?}");
    }
    // The calls really went through Envoy, over HTTP/2 to the server.
    let stats = envoy
        .admin_get("/stats?filter=cluster.echo.upstream_(rq_200|cx_http2_total)")
        .unwrap();
    assert!(stats.contains("cluster.echo.upstream_rq_200: 4"), "{stats}");
    assert!(
        !stats.contains("cluster.echo.upstream_cx_http2_total: 0"),
        "{stats}"
    );
}

/// Pod A's Envoy for [`grpc_through_envoy`]: h2c in and out; `/demo.Echo/Denied` refused by RBAC,
/// `/demo.Echo/Unavailable` routed to a cluster where nothing listens, the rest to pod B.
fn grpc_bootstrap(upstream_ip: &str) -> String {
    format!(
        r#"
node: {{id: grpc-test, cluster: client}}
admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: 15000}}
static_resources:
  listeners:
  - name: outbound-listener
    address:
      socket_address: {{address: 0.0.0.0, port_value: 15001}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/demo.Echo/Unavailable"}}
                route: {{cluster: nowhere}}
              - match: {{prefix: "/"}}
                route: {{cluster: echo}}
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  denied:
                    permissions: [{{url_path: {{path: {{exact: "/demo.Echo/Denied"}}}}}}]
                    principals: [{{any: true}}]
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: {upstream_ip}, port_value: 14001}}
  - name: nowhere
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: nowhere
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: 127.0.0.1, port_value: 1}}
"#
    )
}

fn outbound_bootstrap(upstream_ip: &str) -> String {
    format!(
        r#"
node: {{id: bookbuyer-test, cluster: bookbuyer}}
admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: 15000}}
static_resources:
  listeners:
  - name: outbound-listener
    address:
      socket_address: {{address: 0.0.0.0, port_value: 15001}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: bookstore}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: bookstore
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: bookstore
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: {upstream_ip}, port_value: 14001}}
"#
    )
}
