//! One object per entry of `osm_api::unsupported::UNSUPPORTED` that earns that entry's warning, shared
//! by the `unsupported_warns` tests (local mode, Kubernetes admission). A new entry without a sample
//! fails those tests: a feature cannot be listed as unsupported without proof that it warns.

use osm_api::unsupported::{Subject, UNSUPPORTED, Unsupported};
use serde_json::{Value, json};

/// The MeshConfig `spec` that asks for `path` (a JSON path under `spec.`).
fn mesh_config_spec(path: &str) -> Value {
    match path {
        "spec.sidecar.tlsMinProtocolVersion" => json!({"sidecar": {"tlsMinProtocolVersion": "TLSv1_3"}}),
        "spec.sidecar.tlsMaxProtocolVersion" => json!({"sidecar": {"tlsMaxProtocolVersion": "TLSv1_2"}}),
        "spec.sidecar.cipherSuites" => json!({"sidecar": {"cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"]}}),
        "spec.sidecar.ecdhCurves" => json!({"sidecar": {"ecdhCurves": ["X25519"]}}),
        "spec.sidecar.envoyWindowsImage" => json!({"sidecar": {"envoyWindowsImage": "envoy-windows:1"}}),
        "spec.sidecar.maxDataPlaneConnections" => json!({"sidecar": {"maxDataPlaneConnections": 100}}),
        "spec.sidecar.configResyncInterval" => json!({"sidecar": {"configResyncInterval": "30s"}}),
        "spec.sidecar.localProxyMode" => json!({"sidecar": {"localProxyMode": "PodIP"}}),
        "spec.observability.enableDebugServer" => json!({"observability": {"enableDebugServer": true}}),
        "spec.certificate.certKeyBitSize" => json!({"certificate": {"certKeyBitSize": 4096}}),
        "spec.featureFlags.enableWASMStats" => json!({"featureFlags": {"enableWASMStats": true}}),
        "spec.featureFlags.enableMulticlusterMode" => {
            json!({"featureFlags": {"enableMulticlusterMode": true}})
        }
        "spec.featureFlags.enableSnapshotCacheMode" => {
            json!({"featureFlags": {"enableSnapshotCacheMode": true}})
        }
        "spec.featureFlags.enableAsyncProxyServiceMapping" => {
            json!({"featureFlags": {"enableAsyncProxyServiceMapping": true}})
        }
        "spec.featureFlags.enableEnvoyActiveHealthChecks" => {
            json!({"featureFlags": {"enableEnvoyActiveHealthChecks": true}})
        }
        other => panic!("no sample for the unsupported MeshConfig field {other}: add one here"),
    }
}

fn policy(kind: &str, name: &str, ns: &str, spec: Value) -> Value {
    json!({"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": kind,
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// A valid object, named `name` in namespace `ns`, that earns `entry`'s warning.
pub fn sample(entry: &Unsupported, name: &str, ns: &str) -> Value {
    match entry.subject {
        Subject::MeshConfigField { path, .. } => json!({
            "apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshConfig",
            "metadata": {"name": name, "namespace": ns}, "spec": mesh_config_spec(path)}),
        Subject::ObjectField {
            kind: "IngressBackend",
            ..
        } => policy(
            "IngressBackend",
            name,
            ns,
            json!({
            "backends": [{"name": "httpbin", "port": {"number": 14001, "protocol": "http"}}],
            "sources": [{"kind": "IPRange", "name": "10.0.0.0/16"}],
            "matches": [{"apiGroup": "policy.openservicemesh.io/v1alpha1",
                         "kind": "UpstreamTrafficSetting", "name": "httpbin"}]}),
        ),
        Subject::ObjectField { kind, path, .. } => {
            panic!("no sample for the unsupported field {kind} {path}: add one here")
        }
        Subject::Kind("MeshRootCertificate") => json!({
            "apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshRootCertificate",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"role": "active", "trustDomain": "cluster.local", "provider": {"tresor": {"ca": {"secretRef": {
                "name": "osm-ca-bundle", "namespace": ns}}}}}}),
        Subject::Kind(other) => panic!("no sample for the unsupported kind {other}: add one here"),
    }
}

/// Every entry with its sample, named `unsupported-<i>`.
pub fn all(ns: &str) -> Vec<(&'static Unsupported, String, Value)> {
    UNSUPPORTED
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let name = format!("unsupported-{i}");
            let object = sample(entry, &name, ns);
            (entry, name, object)
        })
        .collect()
}

/// The field path the warning must name (`None` for a whole kind).
pub fn field(entry: &Unsupported) -> Option<&'static str> {
    match entry.subject {
        Subject::MeshConfigField { path, .. } | Subject::ObjectField { path, .. } => Some(path),
        Subject::Kind(_) => None,
    }
}
