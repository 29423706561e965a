//! Property tests: no input makes parsing, validation or assembly panic.

use std::path::Path;

use proptest::prelude::*;

use crate::assemble::{FileDocs, Settings, assemble};
use crate::document::parse_file;

/// Pieces of manifests, so generated text often gets past YAML syntax into every kind's checks.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("apiVersion: v1\n".to_string()),
        Just("apiVersion: apps/v1\n".to_string()),
        Just("apiVersion: split.smi-spec.io/v1alpha2\n".to_string()),
        Just("apiVersion: access.smi-spec.io/v1alpha3\n".to_string()),
        Just("apiVersion: specs.smi-spec.io/v1alpha4\n".to_string()),
        Just("apiVersion: config.openservicemesh.io/v1alpha1\n".to_string()),
        Just("apiVersion: config.openservicemesh.io/v1alpha2\n".to_string()),
        Just("apiVersion: policy.openservicemesh.io/v1alpha1\n".to_string()),
        prop::sample::select(vec![
            "Namespace", "ServiceAccount", "Service", "Pod", "Deployment", "Secret", "TrafficSplit",
            "TrafficTarget", "HTTPRouteGroup", "TCPRoute", "MeshConfig", "MeshRootCertificate", "Egress",
            "IngressBackend", "Retry", "UpstreamTrafficSetting", "List",
        ])
        .prop_map(|k| format!("kind: {k}\n")),
        Just("metadata:\n  name: a\n  namespace: b\n".to_string()),
        Just("metadata: {name: osm-mesh-config, labels: {osm-proxy-uuid: x}}\n".to_string()),
        Just("  annotations: {openservicemesh.io/workload-ip: \"10.0.0.1,::1\"}\n".to_string()),
        Just("spec:\n".to_string()),
        Just("  ports: [{port: 80, targetPort: http}, {port: -1, name: a}]\n".to_string()),
        Just("  replicas: 2\n  selector: {matchLabels: {a: b}}\n".to_string()),
        Just("  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}}\n".to_string()),
        Just("  containers: [{name: c}]\n".to_string()),
        Just("  backends: [{service: x, weight: -3}]\n  service: y\n".to_string()),
        Just("  traffic: {enableEgress: no}\n".to_string()),
        Just("  selector: {a: b}\n  clusterIP: None\n".to_string()),
        Just("---\n".to_string()),
        Just("&a [*a]\n".to_string()),
        "[ -~\n]{0,24}",
        any::<String>().prop_map(|s| s.chars().take(16).collect()),
    ]
}

fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..24).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsing_and_assembly_never_panic(a in yamlish(), b in yamlish()) {
        let settings = Settings { mesh_name: "osm".into(), trust_domain: "cluster.local".into() };
        let parsed: Vec<_> = [&a, &b]
            .iter()
            .enumerate()
            .map(|(i, text)| (format!("{i}.yaml"), parse_file(Path::new("x.yaml"), text.as_bytes())))
            .collect();
        let files: Vec<FileDocs<'_>> = parsed
            .iter()
            .filter_map(|(name, r)| r.as_ref().ok().map(|docs| FileDocs { file: Path::new(name), docs, fresh: true }))
            .collect();
        let _ = assemble(&files, &settings);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_file(Path::new("x.yaml"), &bytes);
    }
}
