//! The mesh on Kubernetes, proven against a real kube-apiserver (envtest) with real sidecars:
//! `osm install` → the control plane runs from its Deployments with the ServiceAccounts and RBAC
//! install created → `osm namespace add` → the bookstore created through the API is mutated by our
//! injector (called by the real apiserver) and runs in the harness from its mutated specs →
//! permissive works, `kubectl patch` of MeshConfig switches to SMI live, bookthief is refused, the
//! split follows the weights, the validating webhook refuses a bad TrafficTarget.
//!
//! The apiserver runs inside the test's hub namespace, so the control plane's ClusterIPs can be made
//! reachable there (see `osm_e2e::kubelet`); nothing touches the host's network.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use osm_api::config::MeshConfig;
use osm_demo_apps::stats::{AppStats, read_stats};
use osm_e2e::kubelet::{self, RunningPod};
use osm_fixtures::{BOOKSTORE_PODS, BOOKSTORE_POLICIES, BOOKSTORE_SERVICES, bookstore_split};
use osm_harness::{Hub, PodProcess};

const OSM_NS: &str = "osm-system";
const APP_NAMESPACES: [&str; 4] = ["bookbuyer", "bookthief", "bookstore", "bookwarehouse"];
/// `osm install` as the test runs it (twice): permissive to start with, no waiting (the test starts
/// the Deployments' processes itself).
const INSTALL: &[&str] = &[
    "install",
    "--set",
    "osm.enablePermissiveTrafficPolicy=true",
    "--timeout",
    "0s",
];
const STATS: &str = "/var/run/osm-demo/stats.json";

struct Cluster {
    // Drop order: app pods, then the control plane, then the apiserver, then the hub.
    pods: Vec<RunningPod>,
    control_plane: Vec<PodProcess>,
    server: osm_envtest::ApiServer,
    hub: Hub,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookstore_on_kubernetes() -> Result<()> {
    let Some(assets) = osm_envtest::require_or_skip("bookstore_on_kubernetes") else {
        return Ok(());
    };
    if osm_e2e::require_or_skip("bookstore_on_kubernetes").is_none() {
        return Ok(());
    }
    let hub = Hub::create("osmk8s")?;
    let server = osm_envtest::ApiServer::start_in_netns(&assets, hub.netns()).await?;
    let mut cluster = Cluster {
        pods: Vec::new(),
        control_plane: Vec::new(),
        server,
        hub,
    };
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        for p in &cluster.control_plane {
            eprintln!("--- control plane process {} log:\n{}", p.pid(), p.log_tail(40));
        }
        for p in &cluster.pods {
            eprintln!("--- pod {}/{} ({}):", p.namespace, p.name, p.ip());
            for app in &p.apps {
                eprintln!("{}", app.log_tail(10));
            }
            if let Some(envoy) = &p.envoy {
                // Which config the sidecar holds and whether it still talks to the controller.
                let stats = envoy.admin_get("/stats").unwrap_or_default();
                let state: Vec<&str> = stats
                    .lines()
                    .filter(|l| {
                        l.contains("version_text")
                            || l.contains("control_plane.connected_state")
                            || l.ends_with("update_rejected: 1")
                            || l.contains("init_fetch_timeout")
                    })
                    .collect();
                eprintln!("{}\n{}", envoy.log_tail(), state.join("\n"));
            }
        }
        eprintln!("--- apiserver:\n{}", cluster.server.log_tails(20));
    }
    result
}

