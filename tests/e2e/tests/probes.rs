//! The bootstrap's probe listeners: a kubelet-style GET on 15901–15903 (which the init rules never
//! intercept) reaches the app's health endpoint through Envoy, as upstream's probe rewriting expects.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use osm_e2e::{Mesh, require_or_skip};
use osm_fixtures::MeshBuilder;
use osm_model::AppProtocol;
use osm_xds::bootstrap::{AdsApi, Probe};

#[test]
fn probe_listeners_reach_the_app() {
    if require_or_skip("probe_listeners_reach_the_app").is_none() {
        return;
    }
    let (hub, pods) = Mesh::pods_for("e2probe", &["web", "kubelet"]).unwrap();
    let web_ip = IpAddr::V4(pods["web"].ip());
    let mut b = MeshBuilder::new(true);
    b.service(
        "shop",
        "web",
        Some(IpAddr::V4(Ipv4Addr::new(10, 96, 7, 1))),
        &[(80, 8080, AppProtocol::Http)],
        &[("app", "web")],
    );
    b.pod("shop", "web", "web", &[("app", "web")], Some(web_ip), Some("web"));
    let apps = BTreeMap::from([("web".to_string(), osm_e2e::http_server_args("web-app", 8080))]);
    let probes = [
        Probe {
            name: "liveness",
            listener_port: 15901,
            path: "/healthz".into(),
            app_port: 8080,
        },
        Probe {
            name: "readiness",
            listener_port: 15902,
            path: "/ready".into(),
            app_port: 8080,
        },
        Probe {
            name: "startup",
            listener_port: 15903,
            path: "/started".into(),
            app_port: 8080,
        },
    ];
    let mesh = Mesh::start_with_probes(hub, pods, b.build(), AdsApi::StateOfTheWorld, &apps, &probes)
        .expect("mesh starts");
    // "kubelet" has no sidecar and no interception, like the node's kubelet.
    for p in &probes {
        let url = format!("http://{web_ip}:{}{}", p.listener_port, p.kubelet_path());
        let s = mesh.http_get("kubelet", &url, 3, &[]).unwrap();
        assert_eq!(s.ok, 3, "{} probe through Envoy: {s:?}", p.name);
        assert_eq!(s.served_by.get("web-app"), Some(&3), "{s:?}");
    }
    // The app port itself stays behind mTLS for the kubelet.
    let s = mesh
        .http_get("kubelet", &format!("http://{web_ip}:8080/ready"), 2, &[])
        .unwrap();
    assert_eq!(
        s.ok, 0,
        "plain-text request to the app port must be refused: {s:?}"
    );
}
