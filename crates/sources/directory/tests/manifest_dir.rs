//! The local manifest directory: the bookstore demo as files, the rules for namespaces, sidecars and
//! addresses, and what happens to the served state when a file is wrong.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use osm_api::contract::PROXY_UUID_LABEL;
use osm_model::{MeshInput, ObjectRef, compute};
use osm_sources::{ManifestDir, ManifestSource, Reload, SourceError, derived_proxy_uuid};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bookstore");

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A writable copy of the bookstore fixture.
fn bookstore_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("manifests");
    copy_dir(Path::new(FIXTURE), &dir);
    (tmp, dir)
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn loaded(dir: &Path) -> ManifestSource {
    let mut source = ManifestSource::new(ManifestDir::new(dir));
    match source.reload() {
        Reload::Reloaded(_) => source,
        other => panic!("expected a clean load, got {other:?}"),
    }
}

fn rejected(source: &mut ManifestSource) -> Vec<SourceError> {
    match source.reload() {
        Reload::Rejected(errors) => errors,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn errors_text(errors: &[SourceError]) -> String {
    errors.iter().map(|e| format!("{e}\n")).collect()
}

fn pod_ref(ns: &str, name: &str) -> ObjectRef {
    ObjectRef::new(ns, name)
}

/// Outbound service names of the proxy of pod `ns/name`.
fn reachable(input: &MeshInput, ns: &str, name: &str) -> Vec<String> {
    let uuid = input.pods[&pod_ref(ns, name)]
        .proxy_uuid
        .clone()
        .expect("pod has a sidecar");
    let model = compute(input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    model.proxies[&uuid]
        .outbound
        .services
        .iter()
        .map(|s| s.service.to_string())
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The bookstore demo as a directory: every pod meshed, addresses from the workload-ip annotation,
/// the named target port resolved, SMI mode from the MeshConfig: bookbuyer reaches the bookstore,
/// bookthief reaches nothing.
#[test]
fn bookstore_directory_loads_and_enforces_smi() {
    let result = ManifestDir::new(FIXTURE)
        .load()
        .unwrap_or_else(|e| panic!("{}", errors_text(&e)));
    let input = &result.input;
    assert!(!input.mesh_config.traffic.enable_permissive_traffic_policy_mode);
    assert_eq!(input.trust_domain, "cluster.local");
    let pods: Vec<String> = input.pods.keys().map(ToString::to_string).collect();
    assert_eq!(
        pods,
        [
            "bookbuyer/bookbuyer-0",
            "bookstore/bookstore-v1-0",
            "bookstore/bookstore-v2-0",
            "bookthief/bookthief-0",
            "bookwarehouse/bookwarehouse"
        ]
    );
    for pod in input.pods.values() {
        let uuid = derived_proxy_uuid(&pod.id.namespace, &pod.id.name);
        assert_eq!(pod.proxy_uuid.as_deref(), Some(uuid.as_str()), "{}", pod.id);
        assert_eq!(pod.labels.get(PROXY_UUID_LABEL), Some(&uuid));
    }
    let v1 = &input.pods[&pod_ref("bookstore", "bookstore-v1-0")];
    assert_eq!(v1.service_account, "bookstore-v1");
    assert_eq!(v1.ip, Some(ip("192.0.2.12")));
    assert_eq!(v1.labels["version"], "v1");

    let services: Vec<String> = input.services.keys().map(ToString::to_string).collect();
    assert_eq!(
        services,
        [
            "bookstore/bookstore",
            "bookstore/bookstore-v1",
            "bookstore/bookstore-v2",
            "bookwarehouse/bookwarehouse"
        ]
    );
    let warehouse = &input.services[&pod_ref("bookwarehouse", "bookwarehouse")];
    assert_eq!(warehouse.cluster_ip, Some(ip("198.51.100.4")));
    assert_eq!(warehouse.ports[0].port, 14001);
    assert_eq!(warehouse.ports[0].target_port, 14001, "named port `web` resolved");
    assert_eq!(warehouse.ports[0].protocol, osm_model::AppProtocol::Http);
    assert_eq!(input.traffic_targets.len(), 3);
    assert_eq!(input.http_route_groups.len(), 2);
    assert_eq!(input.traffic_splits.len(), 1);

    assert_eq!(
        reachable(input, "bookbuyer", "bookbuyer-0"),
        [
            "bookstore/bookstore",
            "bookstore/bookstore-v1",
            "bookstore/bookstore-v2"
        ]
    );
    assert!(reachable(input, "bookthief", "bookthief-0").is_empty());
    assert_eq!(
        reachable(input, "bookstore", "bookstore-v1-0"),
        ["bookwarehouse/bookwarehouse"]
    );
}

/// A wrong type in the MeshConfig is refused with the apiserver's words, naming file, object and
/// field; the MeshConfig keeps its last good contents (SMI mode stays on).
#[test]
fn meshconfig_type_error_keeps_last_good_state() {
    let (_tmp, dir) = bookstore_copy();
    let mut source = loaded(&dir);
    let before = source.input().clone();
    write(
        &dir,
        "mesh-config.yaml",
        "apiVersion: config.openservicemesh.io/v1alpha2\nkind: MeshConfig\nmetadata:\n  name: osm-mesh-config\n  \
         namespace: osm-system\nspec:\n  traffic:\n    enablePermissiveTrafficPolicyMode: true\n    enableEgress: \"no\"\n",
    );
    let errors = rejected(&mut source);
    assert_eq!(errors.len(), 1, "{}", errors_text(&errors));
    let e = &errors[0];
    assert_eq!(e.file, Path::new("mesh-config.yaml"));
    assert_eq!(e.document, 1);
    assert_eq!(e.object.as_deref(), Some("MeshConfig osm-system/osm-mesh-config"));
    assert_eq!(e.field.as_deref(), Some("spec.traffic.enableEgress"));
    assert!(
        e.to_string().starts_with(
            "mesh-config.yaml (document 1, MeshConfig osm-system/osm-mesh-config): spec.traffic.enableEgress: \
             Invalid value: \"string\": spec.traffic.enableEgress in body must be of type boolean"
        ),
        "{e}"
    );
    assert_eq!(source.input(), &before);
    assert_eq!(source.reload(), Reload::Unchanged);
    assert_eq!(source.errors(), &errors[..]);
}

/// A negative TrafficSplit weight, in the second document of a file in a subdirectory: the message
/// names the document, the object and the field.
#[test]
fn negative_weight_names_document_object_and_field() {
    let (_tmp, dir) = bookstore_copy();
    let mut source = loaded(&dir);
    let before = source.input().clone();
    let split = fs::read_to_string(dir.join("policies/split.yaml")).unwrap();
    let bad = split.replacen("weight: 50", "weight: -1", 1);
    // A TCPRoute first, so the split is document 2.
    write(
        &dir,
        "policies/split.yaml",
        &format!(
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata:\n  name: tcp\n  namespace: bookstore\n\
             spec:\n  matches:\n    ports: [14002]\n---\n{bad}"
        ),
    );
    let errors = rejected(&mut source);
    assert_eq!(
        errors_text(&errors),
        "policies/split.yaml (document 2, TrafficSplit bookstore/bookstore-split): \
         spec.backends[0].weight: must be >= 0\n"
    );
    assert_eq!(
        source.input(),
        &before,
        "the whole file keeps its last good contents"
    );
    assert!(source.input().tcp_routes.is_empty());
}

/// Per-file last good state: one file is broken while another changes; the good change applies,
/// the broken file keeps its previous contents, and fixing it applies it.
#[test]
fn a_broken_file_keeps_its_contents_while_others_apply() {
    let (_tmp, dir) = bookstore_copy();
    let mut source = loaded(&dir);
    write(
        &dir,
        "policies/split.yaml",
        "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n: [",
    );
    let mc = fs::read_to_string(dir.join("mesh-config.yaml")).unwrap();
    write(&dir, "mesh-config.yaml", &mc.replace("Mode: false", "Mode: true"));
    let errors = rejected(&mut source);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, Path::new("policies/split.yaml"));
    assert_eq!(errors[0].document, 0);
    assert!(errors[0].message.contains("invalid YAML"), "{}", errors[0]);
    let input = source.input().clone();
    assert!(input.mesh_config.traffic.enable_permissive_traffic_policy_mode);
    assert_eq!(
        input.traffic_splits.len(),
        1,
        "the split keeps its last good contents"
    );

    write(
        &dir,
        "policies/split.yaml",
        &osm_fixtures::bookstore_split(90, 10),
    );
    let Reload::Reloaded(input) = source.reload() else {
        panic!("{}", errors_text(source.errors()))
    };
    let split = &input.traffic_splits[&pod_ref("bookstore", "bookstore-split")];
    assert_eq!(split.backends[0].weight, 90);
    assert!(source.errors().is_empty());
}

/// Deleting a file removes its objects; adding one adds them.
#[test]
fn deleting_and_adding_files() {
    let (_tmp, dir) = bookstore_copy();
    let mut source = loaded(&dir);
    fs::remove_file(dir.join("policies/split.yaml")).unwrap();
    let Reload::Reloaded(input) = source.reload() else {
        panic!("{}", errors_text(source.errors()))
    };
    assert!(input.traffic_splits.is_empty());
    write(&dir, "more/split.yml", &osm_fixtures::bookstore_split(1, 2));
    let Reload::Reloaded(input) = source.reload() else {
        panic!("{}", errors_text(source.errors()))
    };
    assert_eq!(input.traffic_splits.len(), 1);
    // Not manifests: other extensions and hidden files.
    write(&dir, "notes.txt", "kind: [");
    write(&dir, ".editor.yaml.swp", "kind: [");
    write(&dir, ".hidden/x.yaml", "kind: [");
    assert_eq!(source.reload(), Reload::Unchanged);
}

/// An object defined twice: the new file is blamed and left out; the rest of the change applies.
#[test]
fn duplicate_object_blames_the_new_file() {
    let (_tmp, dir) = bookstore_copy();
    let mut source = loaded(&dir);
    let split = fs::read_to_string(dir.join("policies/split.yaml")).unwrap();
    // `a-copy.yaml` sorts before `policies/`, yet the older file keeps the object.
    write(&dir, "a-copy.yaml", &split);
    write(
        &dir,
        "extra-sa.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: extra\n",
    );
    let errors = rejected(&mut source);
    assert_eq!(errors.len(), 1, "{}", errors_text(&errors));
    assert_eq!(errors[0].file, Path::new("a-copy.yaml"));
    assert_eq!(errors[0].field.as_deref(), Some("metadata.name"));
    assert!(
        errors[0].message.contains(
            "already defined by TrafficSplit bookstore/bookstore-split (policies/split.yaml, document 1)"
        ),
        "{}",
        errors[0]
    );
    assert_eq!(source.input().traffic_splits.len(), 1);
}

/// A named targetPort that no selected pod declares is an error on that Service.
#[test]
fn unresolvable_named_target_port() {
    let (_tmp, dir) = bookstore_copy();
    let mut source = loaded(&dir);
    let text = fs::read_to_string(dir.join("bookwarehouse.yaml")).unwrap();
    write(
        &dir,
        "bookwarehouse.yaml",
        &text.replace("targetPort: web", "targetPort: grpc"),
    );
    let errors = rejected(&mut source);
    assert_eq!(
        errors_text(&errors),
        "bookwarehouse.yaml (document 2, Service bookwarehouse/bookwarehouse): spec.ports[0].targetPort: \
         Invalid value: \"grpc\": no pod selected by this Service declares a container port with that name\n"
    );
    assert_eq!(
        source.input().services[&pod_ref("bookwarehouse", "bookwarehouse")].ports[0].target_port,
        14001
    );
}

/// Namespace and pod rules: ignored namespaces and other meshes' namespaces are left out; injection
/// disabled on a namespace leaves its pods without sidecars unless a pod enables it (pod wins).
#[test]
fn namespace_and_injection_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "ns.yaml",
        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: ignored
  labels:
    openservicemesh.io/ignore: "true"
---
apiVersion: v1
kind: Namespace
metadata:
  name: other-mesh
  labels:
    openservicemesh.io/monitored-by: other
---
apiVersion: v1
kind: Namespace
metadata:
  name: no-injection
  annotations:
    openservicemesh.io/sidecar-injection: disabled
"#,
    );
    let pod = |ns: &str, name: &str, annotations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{{annotations}}}\n\
             spec:\n  containers:\n  - name: app\n"
        )
    };
    let docs = [
        pod("ignored", "a", ""),
        pod("other-mesh", "b", ""),
        pod("no-injection", "plain", ""),
        pod(
            "no-injection",
            "opted-in",
            "openservicemesh.io/sidecar-injection: enabled",
        ),
        pod("undeclared", "c", ""),
        pod(
            "undeclared",
            "opted-out",
            "openservicemesh.io/sidecar-injection: disabled",
        ),
    ];
    write(dir, "pods.yaml", &docs.join("---\n"));
    let input = ManifestDir::new(dir)
        .load()
        .unwrap_or_else(|e| panic!("{}", errors_text(&e)))
        .input;
    let sidecars: Vec<(String, bool)> = input
        .pods
        .values()
        .map(|p| (p.id.to_string(), p.proxy_uuid.is_some()))
        .collect();
    assert_eq!(
        sidecars,
        [
            ("no-injection/opted-in".to_string(), true),
            ("no-injection/plain".to_string(), false),
            ("undeclared/c".to_string(), true),
            ("undeclared/opted-out".to_string(), false),
        ]
    );
    let mesh = ManifestDir::new(dir)
        .with_mesh_name("other")
        .load()
        .unwrap()
        .input;
    assert!(mesh.pods.contains_key(&pod_ref("other-mesh", "b")));
}

