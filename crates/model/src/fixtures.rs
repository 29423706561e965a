//! Builders for tests, benchmarks and the demo: services, pods and SMI policies written as users write
//! them (YAML), and the upstream bookstore demo.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use crate::input::*;

/// Builds a `MeshInput` step by step.
pub struct MeshBuilder {
    pub input: MeshInput,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("YAML document {index}: {message}")]
    Yaml { index: usize, message: String },
}

impl MeshBuilder {
    pub fn new(permissive: bool) -> Self {
        let mut input = MeshInput::new("cluster.local");
        input.mesh_config.traffic.enable_permissive_traffic_policy_mode = permissive;
        Self { input }
    }

    pub fn service(
        &mut self,
        namespace: &str,
        name: &str,
        cluster_ip: Option<IpAddr>,
        ports: &[(u16, u16, AppProtocol)],
        selector: &[(&str, &str)],
    ) -> &mut Self {
        let id = ServiceRef::new(namespace, name);
        self.input.services.insert(
            id.clone(),
            Service {
                id,
                cluster_ip,
                ports: ports
                    .iter()
                    .map(|&(port, target_port, protocol)| ServicePort {
                        name: None,
                        port,
                        target_port,
                        protocol,
                    })
                    .collect(),
                selector: labels(selector),
            },
        );
        self
    }

    pub fn pod(
        &mut self,
        namespace: &str,
        name: &str,
        service_account: &str,
        pod_labels: &[(&str, &str)],
        ip: Option<IpAddr>,
        proxy_uuid: Option<&str>,
    ) -> &mut Self {
        let id = PodRef::new(namespace, name);
        self.input.pods.insert(
            id.clone(),
            Pod {
                id,
                service_account: service_account.to_string(),
                proxy_uuid: proxy_uuid.map(str::to_string),
                ip,
                labels: labels(pod_labels),
            },
        );
        self
    }

    /// Adds SMI policies from multi-document YAML, as a user would `kubectl apply` them.
    pub fn policies_yaml(&mut self, yaml: &str) -> Result<&mut Self, FixtureError> {
        for (index, doc) in yaml.split("\n---").enumerate() {
            if doc.trim().is_empty() {
                continue;
            }
            let err = |message: String| FixtureError::Yaml { index, message };
            let v: Value = serde_saphyr::from_str(doc).map_err(|e| err(e.to_string()))?;
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            let meta = &v["metadata"];
            let id = ObjectRef::new(
                meta["namespace"].as_str().unwrap_or("default"),
                meta["name"].as_str().unwrap_or_default(),
            );
            let spec = v.get("spec").cloned().unwrap_or(Value::Null);
            let what = format!("{kind} {id}");
            let bad = |e: serde_json::Error| err(format!("{what}: {e}"));
            match kind.as_str() {
                "TrafficTarget" => {
                    self.input
                        .traffic_targets
                        .insert(id, serde_json::from_value(spec).map_err(bad)?);
                }
                "HTTPRouteGroup" => {
                    self.input
                        .http_route_groups
                        .insert(id, serde_json::from_value(spec).map_err(bad)?);
                }
                "TCPRoute" => {
                    self.input
                        .tcp_routes
                        .insert(id, serde_json::from_value(spec).map_err(bad)?);
                }
                "TrafficSplit" => {
                    self.input
                        .traffic_splits
                        .insert(id, serde_json::from_value(spec).map_err(bad)?);
                }
                other => return Err(err(format!("unsupported kind {other:?}"))),
            }
        }
        Ok(self)
    }

