//! What access logs cost a sidecar: one real Envoy in a permissive mesh of 1000 HTTP services (so its
//! outbound listener has 1000 connection managers, each with the access-log config), measured from its
//! admin `/memory` once in sync, with `observability.enableAccessLog` on and off (two meshes, so no
//! draining listener is counted). Measures only; run with
//! `cargo test -p osm-e2e --test access_log_memory -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use osm_e2e::{Mesh, require_or_skip};
use osm_fixtures::MeshBuilder;
use osm_model::AppProtocol;
use osm_xds::bootstrap::AdsApi;

const SERVICES: u16 = 1000;

/// Envoy's allocated heap (admin `/memory`), in MiB, with access logs on or off.
fn allocated_mib(prefix: &str, access_log: bool) -> f64 {
    let (hub, pods) = Mesh::pods_for(prefix, &["client"]).expect("pods");
    let client_ip = IpAddr::V4(pods["client"].ip());
    let mut b = MeshBuilder::new(true);
    for i in 0..SERVICES {
        let name = format!("svc-{i:04}");
        b.service(
            "scale",
            &name,
            Some(IpAddr::V4(Ipv4Addr::new(
                10,
                96,
                (i / 250) as u8,
                (i % 250) as u8 + 1,
            ))),
            &[(8080, 8080, AppProtocol::Http)],
            &[("app", &name)],
        );
    }
    b.pod(
        "scale",
        "client",
        "client",
        &[("app", "client")],
        Some(client_ip),
        Some("client"),
    );
    let mut input = b.build();
    input.mesh_config.observability.enable_access_log = access_log;
    let mesh =
        Mesh::start_with(hub, pods, input, AdsApi::Delta, &BTreeMap::new(), &[], &[]).expect("mesh starts");
    let memory: serde_json::Value =
        serde_json::from_str(&mesh.envoy("client").admin_get("/memory").unwrap()).expect("admin /memory");
    let bytes: f64 = memory["allocated"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    bytes / 1048576.0
}

#[test]
#[ignore = "benchmark"]
fn access_log_memory_benchmark() {
    if require_or_skip("alm").is_none() {
        return;
    }
    let on = allocated_mib("almon", true);
    let off = allocated_mib("almoff", false);
    println!(
        "Envoy allocated heap with {SERVICES} outbound HTTP services: access logs on {on:.1} MiB, off {off:.1} MiB \
         ({:.1} KiB per connection manager)",
        (on - off) * 1024.0 / f64::from(SERVICES)
    );
}
