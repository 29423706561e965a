//! The pure injector: `decide` against every namespace/pod annotation combination, `mutate`'s patch
//! applied to the Pod JSON with json-patch (as the apiserver does), and the bootstrap Secret.

#![forbid(unsafe_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_webhook::inject::{self, InjectConfig, InjectDecision, InjectError, SkipReason};
use osm_xds::bootstrap::{Probe, ProbeScheme};
use serde_json::{Value, json};

const UUID: &str = "0f4e3c4a-1b2c-4d5e-8f90-123456789abc";

fn config() -> InjectConfig {
    InjectConfig::new(
        "osm",
        "osm-system",
        "envoyproxy/envoy:v1.40.0",
        "osm/osm-init:v0.1.0",
    )
}

fn namespace(name: &str, labels: Value, annotations: Value) -> Namespace {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations}
    }))
    .unwrap()
}

/// A namespace as `osm namespace add` leaves it: monitored by `osm`, injection enabled.
fn meshed(name: &str) -> Namespace {
    namespace(
        name,
        json!({"openservicemesh.io/monitored-by": "osm"}),
        json!({"openservicemesh.io/sidecar-injection": "enabled"}),
    )
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

/// A minimal Pod: no labels, annotations, init containers or volumes.
fn bare_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop"},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]}
    })
}

fn skip(reason: SkipReason) -> InjectDecision {
    InjectDecision::Skip { reason }
}

fn decide(ns: &Namespace, pod_json: Value) -> Result<InjectDecision, InjectError> {
    inject::decide(ns, &pod(pod_json), &config())
}

fn with_pod_annotation(value: &str) -> Value {
    let mut p = bare_pod();
    p["metadata"]["annotations"] = json!({"openservicemesh.io/sidecar-injection": value});
    p
}

