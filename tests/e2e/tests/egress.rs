//! Egress with real Envoy: a meshed pod reaches a host outside the mesh (a non-meshed namespace on
//! the test bridge serving HTTP, HTTPS with its own certificate, and a server-first TCP protocol)
//! through its sidecar's `outbound-egress-filter-chain` when `traffic.enableEgress` is on; with it off
//! the connection is refused, not hung; switched back on, it works again without restarting anything.
//! The observable outcomes follow upstream OSM's `e2e_egress_test.go` and `e2e_tcp_egress_test.go`.

use std::time::{Duration, Instant};

use osm_e2e::internet::{self, Internet, Outcome};
use osm_e2e::{Mesh, http_server_args, require_or_skip, stat_value};
use osm_model::ObjectRef;
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
    let net = Internet::start(&mesh.pod("internet").pod, &[INTERNET_HOST]).expect("internet servers");
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
    let passthrough_cx = stat_value(
        &stats,
        "tcp.egress-tcp-proxy.passthrough-outbound.downstream_cx_total",
    );
    assert!(
        passthrough_cx >= 7,
        "passthrough connections {passthrough_cx}:\n{stats}"
    );
    assert!(stat_value(&stats, "cluster.passthrough-outbound.upstream_cx_total") >= 7);

    // Off: every protocol is refused promptly — not answered, not hung.
    mesh.update(|i| i.mesh_config.traffic.enable_egress = false)
        .expect("egress off is ACKed");
    let started = Instant::now();
    let s = mesh.http_get("bookbuyer", &http_url, 3, &[]).unwrap();
    assert_eq!(
        (s.ok, s.errors),
        (0, 3),
        "HTTP egress with enableEgress off: {s:?}"
    );
    let https = net.https_get(client, INTERNET_HOST);
    assert!(
        https.is_refused(),
        "HTTPS egress with enableEgress off: {https:?}"
    );
    let tcp = net.server_first(client);
    assert!(
        tcp.is_refused(),
        "server-first egress with enableEgress off: {tcp:?}"
    );
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

#[test]
fn egress_passthrough_sotw() {
    egress_passthrough("eeg", AdsApi::StateOfTheWorld);
}

#[test]
fn egress_passthrough_delta() {
    egress_passthrough("eegd", AdsApi::Delta);
}

/// An Egress policy for bookbuyer's ServiceAccount as an OSM user writes it (the shape of upstream's
/// egress docs), parsed into the spec the model reads; `spec` is the rest of its spec.
fn buyer_egress(name: &str, spec: &str) -> (ObjectRef, osm_api::policy::EgressSpec) {
    let yaml = format!(
        "apiVersion: policy.openservicemesh.io/v1alpha1
kind: Egress
metadata: {{name: {name}, namespace: bookbuyer}}
spec:
  sources: [{{kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}}]
{spec}"
    );
    let e: osm_api::policy::Egress = serde_saphyr::from_str(&yaml).expect("Egress YAML");
    (ObjectRef::new("bookbuyer", name), e.spec)
}

fn route_group(yaml: &str) -> (ObjectRef, osm_api::smi::specs::HTTPRouteGroupSpec) {
    let g: osm_api::smi::specs::HTTPRouteGroup = serde_saphyr::from_str(yaml).expect("HTTPRouteGroup YAML");
    let meta = &g.metadata;
    (
        ObjectRef::new(meta.namespace.clone().unwrap(), meta.name.clone().unwrap()),
        g.spec,
    )
}

const OTHER_HOST: &str = "other.example";

