//! The tree's dependency rules, checked over `cargo metadata` (each crate's declared, normal
//! dependencies; what envoy-types brings along is not counted):
//! - the model and xDS layers (and every workspace crate they build on) use no Kubernetes client, no
//!   async runtime and no network library;
//! - data flows one way: a crate depends only on crates of earlier stages (ARCHITECTURE.md);
//! - product crates do not depend on test infrastructure.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Pipeline stage of each workspace crate: a crate may depend on crates of lower stages only
/// (same-stage crates are independent of each other).
const STAGES: &[(&str, u8)] = &[
    ("osm-api", 0),
    ("osm-init", 0),
    ("osm-model", 1),
    ("osm-ca", 1),
    ("osm-xds", 2),
    ("osm-sources", 2),
    ("osm-k8s", 2),
    ("osm-ads", 3),
    ("osm-controller", 4),
    ("osm-webhook", 4),
    ("osm-install", 4),
    ("osm-cli", 5),
    ("osm-control-plane", 5),
];

/// Test infrastructure: no product crate may depend on it, except as listed in [`ALLOWED_TEST_DEPS`].
const TEST_INFRA: &[&str] = &[
    "osm-harness",
    "osm-envtest",
    "osm-loadtest",
    "osm-demo-apps",
    "osm-fixtures",
    "osm-e2e",
];

/// `osm demo` runs the bookstore demo's apps in network namespaces: the CLI ships the harness, the
/// apps and the demo's manifests.
const ALLOWED_TEST_DEPS: &[(&str, &str)] = &[
    ("osm-cli", "osm-harness"),
    ("osm-cli", "osm-demo-apps"),
    ("osm-cli", "osm-fixtures"),
];

/// The pure layers: input → intent → Envoy resources.
const PURE: &[&str] = &["osm-model", "osm-xds"];

/// Crates a pure layer must not declare: Kubernetes clients, async runtimes, network libraries.
const NOT_PURE: &[&str] = &[
    "kube-client",
    "kube-runtime",
    "tokio",
    "tokio-stream",
    "tokio-rustls",
    "async-std",
    "smol",
    "futures",
    "mio",
    "socket2",
    "hyper",
    "hyper-util",
    "h2",
    "tonic",
    "axum",
    "tower",
    "reqwest",
    "rustls",
    "notify",
    "nix",
];

struct Dep {
    name: String,
    features: Vec<String>,
    default_features: bool,
}

fn workspace() -> BTreeMap<String, Vec<Dep>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null()) // normal dependencies only
                .map(|d| Dep {
                    name: d["name"].as_str().expect("name").to_owned(),
                    features: d["features"]
                        .as_array()
                        .map(|f| f.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default(),
                    default_features: d["uses_default_features"].as_bool().unwrap_or(true),
                })
                .collect();
            (p["name"].as_str().expect("name").to_owned(), deps)
        })
        .collect()
}

/// `krate` and the workspace crates it reaches through normal dependencies.
fn reach<'a>(ws: &'a BTreeMap<String, Vec<Dep>>, krate: &'a str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![krate];
    while let Some(k) = todo.pop() {
        if seen.insert(k) {
            todo.extend(
                ws[k]
                    .iter()
                    .filter(|d| ws.contains_key(&d.name))
                    .map(|d| d.name.as_str()),
            );
        }
    }
    seen
}

#[test]
fn dependency_rule_pure_layers_use_no_kubernetes_client_runtime_or_network() {
    let ws = workspace();
    let mut broken = Vec::new();
    for pure in PURE {
        for krate in reach(&ws, pure) {
            for dep in &ws[krate] {
                if NOT_PURE.contains(&dep.name.as_str()) {
                    broken.push(format!("{krate} (used by {pure}) depends on {}", dep.name));
                }
                // kube's core types and derive are data; its client and runtime are not.
                if dep.name == "kube" && (dep.default_features || dep.features.iter().any(|f| f != "derive"))
                {
                    broken.push(format!(
                        "{krate} (used by {pure}) depends on kube with features {:?} (default {}): only `derive` is pure",
                        dep.features, dep.default_features
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn dependency_rule_data_flows_one_way() {
    let ws = workspace();
    let stage: BTreeMap<&str, u8> = STAGES.iter().copied().collect();
    let mut broken = Vec::new();
    for (krate, deps) in &ws {
        if TEST_INFRA.contains(&krate.as_str()) {
            continue;
        }
        let Some(&own) = stage.get(krate.as_str()) else {
            broken.push(format!("{krate} has no stage: add it to STAGES"));
            continue;
        };
        for dep in deps.iter().filter(|d| ws.contains_key(&d.name)) {
            let name = dep.name.as_str();
            if TEST_INFRA.contains(&name) {
                if !ALLOWED_TEST_DEPS.contains(&(krate.as_str(), name)) {
                    broken.push(format!(
                        "product crate {krate} depends on test infrastructure {name}"
                    ));
                }
                continue;
            }
            match stage.get(name) {
                Some(&s) if s < own => {}
                _ => broken.push(format!(
                    "{krate} (stage {own}) depends on {name}, not an earlier stage"
                )),
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