/// A Deployment's replicas become pods `<name>-<i>` with one address each from the annotation list;
/// a list of the wrong length is refused. A Pod may give its address as `status.podIP`; an explicit
/// `osm-proxy-uuid` label is kept.
#[test]
fn deployments_and_workload_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let deployment = |ips: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchExpressions:
    - {{key: app, operator: In, values: [web]}}
  template:
    metadata:
      labels: {{app: web}}
      annotations:
        openservicemesh.io/workload-ip: "{ips}"
    spec:
      serviceAccountName: web
      containers:
      - name: web
"#
        )
    };
    write(dir, "web.yaml", &deployment("192.0.2.1, 192.0.2.2,192.0.2.3"));
    write(
        dir,
        "host.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n  namespace: shop\n  labels:\n    osm-proxy-uuid: db-proxy\n\
         spec:\n  containers:\n  - name: db\nstatus:\n  podIP: 2001:db8::5\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: no-address\n  namespace: shop\nspec:\n  containers:\n  - name: x\n",
    );
    let mut source = loaded(dir);
    let input = source.input();
    let addresses: Vec<(String, Option<IpAddr>)> =
        input.pods.values().map(|p| (p.id.name.clone(), p.ip)).collect();
    assert_eq!(
        addresses,
        [
            ("db".to_string(), Some(ip("2001:db8::5"))),
            ("no-address".to_string(), None),
            ("web-0".to_string(), Some(ip("192.0.2.1"))),
            ("web-1".to_string(), Some(ip("192.0.2.2"))),
            ("web-2".to_string(), Some(ip("192.0.2.3"))),
        ]
    );
    assert_eq!(
        input.pods[&pod_ref("shop", "db")].proxy_uuid.as_deref(),
        Some("db-proxy")
    );
    assert_eq!(input.pods[&pod_ref("shop", "web-1")].service_account, "web");

    write(dir, "web.yaml", &deployment("192.0.2.1,192.0.2.2"));
    let errors = rejected(&mut source);
    assert_eq!(
        errors_text(&errors),
        "web.yaml (document 1, Deployment shop/web): \
         spec.template.metadata.annotations[openservicemesh.io/workload-ip]: \
         lists 2 address(es) for 3 replica(s): give one per replica, comma-separated\n"
    );
    // Two pods with one address: the changed file is blamed.
    write(dir, "web.yaml", &deployment("192.0.2.1,192.0.2.2,2001:db8::5"));
    let errors = rejected(&mut source);
    assert_eq!(errors.len(), 1, "{}", errors_text(&errors));
    assert_eq!(errors[0].file, Path::new("web.yaml"));
    assert!(errors[0].message.contains("address 2001:db8::5"), "{}", errors[0]);
}

