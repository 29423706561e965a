//! The synthetic scale mesh shared by the `generate` benchmark and the `mesh_scale` example: a
//! permissive full mesh of `services` HTTP services in one namespace, each backed by two pods running
//! as the service's own ServiceAccount (so `services` identities and `2 × services` proxies).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use osm_fixtures::MeshBuilder;
use osm_model::{AppProtocol, MeshInput, MeshModel, PodRef, ProxyIntent, ServiceIdentity};
use osm_xds::{Generator, ProxyConfig, ResourceSet, identity_secrets};

pub const NAMESPACE: &str = "mesh";
pub const TRUST_DOMAIN: &str = "cluster.local";

/// `n`th address of a /16, skipping `.0`.
fn addr(a: u8, b: u8, n: usize) -> IpAddr {
    let n = n + 1;
    IpAddr::V4(Ipv4Addr::new(a, b, (n / 256) as u8, (n % 256) as u8))
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i:04}")
}

pub fn pod_name(service: usize, replica: usize) -> String {
    format!("{}-{}", service_name(service), ["a", "b"][replica])
}

pub fn full_mesh(services: usize) -> MeshInput {
    let mut b = MeshBuilder::new(true);
    for i in 0..services {
        let name = service_name(i);
        b.service(
            NAMESPACE,
            &name,
            Some(addr(10, 96, i)),
            &[(8080, 8080, AppProtocol::Http)],
            &[("app", &name)],
        );
        for replica in 0..2 {
            let pod = pod_name(i, replica);
            let uuid = format!("00000000-0000-4000-8000-{:012}", i * 2 + replica);
            b.pod(
                NAMESPACE,
                &pod,
                &name,
                &[("app", &name)],
                Some(addr(10, 1, i * 2 + replica)),
                Some(&uuid),
            );
        }
    }
    b.build()
}

/// The same mesh with one pod moved to a new address (an endpoint change).
pub fn with_moved_pod(input: &MeshInput, service: usize) -> MeshInput {
    let mut moved = input.clone();
    let pod = moved
        .pods
        .get_mut(&PodRef::new(NAMESPACE, pod_name(service, 0)))
        .expect("the pod exists");
    pod.ip = Some(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1)));
    moved
}

/// A PEM-shaped blob of realistic size (a 2048-bit RSA certificate is ~1.2 kB of PEM, its key ~1.7 kB).
pub fn fake_pem(label: &str, seed: &str, bytes: usize) -> String {
    let body: String = seed.chars().cycle().take(bytes).collect();
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

pub fn ca_bundle() -> String {
    fake_pem("CERTIFICATE", "MeshRootCA", 1200)
}

/// One `service-cert` set per identity, as the controller keeps them.
pub fn secrets_by_identity(model: &MeshModel) -> HashMap<ServiceIdentity, Arc<ResourceSet>> {
    let mut out = HashMap::new();
    for p in model.proxies.values() {
        out.entry(p.identity.clone()).or_insert_with(|| {
            let id = p.identity.to_string();
            identity_secrets(
                &fake_pem("CERTIFICATE", &id, 1200),
                &fake_pem("PRIVATE KEY", &id, 1700),
            )
        });
    }
    out
}

/// Every proxy's config, then `sweep`.
pub fn generate_all(
    g: &mut Generator,
    model: &MeshModel,
    secrets: &HashMap<ServiceIdentity, Arc<ResourceSet>>,
) -> Vec<ProxyConfig> {
    let configs = model
        .proxies
        .values()
        .map(|p: &ProxyIntent| g.proxy_config(p, secrets[&p.identity].clone()))
        .collect();
    g.sweep_all();
    configs
}