    pub fn build(&self) -> MeshInput {
        self.input.clone()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The bookstore demo's HTTP port.
pub const BOOKSTORE_PORT: u16 = 14001;

/// The upstream demo's SMI policies: bookbuyer may buy from bookstore v1/v2 on two routes, bookstore
/// may restock from bookwarehouse, and `bookstore` is split 50/50 over v1 and v2.
pub const BOOKSTORE_POLICIES: &str = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: bookstore-service-routes
  namespace: bookstore
spec:
  matches:
  - name: books-bought
    pathRegex: /books-bought
    methods:
    - GET
    headers:
    - "user-agent": ".*-http-client/*.*"
    - "client-app": "bookbuyer"
  - name: buy-a-book
    pathRegex: ".*a-book.*new"
    methods:
    - GET
  - name: update-books-bought
    pathRegex: /update-books-bought
    methods:
    - POST
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: bookbuyer-access-bookstore-v1
  namespace: bookstore
spec:
  destination:
    kind: ServiceAccount
    name: bookstore-v1
    namespace: bookstore
  rules:
  - kind: HTTPRouteGroup
    name: bookstore-service-routes
    matches:
    - buy-a-book
    - books-bought
  sources:
  - kind: ServiceAccount
    name: bookbuyer
    namespace: bookbuyer
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: bookbuyer-access-bookstore-v2
  namespace: bookstore
spec:
  destination:
    kind: ServiceAccount
    name: bookstore-v2
    namespace: bookstore
  rules:
  - kind: HTTPRouteGroup
    name: bookstore-service-routes
    matches:
    - buy-a-book
    - books-bought
  sources:
  - kind: ServiceAccount
    name: bookbuyer
    namespace: bookbuyer
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: bookwarehouse-service-routes
  namespace: bookwarehouse
spec:
  matches:
  - name: restock-books
    methods:
    - POST
    pathRegex: "/restock-books"
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: bookstore-access-bookwarehouse
  namespace: bookwarehouse
spec:
  destination:
    kind: ServiceAccount
    name: bookwarehouse
    namespace: bookwarehouse
  rules:
  - kind: HTTPRouteGroup
    name: bookwarehouse-service-routes
    matches:
    - restock-books
  sources:
  - kind: ServiceAccount
    name: bookstore-v1
    namespace: bookstore
  - kind: ServiceAccount
    name: bookstore-v2
    namespace: bookstore
"#;

/// `bookstore-split` with the given v1/v2 weights.
pub fn bookstore_split(v1: u32, v2: u32) -> String {
    format!(
        r#"
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: bookstore-split
  namespace: bookstore
spec:
  service: bookstore.bookstore
  backends:
  - service: bookstore-v1
    weight: {v1}
  - service: bookstore-v2
    weight: {v2}
"#
    )
}

/// Label pairs of a fixture object.
pub type Labels = &'static [(&'static str, &'static str)];

/// A bookstore pod: (namespace, pod name, service account, labels).
pub const BOOKSTORE_PODS: &[(&str, &str, &str, Labels)] = &[
    ("bookbuyer", "bookbuyer", "bookbuyer", &[("app", "bookbuyer")]),
    ("bookthief", "bookthief", "bookthief", &[("app", "bookthief")]),
    (
        "bookstore",
        "bookstore-v1",
        "bookstore-v1",
        &[("app", "bookstore"), ("version", "v1")],
    ),
    (
        "bookstore",
        "bookstore-v2",
        "bookstore-v2",
        &[("app", "bookstore"), ("version", "v2")],
    ),
    (
        "bookwarehouse",
        "bookwarehouse",
        "bookwarehouse",
        &[("app", "bookwarehouse")],
    ),
];

/// A bookstore service: (namespace, name, selector).
pub const BOOKSTORE_SERVICES: &[(&str, &str, Labels)] = &[
    ("bookstore", "bookstore", &[("app", "bookstore")]),
    (
        "bookstore",
        "bookstore-v1",
        &[("app", "bookstore"), ("version", "v1")],
    ),
    (
        "bookstore",
        "bookstore-v2",
        &[("app", "bookstore"), ("version", "v2")],
    ),
    ("bookwarehouse", "bookwarehouse", &[("app", "bookwarehouse")]),
];

/// The bookstore demo mesh. `pod_ip` and `service_ip` give addresses (the e2e harness knows its own);
/// each pod's proxy uuid is its name.
/// The bookstore demo with pod `i` of [`BOOKSTORE_PODS`] at 10.0.0.(10+i) and service `j` of
/// [`BOOKSTORE_SERVICES`] at 10.96.0.(1+j).
pub fn bookstore_numbered(permissive: bool, split: Option<(u32, u32)>) -> MeshInput {
    let index_of = |names: Vec<&str>, name: &str| names.iter().position(|n| *n == name).unwrap_or(0) as u8;
    let pods: Vec<&str> = BOOKSTORE_PODS.iter().map(|p| p.1).collect();
    let services: Vec<&str> = BOOKSTORE_SERVICES.iter().map(|s| s.1).collect();
    bookstore(
        permissive,
        split,
        |p| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 10 + index_of(pods.clone(), p))),
        |s| {
            IpAddr::V4(std::net::Ipv4Addr::new(
                10,
                96,
                0,
                1 + index_of(services.clone(), s),
            ))
        },
    )
}

pub fn bookstore(
    permissive: bool,
    split: Option<(u32, u32)>,
    pod_ip: impl Fn(&str) -> IpAddr,
    service_ip: impl Fn(&str) -> IpAddr,
) -> MeshInput {
    let mut b = MeshBuilder::new(permissive);
    for (ns, name, sa, pod_labels) in BOOKSTORE_PODS {
        b.pod(ns, name, sa, pod_labels, Some(pod_ip(name)), Some(name));
    }
    for (ns, name, selector) in BOOKSTORE_SERVICES {
        b.service(
            ns,
            name,
            Some(service_ip(name)),
            &[(BOOKSTORE_PORT, BOOKSTORE_PORT, AppProtocol::Http)],
            selector,
        );
    }
    b.policies_yaml(BOOKSTORE_POLICIES)
        .expect("the built-in bookstore policies parse");
    if let Some((v1, v2)) = split {
        b.policies_yaml(&bookstore_split(v1, v2))
            .expect("the built-in split parses");
    }
    b.build()
}
