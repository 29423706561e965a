//! IngressBackend with real Envoy sidecars and a real nginx (Debian's) as the ingress controller, in its
//! own non-meshed pod of a monitored namespace, proxying to the meshed bookstore-v1. The outcomes follow
//! upstream OSM's `e2e_ingressbackend_test.go` and its ingress docs:
//!
//! - no IngressBackend: nginx answers 502 (the sidecar admits no plain-text client);
//! - `http` from nginx's Service: 200, served by bookstore-v1; another address is refused;
//! - `https` with the ingress gateway certificate (MeshConfig `certificate.ingressGateway`, issued by the
//!   mesh CA and written as `ca.crt`/`tls.crt`/`tls.key`), nginx verifying the sidecar as
//!   `<sa>.<ns>.cluster.local`: 200 with the right AuthenticatedPrincipal, 403 with a wrong one, 200
//!   with `skipClientCertValidation`;
//! - the ingress certificate rotated (short validity) under continuous requests through nginx, which
//!   reloads on each new certificate as an ingress controller does: no request fails.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use osm_e2e::nginx::{self, Nginx, ProxyTls, Upstream, nginx_or_skip};
use osm_e2e::{Mesh, require_or_skip, stat_value};
use osm_model::{MeshInput, ObjectRef};
use osm_xds::bootstrap::AdsApi;

const BACKEND_PORT: u16 = 14001;
const INGRESS_PORT: u16 = 80;
const NGINX: &str = osm_fixtures::INGRESS_CONTROLLER.1;
const NGINX_NS: &str = osm_fixtures::INGRESS_CONTROLLER.0;
const OUTSIDER: &str = "outsider";
/// The subject alternative name of the ingress gateway certificate, as in upstream's test.
const INGRESS_SAN: &str = "ingress-nginx.ingress-ns.example.com";

/// nginx's pod and Service in the input (`MeshBuilder::ingress_controller`): not meshed, but in a
/// monitored namespace, as upstream's docs require (`osm namespace add ingress-ns
/// --disable-sidecar-injection`), so its endpoints are known.
fn add_ingress_controller(input: &mut MeshInput, ip: IpAddr) {
    let mut b = osm_fixtures::MeshBuilder {
        input: std::mem::take(input),
    };
    b.ingress_controller(ip);
    *input = b.input;
}

/// An IngressBackend for bookstore-v1 as an OSM user writes it; `backend_extra` completes the backend
/// (protocol, tls), `sources_extra` adds sources after nginx's Service.
fn ingress_backend(
    protocol: &str,
    tls: &str,
    extra_sources: &str,
) -> (ObjectRef, osm_api::policy::IngressBackendSpec) {
    let yaml = format!(
        "apiVersion: policy.openservicemesh.io/v1alpha1
kind: IngressBackend
metadata: {{name: bookstore-v1, namespace: bookstore}}
spec:
  backends:
  - name: bookstore-v1
    port: {{number: {BACKEND_PORT}, protocol: {protocol}}}
{tls}
  sources:
  - {{kind: Service, name: {NGINX}, namespace: {NGINX_NS}}}
{extra_sources}"
    );
    let ib: osm_api::policy::IngressBackend = serde_saphyr::from_str(&yaml).expect("IngressBackend YAML");
    (ObjectRef::new("bookstore", "bookstore-v1"), ib.spec)
}

/// `count` requests through nginx from the hub: the status codes seen, with how often.
fn statuses(nginx: &Nginx, hub: &str, count: usize) -> std::collections::BTreeMap<u16, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..count {
        let status = nginx.get(hub, "/").map(|r| r.status).unwrap_or(0);
        *seen.entry(status).or_default() += 1;
    }
    seen
}

