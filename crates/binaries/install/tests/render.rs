//! The rendering without a cluster: deterministic, labelled, with upstream names, ports and
//! webhook settings, and the values reaching the preset MeshConfig.

#![forbid(unsafe_code)]

use osm_api::config::MeshConfigSpec;
use osm_install::{InstallOptions, VERSION, Values, describe, render, render_yaml};
use serde_json::Value;

fn opts(sets: &[&str]) -> InstallOptions {
    let mut values = Values::default();
    values.osm.osm_namespace = "osm-system".into();
    values.set_all(sets.iter().copied()).expect("valid --set");
    InstallOptions {
        values,
        set: sets.iter().map(|s| s.to_string()).collect(),
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} in {:?}",
                objects.iter().map(describe).collect::<Vec<_>>()
            )
        })
}

/// Two renders of the same options are byte-identical.
#[test]
fn rendering_is_deterministic() {
    let a = render_yaml(&render(&opts(&["osm.enableEgress=false"])));
    let b = render_yaml(&render(&opts(&["osm.enableEgress=false"])));
    assert_eq!(a, b);
    assert!(!a.contains("creationTimestamp"), "no timestamps are rendered");
}

/// Every object carries the three app.kubernetes.io labels.
#[test]
fn every_object_is_labelled() {
    for o in render(&opts(&["osm.meshName=blue"])) {
        let labels = &o["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/name"],
            "openservicemesh.io",
            "{}",
            describe(&o)
        );
        assert_eq!(labels["app.kubernetes.io/instance"], "blue", "{}", describe(&o));
        assert_eq!(labels["app.kubernetes.io/version"], VERSION, "{}", describe(&o));
    }
}

/// The objects upstream users look for are there, with upstream names.
#[test]
fn objects_have_upstream_names() {
    let objects = render(&opts(&[]));
    let ns = find(&objects, "Namespace", "osm-system");
    assert_eq!(ns["metadata"]["labels"]["openservicemesh.io/ignore"], "true");
    for name in ["osm-controller", "osm-injector", "osm-bootstrap"] {
        find(&objects, "ServiceAccount", name);
        let d = find(&objects, "Deployment", name);
        assert_eq!(d["metadata"]["labels"]["app"], name);
        assert_eq!(d["metadata"]["labels"]["meshName"], "osm");
        let pod = &d["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["app"], name);
        assert_eq!(pod["metadata"]["labels"]["meshName"], "osm");
        assert_eq!(pod["spec"]["serviceAccountName"], name);
        let c = &pod["spec"]["containers"][0];
        assert_eq!(
            c["image"],
            format!("openservicemesh-rs/osm-control-plane:{VERSION}")
        );
        let cmd: Vec<&str> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(cmd[0], "osm-control-plane");
        assert_eq!(cmd[1], name.trim_start_matches("osm-"));
        assert!(cmd.windows(2).any(|w| w == ["--mesh-name", "osm"]), "{cmd:?}");
        assert!(
            cmd.windows(2).any(|w| w == ["--osm-namespace", "osm-system"]),
            "{cmd:?}"
        );
        assert!(
            cmd.windows(2)
                .any(|w| w == ["--ca-bundle-secret-name", "osm-ca-bundle"])
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health/alive");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health/ready");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], 9091);
        find(&objects, "ClusterRole", &format!("osm-{name}"));
        find(&objects, "ClusterRoleBinding", &format!("osm-{name}"));
    }
    let controller = find(&objects, "Deployment", "osm-controller");
    assert_eq!(controller["metadata"]["labels"]["enforceSingleMesh"], "true");
    let svc = find(&objects, "Service", "osm-controller");
    let ports: Vec<(i64, &str)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_i64().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    assert!(ports.contains(&(15128, "ads-port")), "{ports:?}");
    assert_eq!(
        find(&objects, "Service", "osm-injector")["spec"]["ports"][0]["port"],
        9090
    );
    let validator = find(&objects, "Service", "osm-validator");
    assert_eq!(validator["spec"]["ports"][0]["port"], 9093);
    assert_eq!(validator["spec"]["selector"]["app"], "osm-controller");
    let crds = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .count();
    assert_eq!(crds, osm_api::crds::all().len());
    assert!(
        !objects.iter().any(|o| o["kind"] == "MeshConfig"),
        "the MeshConfig is bootstrap's to create"
    );
}