async fn scenario(c: &mut Cluster) -> Result<()> {
    let admin = c.server.client();
    let kubeconfig = c.server.kubeconfig_path();

    // 1. Install.
    osm(&kubeconfig, INSTALL)?;
    for svc in ["osm-controller", "osm-injector", "osm-validator"] {
        kubelet::expose_service(&admin, &c.hub, OSM_NS, svc).await?;
    }
    let control_plane_hosts = kubelet::service_hosts(&admin, &[OSM_NS]).await?;

    // 2. The control plane, from its Deployments, as its own ServiceAccounts.
    let mut http_port = 9190;
    for component in ["osm-bootstrap", "osm-controller", "osm-injector"] {
        http_port += 1;
        let p = start_component(c, &admin, component, http_port).await?;
        c.control_plane.push(p);
        wait_http_ok(&c.hub, http_port, "/health/ready", Duration::from_secs(90))
            .await
            .with_context(|| format!("{component} not ready"))?;
    }

    // A second install changes nothing, also after bootstrap filled in the webhooks' CA bundles.
    let again = osm(&kubeconfig, INSTALL)?;
    ensure!(
        again.contains("(0 created, 0 configured,"),
        "second install changed something: {again}"
    );

    // 3. Onboard the namespaces, create the workloads as an OSM user would.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for ns in APP_NAMESPACES {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?,
            )
            .await?;
    }
    let mut add = vec!["namespace", "add"];
    add.extend(APP_NAMESPACES);
    osm(&kubeconfig, &add)?;
    osm_envtest::create_yaml(&admin, &bookstore_workloads()).await?;

    // 4. ReplicaSet controller + kubelet: every pod is admitted through our injector.
    let mut hosts = kubelet::service_hosts(&admin, &APP_NAMESPACES).await?;
    hosts.extend(control_plane_hosts);
    let order = [
        "bookwarehouse",
        "bookstore-v1",
        "bookstore-v2",
        "bookbuyer",
        "bookthief",
    ];
    for name in order {
        let ns = BOOKSTORE_PODS
            .iter()
            .find(|p| p.1 == name)
            .map(|p| p.0)
            .unwrap_or(name);
        let deployment = Api::<Deployment>::namespaced(admin.clone(), ns).get(name).await?;
        for pod in kubelet::create_pods_for(&admin, &deployment, 1).await? {
            let containers: Vec<String> = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
                .collect();
            ensure!(
                containers.contains(&"envoy".to_string()),
                "pod {ns}/{} was not injected: containers {containers:?}",
                pod.name_any()
            );
            ensure!(
                pod.labels().contains_key("osm-proxy-uuid"),
                "no osm-proxy-uuid label"
            );
            let running = kubelet::run_pod(&admin, &c.hub, &pod, &hosts).await?;
            c.pods.push(running);
        }
    }
    kubelet::sync_endpoints(&admin, &APP_NAMESPACES, &c.pods).await?;
    for p in &mut c.pods {
        let name = p.name.clone();
        p.envoy
            .as_mut()
            .context("no sidecar")?
            .wait_ready(Duration::from_secs(90))
            .with_context(|| format!("sidecar of {name}"))?;
    }

    // 5. Permissive: both buyers are served.
    for app in ["bookbuyer", "bookthief"] {
        wait_stats(c, app, Duration::from_secs(60), |s| s.ok >= 3)
            .await
            .with_context(|| format!("{app} should be served in permissive mode"))?;
    }

    let thief_policy = check_pods(&kubeconfig, "bookthief/bookthief-0", "bookstore/bookstore-v1-0")?;
    ensure!(
        thief_policy == "allowedByPermissiveMode",
        "permissive mode: check-pods says {thief_policy}"
    );

    // 6. SMI policies as users write them, then `kubectl patch` MeshConfig to SMI mode.
    osm_envtest::create_yaml(
        &admin,
        &format!("{BOOKSTORE_POLICIES}\n---\n{}", bookstore_split(50, 50)),
    )
    .await?;
    Api::<MeshConfig>::namespaced(admin.clone(), OSM_NS)
        .patch(
            "osm-mesh-config",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"traffic": {"enablePermissiveTrafficPolicyMode": false}}}),
            ),
        )
        .await?;
    // Once bookthief's requests fail, SMI mode is in force; from then on it must not be served.
    let thief_before = stats(c, "bookthief")?;
    let switched = wait_stats(c, "bookthief", Duration::from_secs(30), |s| {
        s.refused >= thief_before.refused + 3
    })
    .await
    .context("bookthief should be refused once MeshConfig says SMI mode")?;
    let thief_ok = switched.ok;
    let buyer_before = stats(c, "bookbuyer")?;
    let v1_before = stats(c, "bookstore-v1")?.ok;
    let v2_before = stats(c, "bookstore-v2")?.ok;
    let buyer = wait_stats(c, "bookbuyer", Duration::from_secs(60), |s| {
        s.ok >= buyer_before.ok + 40
    })
    .await
    .context("bookbuyer should be served in SMI mode")?;
    ensure!(
        buyer.refused - buyer_before.refused <= 2,
        "bookbuyer refused {} times in SMI mode: before {buyer_before:?}, after {buyer:?}",
        buyer.refused - buyer_before.refused
    );
    // The first refusals may come from one bookstore sidecar while the other still applies its SMI
    // config (on a busy machine an ACK can lag by most of a second), so a request or two may still
    // get through then; a bookthief that is served in SMI mode would get dozens.
    let thief = stats(c, "bookthief")?;
    ensure!(
        thief.ok <= thief_ok + 2,
        "bookthief got {} responses in SMI mode",
        thief.ok - thief_ok
    );
    let buyer_policy = check_pods(&kubeconfig, "bookbuyer/bookbuyer-0", "bookstore/bookstore-v1-0")?;
    ensure!(
        buyer_policy == "allowedByTrafficTargets",
        "SMI: check-pods bookbuyer says {buyer_policy}"
    );
    let thief_policy = check_pods(&kubeconfig, "bookthief/bookthief-0", "bookstore/bookstore-v1-0")?;
    ensure!(
        thief_policy == "denied",
        "SMI: check-pods bookthief says {thief_policy}"
    );

    // Enough requests for the split to show: 200 at 50/50 puts 4 standard deviations inside ±15 %.
    let deadline = Instant::now() + Duration::from_secs(90);
    while stats(c, "bookstore-v1")?.ok + stats(c, "bookstore-v2")?.ok < v1_before + v2_before + 200 {
        ensure!(
            Instant::now() < deadline,
            "bookstore served fewer than 200 requests in 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v1 = stats(c, "bookstore-v1")?.ok - v1_before;
    let v2 = stats(c, "bookstore-v2")?.ok - v2_before;
    let share = v1 as f64 / (v1 + v2).max(1) as f64;
    eprintln!(
        "split 50/50: bookstore-v1 {v1}, bookstore-v2 {v2} ({:.0} % v1)",
        share * 100.0
    );
    ensure!(
        (0.35..=0.65).contains(&share),
        "split not near 50/50: v1 {v1}, v2 {v2}"
    );

    // 7. The validating webhook refuses a TrafficTarget outside its destination's namespace.
    let bad = "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata:\n  name: wrong-ns\n  namespace: bookbuyer\nspec:\n  destination:\n    kind: ServiceAccount\n    name: bookstore\n    namespace: bookstore\n  rules:\n  - kind: HTTPRouteGroup\n    name: bookstore-service-routes\n    matches:\n    - buy-a-book\n  sources:\n  - kind: ServiceAccount\n    name: bookbuyer\n    namespace: bookbuyer\n";
    match osm_envtest::create_yaml(&admin, bad).await {
        Ok(()) => {
            bail!("the validating webhook accepted a TrafficTarget outside its destination's namespace")
        }
        Err(e) => {
            let msg = format!("{e:#}");
            ensure!(
                msg.contains("namespace"),
                "refusal does not explain the namespace rule: {msg}"
            );
            eprintln!("refused as expected: {msg}");
        }
    }

    // A valid object the controller cannot use (its route group does not exist) is passed over:
    // bookthief stays refused, bookbuyer stays served, the controller stays ready.
    let dangling = "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata:\n  name: dangling\n  namespace: bookstore\nspec:\n  destination:\n    kind: ServiceAccount\n    name: bookstore-v1\n    namespace: bookstore\n  rules:\n  - kind: HTTPRouteGroup\n    name: does-not-exist\n  sources:\n  - kind: ServiceAccount\n    name: bookthief\n    namespace: bookthief\n";
    osm_envtest::create_yaml(&admin, dangling).await?;
    let (buyer_before, thief_before) = (stats(c, "bookbuyer")?, stats(c, "bookthief")?);
    wait_stats(c, "bookbuyer", Duration::from_secs(30), |s| {
        s.ok >= buyer_before.ok + 20
    })
    .await
    .context("bookbuyer after an unusable TrafficTarget")?;
    let thief = wait_stats(c, "bookthief", Duration::from_secs(30), |s| {
        s.sent >= thief_before.sent + 10
    })
    .await?;
    ensure!(
        thief.ok == thief_before.ok,
        "bookthief got through after an unusable TrafficTarget: before {thief_before:?}, after {thief:?}"
    );
    // 9192: the controller's health port (step 2 numbers them from 9191 in start order).
    wait_http_ok(&c.hub, 9192, "/health/ready", Duration::from_secs(5))
        .await
        .context("controller")?;

    // 8. A pod that opts out is not injected.
    let opted_out: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "no-sidecar", "namespace": "bookbuyer",
                     "annotations": {"openservicemesh.io/sidecar-injection": "disabled"}},
        "spec": {"containers": [{"name": "app", "image": "osm-demo-app", "command": ["osm-demo-app"]}]}
    }))?;
    let stored = Api::<Pod>::namespaced(admin.clone(), "bookbuyer")
        .create(&PostParams::default(), &opted_out)
        .await?;
    let names: Vec<_> = stored
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
        .collect();
    ensure!(
        names == ["app"],
        "opted-out pod was changed: containers {names:?}"
    );
    Ok(())
}