fn ingress_backend_http(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() || !nginx_or_skip(prefix) {
        return;
    }
    let (mesh, ips) = Mesh::bookstore(
        prefix,
        api,
        false,
        None,
        &[(NGINX, None), (OUTSIDER, None)],
        |input, ips| add_ingress_controller(input, ips[NGINX]),
    )
    .expect("mesh starts");
    let backend = SocketAddr::new(ips["bookstore-v1"], BACKEND_PORT);
    let nginx =
        Nginx::start(&mesh.pod(NGINX).pod, INGRESS_PORT, Upstream::Http(backend)).expect("nginx starts");
    let hub = mesh.hub.netns();

    // No IngressBackend: the sidecar has no chain for a plain-text client, nginx answers 502.
    assert_eq!(
        statuses(&nginx, hub, 3),
        [(502, 3)].into(),
        "{}",
        nginx.log_tail()
    );

    mesh.update(|i| {
        let (id, spec) = ingress_backend("http", "", "");
        i.ingress_backends.insert(id, spec);
    })
    .expect("the http IngressBackend is ACKed");
    for _ in 0..5 {
        let r = nginx.get(hub, "/").expect("an answer through nginx");
        assert_eq!(r.status, 200, "{r:?}\n{}", nginx.log_tail());
        assert_eq!(r.header("x-served-by"), Some("bookstore-v1"), "{r:?}");
    }
    // The requests went through the ingress chain's connection manager (upstream's stat prefix,
    // `mesh-http-conn-manager.<route config>`).
    let stats = mesh.envoy("bookstore-v1").admin_get("/stats").unwrap();
    let chain_rq = stat_value(
        &stats,
        "http.mesh-http-conn-manager.rds-ingress.14001.downstream_rq_2xx",
    );
    assert!(chain_rq >= 5, "ingress chain requests {chain_rq}:\n{stats}");

    // Another address than nginx's is not admitted: its connection is closed without an answer.
    let direct = nginx::http_get(mesh.pod(OUTSIDER).pod.netns(), backend, "/");
    assert!(direct.is_err(), "a non-listed address got an answer: {direct:?}");

    // The policy deleted: 502 again.
    mesh.update(|i| i.ingress_backends.clear())
        .expect("the deletion is ACKed");
    assert_eq!(statuses(&nginx, hub, 3), [(502, 3)].into());
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn ingress_backend_http_sotw() {
    ingress_backend_http("ibh", AdsApi::StateOfTheWorld);
}

#[test]
fn ingress_backend_http_delta() {
    ingress_backend_http("ibhd", AdsApi::Delta);
}

/// MeshConfig `certificate.ingressGateway` as upstream's test sets it, with `validity`.
fn ingress_gateway(validity: &str) -> osm_api::config::IngressGatewayCertSpec {
    serde_json::from_value(serde_json::json!({
        "subjectAltNames": [INGRESS_SAN],
        "validityDuration": validity,
        "secret": {"name": "ingress-gateway-cert", "namespace": "bookstore"},
    }))
    .expect("an ingressGateway spec")
}

/// Waits until `path` exists and differs from `previous` (what it held before), and returns it.
fn wait_for_new_file(path: &Path, previous: Option<&str>, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(now) = std::fs::read_to_string(path)
            && Some(now.as_str()) != previous
        {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{} not (re)written within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ingress_backend_https(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() || !nginx_or_skip(prefix) {
        return;
    }
    let (mesh, ips) = Mesh::bookstore(prefix, api, false, None, &[(NGINX, None)], |input, ips| {
        add_ingress_controller(input, ips[NGINX]);
        input.mesh_config.certificate.ingress_gateway = Some(ingress_gateway("1h"));
    })
    .expect("mesh starts");
    // The controller's keeper of the ingress certificate, writing the three files of local mode.
    let certs = tempfile::tempdir().expect("a certificate directory");
    let (_stop_keeper, stop_rx) = tokio::sync::watch::channel(false);
    let _keeper = {
        let _rt = mesh.runtime().enter();
        mesh.cp.spawn_ingress_gateway_cert(
            std::sync::Arc::new(osm_ca::ingress_gateway::DirectoryStore::new(certs.path())),
            stop_rx,
        )
    };
    let cert_path = certs.path().join(osm_ca::ingress_gateway::TLS_CERT_KEY);
    let mut cert = wait_for_new_file(&cert_path, None, Duration::from_secs(10));

    // nginx verifies the sidecar as bookstore-v1's identity and presents the ingress certificate.
    let upstream = Upstream::Https {
        addr: SocketAddr::new(ips["bookstore-v1"], BACKEND_PORT),
        tls: ProxyTls {
            cert: cert_path.clone(),
            key: certs.path().join(osm_ca::ingress_gateway::TLS_KEY_KEY),
            trusted_ca: certs.path().join(osm_ca::ingress_gateway::CA_CERT_KEY),
            name: "bookstore-v1.bookstore.cluster.local".into(),
        },
    };
    let mut nginx = Nginx::start(&mesh.pod(NGINX).pod, INGRESS_PORT, upstream.clone()).expect("nginx starts");
    let hub = mesh.hub.netns();
    let https = |principal: &str, skip: bool| {
        ingress_backend(
            "https",
            &format!(
                "    tls: {{skipClientCertValidation: {skip}, sniHosts: [bookstore-v1.bookstore.cluster.local]}}"
            ),
            &format!("  - {{kind: AuthenticatedPrincipal, name: {principal}}}"),
        )
    };
    let apply = |(id, spec): (ObjectRef, osm_api::policy::IngressBackendSpec)| {
        mesh.update(|i| {
            i.ingress_backends.insert(id, spec);
        })
        .expect("the IngressBackend is ACKed")
    };

    apply(https(INGRESS_SAN, false));
    let r = nginx.get(hub, "/").expect("an answer through nginx");
    assert_eq!(r.status, 200, "right principal: {r:?}\n{}", nginx.log_tail());
    assert_eq!(r.header("x-served-by"), Some("bookstore-v1"), "{r:?}");

    apply(https("someone-else.example.com", false));
    assert_eq!(
        statuses(&nginx, hub, 3),
        [(403, 3)].into(),
        "a wrong principal is refused by RBAC"
    );

    apply(https("someone-else.example.com", true));
    assert_eq!(
        statuses(&nginx, hub, 3),
        [(200, 3)].into(),
        "skipClientCertValidation admits any client"
    );

    // Rotation under continuous requests: a 6 s certificate is renewed every ~4 s; nginx reloads on
    // each new certificate, as an ingress controller does on a Secret change. No request may fail.
    apply(https(INGRESS_SAN, false));
    mesh.update(|i| i.mesh_config.certificate.ingress_gateway = Some(ingress_gateway("6s")))
        .expect("the MeshConfig change is applied");
    let (mut rotations, mut requests) = (0, 0);
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && requests < 20_000 {
        match nginx.get(hub, "/") {
            Ok(r) if r.status == 200 => {}
            other => failures.push(format!("{other:?}")),
        }
        requests += 1;
        if let Ok(now) = std::fs::read_to_string(&cert_path)
            && now != cert
        {
            // The keeper writes tls.crt last: once it changed, the key and CA beside it are new too.
            cert = now;
            rotations += 1;
            nginx
                .reconfigure(upstream.clone())
                .expect("nginx reloads the new certificate");
        }
    }
    assert!(rotations >= 3, "only {rotations} rotations in 20 s");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed across {rotations} rotations: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        nginx.log_tail()
    );
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
    eprintln!("{prefix}: {requests} requests through nginx, {rotations} certificate rotations, 0 failures");
}

#[test]
fn ingress_backend_https_sotw() {
    ingress_backend_https("ibs", AdsApi::StateOfTheWorld);
}

#[test]
fn ingress_backend_https_delta() {
    ingress_backend_https("ibsd", AdsApi::Delta);
}