/// Core kinds are checked like the apiserver would: type errors with their path, port ranges, names.
#[test]
fn core_kind_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "bad.yaml",
        r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  ports:
  - name: http
    port: 70000
  - name: admin
    port: abc
---
apiVersion: v1
kind: Pod
metadata:
  name: Web_1
spec:
  containers:
  - name: web
---
apiVersion: apps/v1beta1
kind: Deployment
metadata:
  name: old
---
- just
- a list
---
kind: Service
metadata:
  name: typeless
"#,
    );
    let errors = ManifestDir::new(dir).load().unwrap_err();
    let text = errors_text(&errors);
    assert_eq!(
        text,
        "bad.yaml (document 1, Service shop/web): spec.ports[1].port: invalid type: string \"abc\", expected i32\n\
         bad.yaml (document 2, Pod default/Web_1): metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 \
         subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an \
         alphanumeric character (e.g. 'example.com')\n\
         bad.yaml (document 3, Deployment default/old): apiVersion: no matches for kind \"Deployment\" in version \
         \"apps/v1beta1\" (served: apps/v1)\n\
         bad.yaml (document 4): document is not an object (a YAML mapping)\n\
         bad.yaml (document 5): apiVersion: Required value: apiVersion must be set\n",
    );
    write(
        dir,
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 70000\n",
    );
    let errors = ManifestDir::new(dir).load().unwrap_err();
    assert_eq!(
        errors_text(&errors),
        "bad.yaml (document 1, Service default/web): spec.ports[0].port: Invalid value: 70000: must be between 1 \
         and 65535, inclusive\n"
    );
}

