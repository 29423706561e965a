//! MeshConfig defaults equal upstream's, partial documents fill in defaults, v1alpha1 converts, and
//! every MeshConfig validation rule fires on the right field.

use osm_api::config::{self, MeshConfig, MeshConfigSpec};
use osm_api::duration::GoDuration;
use osm_api::validate::Validate;
use serde_json::{Value, json};

/// The defaults as `kubectl describe meshconfig osm-mesh-config` shows them on a fresh upstream
/// install (enableEgress as in the upstream chart), plus the tracing port/endpoint defaults.
fn upstream_defaults() -> Value {
    json!({
        "sidecar": {
            "enablePrivilegedInitContainer": false,
            "logLevel": "error",
            "maxDataPlaneConnections": 0,
            "configResyncInterval": "0s",
            "tlsMinProtocolVersion": "TLSv1_2",
            "tlsMaxProtocolVersion": "TLSv1_3",
            "localProxyMode": "Localhost"
        },
        "traffic": {
            "enableEgress": true,
            "enablePermissiveTrafficPolicyMode": true,
            "outboundPortExclusionList": [],
            "inboundPortExclusionList": [],
            "outboundIPRangeExclusionList": [],
            "outboundIPRangeInclusionList": [],
            "networkInterfaceExclusionList": [],
            "inboundExternalAuthorization": {
                "enable": false,
                "statPrefix": "inboundExtAuthz",
                "timeout": "1s",
                "failureModeAllow": false
            }
        },
        "observability": {
            "osmLogLevel": "info",
            "enableDebugServer": false,
            "tracing": {"enable": false, "port": 9411, "endpoint": "/api/v2/spans"}
        },
        "certificate": {"serviceCertValidityDuration": "24h", "certKeyBitSize": 2048},
        "featureFlags": {
            "enableWASMStats": true,
            "enableEgressPolicy": true,
            "enableMulticlusterMode": false,
            "enableSnapshotCacheMode": false,
            "enableAsyncProxyServiceMapping": false,
            "enableIngressBackendPolicy": true,
            "enableEnvoyActiveHealthChecks": false,
            "enableRetryPolicy": false
        }
    })
}

/// `MeshConfigSpec::default()` serializes to exactly the upstream defaults, and is valid.
#[test]
fn defaults_equal_upstream() {
    let spec = MeshConfigSpec::default();
    assert_eq!(serde_json::to_value(&spec).unwrap(), upstream_defaults());
    spec.validate().unwrap();
}

/// An empty spec, and a spec with empty sections, decode to the defaults.
#[test]
fn empty_spec_is_all_defaults() {
    let empty: MeshConfigSpec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(empty, MeshConfigSpec::default());
    let sections: MeshConfigSpec = serde_json::from_value(json!({
        "sidecar": {}, "traffic": {}, "observability": {"tracing": {}}, "certificate": {}, "featureFlags": {}
    }))
    .unwrap();
    assert_eq!(sections, MeshConfigSpec::default());
}

/// A MeshConfig that sets one field (the `kubectl patch` of the docs) gets defaults everywhere else.
#[test]
fn partial_mesh_config_fills_defaults() {
    let mc: MeshConfig = serde_json::from_value(json!({
        "apiVersion": "config.openservicemesh.io/v1alpha2",
        "kind": "MeshConfig",
        "metadata": {"name": "osm-mesh-config", "namespace": "osm-system"},
        "spec": {
            "traffic": {"enablePermissiveTrafficPolicyMode": false},
            "certificate": {"serviceCertValidityDuration": "1h"},
            "observability": {"tracing": {"enable": true, "address": "jaeger.osm-system.svc.cluster.local"}}
        }
    }))
    .unwrap();
    let mut expected = upstream_defaults();
    expected["traffic"]["enablePermissiveTrafficPolicyMode"] = json!(false);
    expected["certificate"]["serviceCertValidityDuration"] = json!("1h");
    expected["observability"]["tracing"]["enable"] = json!(true);
    expected["observability"]["tracing"]["address"] = json!("jaeger.osm-system.svc.cluster.local");
    assert_eq!(serde_json::to_value(&mc.spec).unwrap(), expected);
    assert_eq!(
        mc.spec.certificate.service_cert_validity_duration,
        GoDuration::from_secs(3600)
    );
    mc.validate().unwrap();
}