/// The webhooks as upstream's injector and validator register them, without a caBundle.
#[test]
fn webhooks_match_upstream() {
    let objects = render(&opts(&[]));
    let m = find(&objects, "MutatingWebhookConfiguration", "osm-webhook-osm");
    let w = &m["webhooks"][0];
    assert_eq!(w["name"], "osm-inject.k8s.io");
    assert_eq!(w["clientConfig"]["service"]["name"], "osm-injector");
    assert_eq!(w["clientConfig"]["service"]["namespace"], "osm-system");
    assert_eq!(w["clientConfig"]["service"]["path"], "/mutate-pod-creation");
    assert_eq!(w["clientConfig"]["service"]["port"], 9090);
    assert!(w["clientConfig"].get("caBundle").is_none());
    assert_eq!(w["rules"][0]["operations"][0], "CREATE");
    assert_eq!(w["rules"][0]["resources"][0], "pods");
    assert_eq!(
        w["namespaceSelector"]["matchLabels"]["openservicemesh.io/monitored-by"],
        "osm"
    );
    assert_eq!(
        w["namespaceSelector"]["matchExpressions"][0]["key"],
        "openservicemesh.io/ignore"
    );
    assert_eq!(
        w["namespaceSelector"]["matchExpressions"][0]["operator"],
        "DoesNotExist"
    );
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(w["sideEffects"], "NoneOnDryRun");
    assert_eq!(w["timeoutSeconds"], 20);
    assert_eq!(w["admissionReviewVersions"], serde_json::json!(["v1", "v1beta1"]));

    let v = find(
        &objects,
        "ValidatingWebhookConfiguration",
        "osm-validator-mesh-osm",
    );
    let w = &v["webhooks"][0];
    assert_eq!(w["name"], "osm-validator.k8s.io");
    assert_eq!(w["clientConfig"]["service"]["name"], "osm-validator");
    assert_eq!(w["clientConfig"]["service"]["path"], "/validate");
    assert_eq!(w["clientConfig"]["service"]["port"], 9093);
    assert_eq!(w["failurePolicy"], "Fail");
    let groups: Vec<&str> = w["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["apiGroups"][0].as_str().unwrap())
        .collect();
    for g in [
        "access.smi-spec.io",
        "specs.smi-spec.io",
        "split.smi-spec.io",
        "policy.openservicemesh.io",
    ] {
        assert!(groups.contains(&g), "{g} not validated: {groups:?}");
    }
}

/// `--set` values reach the preset MeshConfig; the rest stays at upstream defaults.
#[test]
fn preset_mesh_config_follows_the_values() {
    let objects = render(&opts(&[
        "osm.enablePermissiveTrafficPolicy=false",
        "osm.enableEgress=false",
        "osm.certificateProvider.serviceCertValidityDuration=1h",
        "osm.enablePrivilegedInitContainer=true",
        "osm.envoyLogLevel=debug",
    ]));
    let cm = find(&objects, "ConfigMap", "preset-mesh-config");
    let json = cm["data"]["preset-mesh-config.json"].as_str().unwrap();
    let spec: MeshConfigSpec = serde_json::from_str(json).unwrap();
    assert!(!spec.traffic.enable_permissive_traffic_policy_mode);
    assert!(!spec.traffic.enable_egress);
    assert_eq!(spec.certificate.service_cert_validity_duration.to_string(), "1h");
    assert!(spec.sidecar.enable_privileged_init_container);
    assert_eq!(spec.sidecar.log_level, "debug");
    assert_eq!(
        spec.sidecar.tls_min_protocol_version, "TLSv1_2",
        "untouched defaults stay"
    );
    assert_eq!(spec.certificate.cert_key_bit_size, 2048);
    osm_api::validate::Validate::validate(&spec).expect("the preset is a valid MeshConfig");
}

/// The controller role reads what the controller watches and nothing it does not need.
#[test]
fn rbac_is_per_component() {
    let objects = render(&opts(&[]));
    let rules = |name: &str| {
        find(&objects, "ClusterRole", name)["rules"]
            .as_array()
            .unwrap()
            .clone()
    };
    let controller = rules("osm-osm-controller");
    let allows = |rules: &[Value], group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r["apiGroups"].as_array().unwrap().iter().any(|g| g == group)
                && r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource || x == "*")
                && r["verbs"].as_array().unwrap().iter().any(|v| v == verb)
        })
    };
    assert!(allows(&controller, "", "pods", "watch"));
    assert!(allows(&controller, "discovery.k8s.io", "endpointslices", "list"));
    assert!(allows(&controller, "split.smi-spec.io", "trafficsplits", "watch"));
    assert!(
        !allows(&controller, "", "secrets", "list"),
        "no cluster-wide Secret reads"
    );
    assert!(!allows(&controller, "", "pods", "delete"));
    for verb in ["create", "get", "update", "delete"] {
        assert!(
            allows(&controller, "", "secrets", verb),
            "the ingress gateway certificate's Secret: {verb}"
        );
    }
    let injector = rules("osm-osm-injector");
    assert!(allows(&injector, "", "secrets", "create"));
    assert!(allows(
        &injector,
        "config.openservicemesh.io",
        "meshconfigs",
        "get"
    ));
    let bootstrap = rules("osm-osm-bootstrap");
    assert!(allows(
        &bootstrap,
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "patch"
    ));
    assert!(allows(
        &bootstrap,
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "patch"
    ));
    let role = find(&objects, "Role", "osm-controller");
    assert_eq!(role["metadata"]["namespace"], "osm-system");
}

/// `osm install --dry-run` output parses back into the same objects.
#[test]
fn dry_run_yaml_parses_back_to_the_same_objects() {
    let objects = render(&opts(&[
        "osm.meshName=blue",
        "osm.outboundPortExclusionList={6379}",
    ]));
    let yaml = render_yaml(&objects);
    assert!(yaml.contains("\n---\n"), "multi-document");
    let parsed: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("valid YAML");
    assert_eq!(parsed, objects);
}