/// Secrets are dropped unread: whatever they hold, no error and no message quotes them, even when
/// the file has other problems.
#[test]
fn secrets_are_never_read_or_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\ndata:\n  token: c3VwZXItc2VjcmV0LXRva2Vu\n\
                  stringData: [1, {super-secret-token: 2}]\ntype: 42\n";
    write(dir, "secret.yaml", secret);
    assert!(ManifestDir::new(dir).load().is_ok());
    write(
        dir,
        "secret.yaml",
        &format!("{secret}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports: 7\n"),
    );
    let errors = ManifestDir::new(dir).load().unwrap_err();
    assert_eq!(errors.len(), 1);
    // A syntax error in the Secret itself: reported by position, without the text.
    write(
        dir,
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nstringData:\n  token: \"super-secret-token\n  other: [\n",
    );
    let more = ManifestDir::new(dir).load().unwrap_err();
    for e in errors.iter().chain(&more) {
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("super-secret") && !text.contains("c3VwZXIt"),
            "{text}"
        );
    }
}

/// Kinds the source does not read are ignored; a missing directory is a problem, not an empty mesh.
#[test]
fn unknown_kinds_and_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "other.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n---\n\
         apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: y\n---\n# only a comment\n",
    );
    let result = ManifestDir::new(dir).load().unwrap();
    assert_eq!(result.input, MeshInput::new("cluster.local"));

    let (_tmp, fixture) = bookstore_copy();
    let mut source = loaded(&fixture);
    let before = source.input().clone();
    fs::rename(&fixture, fixture.with_file_name("moved")).unwrap();
    let errors = rejected(&mut source);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.starts_with("cannot read the directory"),
        "{}",
        errors[0]
    );
    assert_eq!(source.input(), &before);
}

