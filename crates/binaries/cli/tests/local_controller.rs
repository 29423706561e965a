//! Local mode as an operator uses it: `osm controller --config-dir` serves a workload from YAML,
//! `osm bootstrap` writes that workload's sidecar bootstrap, and a hand-started Envoy gets its config.
//! Everything runs inside a test hub and pod namespace.

use std::time::{Duration, Instant};

use osm_harness::{Hub, PodSpec};

#[test]
fn controller_and_bootstrap_program_a_hand_started_envoy() {
    if osm_harness::require_or_skip("controller_and_bootstrap_program_a_hand_started_envoy").is_none() {
        return;
    }
    let hub = Hub::create("osmlocal").unwrap();
    let pod = hub.add_pod(PodSpec::named("web-1")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("shop.yaml"),
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  clusterIP: 10.96.5.5\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\n  labels:\n    app: web\n    osm-proxy-uuid: web-1\n  annotations:\n    openservicemesh.io/workload-ip: \"{}\"\nspec:\n  serviceAccountName: web\n  containers:\n  - name: web\n    image: web\n",
            pod.ip()
        ),
    )
    .unwrap();
    let osm = env!("CARGO_BIN_EXE_osm");
    let listen = format!("{}:15128", hub.ip());
    let http_addr = format!("{}:9091", hub.ip());
    let mut controller = hub
        .spawn(
            &[
                osm,
                "controller",
                "--config-dir",
                config.to_str().unwrap(),
                "--listen",
                &listen,
                "--state-dir",
                state.to_str().unwrap(),
            ],
            &[],
        )
        .unwrap();
    controller
        .wait_for_output("ADS (mTLS) listening on", Duration::from_secs(30))
        .unwrap();
    assert!(
        controller.stdout().contains("CA bundle: "),
        "{}",
        controller.stdout()
    );
    assert!(
        state.join(osm_ca::ROOT_CERT_FILE).exists(),
        "the CA is persisted in the state dir"
    );

    let bootstrap = dir.path().join("web-1.yaml");
    let out = std::process::Command::new(osm)
        .args([
            "bootstrap",
            "--namespace",
            "shop",
            "--service-account",
            "web",
            "--proxy-uuid",
            "web-1",
        ])
        .args([
            "--ads-host",
            &hub.ip().to_string(),
            "--state-dir",
            state.to_str().unwrap(),
            "-o",
            bootstrap.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&bootstrap).unwrap().permissions());
    assert_eq!(
        mode & 0o077,
        0,
        "the bootstrap holds a private key: it must not be readable by others"
    );

    let mut envoy = pod
        .spawn_envoy(&std::fs::read_to_string(&bootstrap).unwrap())
        .unwrap();
    envoy.wait_ready(Duration::from_secs(60)).unwrap();
    // The controller's config reached Envoy: the local cluster and the inbound listener for shop/web.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let clusters = envoy.admin_get("/clusters").unwrap_or_default();
        let listeners = envoy.admin_get("/listeners").unwrap_or_default();
        if clusters.contains("shop/web|8080|local::") && listeners.contains("inbound-listener") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "config not received:\n{clusters}\n{listeners}\n{}",
            controller.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The HTTP port: ready while ADS serves, version, and metrics showing the connected proxy.
    let http = |path: &str| {
        let addr: std::net::SocketAddr = http_addr.parse().unwrap();
        hub.in_netns(|| osm_harness::http_request(addr, "GET", path, Duration::from_secs(2)))
            .unwrap()
            .unwrap()
    };
    assert_eq!(http("/health/ready").status, 200);
    assert_eq!(http("/health/alive").status, 200);
    assert!(http("/version").body.contains("\"version\""));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = http("/metrics").body;
        if body.contains("osm_proxy_connect_count 1") && body.contains("osm_proxy_in_sync 1") {
            assert!(body.contains("osm_proxy_xds_ack_total{type=\"CDS\"}"), "{body}");
            assert!(
                !body.contains("osm_proxy_xds_nack_total{"),
                "NACKs recorded: {body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the proxy in sync:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
