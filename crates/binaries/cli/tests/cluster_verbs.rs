//! The cluster verbs (`osm namespace|metrics|policy|proxy|verify|support`) as a user runs them: the
//! real `osm` binary with `--kubeconfig` against a real kube-apiserver v1.20 (crates/testing/envtest). Each
//! test starts its own apiserver and checks what the command printed and what it changed on the
//! server. Without the binaries the tests skip loudly (they fail under `CI=true`).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::Output;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Secret};
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt as _};
use osm_envtest::{ApiServer, require_or_skip};
use serde_json::{Value, json};

const MONITORED_BY: &str = "openservicemesh.io/monitored-by";
const INJECTION: &str = "openservicemesh.io/sidecar-injection";

/// The finished `osm` command.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> anyhow::Result<Self> {
        ensure!(
            self.code == Some(0),
            "osm failed ({:?}):\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }

    /// The command failed with one `error:` line containing `needle`.
    fn refused(self, needle: &str) -> anyhow::Result<Self> {
        ensure!(
            self.code != Some(0),
            "osm should have failed; stdout: {}",
            self.stdout
        );
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_default();
        ensure!(
            line.contains(needle),
            "expected an error containing {needle:?}, stderr: {}",
            self.stderr
        );
        Ok(self)
    }
}

fn osm(server: &ApiServer, args: &[&str]) -> anyhow::Result<Run> {
    let out: Output = std::process::Command::new(env!("CARGO_BIN_EXE_osm"))
        .arg("--kubeconfig")
        .arg(server.kubeconfig_path())
        .args(args)
        .env_remove("OSM_NAMESPACE")
        .env("RUST_LOG", "warn")
        .output()
        .context("running osm")?;
    // Shown with --nocapture, and with a failing test's output.
    eprintln!(
        "$ osm {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

async fn start(test: &str) -> anyhow::Result<Option<ApiServer>> {
    let Some(assets) = require_or_skip(test) else {
        return Ok(None);
    };
    Ok(Some(ApiServer::start_with(&assets).await?))
}

fn suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .subsec_nanos();
    format!("{}-{nanos:x}", std::process::id())
}

fn meta(ns: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

async fn namespace(client: &Client, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<()> {
    osm_envtest::create_namespace(client, name, labels, &[])
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// A pod with an `app` container, plus an `envoy` container and the `osm-proxy-uuid` label when
/// `injected`.
async fn pod(
    client: &Client,
    ns: &str,
    name: &str,
    sa: &str,
    labels: &[(&str, &str)],
    injected: bool,
) -> anyhow::Result<()> {
    let uuid = format!("{name}-uuid");
    let mut labels = labels.to_vec();
    let mut containers = vec![Container {
        name: "app".into(),
        image: Some("app".into()),
        ..Container::default()
    }];
    if injected {
        labels.push(("osm-proxy-uuid", &uuid));
        containers.push(Container {
            name: "envoy".into(),
            image: Some("envoyproxy/envoy".into()),
            ..Container::default()
        });
    }
    let pod = Pod {
        metadata: meta(Some(ns), name, &labels),
        spec: Some(PodSpec {
            service_account_name: Some(sa.into()),
            containers,
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {ns}/{name}"))?;
    // No kubelet here: the phase is written through the status subresource, as one would.
    let status = json!({"status": {"phase": "Running"}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

async fn labels_of(
    client: &Client,
    ns: &str,
) -> anyhow::Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let n = Api::<Namespace>::all(client.clone()).get(ns).await?;
    Ok((n.labels().clone(), n.annotations().clone()))
}

/// `namespace add|list|remove|ignore` and `metrics enable|disable`, checked on the server:
/// labels and annotations set and removed, another mesh's namespace and the control plane's own
/// namespace refused, only injected pods get the Prometheus annotations.
#[tokio::test]
async fn namespace_and_metrics_verbs() -> anyhow::Result<()> {
    let Some(server) = start("namespace_and_metrics_verbs").await? else {
        return Ok(());
    };
    let client = server.client();
    let sfx = suffix();
    let (a, b, c, other) = (
        format!("app-a-{sfx}"),
        format!("app-b-{sfx}"),
        format!("app-c-{sfx}"),
        format!("other-{sfx}"),
    );
    for ns in [&a, &b, &c] {
        namespace(&client, ns, &[]).await?;
    }
    namespace(&client, &other, &[(MONITORED_BY, "another-mesh")]).await?;
    namespace(&client, "osm-system", &[]).await?;

    // add: label + injection annotation.
    let run = osm(&server, &["namespace", "add", &a, &b]).succeeded()?;
    // No control plane in this cluster yet: a warning, not a refusal.
    assert!(
        run.stderr.contains("warning: no control plane of mesh osm found"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains(&format!("Namespace [{a}] successfully added to mesh [osm]")),
        "{}",
        run.stdout
    );
    for ns in [&a, &b] {
        let (labels, annotations) = labels_of(&client, ns).await?;
        assert_eq!(labels.get(MONITORED_BY).map(String::as_str), Some("osm"), "{ns}");
        assert_eq!(
            annotations.get(INJECTION).map(String::as_str),
            Some("enabled"),
            "{ns}"
        );
    }
    osm(&server, &["namespace", "add", &c, "--disable-sidecar-injection"]).succeeded()?;
    let (_, annotations) = labels_of(&client, &c).await?;
    assert_eq!(annotations.get(INJECTION).map(String::as_str), Some("disabled"));

    // Refusals: another mesh's namespace, the control plane's namespace, a missing namespace.
    osm(&server, &["namespace", "add", &other]).refused(&format!(
        "namespace {other} is already monitored by mesh another-mesh"
    ))?;
    let (labels, _) = labels_of(&client, &other).await?;
    assert_eq!(
        labels.get(MONITORED_BY).map(String::as_str),
        Some("another-mesh"),
        "left alone"
    );
    osm(&server, &["namespace", "add", "osm-system"]).refused("control plane's namespace")?;
    osm(&server, &["namespace", "add", &format!("missing-{sfx}")]).refused("not found")?;
    osm(&server, &["namespace", "remove", &other]).refused("belongs to mesh another-mesh, not mesh osm")?;

    // list -o json: our three, with mesh and injection; --mesh-name filters.
    let run = osm(&server, &["namespace", "list", "-o", "json"]).succeeded()?;
    let rows: Vec<Value> = serde_json::from_str(&run.stdout)?;
    let find = |ns: &str| rows.iter().find(|r| r["namespace"] == ns).cloned();
    assert_eq!(find(&a).context("a listed")?["mesh"], "osm");
    assert_eq!(find(&a).unwrap()["sidecarInjection"], "enabled");
    assert_eq!(find(&c).context("c listed")?["sidecarInjection"], "disabled");
    assert_eq!(find(&other).context("other listed")?["mesh"], "another-mesh");
    let run = osm(&server, &["namespace", "list", "--mesh-name", "osm"]).succeeded()?;
    assert!(
        run.stdout.contains("NAMESPACE") && run.stdout.contains("SIDECAR-INJECTION"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&b) && !run.stdout.contains(&other),
        "{}",
        run.stdout
    );

    // remove: label and annotation gone.
    let run = osm(&server, &["namespace", "remove", &a]).succeeded()?;
    assert!(run.stdout.contains("successfully removed"), "{}", run.stdout);
    let (labels, annotations) = labels_of(&client, &a).await?;
    assert!(
        !labels.contains_key(MONITORED_BY) && !annotations.contains_key(INJECTION),
        "{labels:?} {annotations:?}"
    );

    // ignore.
    osm(&server, &["namespace", "ignore", &b]).succeeded()?;
    let (labels, _) = labels_of(&client, &b).await?;
    assert_eq!(
        labels.get("openservicemesh.io/ignore").map(String::as_str),
        Some("true")
    );

    // metrics: only namespaces in a mesh; injected pods get the Prometheus annotations.
    pod(&client, &c, "meshed", "default", &[("app", "meshed")], true).await?;
    pod(&client, &c, "plain", "default", &[("app", "plain")], false).await?;
    let run = osm(&server, &["metrics", "enable", "--namespace", &c]).succeeded()?;
    assert!(run.stdout.contains("1 injected pod updated"), "{}", run.stdout);
    let (_, annotations) = labels_of(&client, &c).await?;
    assert_eq!(
        annotations.get("openservicemesh.io/metrics").map(String::as_str),
        Some("enabled")
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &c);
    let meshed = pods.get("meshed").await?;
    let ann = meshed.annotations();
    assert_eq!(ann.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(ann.get("prometheus.io/port").map(String::as_str), Some("15010"));
    assert_eq!(
        ann.get("prometheus.io/path").map(String::as_str),
        Some("/stats/prometheus")
    );
    assert!(
        !pods
            .get("plain")
            .await?
            .annotations()
            .contains_key("prometheus.io/scrape")
    );
    osm(&server, &["metrics", "enable", "--namespace", &a])
        .refused(&format!("namespace {a} does not belong to a mesh"))?;

    // A namespace running a control plane: `verify control-plane-health` reads its Deployments, and
    // `namespace add` refuses it.
    let cp = format!("cp-{sfx}");
    namespace(&client, &cp, &[]).await?;
    let run = osm(
        &server,
        &["verify", "control-plane-health", "--osm-namespace", &cp],
    )?;
    assert_eq!(run.code, Some(1), "nothing installed yet: {}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "[FAIL] deployment osm-controller: deployment {cp}/osm-controller not found"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("[SKIPPED] osm-controller /health/ready"),
        "{}",
        run.stdout
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), &cp);
    for name in ["osm-controller", "osm-injector", "osm-bootstrap"] {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": cp, "labels": {"app": name, "meshName": "osm"}},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": name, "image": name}]}}},
        });
        osm_envtest::create_yaml(&client, &serde_json::to_string(&d)?).await?;
        // No controllers here: the status a deployment controller would write.
        let status = json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
        deployments
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    let run = osm(
        &server,
        &["verify", "control-plane-health", "--osm-namespace", &cp],
    )?;
    for name in ["osm-controller", "osm-injector", "osm-bootstrap"] {
        assert!(
            run.stdout.contains(&format!(
                "[PASS] deployment {name}: {cp}/{name}: 1/1 replicas available"
            )),
            "{}",
            run.stdout
        );
    }
    // No Service and no kubelet: the health probe through the service proxy fails, saying why.
    assert!(
        run.stdout.contains("[FAIL] osm-controller /health/ready"),
        "{}",
        run.stdout
    );
    assert_eq!(run.code, Some(1));
    osm(&server, &["namespace", "add", &cp]).refused(&format!("namespace {cp} runs osm-controller"))?;
    osm(&server, &["metrics", "disable", "--namespace", &c]).succeeded()?;
    let (_, annotations) = labels_of(&client, &c).await?;
    assert!(!annotations.contains_key("openservicemesh.io/metrics"));
    assert!(
        !pods
            .get("meshed")
            .await?
            .annotations()
            .contains_key("prometheus.io/scrape")
    );
    Ok(())
}

/// The bookstore pods and policies in SMI mode: `policy check-pods` explains bookbuyer →
/// bookstore-v1 (allowed, with the TrafficTarget and routes) and bookthief → bookstore-v1 (not
/// listed); after a MeshConfig patch to permissive mode bookthief is allowed. `proxy get` refuses a
/// pod without an envoy container; `verify connectivity` reports its checks; `support bug-report`
/// writes a tarball with the MeshConfig and no Secret.
#[tokio::test]
async fn bookstore_policy_proxy_verify_and_bug_report() -> anyhow::Result<()> {
    let Some(server) = start("bookstore_policy_proxy_verify_and_bug_report").await? else {
        return Ok(());
    };
    let client = server.client();
    osm_envtest::apply_crds(&client, &osm_api::crds::all()).await?;
    let sfx = suffix();
    let ns = |base: &str| format!("{base}-{sfx}");
    let osm_ns = ns("osm-system");
    namespace(&client, &osm_ns, &[]).await?;
    for base in ["bookbuyer", "bookthief", "bookstore"] {
        namespace(&client, &ns(base), &[(MONITORED_BY, "osm")]).await?;
    }
    namespace(&client, &ns("outside"), &[]).await?;
    pod(
        &client,
        &ns("bookbuyer"),
        "bookbuyer",
        "bookbuyer",
        &[("app", "bookbuyer")],
        true,
    )
    .await?;
    pod(
        &client,
        &ns("bookthief"),
        "bookthief",
        "bookthief",
        &[("app", "bookthief")],
        true,
    )
    .await?;
    pod(
        &client,
        &ns("bookstore"),
        "bookstore-v1",
        "bookstore-v1",
        &[("app", "bookstore"), ("version", "v1")],
        true,
    )
    .await?;
    pod(
        &client,
        &ns("outside"),
        "plain",
        "default",
        &[("app", "plain")],
        false,
    )
    .await?;
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "bookstore-v1", "namespace": ns("bookstore")},
        "spec": {"selector": {"app": "bookstore", "version": "v1"},
                 "ports": [{"name": "http", "port": 14001}]},
    });
    osm_envtest::create_yaml(&client, &serde_json::to_string(&service)?).await?;

    let mut policies = osm_fixtures::BOOKSTORE_POLICIES.to_string();
    for base in ["bookbuyer", "bookthief", "bookstore", "bookwarehouse"] {
        policies = policies.replace(
            &format!("namespace: {base}\n"),
            &format!("namespace: {}\n", ns(base)),
        );
    }
    // bookwarehouse's objects need their namespace; it is not otherwise used.
    namespace(&client, &ns("bookwarehouse"), &[]).await?;
    osm_envtest::create_yaml(&client, &policies).await?;
    let mesh_config = json!({
        "apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshConfig",
        "metadata": {"name": "osm-mesh-config", "namespace": osm_ns},
        "spec": {"traffic": {"enablePermissiveTrafficPolicyMode": false}},
    });
    osm_envtest::create_yaml(&client, &serde_json::to_string(&mesh_config)?).await?;
    let secret = Secret {
        metadata: meta(Some(&osm_ns), "osm-ca-bundle", &[]),
        string_data: Some([("ca.crt".to_string(), "TOP-SECRET-CA".to_string())].into()),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), &osm_ns)
        .create(&PostParams::default(), &secret)
        .await?;

    let buyer = format!("{}/bookbuyer", ns("bookbuyer"));
    let thief = format!("{}/bookthief", ns("bookthief"));
    let v1 = format!("{}/bookstore-v1", ns("bookstore"));
    let g = ["--osm-namespace", osm_ns.as_str()];
    let check = |src: &str, dst: &str| {
        let mut args = vec!["policy", "check-pods", src, dst];
        args.extend(g);
        osm(&server, &args)
    };

    // SMI mode: bookbuyer is allowed by its TrafficTarget, over the two named routes.
    let run = check(&buyer, &v1).succeeded()?;
    let out = &run.stdout;
    assert!(out.contains("is allowed to communicate"), "{out}");
    assert!(
        out.contains(&format!(
            "TrafficTarget {}/bookbuyer-access-bookstore-v1",
            ns("bookstore")
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "HTTPRouteGroup {}/bookstore-service-routes",
            ns("bookstore")
        )),
        "{out}"
    );
    assert!(
        out.contains("match \"books-bought\": pathRegex \"/books-bought\", methods GET"),
        "{out}"
    );
    assert!(out.contains("match \"buy-a-book\""), "{out}");
    assert!(
        !out.contains("update-books-bought"),
        "not named by the rule: {out}"
    );

    // SMI mode: bookthief is not listed by the TrafficTarget of bookstore-v1.
    let run = check(&thief, &v1).succeeded()?;
    assert!(
        run.stdout.contains("is not allowed to communicate"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "lists source ServiceAccount bookthief.{}",
            ns("bookthief")
        )),
        "{}",
        run.stdout
    );
    // -o json for scripts.
    let mut args = vec!["policy", "check-pods", thief.as_str(), v1.as_str(), "-o", "json"];
    args.extend(g);
    let v: Value = serde_json::from_str(&osm(&server, &args).succeeded()?.stdout)?;
    assert_eq!(v["verdict"]["result"], "denied");
    assert_eq!(v["verdict"]["reason"]["kind"], "sourceNotListed");
    // Not meshed: refused with the reason.
    check(&format!("{}/plain", ns("outside")), &v1).refused("is not part of a mesh")?;

    // verify connectivity in SMI mode: bookthief fails the policy check; the Envoy check is skipped
    // (no kubelet to proxy to) with the reason.
    let svc = format!("{}/bookstore-v1", ns("bookstore"));
    let mut args = vec![
        "verify",
        "connectivity",
        "--from-pod",
        &thief,
        "--to-pod",
        &v1,
        "--to-service",
        &svc,
    ];
    args.extend(g);
    let run = osm(&server, &args)?;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(out.contains("[PASS] pods exist"), "{out}");
    assert!(out.contains("[PASS] namespaces in mesh"), "{out}");
    assert!(out.contains("[PASS] source sidecar"), "{out}");
    assert!(out.contains("[PASS] service selects destination"), "{out}");
    assert!(out.contains("[FAIL] policy allows"), "{out}");
    assert!(out.contains("[SKIPPED] source Envoy config"), "{out}");
    args[3] = &buyer;
    let run = osm(&server, &args)?;
    assert!(run.stdout.contains("[PASS] policy allows"), "{}", run.stdout);
    assert!(
        run.stdout.contains("bookbuyer-access-bookstore-v1"),
        "{}",
        run.stdout
    );
    // Over TCP the HTTPRouteGroup rules do not apply.
    args.extend(["--app-protocol", "tcp"]);
    let run = osm(&server, &args)?;
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.contains("[FAIL] policy allows"), "{}", run.stdout);
    assert!(run.stdout.contains("a TCPRoute rule is needed"), "{}", run.stdout);

    // Permissive mode: bookthief is allowed.
    let patch = json!({"spec": {"traffic": {"enablePermissiveTrafficPolicyMode": true}}});
    let mc = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "config.openservicemesh.io",
        "v1alpha2",
        "MeshConfig",
    ));
    Api::<DynamicObject>::namespaced_with(client.clone(), &osm_ns, &mc)
        .patch("osm-mesh-config", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let run = check(&thief, &v1).succeeded()?;
    assert!(
        run.stdout.contains("Permissive traffic policy mode is enabled"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("is allowed to communicate"), "{}", run.stdout);

    // proxy get: a pod without envoy is refused clearly; a missing pod too.
    let outside = ns("outside");
    osm(&server, &["proxy", "get", "config_dump", "plain", "-n", &outside])
        .refused(&format!("pod {outside}/plain has no envoy container"))?;
    osm(&server, &["proxy", "get", "config_dump", "nope", "-n", &outside])
        .refused(&format!("pod {outside}/nope not found"))?;

    // bug-report: a tarball with the MeshConfig, the policies and the pods, and no Secret.
    let dir = tempfile::tempdir()?;
    let out_file = dir.path().join("report.tar.gz");
    let apps = format!("{},{}", ns("bookbuyer"), ns("bookstore"));
    let out_str = out_file.display().to_string();
    let mut args = vec![
        "support",
        "bug-report",
        "--app-namespaces",
        &apps,
        "--out-file",
        &out_str,
    ];
    args.extend(g);
    let run = osm(&server, &args).succeeded()?;
    assert!(run.stdout.contains("Bug report written to"), "{}", run.stdout);
    let files = untar(&out_file)?;
    eprintln!(
        "archive: {:?}\nerrors.txt:\n{}",
        files.keys(),
        files.get("osm-bug-report/errors.txt").map_or("", |s| s.as_str())
    );
    let names: Vec<&String> = files.keys().collect();
    assert!(
        files["osm-bug-report/README.txt"].contains(&ns("bookstore")),
        "README names the app namespaces"
    );
    let mesh_configs = files
        .get("osm-bug-report/control-plane/meshconfigs.yaml")
        .with_context(|| format!("no meshconfigs.yaml in {names:?}"))?;
    assert!(mesh_configs.contains("osm-mesh-config"), "{mesh_configs}");
    assert!(
        mesh_configs.contains("enablePermissiveTrafficPolicyMode: true"),
        "{mesh_configs}"
    );
    let tts = &files["osm-bug-report/policies/traffictargets.yaml"];
    assert!(tts.contains("bookbuyer-access-bookstore-v1"), "{tts}");
    let pods = &files[&format!("osm-bug-report/namespaces/{}/pods.yaml", ns("bookstore"))];
    assert!(pods.contains("bookstore-v1"), "{pods}");
    for (name, text) in &files {
        assert!(!text.contains("kind: Secret"), "{name} holds a Secret");
        assert!(!text.contains("TOP-SECRET-CA"), "{name} holds the Secret's data");
    }
    // The sidecars cannot be reached here (no kubelet): recorded, not fatal.
    let errors = files.get("osm-bug-report/errors.txt").context("errors.txt")?;
    assert!(errors.contains("config_dump"), "{errors}");
    Ok(())
}

/// The files of a .tar.gz, by path.
fn untar(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let file = std::fs::File::open(path)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.display().to_string();
        let mut text = String::new();
        entry.read_to_string(&mut text)?;
        files.insert(name, text);
    }
    if files.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(files)
}

/// `.succeeded()`: a finished run that must have succeeded (reads better in a chain).
trait Succeeded {
    fn succeeded(self) -> anyhow::Result<Run>;
}

impl Succeeded for anyhow::Result<Run> {
    fn succeeded(self) -> anyhow::Result<Run> {
        self?.ok()
    }
}

trait Refused {
    fn refused(self, needle: &str) -> anyhow::Result<Run>;
}

impl Refused for anyhow::Result<Run> {
    fn refused(self, needle: &str) -> anyhow::Result<Run> {
        self?.refused(needle)
    }
}