/// Retry policies are validated and served in `MeshInput.retries`; an invalid one is reported.
#[test]
fn retries_are_read_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let retry = |retry_on: &str| {
        format!(
            "apiVersion: policy.openservicemesh.io/v1alpha1\nkind: Retry\nmetadata:\n  name: web\n  namespace: shop\n\
             spec:\n  source:\n    kind: ServiceAccount\n    name: web\n    namespace: shop\n  destinations:\n  \
             - kind: Service\n    name: api\n    namespace: shop\n  retryPolicy:\n    retryOn: {retry_on}\n    \
             perTryTimeout: 1s\n    numRetries: 3\n    retryBackoffBaseInterval: 1s\n"
        )
    };
    write(dir, "retry.yaml", &retry("5xx"));
    let result = ManifestDir::new(dir)
        .load()
        .unwrap_or_else(|e| panic!("{}", errors_text(&e)));
    assert!(result.extra.is_empty());
    let read = &result.input.retries[&ObjectRef::new("shop", "web")];
    assert_eq!(read.retry_policy.retry_on, "5xx");
    write(dir, "retry.yaml", &retry("sometimes"));
    let errors = ManifestDir::new(dir).load().unwrap_err();
    assert_eq!(errors.len(), 1, "{}", errors_text(&errors));
    assert_eq!(errors[0].object.as_deref(), Some("Retry shop/web"));
    assert_eq!(
        errors[0].field.as_deref(),
        Some("spec.retryPolicy.retryOn"),
        "{}",
        errors[0]
    );
}

