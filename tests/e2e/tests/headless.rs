//! A headless Service over StatefulSet-style pods (Endpoints addresses with a `hostname`) through real
//! Envoy sidecars: `web-0.web.shop` reaches pod web-0 only, every time — on an HTTP port (by Host) and
//! on a TCP port (by address) — while `web.shop` reaches all pods.

use std::collections::BTreeMap;
use std::net::IpAddr;

use osm_e2e::{Mesh, http_server_args, require_or_skip};
use osm_fixtures::MeshBuilder;
use osm_model::{AppProtocol, Endpoint, PodRef, ServiceRef};
use osm_xds::bootstrap::AdsApi;

const PODS: [&str; 3] = ["web-0", "web-1", "web-2"];

fn headless(prefix: &str, api: AdsApi, permissive: bool) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let mut names = PODS.to_vec();
    names.push("client");
    let (hub, pods) = Mesh::pods_for(prefix, &names).unwrap();
    let ip = |n: &str| IpAddr::V4(pods[n].ip());
    let mut b = MeshBuilder::new(permissive);
    // Port 9090 is declared TCP (onto the same HTTP app): the client's sidecar only sees addresses.
    b.service(
        "shop",
        "web",
        None,
        &[(8080, 8080, AppProtocol::Http), (9090, 8080, AppProtocol::Tcp)],
        &[("app", "web")],
    );
    for p in PODS {
        b.pod("shop", p, "web", &[("app", "web")], Some(ip(p)), Some(p));
    }
    b.pod(
        "clients",
        "client",
        "client",
        &[],
        Some(ip("client")),
        Some("client"),
    );
    if !permissive {
        b.policies_yaml(
            "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: all, namespace: shop}
spec:
  matches: [{name: all, pathRegex: .*, methods: ['*']}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: client-to-web, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: shop}
  sources: [{kind: ServiceAccount, name: client, namespace: clients}]
  rules: [{kind: HTTPRouteGroup, name: all, matches: [all]}]
",
        )
        .unwrap();
    }
    let mut input = b.build();
    // What the endpoints controller writes for a StatefulSet's pods (subdomain = the service).
    input.endpoints.insert(
        ServiceRef::new("shop", "web"),
        PODS.iter()
            .map(|p| Endpoint {
                ip: ip(p),
                pod: Some(PodRef::new("shop", *p)),
                hostname: Some(p.to_string()),
            })
            .collect(),
    );
    // Cluster DNS: each pod's name, and the service name (one of its addresses).
    let mut hosts: Vec<(IpAddr, Vec<String>)> = PODS
        .iter()
        .map(|p| {
            (
                ip(p),
                vec![format!("{p}.web.shop"), format!("{p}.web.shop.svc.cluster.local")],
            )
        })
        .collect();
    hosts.push((ip("web-1"), vec!["web.shop".into()]));
    let apps: BTreeMap<String, Vec<String>> = PODS
        .iter()
        .map(|p| (p.to_string(), http_server_args(p, 8080)))
        .collect();
    let mesh = Mesh::start_with(hub, pods, input, api, &apps, &[], &hosts).expect("mesh starts");

    for url in [
        "http://web-0.web.shop:8080/",
        "http://web-0.web.shop.svc.cluster.local:8080/",
    ] {
        let s = mesh.http_get("client", url, 100, &[]).unwrap();
        assert_eq!((s.ok, s.errors), (100, 0), "{url}: {s:?}");
        assert_eq!(
            s.served_by.get("web-0"),
            Some(&100),
            "{url} reached another pod: {s:?}"
        );
    }
    let s = mesh
        .http_get("client", "http://web-2.web.shop:8080/", 20, &[])
        .unwrap();
    assert_eq!(s.served_by.get("web-2"), Some(&20), "{s:?}");
    // The TCP port: one chain per pod address, so the pod the client resolved is the pod it reaches.
    let s = mesh
        .http_get("client", "http://web-1.web.shop:9090/", 50, &[])
        .unwrap();
    assert_eq!((s.ok, s.errors), (50, 0), "TCP port: {s:?}");
    assert_eq!(
        s.served_by.get("web-1"),
        Some(&50),
        "TCP to web-1 reached another pod: {s:?}"
    );
    // The service name reaches every pod.
    let s = mesh.http_get("client", "http://web.shop:8080/", 30, &[]).unwrap();
    assert_eq!((s.ok, s.errors), (30, 0), "web.shop: {s:?}");
    assert!(s.served_by.len() >= 2, "web.shop reached one pod only: {s:?}");
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn headless_per_pod_names_permissive() {
    headless("ehl", AdsApi::StateOfTheWorld, true);
}

#[test]
fn headless_per_pod_names_smi_delta() {
    headless("ehld", AdsApi::Delta, false);
}
