//! Health probes end to end, as upstream's `e2e_health_probe_test.go` but against real Envoy sidecars in
//! the pod harness. Each app pod's spec goes through the injector's own `mutate` (the patch applied as
//! the apiserver does), its sidecar gets the bootstrap probes and init rules the injection says, the
//! containers the patch adds (`osm-healthcheck`) run, and a "kubelet" pod without a sidecar probes
//! exactly what the rewritten spec says (port, path, headers, scheme):
//!
//! - `http`: HTTP liveness/readiness/startup probes → 15901–15903 through Envoy to the app's paths;
//! - `https`: HTTPS probes (self-signed app certificate) → the same ports, TLS end to end to the app;
//! - `tcp`: TCP probes → `osm-healthcheck` on 15904; a second container's probe names a closed port;
//! - `multi`: two containers probing with the same kinds (upstream #4948) → the second's own ports.
//!
//! All pass while the apps run; the closed port never passes; stopping the apps makes them fail.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Namespace, Pod as K8sPod};
use osm_e2e::prober::{self, init_config_from_args, wait_for};
use osm_e2e::{Mesh, SidecarSetup, require_or_skip};
use osm_fixtures::MeshBuilder;
use osm_harness::PodProcess;
use osm_model::AppProtocol;
use osm_webhook::inject::{self, InjectConfig};
use osm_xds::bootstrap::{AdsApi, ProbeScheme};
use serde_json::{Value, json};

const NS: &str = "shop";
/// How long a probe may take to reach the wanted outcome (Envoy and apps starting, apps stopping).
const WAIT: Duration = Duration::from_secs(30);

/// An app pod: its spec before injection and the processes playing its containers
/// (`osm-demo-app` arguments).
struct Case {
    name: &'static str,
    containers: Value,
    apps: Vec<Vec<String>>,
}

fn demo(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn cases(cert: &str, key: &str) -> Vec<Case> {
    let https = |port: &str, name: &str| {
        demo(&[
            "https-server",
            "--port",
            port,
            "--name",
            name,
            "--cert",
            cert,
            "--key",
            key,
        ])
    };
    vec![
        Case {
            name: "http",
            containers: json!([{
                "name": "web", "image": "web:1", "ports": [{"name": "http", "containerPort": 8080}],
                "livenessProbe": {"httpGet": {"port": "http", "path": "/live"}},
                "readinessProbe": {"httpGet": {"port": 8080, "path": "/ready?full=1"}},
                "startupProbe": {"httpGet": {"port": 8080}}
            }]),
            apps: vec![demo(&["http-server", "--port", "8080", "--name", "http-app"])],
        },
        Case {
            name: "https",
            containers: json!([{
                "name": "tls", "image": "tls:1",
                "livenessProbe": {"httpGet": {"port": 8443, "path": "/live", "scheme": "HTTPS"}},
                "readinessProbe": {"httpGet": {"port": 8443, "path": "/ready", "scheme": "HTTPS"}},
                "startupProbe": {"httpGet": {"port": 8443, "scheme": "HTTPS"}}
            }]),
            apps: vec![https("8443", "https-app")],
        },
        Case {
            name: "tcp",
            containers: json!([
                {
                    "name": "db", "image": "db:1", "ports": [{"name": "sql", "containerPort": 5432}],
                    "livenessProbe": {"tcpSocket": {"port": 5432}},
                    "readinessProbe": {"tcpSocket": {"port": "sql"}},
                    "startupProbe": {"tcpSocket": {"port": 5432}}
                },
                // Nothing listens on 6379: this probe must never pass.
                {"name": "cache", "image": "cache:1", "livenessProbe": {"tcpSocket": {"port": 6379}}}
            ]),
            apps: vec![demo(&["tcp-echo", "--port", "5432"])],
        },
        Case {
            name: "multi",
            containers: json!([
                {
                    "name": "web", "image": "web:1",
                    "livenessProbe": {"httpGet": {"port": 8080, "path": "/live"}},
                    "readinessProbe": {"httpGet": {"port": 8080, "path": "/ready"}}
                },
                {
                    "name": "admin", "image": "admin:1",
                    "livenessProbe": {"httpGet": {"port": 9000, "path": "/admin-live"}},
                    "readinessProbe": {"httpGet": {"port": 9443, "path": "/admin-ready", "scheme": "HTTPS"}}
                }
            ]),
            apps: vec![
                demo(&["http-server", "--port", "8080", "--name", "multi-web"]),
                demo(&["http-server", "--port", "9000", "--name", "multi-admin"]),
                https("9443", "multi-admin-tls"),
            ],
        },
    ]
}

/// A case's pod after injection: the patched pod and what its sidecar needs.
struct Injected {
    pod: K8sPod,
    setup: SidecarSetup,
}

fn injected_pod(case: &Case) -> Injected {
    let original = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": case.name, "namespace": NS},
        "spec": {"serviceAccountName": case.name, "containers": case.containers},
    });
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {
        "name": NS,
        "labels": {"openservicemesh.io/monitored-by": "osm"},
        "annotations": {"openservicemesh.io/sidecar-injection": "enabled"},
    }}))
    .unwrap();
    let config = InjectConfig::new("osm", "osm-system", "envoy:test", "osm-init:test");
    let pod: K8sPod = serde_json::from_value(original.clone()).unwrap();
    let injection =
        inject::mutate(&pod, &namespace, case.name, &config).expect("the injector admits the pod");
    let mut doc = original;
    json_patch::patch(&mut doc, &injection.patch).expect("the patch applies");
    let pod: K8sPod = serde_json::from_value(doc).unwrap();
    let init = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    let init = init_config_from_args(init.args.as_deref().unwrap_or_default()).unwrap();
    Injected {
        pod,
        setup: SidecarSetup {
            probes: injection.probes,
            init,
        },
    }
}