/// An Egress policy `name` in `ns`, allowing ServiceAccount `ns/web` to reach `host` on `port`.
fn egress(ns: &str, name: &str, host: &str, port: i64) -> String {
    format!(
        "apiVersion: policy.openservicemesh.io/v1alpha1\nkind: Egress\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  sources:\n  - kind: ServiceAccount\n    name: web\n    namespace: {ns}\n  hosts: [{host}]\n  \
         ports:\n  - number: {port}\n    protocol: http\n"
    )
}

/// Egress policies are served in `MeshInput.egresses`, keyed by reference, with their spec, like the
/// SMI policies: only those of monitored namespaces (not an ignored one, not another mesh's); an
/// edit and a deletion apply; an invalid one is reported with its field.
#[test]
fn egress_policies_of_monitored_namespaces_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ignored\n  labels:\n    openservicemesh.io/ignore: \"true\"\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: other-mesh\n  labels:\n    \
         openservicemesh.io/monitored-by: other\n",
    );
    write(dir, "egress/shop.yaml", &egress("shop", "web", "example.com", 80));
    write(
        dir,
        "egress/elsewhere.yaml",
        &[
            egress("ignored", "web", "ignored.example", 80),
            egress("other-mesh", "web", "other.example", 80),
        ]
        .join("---\n"),
    );
    let mut source = loaded(dir);
    let input = source.input();
    let keys: Vec<String> = input.egresses.keys().map(ToString::to_string).collect();
    assert_eq!(keys, ["shop/web"], "only the monitored namespace's Egress");
    let spec = &input.egresses[&pod_ref("shop", "web")];
    assert_eq!(spec.hosts, ["example.com"]);
    assert!(spec.ip_addresses.is_empty());
    assert_eq!(
        (
            spec.sources[0].kind.as_str(),
            spec.sources[0].name.as_str(),
            spec.sources[0].namespace.as_str()
        ),
        ("ServiceAccount", "web", "shop")
    );
    assert_eq!(spec.ports.len(), 1);
    assert_eq!(spec.ports[0].number, 80);
    assert_eq!(spec.ports[0].protocol, "http");
    assert!(source.current().extra.is_empty(), "{:?}", source.current().extra);

    // The other mesh's Egress is served to that mesh.
    let other = ManifestDir::new(dir)
        .with_mesh_name("other")
        .load()
        .unwrap()
        .input;
    assert!(other.egresses.contains_key(&pod_ref("other-mesh", "web")));
    assert!(!other.egresses.contains_key(&pod_ref("ignored", "web")));

    // An edit applies; an invalid edit is refused with its field and the last good spec is kept.
    write(
        dir,
        "egress/shop.yaml",
        &egress("shop", "web", "example.com", 443),
    );
    let Reload::Reloaded(input) = source.reload() else {
        panic!("{}", errors_text(source.errors()))
    };
    assert_eq!(input.egresses[&pod_ref("shop", "web")].ports[0].number, 443);
    write(dir, "egress/shop.yaml", &egress("shop", "web", "example.com", 0));
    let errors = rejected(&mut source);
    assert_eq!(errors.len(), 1, "{}", errors_text(&errors));
    assert_eq!(errors[0].object.as_deref(), Some("Egress shop/web"));
    assert!(
        errors[0]
            .field
            .as_deref()
            .unwrap_or("")
            .starts_with("spec.ports[0].number"),
        "{}",
        errors[0]
    );
    assert_eq!(
        source.input().egresses[&pod_ref("shop", "web")].ports[0].number,
        443
    );

    // Deleting the file removes the policy.
    fs::remove_file(dir.join("egress/shop.yaml")).unwrap();
    let Reload::Reloaded(input) = source.reload() else {
        panic!("{}", errors_text(source.errors()))
    };
    assert!(input.egresses.is_empty(), "{:?}", input.egresses);
}

/// A directory that could not be listed and then comes back empty: the problem clears.
#[test]
fn directory_problem_clears_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("later");
    let mut source = ManifestSource::new(ManifestDir::new(&dir));
    assert_eq!(rejected(&mut source).len(), 1);
    fs::create_dir(&dir).unwrap();
    assert_eq!(source.reload(), Reload::Reloaded(MeshInput::new("cluster.local")));
    assert!(source.errors().is_empty());
}

