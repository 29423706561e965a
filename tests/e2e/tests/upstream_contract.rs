//! The upstream contract read the same way by its three users: the injector (`osm_webhook::inject`),
//! the Kubernetes source (`osm_k8s::assemble`) and the directory source (`osm_sources`). One table of
//! label/annotation values, each run through all three, compared with upstream OSM v1.2.4:
//! - `openservicemesh.io/ignore` by presence (upstream's webhook selects `DoesNotExist`);
//! - `openservicemesh.io/monitored-by` must equal the mesh name;
//! - `openservicemesh.io/sidecar-injection` case-insensitive enabled/yes/true, disabled/no/false,
//!   anything else (`""` included) an error; the pod's wins over its namespace's.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use osm_api::config::MeshConfigSpec;
use osm_api::contract::{IGNORE_LABEL, MONITORED_BY_LABEL, SIDECAR_INJECTION_ANNOTATION};
use osm_k8s::Snapshot;
use osm_model::ObjectRef;
use osm_webhook::inject::{self, InjectConfig, InjectDecision, SkipReason};
use serde_json::{Value, json};

const MESH: &str = "osm";
const NS: &str = "shop";

/// The values every row is tried with: absent, empty, the booleans and switches in two cases, garbage.
const VALUES: [Option<&str>; 9] = [
    None,
    Some(""),
    Some("true"),
    Some("True"),
    Some("false"),
    Some("enabled"),
    Some("disabled"),
    Some("DISABLED"),
    Some("garbage"),
];

fn map(pairs: &[(&str, Option<&str>)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            m.insert((*k).to_string(), json!(v));
        }
    }
    Value::Object(m)
}

fn namespace(labels: &Value, annotations: &Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": NS, "labels": labels, "annotations": annotations}}))
        .expect("namespace")
}

fn pod(annotations: &Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": NS, "labels": {"app": "web"}, "annotations": annotations},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "web", "image": "web:1"}]},
        "status": {"podIP": "10.0.0.7"}
    }))
    .expect("pod")
}

fn service() -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .expect("service")
}

/// What one user made of a namespace and pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The namespace is out of the mesh (ignored or not monitored).
    OutOfMesh,
    /// In the mesh; the pod gets a sidecar.
    Sidecar,
    /// In the mesh; the pod gets no sidecar.
    NoSidecar,
    /// The annotation value is refused (admission error / a located source error).
    Refused,
}

fn injector(ns: &Namespace, pod: &Pod) -> Outcome {
    let config = InjectConfig::new(MESH, "osm-system", "envoy:1", "init:1");
    match inject::decide(ns, pod, &config) {
        Ok(InjectDecision::Inject) => Outcome::Sidecar,
        Ok(InjectDecision::Skip {
            reason: SkipReason::IgnoredNamespace(_) | SkipReason::NotMonitored { .. },
        }) => Outcome::OutOfMesh,
        Ok(InjectDecision::Skip { .. }) => Outcome::NoSidecar,
        Err(_) => Outcome::Refused,
    }
}

/// The controller does not read the injection annotation (the injector has acted on it): only
/// whether the namespace is in the mesh.
fn kubernetes_source(ns: &Namespace) -> bool {
    let snap = Snapshot {
        namespaces: vec![Arc::new(ns.clone())],
        services: vec![Arc::new(service())],
        ..Snapshot::default()
    };
    let assembled = osm_k8s::assemble::assemble(&snap, MESH, "cluster.local", &MeshConfigSpec::default());
    assembled.input.services.contains_key(&ObjectRef::new(NS, "web"))
}

fn directory_source(ns: &Namespace, pod: &Pod) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": ns.metadata}),
        serde_json::to_value(pod).expect("pod json"),
        serde_json::to_value(service()).expect("service json"),
    ];
    let yaml: Vec<String> = docs
        .iter()
        .map(|d| serde_saphyr::to_string(d).expect("yaml"))
        .collect();
    std::fs::write(dir.path().join("mesh.yaml"), yaml.join("---\n")).expect("write");
    match osm_sources::ManifestDir::new(dir.path())
        .with_mesh_name(MESH)
        .load()
    {
        Err(_) => Outcome::Refused,
        Ok(result) => match result.input.pods.get(&ObjectRef::new(NS, "web-1")) {
            None => Outcome::OutOfMesh,
            Some(p) if p.proxy_uuid.is_some() => Outcome::Sidecar,
            Some(_) => Outcome::NoSidecar,
        },
    }
}