/// A wrong type or a bad duration is a decode error that says what was expected.
#[test]
fn decode_errors_are_clear() {
    let err = serde_json::from_value::<MeshConfigSpec>(json!({"traffic": {"enableEgress": "no"}}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected a boolean"), "{err}");
    let err = serde_json::from_value::<MeshConfigSpec>(
        json!({"certificate": {"serviceCertValidityDuration": "1 day"}}),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("invalid duration \"1 day\""), "{err}");
}

/// The deprecated spelling `enableMultiClusterMode` is read too.
#[test]
fn multicluster_flag_alias() {
    let spec: MeshConfigSpec =
        serde_json::from_value(json!({"featureFlags": {"enableMultiClusterMode": true}})).unwrap();
    assert!(spec.feature_flags.enable_multicluster_mode);
}

/// v1alpha1 converts field by field; fields v1alpha1 lacks take v1alpha2 defaults.
#[test]
fn v1alpha1_converts() {
    let old: config::v1alpha1::MeshConfigSpec = serde_json::from_value(json!({
        "sidecar": {"enablePrivilegedInitContainer": true, "logLevel": "debug", "configResyncInterval": "30s"},
        "traffic": {"enableEgress": false, "outboundIPRangeExclusionList": ["10.0.0.0/8"],
                    "inboundPortExclusionList": [8080]},
        "observability": {"osmLogLevel": "debug"},
        "certificate": {"serviceCertValidityDuration": "12h", "certKeyBitSize": 4096},
        "featureFlags": {"enableRetryPolicy": true, "enableWASMStats": false}
    }))
    .unwrap();
    let new: MeshConfigSpec = old.into();
    let mut expected = upstream_defaults();
    expected["sidecar"]["enablePrivilegedInitContainer"] = json!(true);
    expected["sidecar"]["logLevel"] = json!("debug");
    expected["sidecar"]["configResyncInterval"] = json!("30s");
    expected["traffic"]["enableEgress"] = json!(false);
    expected["traffic"]["outboundIPRangeExclusionList"] = json!(["10.0.0.0/8"]);
    expected["traffic"]["inboundPortExclusionList"] = json!([8080]);
    expected["observability"]["osmLogLevel"] = json!("debug");
    expected["certificate"]["serviceCertValidityDuration"] = json!("12h");
    expected["certificate"]["certKeyBitSize"] = json!(4096);
    expected["featureFlags"]["enableRetryPolicy"] = json!(true);
    expected["featureFlags"]["enableWASMStats"] = json!(false);
    assert_eq!(serde_json::to_value(&new).unwrap(), expected);

    // The default v1alpha1 spec converts to the default v1alpha2 spec.
    let converted: MeshConfigSpec = config::v1alpha1::MeshConfigSpec::default().into();
    assert_eq!(converted, MeshConfigSpec::default());
}

/// Applies `patch` (a JSON merge of one section) to the default spec and validates it.
fn errors_for(patch: Value) -> Vec<(String, String)> {
    let mut doc = upstream_defaults();
    for (section, fields) in patch.as_object().unwrap() {
        for (k, v) in fields.as_object().unwrap() {
            doc[section][k] = v.clone();
        }
    }
    let spec: MeshConfigSpec = serde_json::from_value(doc).unwrap();
    match spec.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e.into_iter().map(|f| (f.field, f.message)).collect(),
    }
}

fn fields_for(patch: Value) -> Vec<String> {
    errors_for(patch).into_iter().map(|(f, _)| f).collect()
}

/// Each MeshConfig rule names its field.
#[test]
fn validation_rules_name_their_field() {
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"sidecar": {"logLevel": "verbose"}}),
            &["spec.sidecar.logLevel"],
        ),
        (
            json!({"sidecar": {"maxDataPlaneConnections": -1}}),
            &["spec.sidecar.maxDataPlaneConnections"],
        ),
        (
            json!({"sidecar": {"tlsMinProtocolVersion": "TLSv1.2"}}),
            &["spec.sidecar.tlsMinProtocolVersion"],
        ),
        (
            json!({"sidecar": {"tlsMaxProtocolVersion": "SSLv3"}}),
            &["spec.sidecar.tlsMaxProtocolVersion"],
        ),
        (
            json!({"sidecar": {"tlsMinProtocolVersion": "TLSv1_3", "tlsMaxProtocolVersion": "TLSv1_2"}}),
            &["spec.sidecar.tlsMaxProtocolVersion"],
        ),
        (
            json!({"traffic": {"outboundPortExclusionList": [80, 0]}}),
            &["spec.traffic.outboundPortExclusionList[1]"],
        ),
        (
            json!({"traffic": {"inboundPortExclusionList": [0]}}),
            &["spec.traffic.inboundPortExclusionList[0]"],
        ),
        (
            json!({"traffic": {"outboundIPRangeExclusionList": ["10.0.0.0/8", "10.0.0.1"]}}),
            &["spec.traffic.outboundIPRangeExclusionList[1]"],
        ),
        (
            json!({"traffic": {"outboundIPRangeInclusionList": ["192.168.0.0/33"]}}),
            &["spec.traffic.outboundIPRangeInclusionList[0]"],
        ),
        (
            json!({"traffic": {"networkInterfaceExclusionList": [""]}}),
            &["spec.traffic.networkInterfaceExclusionList[0]"],
        ),
        (
            json!({"traffic": {"inboundExternalAuthorization": {"enable": true, "timeout": "0s", "statPrefix": "x", "failureModeAllow": false}}}),
            &[
                "spec.traffic.inboundExternalAuthorization.address",
                "spec.traffic.inboundExternalAuthorization.port",
                "spec.traffic.inboundExternalAuthorization.timeout",
            ],
        ),
        (
            json!({"traffic": {"inboundExternalAuthorization": {"enable": false, "port": 0}}}),
            &["spec.traffic.inboundExternalAuthorization.port"],
        ),
        (
            json!({"observability": {"osmLogLevel": "loud"}}),
            &["spec.observability.osmLogLevel"],
        ),
        (
            json!({"observability": {"tracing": {"enable": true, "port": 0, "endpoint": "api"}}}),
            &[
                "spec.observability.tracing.port",
                "spec.observability.tracing.endpoint",
            ],
        ),
        (
            json!({"certificate": {"serviceCertValidityDuration": "0s"}}),
            &["spec.certificate.serviceCertValidityDuration"],
        ),
        (
            json!({"certificate": {"certKeyBitSize": 1024}}),
            &["spec.certificate.certKeyBitSize"],
        ),
        (
            json!({"certificate": {"ingressGateway": {"subjectAltNames": [], "validityDuration": "0s",
                                                     "secret": {"name": "", "namespace": "osm-system"}}}}),
            &[
                "spec.certificate.ingressGateway.subjectAltNames",
                "spec.certificate.ingressGateway.validityDuration",
                "spec.certificate.ingressGateway.secret.name",
            ],
        ),
    ];
    for (patch, expected) in cases {
        assert_eq!(fields_for(patch.clone()), expected, "patch {patch}");
    }
}