/// Runs the `osm` CLI against the test's apiserver; fails with its output unless it exits 0.
fn osm(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let bin = kubelet::binary_for("osm")?;
    let out = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "osm {args:?} failed: {text}");
    Ok(text)
}

/// `osm policy check-pods SRC DST -o json`'s verdict (`allowedByTrafficTargets`, `denied`, …).
fn check_pods(kubeconfig: &Path, src: &str, dst: &str) -> Result<String> {
    let out = osm(kubeconfig, &["policy", "check-pods", src, dst, "-o", "json"])?;
    let json_start = out.find('{').context("no JSON in check-pods output")?;
    let v: serde_json::Value = serde_json::Deserializer::from_str(&out[json_start..])
        .into_iter()
        .next()
        .context("empty check-pods output")??;
    Ok(v["verdict"]["result"].as_str().unwrap_or_default().to_string())
}

/// Starts a control-plane component from its Deployment: its container's command and args, a token
/// of its ServiceAccount (TokenRequest), its health port moved to `http_port` (the components share
/// the hub's network here, unlike pods).
async fn start_component(c: &Cluster, admin: &Client, name: &str, http_port: u16) -> Result<PodProcess> {
    let deployment = Api::<Deployment>::namespaced(admin.clone(), OSM_NS)
        .get(name)
        .await?;
    let spec = deployment
        .spec
        .template
        .spec
        .context("deployment without pod spec")?;
    let sa = spec
        .service_account_name
        .clone()
        .context("no serviceAccountName")?;
    let container = spec.containers.first().context("no container")?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["https://kubernetes.default.svc.cluster.local".into()]),
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), OSM_NS)
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for {OSM_NS}/{sa}"))?
        .status
        .and_then(|s| s.token)
        .context("TokenRequest answered without a token")?;
    let kubeconfig = c.server.write_token_kubeconfig(&sa, &token)?;
    let mut argv = kubelet::argv(container)?;
    argv.extend([
        "--kubeconfig".to_string(),
        kubeconfig.to_string_lossy().into_owned(),
        "--http-addr".to_string(),
        format!("127.0.0.1:{http_port}"),
    ]);
    Ok(c.hub.spawn(&argv, &[("OSM_LOG", "info")])?)
}