/// Applies the injection's patch to `pod_json` the way the apiserver does.
fn patched(pod_json: &Value, ns: &Namespace, config: &InjectConfig) -> (Value, inject::Injection) {
    let injection = inject::mutate(&pod(pod_json.clone()), ns, UUID, config).unwrap();
    let mut doc = pod_json.clone();
    json_patch::patch(&mut doc, &injection.patch).unwrap_or_else(|e| {
        panic!(
            "patch does not apply: {e}\n{}",
            serde_json::to_string_pretty(&injection.patch).unwrap()
        )
    });
    // The result must still be a valid Pod.
    let _: Pod = serde_json::from_value(doc.clone()).unwrap();
    (doc, injection)
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry {name}: {pod:#}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// A namespace added with `osm namespace add` injects an unannotated pod.
#[test]
fn meshed_namespace_injects() {
    assert_eq!(
        decide(&meshed("shop"), bare_pod()).unwrap(),
        InjectDecision::Inject
    );
}

/// The pod's annotation wins over the namespace's, both ways; the values are case-insensitive and
/// yes/no, true/false work as in upstream.
#[test]
fn pod_annotation_wins() {
    let disabled_ns = namespace(
        "shop",
        json!({"openservicemesh.io/monitored-by": "osm"}),
        json!({"openservicemesh.io/sidecar-injection": "disabled"}),
    );
    for v in ["enabled", "Enabled", "yes", "true"] {
        assert_eq!(
            decide(&disabled_ns, with_pod_annotation(v)).unwrap(),
            InjectDecision::Inject,
            "{v}"
        );
    }
    for v in ["disabled", "DISABLED", "no", "false"] {
        assert_eq!(
            decide(&meshed("shop"), with_pod_annotation(v)).unwrap(),
            skip(SkipReason::DisabledOnPod),
            "{v}"
        );
    }
    assert_eq!(
        decide(&disabled_ns, bare_pod()).unwrap(),
        skip(SkipReason::DisabledOnNamespace)
    );
}

/// Upstream's default: a monitored namespace without the injection annotation injects only pods
/// annotated `enabled`.
#[test]
fn monitored_namespace_without_annotation_injects_only_annotated_pods() {
    let ns = namespace(
        "shop",
        json!({"openservicemesh.io/monitored-by": "osm"}),
        json!(null),
    );
    assert_eq!(decide(&ns, bare_pod()).unwrap(), skip(SkipReason::NotRequested));
    assert_eq!(
        decide(&ns, with_pod_annotation("enabled")).unwrap(),
        InjectDecision::Inject
    );
}

/// Namespaces not in this mesh, ignored, or protected are never injected, whatever the pod says.
#[test]
fn foreign_ignored_and_protected_namespaces_skip() {
    let enabled = json!({"openservicemesh.io/sidecar-injection": "enabled"});
    let other = namespace(
        "shop",
        json!({"openservicemesh.io/monitored-by": "other"}),
        enabled.clone(),
    );
    assert_eq!(
        decide(&other, with_pod_annotation("enabled")).unwrap(),
        skip(SkipReason::NotMonitored {
            namespace: "shop".into(),
            monitored_by: Some("other".into())
        })
    );
    let unlabelled = namespace("shop", json!(null), enabled.clone());
    assert!(matches!(
        decide(&unlabelled, with_pod_annotation("enabled")).unwrap(),
        InjectDecision::Skip {
            reason: SkipReason::NotMonitored {
                monitored_by: None,
                ..
            }
        }
    ));
    let ignored = namespace(
        "shop",
        json!({"openservicemesh.io/monitored-by": "osm", "openservicemesh.io/ignore": "true"}),
        enabled.clone(),
    );
    assert_eq!(
        decide(&ignored, with_pod_annotation("enabled")).unwrap(),
        skip(SkipReason::IgnoredNamespace("shop".into()))
    );
    for name in ["osm-system", "kube-system", "kube-public"] {
        let ns = namespace(
            name,
            json!({"openservicemesh.io/monitored-by": "osm"}),
            enabled.clone(),
        );
        assert_eq!(
            decide(&ns, with_pod_annotation("enabled")).unwrap(),
            skip(SkipReason::ProtectedNamespace(name.into()))
        );
    }
}

/// A pod that already has a sidecar (label, `envoy` container or `osm-init`) or uses the host network
/// is left alone.
#[test]
fn injected_and_host_network_pods_skip() {
    let ns = meshed("shop");
    let mut labelled = bare_pod();
    labelled["metadata"]["labels"] = json!({"osm-proxy-uuid": "x"});
    assert_eq!(decide(&ns, labelled).unwrap(), skip(SkipReason::AlreadyInjected));
    let mut with_envoy = bare_pod();
    with_envoy["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "envoy"}));
    assert_eq!(
        decide(&ns, with_envoy).unwrap(),
        skip(SkipReason::AlreadyInjected)
    );
    let mut host = bare_pod();
    host["spec"]["hostNetwork"] = json!(true);
    assert_eq!(decide(&ns, host).unwrap(), skip(SkipReason::HostNetwork));
}

/// An injection annotation with another value refuses the pod, naming the object and annotation.
#[test]
fn invalid_injection_annotation_is_an_error() {
    let err = decide(&meshed("shop"), with_pod_annotation("maybe")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pod shop/web-1: annotation openservicemesh.io/sidecar-injection: invalid value \"maybe\" \
         (expected enabled or disabled)"
    );
    let ns = namespace(
        "shop",
        json!({"openservicemesh.io/monitored-by": "osm"}),
        json!({"openservicemesh.io/sidecar-injection": "on"}),
    );
    let err = decide(&ns, bare_pod()).unwrap_err().to_string();
    assert!(
        err.starts_with("namespace shop: annotation openservicemesh.io/sidecar-injection"),
        "{err}"
    );
}

/// A pod with none of the maps and arrays the patch extends gets them created; the containers are
/// upstream's.
#[test]
fn bare_pod_gets_maps_and_arrays_created() {
    let ns = namespace(
        "shop",
        json!({"openservicemesh.io/monitored-by": "osm"}),
        json!({"openservicemesh.io/sidecar-injection": "enabled", "openservicemesh.io/metrics": "enabled"}),
    );
    let (doc, injection) = patched(&bare_pod(), &ns, &config());
    assert_eq!(doc["metadata"]["labels"], json!({"osm-proxy-uuid": UUID}));
    assert_eq!(
        doc["metadata"]["annotations"],
        json!({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "15010",
            "prometheus.io/path": "/stats/prometheus",
        })
    );
    let init = &doc["spec"]["initContainers"];
    assert_eq!(init.as_array().unwrap().len(), 1);
    assert_eq!(init[0]["name"], "osm-init");
    assert_eq!(init[0]["image"], "osm/osm-init:v0.1.0");
    assert_eq!(init[0]["command"], json!(["osm-init"]));
    assert_eq!(init[0]["args"], json!([]));
    assert_eq!(
        init[0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN"])
    );
    assert_eq!(init[0]["securityContext"]["privileged"], json!(false));

    let containers = doc["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["name"], "web");
    let envoy = &containers[1];
    assert_eq!(envoy["name"], "envoy");
    assert_eq!(envoy["image"], "envoyproxy/envoy:v1.40.0");
    assert_eq!(envoy["command"], json!(["envoy"]));
    assert_eq!(
        strings(&envoy["args"]),
        [
            "--log-level",
            "error",
            "--config-path",
            "/etc/envoy/bootstrap.yaml",
            "--service-cluster",
            "default.shop"
        ]
    );
    assert_eq!(envoy["securityContext"]["runAsUser"], 1500);
    assert_eq!(
        envoy["ports"],
        json!([
            {"name": "proxy-admin", "containerPort": 15000},
            {"name": "proxy-inbound", "containerPort": 15003},
            {"name": "proxy-metrics", "containerPort": 15010},
        ])
    );
    assert_eq!(
        envoy["volumeMounts"],
        json!([{"name": "envoy-bootstrap-config-volume", "mountPath": "/etc/envoy", "readOnly": true}])
    );
    assert_eq!(
        doc["spec"]["volumes"],
        json!([{"name": "envoy-bootstrap-config-volume",
                "secret": {"secretName": format!("envoy-bootstrap-config-{UUID}")}}])
    );
    assert_eq!(
        injection.bootstrap_secret_name,
        format!("envoy-bootstrap-config-{UUID}")
    );
    assert_eq!(injection.service_account, "default");
    assert!(injection.probes.is_empty());
}

/// Existing labels, annotations (keys with `/`, escaped `~1` in the patch), init containers and
/// volumes are kept and extended, not replaced.
#[test]
fn existing_maps_and_arrays_are_extended() {
    let mut p = bare_pod();
    p["metadata"]["labels"] = json!({"app": "web"});
    p["metadata"]["annotations"] = json!({"example.com/owner": "team-a"});
    p["spec"]["serviceAccountName"] = json!("web");
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "migrate:1"}]);
    p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    let ns = namespace(
        "shop",
        json!({"openservicemesh.io/monitored-by": "osm"}),
        json!({"openservicemesh.io/sidecar-injection": "enabled", "openservicemesh.io/metrics": "enabled"}),
    );
    let (doc, injection) = patched(&p, &ns, &config());
    assert_eq!(
        doc["metadata"]["labels"],
        json!({"app": "web", "osm-proxy-uuid": UUID})
    );
    assert_eq!(doc["metadata"]["annotations"]["example.com/owner"], "team-a");
    assert_eq!(doc["metadata"]["annotations"]["prometheus.io/scrape"], "true");
    let init: Vec<&str> = doc["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(init, ["migrate", "osm-init"]);
    let volumes: Vec<&str> = doc["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["data", "envoy-bootstrap-config-volume"]);
    assert_eq!(container(&doc, "containers", "envoy")["args"][5], "web.shop");
    assert_eq!(injection.service_account, "web");
    let paths: Vec<String> = injection.patch.0.iter().map(|op| op.path().to_string()).collect();
    assert!(
        paths.contains(&"/metadata/annotations/prometheus.io~1scrape".to_string()),
        "{paths:?}"
    );
    assert!(paths.contains(&"/spec/initContainers/-".to_string()), "{paths:?}");
}

/// HTTP probes (numbered or named port, with or without a path) move to the sidecar's listeners with
/// upstream's ports and paths and come back as bootstrap probes aimed at the original port and path.
#[test]
fn http_probes_move_to_the_sidecar() {
    let mut p = bare_pod();
    p["spec"]["containers"] = json!([{
        "name": "web", "image": "web:1",
        "ports": [{"name": "http", "containerPort": 8080}],
        "livenessProbe": {"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 5},
        "readinessProbe": {"httpGet": {"port": 8081, "path": "/ready", "scheme": "HTTP"}},
        "startupProbe": {"httpGet": {"port": 8082}}
    }]);
    let (doc, injection) = patched(&p, &meshed("shop"), &config());
    let web = container(&doc, "containers", "web");
    assert_eq!(
        web["livenessProbe"],
        json!({"httpGet": {"port": 15901, "path": "/osm-liveness-probe"}, "periodSeconds": 5})
    );
    assert_eq!(
        web["readinessProbe"]["httpGet"],
        json!({"port": 15902, "path": "/osm-readiness-probe", "scheme": "HTTP"})
    );
    assert_eq!(
        web["startupProbe"]["httpGet"],
        json!({"port": 15903, "path": "/osm-startup-probe"})
    );
    assert_eq!(
        injection.probes,
        [
            Probe::http("liveness", 15901, "/healthz", 8080),
            Probe::http("readiness", 15902, "/ready", 8081),
            Probe::http("startup", 15903, "/", 8082),
        ]
    );
    assert_eq!(
        envoy_ports(&doc)[3..],
        [
            ("liveness-port".to_owned(), 15901),
            ("readiness-port".to_owned(), 15902),
            ("startup-port".to_owned(), 15903)
        ]
    );
    assert!(!container_names(&doc).contains(&"osm-healthcheck".to_owned()));
}

fn envoy_ports(doc: &Value) -> Vec<(String, i64)> {
    container(doc, "containers", "envoy")["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_owned(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn container_names(doc: &Value) -> Vec<String> {
    doc["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn init_args(doc: &Value) -> Vec<String> {
    serde_json::from_value(container(doc, "initContainers", "osm-init")["args"].clone()).unwrap()
}

/// HTTPS probes keep scheme and path and move to the same ports as HTTP ones; the bootstrap gets a
/// TCP proxy to the app port for each (TLS end to end), as upstream.
#[test]
fn https_probes_keep_scheme_and_path() {
    let mut p = bare_pod();
    p["spec"]["containers"] = json!([{
        "name": "tls", "image": "tls:1",
        "ports": [{"name": "https", "containerPort": 8443}],
        "livenessProbe": {"httpGet": {"port": 8443, "path": "/h", "scheme": "HTTPS"}},
        "readinessProbe": {"httpGet": {"port": "https", "path": "/r", "scheme": "HTTPS",
            "httpHeaders": [{"name": "X-Probe", "value": "1"}]}},
        "startupProbe": {"httpGet": {"port": 8443, "scheme": "HTTPS"}, "failureThreshold": 30}
    }]);
    let (doc, injection) = patched(&p, &meshed("shop"), &config());
    let tls = container(&doc, "containers", "tls");
    assert_eq!(
        tls["livenessProbe"],
        json!({"httpGet": {"port": 15901, "path": "/h", "scheme": "HTTPS"}})
    );
    assert_eq!(
        tls["readinessProbe"],
        json!({"httpGet": {"port": 15902, "path": "/r", "scheme": "HTTPS",
            "httpHeaders": [{"name": "X-Probe", "value": "1"}]}})
    );
    assert_eq!(
        tls["startupProbe"],
        json!({"httpGet": {"port": 15903, "scheme": "HTTPS"}, "failureThreshold": 30})
    );
    let https = |name: &str, port, path: &str| Probe {
        name: name.into(),
        listener_port: port,
        scheme: ProbeScheme::Https,
        kubelet_path: path.into(),
        path: path.into(),
        app_port: 8443,
    };
    assert_eq!(
        injection.probes,
        [
            https("liveness", 15901, "/h"),
            https("readiness", 15902, "/r"),
            https("startup", 15903, "/"),
        ]
    );
    assert_eq!(envoy_ports(&doc).len(), 6);
    assert!(!container_names(&doc).contains(&"osm-healthcheck".to_owned()));
}

/// TCP probes become HTTP GETs of `/osm-healthcheck` on 15904 carrying the original port (named ports
/// resolved), and the pod gets upstream's `osm-healthcheck` container, here `osm-init healthcheck`
/// from the init image, before the sidecar; no sidecar listener is added for them.
#[test]
fn tcp_probes_go_to_the_healthcheck_container() {
    let mut p = bare_pod();
    p["spec"]["containers"] = json!([{
        "name": "db", "image": "db:1",
        "ports": [{"name": "sql", "containerPort": 5432}],
        "livenessProbe": {"tcpSocket": {"port": 5432}, "periodSeconds": 3},
        "readinessProbe": {"tcpSocket": {"port": "sql"}},
        "startupProbe": {"tcpSocket": {"port": 6000}}
    }]);
    let (doc, injection) = patched(&p, &meshed("shop"), &config());
    let db = container(&doc, "containers", "db");
    let healthcheck = |port: &str| {
        json!({"port": 15904, "path": "/osm-healthcheck",
            "httpHeaders": [{"name": "Original-Tcp-Port", "value": port}]})
    };
    assert_eq!(
        db["livenessProbe"],
        json!({"httpGet": healthcheck("5432"), "periodSeconds": 3})
    );
    assert_eq!(db["readinessProbe"], json!({"httpGet": healthcheck("5432")}));
    assert_eq!(db["startupProbe"], json!({"httpGet": healthcheck("6000")}));
    assert!(injection.probes.is_empty());
    assert_eq!(envoy_ports(&doc).len(), 3, "no probe listener for TCP probes");
    assert_eq!(container_names(&doc), ["db", "osm-healthcheck", "envoy"]);
    assert_eq!(
        container(&doc, "containers", "osm-healthcheck"),
        &json!({
            "name": "osm-healthcheck",
            "image": "osm/osm-init:v0.1.0",
            "imagePullPolicy": "IfNotPresent",
            "command": ["osm-init"],
            "args": ["healthcheck", "--listen-port", "15904", "--allowed-ports=5432,6000"],
            "ports": [{"containerPort": 15904}]
        })
    );
    // 15904 is always exempt from the inbound redirect: no flag needed.
    assert!(init_args(&doc).is_empty(), "{:?}", init_args(&doc));
}

/// gRPC and exec probes are passed through untouched (upstream does the same).
#[test]
fn grpc_and_exec_probes_are_left_alone() {
    let mut p = bare_pod();
    p["spec"]["containers"] = json!([{
        "name": "rpc", "image": "rpc:1",
        "livenessProbe": {"grpc": {"port": 9090}},
        "readinessProbe": {"exec": {"command": ["true"]}},
        "startupProbe": {"grpc": {"port": 9090, "service": "ready"}}
    }]);
    let (doc, injection) = patched(&p, &meshed("shop"), &config());
    let rpc = container(&doc, "containers", "rpc");
    for field in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(rpc[field], p["spec"]["containers"][0][field], "{field}");
    }
    assert!(injection.probes.is_empty());
    assert_eq!(container_names(&doc), ["rpc", "envoy"]);
}

/// Beyond upstream (#4948): two containers probing with the same kinds do not collide. The first keeps
/// upstream's ports and paths; the second's HTTP probe gets `/osm-<kind>-probe/<container>` on a port
/// of its own from 15905 (skipping declared ports), its HTTPS probe a port of its own, both exempted
/// from the inbound redirect; TCP probes of both share the healthcheck, told apart by their header.
#[test]
fn probes_of_two_containers_do_not_collide() {
    let mut p = bare_pod();
    p["metadata"]["annotations"] = json!({"openservicemesh.io/inbound-port-exclusion-list": "9999"});
    p["spec"]["containers"] = json!([
        {
            "name": "web", "image": "web:1",
            "ports": [{"containerPort": 8080}, {"containerPort": 15905}],
            "livenessProbe": {"httpGet": {"port": 8080, "path": "/live"}},
            "readinessProbe": {"httpGet": {"port": 8080, "path": "/ready"}},
            "startupProbe": {"tcpSocket": {"port": 8080}}
        },
        {
            "name": "admin", "image": "admin:1",
            "livenessProbe": {"httpGet": {"port": 9000, "path": "/live"}},
            "readinessProbe": {"httpGet": {"port": 9443, "path": "/ready", "scheme": "HTTPS"}},
            "startupProbe": {"tcpSocket": {"port": 9000}}
        }
    ]);
    let (doc, injection) = patched(&p, &meshed("shop"), &config());
    let web = container(&doc, "containers", "web");
    assert_eq!(
        web["livenessProbe"]["httpGet"],
        json!({"port": 15901, "path": "/osm-liveness-probe"})
    );
    assert_eq!(
        web["readinessProbe"]["httpGet"],
        json!({"port": 15902, "path": "/osm-readiness-probe"})
    );
    let admin = container(&doc, "containers", "admin");
    assert_eq!(
        admin["livenessProbe"]["httpGet"],
        json!({"port": 15906, "path": "/osm-liveness-probe/admin"})
    );
    assert_eq!(
        admin["readinessProbe"]["httpGet"],
        json!({"port": 15907, "path": "/ready", "scheme": "HTTPS"})
    );
    assert_eq!(web["startupProbe"]["httpGet"]["httpHeaders"][0]["value"], "8080");
    assert_eq!(
        admin["startupProbe"]["httpGet"]["httpHeaders"][0]["value"],
        "9000"
    );
    assert_eq!(
        injection.probes,
        [
            Probe::http("liveness", 15901, "/live", 8080),
            Probe::http("readiness", 15902, "/ready", 8080),
            Probe {
                name: "liveness_admin".into(),
                listener_port: 15906,
                scheme: ProbeScheme::Http,
                kubelet_path: "/osm-liveness-probe/admin".into(),
                path: "/live".into(),
                app_port: 9000,
            },
            Probe {
                name: "readiness_admin".into(),
                listener_port: 15907,
                scheme: ProbeScheme::Https,
                kubelet_path: "/ready".into(),
                path: "/ready".into(),
                app_port: 9443,
            },
        ]
    );
    assert_eq!(
        envoy_ports(&doc)[3..],
        [
            ("liveness-port".to_owned(), 15901),
            ("readiness-port".to_owned(), 15902),
            ("probe-15906".to_owned(), 15906),
            ("probe-15907".to_owned(), 15907),
        ]
    );
    assert_eq!(
        init_args(&doc),
        ["--inbound-port-exclusion-list=9999,15906,15907"]
    );
    assert_eq!(
        container_names(&doc),
        ["web", "admin", "osm-healthcheck", "envoy"]
    );
    // The plan the e2e tests use gives the same containers as the patch.
    let mut spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(p["spec"].clone()).unwrap();
    inject::plan_probes(&spec).unwrap().apply(&mut spec);
    for (i, c) in spec.containers.iter().enumerate() {
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            doc["spec"]["containers"][i],
            "{}",
            c.name
        );
    }
}

/// A probe naming a port the container does not declare is left alone (nothing to proxy to).
#[test]
fn probe_with_unknown_named_port_is_left_alone() {
    let mut p = bare_pod();
    p["spec"]["containers"][0]["livenessProbe"] = json!({"httpGet": {"port": "nope", "path": "/h"}});
    let (doc, injection) = patched(&p, &meshed("shop"), &config());
    assert_eq!(
        doc["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"],
        "nope"
    );
    assert!(injection.probes.is_empty());
}

/// The pod's exclusion annotations come first, then MeshConfig's, without duplicates, as osm-init
/// flags; MeshConfig's privileged init container, log level and images apply.
#[test]
fn mesh_config_and_annotations_shape_the_containers() {
    let mut cfg = config();
    let traffic = &mut cfg.mesh_config.traffic;
    traffic.outbound_ip_range_exclusion_list = vec!["169.254.169.254/32".into(), "10.1.0.0/16".into()];
    traffic.outbound_port_exclusion_list = vec![6379, 5432];
    traffic.inbound_port_exclusion_list = vec![9090];
    traffic.outbound_ip_range_inclusion_list = vec!["10.96.0.0/12".into()];
    traffic.network_interface_exclusion_list = vec!["net1".into()];
    cfg.mesh_config.sidecar.enable_privileged_init_container = true;
    cfg.mesh_config.sidecar.log_level = "debug".into();
    cfg.mesh_config.sidecar.envoy_image = Some("mirror/envoy:1".into());
    cfg.mesh_config.sidecar.init_container_image = Some("mirror/init:1".into());
    let mut p = bare_pod();
    p["metadata"]["annotations"] = json!({
        "openservicemesh.io/outbound-ip-range-exclusion-list": "10.1.0.0/16, 192.168.0.0/24",
        "openservicemesh.io/outbound-port-exclusion-list": "5432,25",
        "openservicemesh.io/inbound-port-exclusion-list": "8443",
        "openservicemesh.io/outbound-ip-range-inclusion-list": "10.0.0.0/8",
    });
    let (doc, _) = patched(&p, &meshed("shop"), &cfg);
    let init = container(&doc, "initContainers", "osm-init");
    assert_eq!(
        strings(&init["args"]),
        [
            "--outbound-ip-range-exclusion-list=10.1.0.0/16,192.168.0.0/24,169.254.169.254/32",
            "--outbound-ip-range-inclusion-list=10.0.0.0/8,10.96.0.0/12",
            "--outbound-port-exclusion-list=5432,25,6379",
            "--inbound-port-exclusion-list=8443,9090",
            "--network-interface-exclusion-list=net1",
        ]
    );
    assert_eq!(init["securityContext"]["privileged"], json!(true));
    assert_eq!(init["image"], "mirror/init:1");
    let envoy = container(&doc, "containers", "envoy");
    assert_eq!(envoy["image"], "mirror/envoy:1");
    assert_eq!(envoy["args"][1], "debug");
}

/// A list osm-init would refuse refuses the pod at admission, naming the annotation or the
/// MeshConfig field.
#[test]
fn invalid_lists_are_refused() {
    let mut p = bare_pod();
    p["metadata"]["annotations"] = json!({"openservicemesh.io/outbound-port-exclusion-list": "80,http"});
    let err = inject::mutate(&pod(p), &meshed("shop"), UUID, &config()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pod shop/web-1: annotation openservicemesh.io/outbound-port-exclusion-list: invalid port \"http\" \
         (expected 1-65535)"
    );
    let mut cfg = config();
    cfg.mesh_config.traffic.outbound_ip_range_exclusion_list = vec!["fd00::/8".into()];
    let err = inject::mutate(&pod(bare_pod()), &meshed("shop"), UUID, &cfg).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("MeshConfig spec.traffic.outboundIPRangeExclusionList: invalid IPv4 CIDR"),
        "{err}"
    );
    let metrics = namespace(
        "shop",
        json!({"openservicemesh.io/monitored-by": "osm"}),
        json!({"openservicemesh.io/sidecar-injection": "enabled", "openservicemesh.io/metrics": "sometimes"}),
    );
    let err = inject::mutate(&pod(bare_pod()), &metrics, UUID, &config()).unwrap_err();
    assert!(err.to_string().contains("openservicemesh.io/metrics"), "{err}");
}

/// The whole patch for a typical pod, as the apiserver receives it.
#[test]
fn patch_snapshot() {
    let mut p = bare_pod();
    p["metadata"]["labels"] = json!({"app": "bookstore"});
    p["spec"]["serviceAccountName"] = json!("bookstore");
    p["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 14001}]);
    p["spec"]["containers"][0]["readinessProbe"] = json!({"httpGet": {"port": "http", "path": "/ready"}});
    let injection = inject::mutate(&pod(p), &meshed("bookstore"), UUID, &config()).unwrap();
    insta::assert_json_snapshot!(injection.patch);
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate(TrustDomain::default(), Duration::from_secs(3600)).unwrap()
}

/// The bootstrap Secret: upstream's name and key, labelled with the uuid, holding a bootstrap whose
/// node id is the proxy's certificate CN and which carries the probe listeners.
#[test]
fn bootstrap_secret_holds_the_bootstrap() {
    let probes = [Probe::http("readiness", 15902, "/ready", 14001)];
    let secret = inject::bootstrap_secret("bookstore", UUID, "bookstore", &probes, &config(), &ca()).unwrap();
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some(format!("envoy-bootstrap-config-{UUID}").as_str())
    );
    assert_eq!(secret.metadata.namespace.as_deref(), Some("bookstore"));
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["osm-proxy-uuid"], UUID);
    assert!(secret.metadata.owner_references.is_none());
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["bootstrap.yaml"]);
    let bootstrap: Value = serde_json::from_slice(&data["bootstrap.yaml"].0).unwrap();
    assert_eq!(
        bootstrap["node"]["id"],
        format!("{UUID}.sidecar.bookstore.bookstore.cluster.local")
    );
    assert_eq!(bootstrap["node"]["cluster"], "bookstore.bookstore");
    let listeners = &bootstrap["static_resources"]["listeners"];
    assert_eq!(listeners[0]["name"], "readiness_listener");
    assert_eq!(listeners[0]["address"]["socket_address"]["port_value"], 15902);
    let ads = &bootstrap["static_resources"]["clusters"][0];
    assert_eq!(
        ads["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"],
        json!({"address": "osm-controller.osm-system.svc.cluster.local", "port_value": 15128})
    );
}

/// A configuration whose trust domain is not the CA's is refused rather than minting certificates the
/// ADS server would not accept.
#[test]
fn bootstrap_secret_refuses_a_foreign_trust_domain() {
    let mut cfg = config();
    cfg.trust_domain = TrustDomain::new("other.example").unwrap();
    let err = inject::bootstrap_secret("shop", UUID, "web", &[], &cfg, &ca()).unwrap_err();
    assert!(matches!(err, InjectError::TrustDomainMismatch { .. }), "{err}");
}