/// Egress policies with passthrough off (`enableEgress: false`), each created and deleted live, as
/// upstream's `e2e_egress_policy_test.go` and the egress-policy demo check them: only the listed
/// ServiceAccount gets them, HTTP by Host (narrowed by an HTTPRouteGroup: other paths get 404 from
/// Envoy), HTTPS by SNI, TCP and server-first TCP by IP range.
fn egress_policy(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let (mesh, ips) = Mesh::bookstore_with_hosts(
        prefix,
        api,
        false,
        None,
        &[
            (
                "internet",
                Some(http_server_args("internet", internet::HTTP_PORT)),
            ),
            ("bookbuyer-other", None),
        ],
        |input, ips| {
            input.mesh_config.traffic.enable_egress = false;
            // A second meshed pod in bookbuyer's namespace, under another ServiceAccount.
            let buyer = input
                .pods
                .values()
                .find(|p| p.id.name == "bookbuyer")
                .expect("bookbuyer pod")
                .clone();
            let other = osm_model::Pod {
                id: ObjectRef::new(&buyer.id.namespace, "bookbuyer-other"),
                service_account: "other".into(),
                proxy_uuid: Some("bookbuyer-other".into()),
                ip: Some(ips["bookbuyer-other"]),
                labels: [("app".to_string(), "bookbuyer-other".to_string())].into(),
                hostname: None,
                subdomain: None,
            };
            input.pods.insert(other.id.clone(), other);
        },
        |ips| vec![(ips["internet"], vec![INTERNET_HOST.into(), OTHER_HOST.into()])],
    )
    .expect("mesh starts");
    let net =
        Internet::start(&mesh.pod("internet").pod, &[INTERNET_HOST, OTHER_HOST]).expect("internet servers");
    let buyer = &mesh.pod("bookbuyer").pod;
    let other = &mesh.pod("bookbuyer-other").pod;
    let internet_ip = ips["internet"];
    let url = |path: &str| format!("http://{INTERNET_HOST}:{}{path}", internet::HTTP_PORT);
    let get = |pod: &str, path: &str| mesh.http_get(pod, &url(path), 3, &[]).unwrap();
    let pids = mesh.envoy_pids();

    // No policy, no passthrough: nothing outside the mesh is reachable.
    let s = get("bookbuyer", "/");
    assert_eq!((s.ok, s.errors), (0, 3), "HTTP egress without a policy: {s:?}");
    assert!(net.server_first(buyer).is_refused());

    // HTTP by Host, no matches: every path of the host, for bookbuyer only.
    let (id, spec) = buyer_egress(
        "httpbin-80",
        &format!(
            "  hosts: [{INTERNET_HOST}]
  ports: [{{number: {}, protocol: http}}]
",
            internet::HTTP_PORT
        ),
    );
    mesh.update(|i| {
        i.egresses.insert(id.clone(), spec.clone());
    })
    .expect("HTTP Egress ACKed");
    for path in ["/", "/get", "/status/200"] {
        let s = get("bookbuyer", path);
        assert_eq!((s.ok, s.errors), (3, 0), "HTTP egress {path}: {s:?}");
        assert_eq!(s.served_by.get("internet"), Some(&3), "{s:?}");
    }
    // With and without the port in Host.
    let s = mesh
        .http_get("bookbuyer", &url("/"), 2, &[&format!("host: {INTERNET_HOST}")])
        .unwrap();
    assert_eq!(s.ok, 2, "Host without port: {s:?}");
    let s = get("bookbuyer-other", "/");
    assert_eq!(s.ok, 0, "another ServiceAccount got bookbuyer's egress: {s:?}");
    // An UpstreamTrafficSetting named in `matches` (upstream's egress circuit-breaking demo): the
    // host's cluster gets its thresholds; requests one at a time still pass.
    let setting: osm_api::policy::UpstreamTrafficSetting = serde_saphyr::from_str(&format!(
        "apiVersion: policy.openservicemesh.io/v1alpha1
kind: UpstreamTrafficSetting
metadata: {{name: internet, namespace: bookbuyer}}
spec:
  host: {INTERNET_HOST}
  connectionSettings:
    tcp: {{maxConnections: 1}}
    http: {{maxPendingRequests: 1}}
"
    ))
    .expect("UpstreamTrafficSetting YAML");
    let mut limited = spec.clone();
    limited.matches = serde_json::from_value(serde_json::json!([{
        "apiGroup": "policy.openservicemesh.io/v1alpha1", "kind": "UpstreamTrafficSetting", "name": "internet"}]))
    .expect("Egress matches");
    mesh.update(|i| {
        i.upstream_traffic_settings
            .insert(ObjectRef::new("bookbuyer", "internet"), setting.spec.clone());
        i.egresses.insert(id.clone(), limited);
    })
    .expect("Egress with an UpstreamTrafficSetting ACKed");
    let threshold = |name: &str| {
        let clusters = mesh.envoy("bookbuyer").admin_get("/clusters").unwrap();
        clusters
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "{INTERNET_HOST}:{}::default_priority::{name}::",
                    internet::HTTP_PORT
                ))
            })
            .map(|v| v.trim().to_string())
    };
    // ACKed clusters replace the active ones once warm (resolved): wait for that.
    let deadline = Instant::now() + Duration::from_secs(10);
    while threshold("max_connections").as_deref() != Some("1") {
        assert!(
            Instant::now() < deadline,
            "the egress cluster never got maxConnections 1"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(threshold("max_pending_requests").as_deref(), Some("1"));
    let s = get("bookbuyer", "/");
    assert_eq!(s.ok, 3, "one request at a time within the limits: {s:?}");
    mesh.update(|i| {
        i.upstream_traffic_settings.clear();
        i.egresses.insert(id.clone(), spec.clone());
    })
    .expect("the setting's removal ACKed");
    // Deleted: refused again.
    mesh.update(|i| {
        i.egresses.remove(&id);
    })
    .expect("Egress deletion ACKed");
    let s = get("bookbuyer", "/");
    assert_eq!(s.ok, 0, "HTTP egress after the policy was deleted: {s:?}");

    // HTTP narrowed by an HTTPRouteGroup: /status.* passes, other paths get 404 from Envoy.
    let (group_id, group) = route_group(
        "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: status-routes, namespace: bookbuyer}
spec:
  matches:
  - {name: status, pathRegex: /status.*, methods: [GET]}
",
    );
    let (id, spec) = buyer_egress(
        "httpbin-status",
        &format!(
            "  hosts: [{INTERNET_HOST}]
  ports: [{{number: {}, protocol: http}}]
  matches:
  - {{apiGroup: specs.smi-spec.io/v1alpha4, kind: HTTPRouteGroup, name: status-routes}}
",
            internet::HTTP_PORT
        ),
    );
    mesh.update(|i| {
        i.http_route_groups.insert(group_id.clone(), group.clone());
        i.egresses.insert(id.clone(), spec.clone());
    })
    .expect("HTTP Egress with matches ACKed");
    let s = get("bookbuyer", "/status/200");
    assert_eq!(s.ok, 3, "/status/200 through the route: {s:?}");
    let s = get("bookbuyer", "/get");
    assert_eq!(
        (s.ok, s.status.get("404")),
        (0, Some(&3)),
        "/get outside the route: {s:?}"
    );
    assert_eq!(s.served_by.get("internet"), None, "the app answered /get: {s:?}");
    mesh.update(|i| {
        i.egresses.remove(&id);
        i.http_route_groups.remove(&group_id);
    })
    .expect("deletion ACKed");

    // HTTPS by SNI: the listed host passes, another name to the same address is refused.
    let (id, spec) = buyer_egress(
        "https-internet",
        &format!(
            "  hosts: [{INTERNET_HOST}]
  ports: [{{number: {}, protocol: https}}]
",
            internet::HTTPS_PORT
        ),
    );
    mesh.update(|i| {
        i.egresses.insert(id.clone(), spec.clone());
    })
    .expect("HTTPS Egress ACKed");
    assert_eq!(
        net.https_get(buyer, INTERNET_HOST),
        Outcome::Answered("HTTP/1.1 200 OK".into()),
        "HTTPS egress by SNI"
    );
    let refused = net.https_get(buyer, OTHER_HOST);
    assert!(refused.is_refused(), "HTTPS with an unlisted SNI: {refused:?}");
    let refused = net.https_get(other, INTERNET_HOST);
    assert!(
        refused.is_refused(),
        "HTTPS from another ServiceAccount: {refused:?}"
    );
    mesh.update(|i| {
        i.egresses.remove(&id);
    })
    .expect("deletion ACKed");
    assert!(net.https_get(buyer, INTERNET_HOST).is_refused());

    // TCP and server-first TCP by IP range: the host's /32 passes, another range does not.
    let tcp = |range: &str| {
        buyer_egress(
            "tcp-internet",
            &format!(
                "  ipAddresses: [{range}]
  ports:
  - {{number: {}, protocol: tcp}}
  - {{number: {}, protocol: tcp-server-first}}
",
                internet::HTTPS_PORT,
                internet::SERVER_FIRST_PORT
            ),
        )
    };
    let (id, spec) = tcp(&format!("{internet_ip}/32"));
    mesh.update(|i| {
        i.egresses.insert(id.clone(), spec.clone());
    })
    .expect("TCP Egress ACKed");
    assert_eq!(
        net.server_first(buyer),
        Outcome::Answered(internet::GREETING.into()),
        "server-first TCP egress by IP range"
    );
    // TLS to that range on a tcp port is just TCP: any name passes.
    assert_eq!(
        net.https_get(buyer, OTHER_HOST),
        Outcome::Answered("HTTP/1.1 200 OK".into()),
        "TCP egress by IP range"
    );
    assert!(net.server_first(other).is_refused(), "another ServiceAccount");
    let (id, spec) = tcp("192.0.2.0/24");
    mesh.update(|i| {
        i.egresses.insert(id.clone(), spec.clone());
    })
    .expect("TCP Egress to another range ACKed");
    assert!(
        net.server_first(buyer).is_refused(),
        "server-first outside the range"
    );
    assert!(
        net.https_get(buyer, INTERNET_HOST).is_refused(),
        "TCP outside the range"
    );
    mesh.update(|i| {
        i.egresses.remove(&id);
    })
    .expect("deletion ACKed");

    // All at once, as one listener: HTTP and SNI ports inspected, the server-first port not; an https
    // port with both hosts and addresses admits the SNI from anywhere or anything to those addresses.
    let policies = [
        buyer_egress(
            "all-http",
            &format!(
                "  hosts: [{INTERNET_HOST}]
  ports: [{{number: {}, protocol: http}}]
",
                internet::HTTP_PORT
            ),
        ),
        buyer_egress(
            "all-https",
            &format!(
                "  hosts: [{INTERNET_HOST}]
  ipAddresses: [192.0.2.0/24]
  ports: [{{number: {}, protocol: https}}]
",
                internet::HTTPS_PORT
            ),
        ),
        buyer_egress(
            "all-tcp",
            &format!(
                "  ipAddresses: [{internet_ip}/32]
  ports: [{{number: {}, protocol: tcp-server-first}}, {{number: 6379, protocol: tcp}}]
",
                internet::SERVER_FIRST_PORT
            ),
        ),
    ];
    mesh.update(|i| {
        for (id, spec) in &policies {
            i.egresses.insert(id.clone(), spec.clone());
        }
    })
    .expect("all egress policies ACKed");
    let s = get("bookbuyer", "/");
    assert_eq!(s.ok, 3, "HTTP egress among the others: {s:?}");
    assert_eq!(
        net.https_get(buyer, INTERNET_HOST),
        Outcome::Answered("HTTP/1.1 200 OK".into()),
        "HTTPS by SNI among the others"
    );
    let refused = net.https_get(buyer, OTHER_HOST);
    assert!(
        refused.is_refused(),
        "unlisted SNI to an unlisted address: {refused:?}"
    );
    assert_eq!(
        net.server_first(buyer),
        Outcome::Answered(internet::GREETING.into()),
        "server-first among inspected ports"
    );
    let stats = mesh.envoy("bookbuyer").admin_get("/stats").unwrap();
    assert!(
        stat_value(&stats, "tcp.egress-tcp-proxy.3306.downstream_cx_total") >= 1,
        "{stats}"
    );

    assert_eq!(mesh.envoy_pids(), pids, "no sidecar restarted");
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn egress_policy_sotw() {
    egress_policy("eep", AdsApi::StateOfTheWorld);
}

#[test]
fn egress_policy_delta() {
    egress_policy("eepd", AdsApi::Delta);
}