async fn wait_http_ok(hub: &Hub, port: u16, path: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        let p = path.to_string();
        let r = hub.in_netns(move || osm_harness::http_request(addr, "GET", &p, Duration::from_secs(2)))?;
        if let Ok(resp) = &r
            && resp.status == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("GET {path} on 127.0.0.1:{port}: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stats(c: &Cluster, app_pod: &str) -> Result<AppStats> {
    let pod = c
        .pods
        .iter()
        .find(|p| p.name.starts_with(app_pod))
        .with_context(|| format!("no pod {app_pod}"))?;
    let path = map_stats(pod);
    read_stats(&path).with_context(|| format!("no stats yet at {}", path.display()))
}

fn map_stats(pod: &RunningPod) -> std::path::PathBuf {
    pod.volume("stats")
        .join(Path::new(STATS).file_name().expect("file name"))
}

async fn wait_stats(
    c: &Cluster,
    app: &str,
    timeout: Duration,
    ok: impl Fn(&AppStats) -> bool,
) -> Result<AppStats> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = stats(c, app)
            && ok(&s)
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!(
                "{app}: condition not reached in {timeout:?}; last stats {:?}",
                stats(c, app).ok()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bookstore workloads as an OSM user writes them: ServiceAccounts, Services, Deployments (our
/// demo image; stats in an emptyDir so the test can read them).
fn bookstore_workloads() -> String {
    let mut y = String::new();
    for (ns, name, sa, labels) in BOOKSTORE_PODS {
        let labels_yaml: String = labels
            .iter()
            .map(|(k, v)| format!("        {k}: {v}\n"))
            .collect();
        let match_labels: String = labels.iter().map(|(k, v)| format!("      {k}: {v}\n")).collect();
        let args: Vec<String> = match *name {
            "bookwarehouse" => vec![
                "bookwarehouse".into(),
                "--db".into(),
                "/var/run/osm-demo/books.sqlite".into(),
            ],
            "bookstore-v1" | "bookstore-v2" => vec![
                "bookstore".into(),
                "--name".into(),
                name.to_string(),
                "--warehouse-url".into(),
                "http://bookwarehouse.bookwarehouse:14001".into(),
            ],
            other => vec![
                other.into(),
                "--bookstore-url".into(),
                "http://bookstore.bookstore:14001".into(),
                "--interval-ms".into(),
                "20".into(),
            ],
        };
        let args: String = args
            .iter()
            .chain(["--stats-file".to_string(), STATS.to_string()].iter())
            .map(|a| format!("        - {a:?}\n"))
            .collect();
        y.push_str(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: {ns}\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n{match_labels}  template:\n    metadata:\n      labels:\n{labels_yaml}    spec:\n      serviceAccountName: {sa}\n      containers:\n      - name: {name}\n        image: openservicemesh-rs/osm-demo-app:latest\n        command: [\"osm-demo-app\"]\n        args:\n{args}        ports:\n        - containerPort: 14001\n        volumeMounts:\n        - name: stats\n          mountPath: /var/run/osm-demo\n      volumes:\n      - name: stats\n        emptyDir: {{}}\n---\n"
        ));
    }
    for (ns, name, selector) in BOOKSTORE_SERVICES {
        let selector: String = selector.iter().map(|(k, v)| format!("    {k}: {v}\n")).collect();
        y.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  selector:\n{selector}  ports:\n  - name: http\n    port: 14001\n    targetPort: 14001\n    appProtocol: http\n---\n"
        ));
    }
    y
}