/// IngressBackend policies are served in `MeshInput.ingress_backends` (no longer among the unused
/// extras); an invalid one — https validating client certificates with no AuthenticatedPrincipal — is
/// refused naming its field, and the last good spec is kept.
#[test]
fn ingress_backend_policies_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let policy = |protocol: &str, principal: bool| {
        format!(
            "apiVersion: policy.openservicemesh.io/v1alpha1\nkind: IngressBackend\nmetadata:\n  name: web\n  namespace: shop\n\
             spec:\n  backends:\n  - name: web\n    port:\n      number: 8080\n      protocol: {protocol}\n    tls:\n      \
             skipClientCertValidation: false\n  sources:\n  - kind: IPRange\n    name: 10.1.0.0/16\n{}",
            if principal {
                "  - kind: AuthenticatedPrincipal\n    name: gw.example.com\n"
            } else {
                ""
            }
        )
    };
    write(dir, "ingress/shop.yaml", &policy("http", false));
    let mut source = loaded(dir);
    let spec = &source.input().ingress_backends[&pod_ref("shop", "web")];
    assert_eq!(spec.backends[0].port.number, 8080);
    assert_eq!(spec.sources[0].name, "10.1.0.0/16");
    assert!(source.current().extra.is_empty(), "{:?}", source.current().extra);
    assert!(
        source.current().warnings.is_empty(),
        "{:?}",
        source.current().warnings
    );

    write(dir, "ingress/shop.yaml", &policy("https", true));
    let Reload::Reloaded(input) = source.reload() else {
        panic!("{}", errors_text(source.errors()))
    };
    assert_eq!(
        input.ingress_backends[&pod_ref("shop", "web")].backends[0]
            .port
            .protocol,
        "https"
    );
    write(dir, "ingress/shop.yaml", &policy("https", false));
    let errors = rejected(&mut source);
    assert_eq!(errors.len(), 1, "{}", errors_text(&errors));
    assert_eq!(errors[0].object.as_deref(), Some("IngressBackend shop/web"));
    assert_eq!(
        errors[0].field.as_deref(),
        Some("spec.backends[0].tls.skipClientCertValidation"),
        "{}",
        errors[0]
    );
    assert_eq!(
        source.input().ingress_backends[&pod_ref("shop", "web")].backends[0]
            .port
            .protocol,
        "https",
        "the last good spec is kept"
    );
}

/// Headless services in local mode: a StatefulSet's replicas are `<name>-<i>` named through its
/// `serviceName` (`web-0.web.shop`), and so is a Pod whose `hostname`/`subdomain` name the service —
/// the hostnames Kubernetes would put in the Endpoints, so per-pod names work without it.
#[test]
fn headless_stateful_set_pods_get_hostnames() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "web.yaml",
        r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: shop}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {openservicemesh.io/workload-ip: "192.0.2.10,192.0.2.11"}
    spec:
      serviceAccountName: web
      containers: [{name: web}]
  volumeClaimTemplates: []
---
apiVersion: v1
kind: Pod
metadata:
  name: extra
  namespace: shop
  labels: {app: web}
  annotations: {openservicemesh.io/workload-ip: "192.0.2.12"}
spec:
  hostname: extra-host
  subdomain: web
  containers: [{name: web}]
---
apiVersion: v1
kind: Pod
metadata:
  name: elsewhere
  namespace: shop
  labels: {app: web}
  annotations: {openservicemesh.io/workload-ip: "192.0.2.13"}
spec:
  hostname: nobody
  subdomain: other
  containers: [{name: web}]
"#,
    );
    let source = loaded(dir);
    let input = source.input();
    let web = &input.services[&pod_ref("shop", "web")];
    assert_eq!(web.cluster_ip, None, "headless");
    let hostnames: Vec<(String, Option<String>)> = input
        .endpoints_of(web)
        .into_iter()
        .map(|e| (e.ip.to_string(), e.hostname))
        .collect();
    assert_eq!(
        hostnames,
        [
            ("192.0.2.10".to_string(), Some("web-0".to_string())),
            ("192.0.2.11".to_string(), Some("web-1".to_string())),
            ("192.0.2.12".to_string(), Some("extra-host".to_string())),
            ("192.0.2.13".to_string(), None),
        ],
        "a subdomain other than the service names no pod"
    );
    assert!(
        source.current().warnings.is_empty(),
        "{:?}",
        source.current().warnings
    );
}
