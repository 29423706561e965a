//! gRPC (HTTP/2) between meshed workloads through both real Envoy sidecars: unary and server-streaming
//! calls succeed in permissive mode; in SMI mode an HTTPRouteGroup matching the gRPC method path admits
//! one identity, another method is refused by the server's sidecar with gRPC status 7
//! (PERMISSION_DENIED: Envoy answers gRPC requests in gRPC), and an identity no TrafficTarget names is
//! refused at once, not hung.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use osm_e2e::{ClientSummary, Mesh, require_or_skip, stat_value};
use osm_fixtures::MeshBuilder;
use osm_model::AppProtocol;
use osm_xds::bootstrap::AdsApi;

const PORT: u16 = 50051;
const TARGET: &str = "greeter.grpc:50051";

fn mesh(prefix: &str, api: AdsApi, permissive: bool) -> Option<Mesh> {
    require_or_skip(prefix)?;
    let (hub, pods) = Mesh::pods_for(prefix, &["greeter", "client", "intruder"]).unwrap();
    let ip = |n: &str| Some(IpAddr::V4(pods[n].ip()));
    let mut b = MeshBuilder::new(permissive);
    b.input.mesh_config.traffic.enable_egress = false;
    b.service(
        "grpc",
        "greeter",
        Some(IpAddr::V4(Ipv4Addr::new(10, 96, 9, 1))),
        // `appProtocol: grpc`, as upstream's docs write it.
        &[(PORT, PORT, AppProtocol::detect(Some("grpc"), None))],
        &[("app", "greeter")],
    );
    b.pod(
        "grpc",
        "greeter",
        "greeter",
        &[("app", "greeter")],
        ip("greeter"),
        Some("greeter"),
    );
    b.pod(
        "clients",
        "client",
        "client",
        &[("app", "client")],
        ip("client"),
        Some("client"),
    );
    b.pod(
        "clients",
        "intruder",
        "intruder",
        &[("app", "intruder")],
        ip("intruder"),
        Some("intruder"),
    );
    if !permissive {
        b.policies_yaml(
            "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: greeter-routes, namespace: grpc}
spec:
  matches:
  - {name: unary, pathRegex: /demo\\.Echo/Unary, methods: [POST]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: client-to-greeter, namespace: grpc}
spec:
  destination: {kind: ServiceAccount, name: greeter, namespace: grpc}
  sources: [{kind: ServiceAccount, name: client, namespace: clients}]
  rules: [{kind: HTTPRouteGroup, name: greeter-routes, matches: [unary]}]
",
        )
        .unwrap();
    }
    let apps = BTreeMap::from([(
        "greeter".to_string(),
        vec![
            "grpc-server".to_string(),
            "--port".into(),
            PORT.to_string(),
            "--name".into(),
            "greeter".into(),
        ],
    )]);
    Some(Mesh::start(hub, pods, b.build(), api, &apps).expect("mesh starts"))
}

fn call(mesh: &Mesh, pod: &str, method: &str, count: u32) -> ClientSummary {
    let count = count.to_string();
    mesh.run_client(
        pod,
        &[
            "grpc-client",
            "--target",
            TARGET,
            "--method",
            method,
            "--count",
            &count,
            "--timeout-ms",
            "3000",
        ],
    )
    .unwrap()
}

fn grpc_permissive(prefix: &str, api: AdsApi) {
    let Some(mesh) = mesh(prefix, api, true) else {
        return;
    };
    for (pod, method) in [
        ("client", "unary"),
        ("client", "server-stream"),
        ("intruder", "unary"),
    ] {
        let s = call(&mesh, pod, method, 5);
        assert_eq!(
            (s.ok, s.errors),
            (5, 0),
            "{pod} {method}: {s:?}\n{pod} sidecar:\n{}\ngreeter sidecar:\n{}",
            mesh.envoy(pod).stdout(),
            mesh.envoy("greeter").stdout()
        );
        assert_eq!(s.served_by.get("greeter"), Some(&5), "{s:?}");
    }
    // HTTP/2 end to end: the client sidecar's upstream cluster spoke HTTP/2 to the server's sidecar.
    let stats = mesh.envoy("client").admin_get("/stats?filter=greeter").unwrap();
    assert!(
        stat_value(&stats, "cluster.grpc/greeter|50051.upstream_cx_http2_total") > 0,
        "no HTTP/2 upstream connection:\n{stats}"
    );
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

fn grpc_smi(prefix: &str, api: AdsApi) {
    let Some(mesh) = mesh(prefix, api, false) else {
        return;
    };
    let s = call(&mesh, "client", "unary", 5);
    assert_eq!((s.ok, s.errors), (5, 0), "allowed unary call: {s:?}");
    // The route group names only the unary method: the stream is refused by the server's sidecar's
    // RBAC, which answers a gRPC request with grpc-status 7 (PERMISSION_DENIED).
    let s = call(&mesh, "client", "server-stream", 3);
    assert_eq!(
        (s.ok, s.status.get("grpc-7")),
        (0, Some(&3)),
        "a method outside the route group: {s:?}"
    );
    // No TrafficTarget names the intruder: refused at its own sidecar, promptly.
    let started = Instant::now();
    let s = call(&mesh, "intruder", "unary", 3);
    assert_eq!(s.ok, 0, "intruder's call: {s:?}");
    assert_eq!(s.errors + s.status.values().sum::<u64>(), 3, "{s:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusals took {:?}: {s:?}",
        started.elapsed()
    );
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn grpc_permissive_sotw() {
    grpc_permissive("egp", AdsApi::StateOfTheWorld);
}

#[test]
fn grpc_permissive_delta() {
    grpc_permissive("egpd", AdsApi::Delta);
}

#[test]
fn grpc_smi_sotw() {
    grpc_smi("egs", AdsApi::StateOfTheWorld);
}

#[test]
fn grpc_smi_delta() {
    grpc_smi("egsd", AdsApi::Delta);
}