fn check(rows: Vec<(String, Outcome, Outcome, Outcome)>) {
    let wrong: Vec<String> = rows
        .iter()
        .filter(|(_, expected, injector, directory)| injector != expected || directory != expected)
        .map(|(case, expected, injector, directory)| {
            format!("{case}: expected {expected:?}, injector {injector:?}, directory source {directory:?}")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "disagreements with upstream:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn upstream_contract_ignore_label_by_presence() {
    let mut rows = Vec::new();
    for value in VALUES {
        let labels = map(&[(MONITORED_BY_LABEL, Some(MESH)), (IGNORE_LABEL, value)]);
        let ns = namespace(&labels, &map(&[(SIDECAR_INJECTION_ANNOTATION, Some("enabled"))]));
        let pod = pod(&json!({}));
        let expected = if value.is_some() {
            Outcome::OutOfMesh
        } else {
            Outcome::Sidecar
        };
        assert_eq!(
            kubernetes_source(&ns),
            expected != Outcome::OutOfMesh,
            "Kubernetes source, {IGNORE_LABEL}={value:?}"
        );
        rows.push((
            format!("{IGNORE_LABEL}={value:?}"),
            expected,
            injector(&ns, &pod),
            directory_source(&ns, &pod),
        ));
    }
    check(rows);
}

#[test]
fn upstream_contract_monitored_by_names_the_mesh() {
    for value in [None, Some(""), Some(MESH), Some("OSM"), Some("other")] {
        let labels = map(&[(MONITORED_BY_LABEL, value)]);
        let ns = namespace(&labels, &map(&[(SIDECAR_INJECTION_ANNOTATION, Some("enabled"))]));
        let pod = pod(&json!({}));
        let monitored = value == Some(MESH);
        assert_eq!(
            kubernetes_source(&ns),
            monitored,
            "Kubernetes source, {MONITORED_BY_LABEL}={value:?}"
        );
        let expected = if monitored {
            Outcome::Sidecar
        } else {
            Outcome::OutOfMesh
        };
        assert_eq!(
            injector(&ns, &pod),
            expected,
            "injector, {MONITORED_BY_LABEL}={value:?}"
        );
        // Local mode's one documented default: an unlabelled namespace is meshed (no `osm namespace
        // add` runs on a plain host); another mesh's namespace is not.
        let local = match value {
            None | Some("") | Some(MESH) => Outcome::Sidecar,
            _ => Outcome::OutOfMesh,
        };
        assert_eq!(
            directory_source(&ns, &pod),
            local,
            "directory source, {MONITORED_BY_LABEL}={value:?}"
        );
    }
}

/// Upstream's reading of a sidecar-injection value.
fn expected_switch(value: Option<&str>) -> Result<Option<bool>, ()> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("enabled" | "yes" | "true") => Ok(Some(true)),
        Some("disabled" | "no" | "false") => Ok(Some(false)),
        Some(_) => Err(()),
    }
}

#[test]
fn upstream_contract_injection_annotation_on_the_namespace() {
    let mut rows = Vec::new();
    let labels = map(&[(MONITORED_BY_LABEL, Some(MESH))]);
    for value in VALUES {
        let ns = namespace(&labels, &map(&[(SIDECAR_INJECTION_ANNOTATION, value)]));
        let pod = pod(&json!({}));
        let expected = match expected_switch(value) {
            Err(()) => Outcome::Refused,
            Ok(Some(true)) => Outcome::Sidecar,
            Ok(Some(false)) => Outcome::NoSidecar,
            Ok(None) => Outcome::NoSidecar,
        };
        let directory = directory_source(&ns, &pod);
        // Local mode's one documented default: a pod nobody annotated gets a sidecar.
        let directory = if value.is_none() && directory == Outcome::Sidecar {
            Outcome::NoSidecar
        } else {
            directory
        };
        rows.push((
            format!("namespace {SIDECAR_INJECTION_ANNOTATION}={value:?}"),
            expected,
            injector(&ns, &pod),
            directory,
        ));
    }
    check(rows);
}

#[test]
fn upstream_contract_injection_annotation_on_the_pod_wins() {
    let mut rows = Vec::new();
    let labels = map(&[(MONITORED_BY_LABEL, Some(MESH))]);
    for ns_value in [Some("enabled"), Some("disabled")] {
        for value in VALUES {
            let ns = namespace(&labels, &map(&[(SIDECAR_INJECTION_ANNOTATION, ns_value)]));
            let pod = pod(&map(&[(SIDECAR_INJECTION_ANNOTATION, value)]));
            let expected = match (expected_switch(value), ns_value) {
                (Err(()), _) => Outcome::Refused,
                (Ok(Some(true)), _) | (Ok(None), Some("enabled")) => Outcome::Sidecar,
                _ => Outcome::NoSidecar,
            };
            rows.push((
                format!("namespace {ns_value:?}, pod {SIDECAR_INJECTION_ANNOTATION}={value:?}"),
                expected,
                injector(&ns, &pod),
                directory_source(&ns, &pod),
            ));
        }
    }
    check(rows);
}

#[test]
fn upstream_contract_values_are_defined_once() {
    // The constants the three users read are the contract's own: a spot check that the names are
    // upstream's, so a typo in the one definition cannot hide behind agreeing users.
    let expected = BTreeMap::from([
        (MONITORED_BY_LABEL, "openservicemesh.io/monitored-by"),
        (IGNORE_LABEL, "openservicemesh.io/ignore"),
        (
            SIDECAR_INJECTION_ANNOTATION,
            "openservicemesh.io/sidecar-injection",
        ),
    ]);
    for (got, want) in expected {
        assert_eq!(got, want);
    }
    assert_eq!(
        osm_api::contract::proxy_key("u1", "bookbuyer", "bookbuyer", "cluster.local"),
        "u1.sidecar.bookbuyer.bookbuyer.cluster.local"
    );
}