/// Valid non-default values pass.
#[test]
fn valid_values_pass() {
    for patch in [
        json!({"sidecar": {"logLevel": "warning", "tlsMinProtocolVersion": "TLS_AUTO", "tlsMaxProtocolVersion": "TLSv1_2"}}),
        json!({"sidecar": {"tlsMinProtocolVersion": "TLSv1_3", "tlsMaxProtocolVersion": "TLS_AUTO"}}),
        json!({"traffic": {"outboundIPRangeExclusionList": ["fd00::/8", "0.0.0.0/0"], "outboundPortExclusionList": [65535]}}),
        json!({"traffic": {"inboundExternalAuthorization": {"enable": true, "address": "authz", "port": 9191, "timeout": "500ms"}}}),
        json!({"observability": {"osmLogLevel": "trace", "tracing": {"enable": true}}}),
        json!({"certificate": {"certKeyBitSize": 8192, "serviceCertValidityDuration": "1h30m"}}),
    ] {
        assert_eq!(errors_for(patch.clone()), [], "patch {patch}");
    }
}

/// Messages say what is wrong.
#[test]
fn messages() {
    let errs = errors_for(json!({"certificate": {"certKeyBitSize": 1024}}));
    assert_eq!(errs[0].1, "must be one of 2048, 4096, 8192 (got 1024)");
    let errs = errors_for(json!({"sidecar": {"tlsMinProtocolVersion": "TLSv1.2"}}));
    assert_eq!(
        errs[0].1,
        "must be one of TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3 (got \"TLSv1.2\")"
    );
    let mc = MeshConfig::new(
        "osm-mesh-config",
        serde_json::from_value(json!({"traffic": {"inboundPortExclusionList": [0]}})).unwrap(),
    );
    assert_eq!(
        mc.validate().unwrap_err().to_string(),
        "spec.traffic.inboundPortExclusionList[0]: must be a port between 1 and 65535 (got 0)"
    );
}

/// `observability.enableAccessLog` (ours): on when absent and then not written, so upstream's defaults
/// stay as they were; `false` is read, written back, and passes the CRD schema (v1alpha1 too), while
/// a string there is refused.
#[test]
fn access_log_switch() {
    assert!(MeshConfigSpec::default().observability.enable_access_log);
    let off: MeshConfigSpec =
        serde_json::from_value(json!({"observability": {"enableAccessLog": false}})).unwrap();
    assert!(!off.observability.enable_access_log);
    let written = serde_json::to_value(&off).unwrap();
    assert_eq!(written["observability"]["enableAccessLog"], json!(false));
    let old: config::v1alpha1::MeshConfigSpec =
        serde_json::from_value(json!({"observability": {"enableAccessLog": false}})).unwrap();
    assert_eq!(MeshConfigSpec::from(old), off);
    for version in ["v1alpha1", "v1alpha2"] {
        let doc = |value: Value| {
            json!({"apiVersion": format!("config.openservicemesh.io/{version}"), "kind": "MeshConfig",
                   "metadata": {"name": "m"}, "spec": {"observability": {"enableAccessLog": value}}})
        };
        osm_api::schema::check_object(&doc(json!(false))).unwrap();
        let err = osm_api::schema::check_object(&doc(json!("no")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.observability.enableAccessLog"), "{err}");
    }
}
