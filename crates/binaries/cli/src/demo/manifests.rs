//! The bookstore demo as the YAML a user would `kubectl apply`, written into the control plane's
//! config directory. Pod addresses come from the harness; Service ClusterIPs are virtual.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

use osm_fixtures::{BOOKSTORE_PODS, BOOKSTORE_POLICIES, BOOKSTORE_SERVICES, bookstore_split};

/// Mesh mode, as MeshConfig's `enablePermissiveTrafficPolicyMode` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Permissive,
    Smi,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Permissive => "permissive",
            Mode::Smi => "smi",
        }
    }
}

/// ClusterIP of a demo service.
pub fn service_ip(name: &str) -> IpAddr {
    let i = BOOKSTORE_SERVICES.iter().position(|s| s.1 == name).unwrap_or(0) as u8;
    IpAddr::from([10, 96, 0, 10 + i])
}

pub fn meshconfig(mode: Mode) -> String {
    format!(
        r#"apiVersion: config.openservicemesh.io/v1alpha2
kind: MeshConfig
metadata:
  name: osm-mesh-config
  namespace: osm-system
spec:
  traffic:
    enablePermissiveTrafficPolicyMode: {}
    enableEgress: false
"#,
        mode == Mode::Permissive
    )
}

pub fn split(v1: u32, v2: u32) -> String {
    bookstore_split(v1, v2).trim_start().to_string()
}

pub fn policies() -> String {
    BOOKSTORE_POLICIES.trim_start().to_string()
}

/// Namespaces, ServiceAccounts, Services and Pods (with their harness-assigned IPs).
pub fn workloads(pod_ips: &BTreeMap<String, IpAddr>) -> String {
    let mut y = String::new();
    let mut namespaces: Vec<&str> = BOOKSTORE_PODS.iter().map(|p| p.0).collect();
    namespaces.dedup();
    for ns in namespaces {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    openservicemesh.io/monitored-by: osm\n---\n"
        );
    }
    for (ns, name, sa, labels) in BOOKSTORE_PODS {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: {ns}\n---\n"
        );
        let labels: String = labels.iter().map(|(k, v)| format!("    {k}: {v}\n")).collect();
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n{labels}    osm-proxy-uuid: {name}\nspec:\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: osm-demo-app\n    ports:\n    - containerPort: 14001\nstatus:\n  podIP: {}\n---\n",
            pod_ips[*name]
        );
    }
    for (ns, name, selector) in BOOKSTORE_SERVICES {
        let selector: String = selector.iter().map(|(k, v)| format!("    {k}: {v}\n")).collect();
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  clusterIP: {}\n  selector:\n{selector}  ports:\n  - name: http\n    port: 14001\n    targetPort: 14001\n    appProtocol: http\n---\n",
            service_ip(name)
        );
    }
    y
}