fn containers(pod: &K8sPod) -> &[Container] {
    &pod.spec.as_ref().unwrap().containers
}

/// Every (container, kind, probe) of `pod`'s app containers.
fn probes_of(pod: &K8sPod) -> Vec<(&Container, &'static str, &k8s_openapi::api::core::v1::Probe)> {
    let mut out = Vec::new();
    for c in containers(pod) {
        for (kind, p) in [
            ("liveness", &c.liveness_probe),
            ("readiness", &c.readiness_probe),
            ("startup", &c.startup_probe),
        ] {
            if let Some(p) = p {
                out.push((c, kind, p));
            }
        }
    }
    out
}

fn scenario(prefix: &str, api: AdsApi) {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["https.shop".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let cases = cases(cert_path.to_str().unwrap(), key_path.to_str().unwrap());

    let names: Vec<&str> = cases.iter().map(|c| c.name).chain(["kubelet"]).collect();
    let (hub, pods) = Mesh::pods_for(prefix, &names).unwrap();
    let mut b = MeshBuilder::new(true);
    let mut injected = BTreeMap::new();
    let mut setups = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let ip = IpAddr::V4(pods[case.name].ip());
        b.service(
            NS,
            case.name,
            Some(IpAddr::V4(Ipv4Addr::new(10, 96, 7, 1 + i as u8))),
            &[(80, 8080, AppProtocol::Http)],
            &[("app", case.name)],
        );
        b.pod(
            NS,
            case.name,
            case.name,
            &[("app", case.name)],
            Some(ip),
            Some(case.name),
        );
        let inj = injected_pod(case);
        setups.insert(case.name.to_string(), inj.setup.clone());
        injected.insert(case.name, inj);
    }
    // The injection as upstream would write it, and beyond it for `multi`.
    let https_setup = &injected["https"].setup;
    assert!(https_setup.probes.iter().all(|p| p.scheme == ProbeScheme::Https));
    assert_eq!(
        injected["multi"].setup.init.inbound_port_exclusions,
        [15905, 15906],
        "the second container's probe ports bypass the inbound redirect"
    );

    let mut mesh =
        Mesh::start_with_sidecars(hub, pods, b.build(), api, &BTreeMap::new(), &setups).expect("mesh starts");
    let mut running: BTreeMap<&str, Vec<PodProcess>> = BTreeMap::new();
    let bin = osm_harness::demo_app_bin().unwrap();
    for case in &cases {
        let pod = &mesh.pod(case.name).pod;
        let mut procs = Vec::new();
        for app in &case.apps {
            let mut argv = vec![bin.to_string_lossy().into_owned()];
            argv.extend(app.iter().cloned());
            let mut p = pod.spawn(&argv, &[]).unwrap();
            p.wait_for_output("listening on", WAIT).unwrap();
            procs.push(p);
        }
        // Containers the injector added besides the sidecar run as the kubelet play runs them.
        for c in containers(&injected[case.name].pod) {
            if c.name == "osm-healthcheck" {
                let argv = osm_e2e::kubelet::argv(c).unwrap();
                let mut p = pod.spawn(&argv, &[]).unwrap();
                p.wait_for_output("listening on", WAIT).unwrap();
                procs.push(p);
            }
        }
        running.insert(case.name, procs);
    }
    assert!(
        containers(&injected["tcp"].pod)
            .iter()
            .any(|c| c.name == "osm-healthcheck"),
        "a TCP probe brings the healthcheck container"
    );

    let kubelet = &mesh.pod("kubelet").pod;
    let closed = |c: &Container| c.name == "cache";
    // Healthy apps: every probe passes, exactly as rewritten; the closed port never does.
    for case in &cases {
        let ip = IpAddr::V4(mesh.pod(case.name).pod.ip());
        for (c, kind, p) in probes_of(&injected[case.name].pod) {
            let what = format!("{} {} {kind} probe {:?}", case.name, c.name, p.http_get);
            let get = p
                .http_get
                .as_ref()
                .expect("every probe is an httpGet once rewritten");
            assert!(p.tcp_socket.is_none(), "{what}");
            if closed(c) {
                for _ in 0..5 {
                    let r = prober::probe(kubelet, ip, c, p);
                    assert!(r.is_err(), "{what} passed against a closed port: {r:?}");
                }
                continue;
            }
            wait_for(WAIT, || prober::probe(kubelet, ip, c, p), |r| r.is_ok())
                .unwrap_or_else(|last| panic!("{what} never passed: {last}"));
            if case.name == "https" {
                assert_eq!(get.scheme.as_deref(), Some("HTTPS"), "{what}");
            }
        }
    }
    // The app port itself stays behind mTLS for the kubelet (only the probe ports bypass it).
    let http_ip = IpAddr::V4(mesh.pod("http").pod.ip());
    let mut plain = containers(&injected["http"].pod)[0].clone();
    plain.liveness_probe.as_mut().unwrap().http_get = Some(k8s_openapi::api::core::v1::HTTPGetAction {
        port: k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080),
        path: Some("/live".into()),
        ..Default::default()
    });
    let r = prober::probe(kubelet, http_ip, &plain, plain.liveness_probe.as_ref().unwrap());
    assert!(
        r.is_err(),
        "plain-text probe of the app port must not pass: {r:?}"
    );

    // Stopped apps: every probe fails (Envoy 503, the TCP proxy's closed connection, the
    // healthcheck's 503), while the sidecars and the healthcheck keep running.
    for case in &cases {
        let procs = running.get_mut(case.name).unwrap();
        let apps = case.apps.len();
        for p in &mut procs[..apps] {
            p.kill();
        }
        let ip = IpAddr::V4(mesh.pod(case.name).pod.ip());
        for (c, kind, p) in probes_of(&injected[case.name].pod) {
            wait_for(WAIT, || prober::probe(kubelet, ip, c, p), |r| r.is_err()).unwrap_or_else(|last| {
                panic!(
                    "{} {} {kind} probe still passes with the app stopped: {last}",
                    case.name, c.name
                )
            });
        }
        for p in &mut procs[apps..] {
            assert!(p.try_wait().unwrap().is_none(), "osm-healthcheck exited");
        }
    }
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
    for name in ["http", "https", "tcp", "multi"] {
        let envoy = mesh.pods.get_mut(name).unwrap().envoy.as_mut().unwrap();
        assert!(
            envoy.process().try_wait().unwrap().is_none(),
            "the {name} sidecar exited"
        );
    }
}

#[test]
fn probe_rewritten_specs_pass_and_fail_with_the_app_sotw() {
    if require_or_skip("probe_rewritten_specs_pass_and_fail_with_the_app_sotw").is_none() {
        return;
    }
    scenario("e2probe", AdsApi::StateOfTheWorld);
}

#[test]
fn probe_rewritten_specs_pass_and_fail_with_the_app_delta() {
    if require_or_skip("probe_rewritten_specs_pass_and_fail_with_the_app_delta").is_none() {
        return;
    }
    scenario("e2probd", AdsApi::Delta);
}
