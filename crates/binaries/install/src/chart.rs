//! The Helm chart `charts/osm`, generated from [`crate::render`] so it cannot drift from `osm install`.
//!
//! The rendering is run with sentinel values (`__MESH__`, `910001`, ...) and each sentinel in the
//! YAML is replaced by the Helm expression of its key; the preset MeshConfig JSON is templated leaf
//! by leaf from [`PRESET_KEYS`]. `cargo run -p osm-install --example write-chart` rewrites the chart;
//! a test fails when the committed chart differs from this generator.

use osm_api::contract::{PRESET_CONFIG_MAP, PRESET_KEY};
use serde_json::Value;

use crate::values::{VERSION, Values};
use crate::{InstallOptions, render};

/// Where a preset MeshConfig leaf comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// A boolean or number value key: `{{ .Values.<key> }}`.
    Raw(&'static str),
    /// A string value key: `{{ .Values.<key> | quote }}`.
    Quote(&'static str),
    /// A list value key: `{{ .Values.<key> | toJson }}`.
    Json(&'static str),
    /// A helper template: `{{ include "<name>" . | quote }}`.
    Include(&'static str),
}

impl Source {
    /// The values key (`osm.tracing.enable`), or the helper's name for [`Source::Include`].
    pub fn values_key(&self) -> &'static str {
        match self {
            Source::Raw(k) | Source::Quote(k) | Source::Json(k) | Source::Include(k) => k,
        }
    }
}

/// The preset MeshConfig spec leaves set from values: (JSON path in the spec, source).
pub const PRESET_KEYS: &[(&str, Source)] = &[
    (
        "sidecar.enablePrivilegedInitContainer",
        Source::Raw("osm.enablePrivilegedInitContainer"),
    ),
    ("sidecar.logLevel", Source::Quote("osm.envoyLogLevel")),
    ("sidecar.envoyImage", Source::Quote("osm.sidecarImage")),
    ("sidecar.initContainerImage", Source::Include("osm.initImage")),
    (
        "sidecar.maxDataPlaneConnections",
        Source::Raw("osm.maxDataPlaneConnections"),
    ),
    (
        "sidecar.configResyncInterval",
        Source::Quote("osm.configResyncInterval"),
    ),
    ("sidecar.localProxyMode", Source::Quote("osm.localProxyMode")),
    ("traffic.enableEgress", Source::Raw("osm.enableEgress")),
    (
        "traffic.enablePermissiveTrafficPolicyMode",
        Source::Raw("osm.enablePermissiveTrafficPolicy"),
    ),
    (
        "traffic.inboundPortExclusionList",
        Source::Json("osm.inboundPortExclusionList"),
    ),
    (
        "traffic.outboundPortExclusionList",
        Source::Json("osm.outboundPortExclusionList"),
    ),
    (
        "traffic.outboundIPRangeExclusionList",
        Source::Json("osm.outboundIPRangeExclusionList"),
    ),
    (
        "traffic.outboundIPRangeInclusionList",
        Source::Json("osm.outboundIPRangeInclusionList"),
    ),
    (
        "traffic.networkInterfaceExclusionList",
        Source::Json("osm.networkInterfaceExclusionList"),
    ),
    (
        "observability.osmLogLevel",
        Source::Quote("osm.controllerLogLevel"),
    ),
    (
        "observability.enableDebugServer",
        Source::Raw("osm.enableDebugServer"),
    ),
    ("observability.tracing.enable", Source::Raw("osm.tracing.enable")),
    ("observability.tracing.port", Source::Raw("osm.tracing.port")),
    (
        "observability.tracing.endpoint",
        Source::Quote("osm.tracing.endpoint"),
    ),
    (
        "certificate.serviceCertValidityDuration",
        Source::Quote("osm.certificateProvider.serviceCertValidityDuration"),
    ),
    (
        "certificate.certKeyBitSize",
        Source::Raw("osm.certificateProvider.certKeyBitSize"),
    ),
    (
        "featureFlags.enableWASMStats",
        Source::Raw("osm.featureFlags.enableWASMStats"),
    ),
    (
        "featureFlags.enableEgressPolicy",
        Source::Raw("osm.featureFlags.enableEgressPolicy"),
    ),
    (
        "featureFlags.enableSnapshotCacheMode",
        Source::Raw("osm.featureFlags.enableSnapshotCacheMode"),
    ),
    (
        "featureFlags.enableAsyncProxyServiceMapping",
        Source::Raw("osm.featureFlags.enableAsyncProxyServiceMapping"),
    ),
    (
        "featureFlags.enableIngressBackendPolicy",
        Source::Raw("osm.featureFlags.enableIngressBackendPolicy"),
    ),
    (
        "featureFlags.enableEnvoyActiveHealthChecks",
        Source::Raw("osm.featureFlags.enableEnvoyActiveHealthChecks"),
    ),
    (
        "featureFlags.enableRetryPolicy",
        Source::Raw("osm.featureFlags.enableRetryPolicy"),
    ),
];

/// String sentinels and the Helm expression (without braces) each stands for.
const STRING_SENTINELS: &[(&str, &str)] = &[
    ("__MESH__", ".Values.osm.meshName"),
    ("__NS__", "include \"osm.namespace\" ."),
    ("__REGISTRY__", ".Values.osm.image.registry"),
    ("__TAG__", ".Values.osm.image.tag"),
    ("__PULL__", ".Values.osm.image.pullPolicy"),
    ("__TRUST__", ".Values.osm.trustDomain"),
    ("__CASECRET__", ".Values.osm.caBundleSecretName"),
    ("__WHPREFIX__", ".Values.osm.webhookConfigNamePrefix"),
    ("__VWH__", "include \"osm.validatorWebhookName\" ."),
    ("__CTRLLOG__", ".Values.osm.controllerLogLevel"),
];

/// Integer sentinels (values no real install uses) and their keys.
const INT_SENTINELS: &[(i32, &str)] = &[
    (910001, ".Values.osm.osmController.replicaCount"),
    (910002, ".Values.osm.injector.replicaCount"),
    (910003, ".Values.osm.osmBootstrap.replicaCount"),
    (910004, ".Values.osm.injector.webhookTimeoutSeconds"),
];

const PRESET_SENTINEL: &str = "__PRESET__";

const HELPERS: &str = r#"{{/* Generated by `cargo run -p osm-install --example write-chart`; do not edit. */}}

{{/* The control-plane namespace: osm.osmNamespace, else the release namespace. */}}
{{- define "osm.namespace" -}}
{{ default .Release.Namespace .Values.osm.osmNamespace }}
{{- end -}}

{{/* The ValidatingWebhookConfiguration name. */}}
{{- define "osm.validatorWebhookName" -}}
{{ default (printf "osm-validator-mesh-%s" .Values.osm.meshName) .Values.osm.validatorWebhook.webhookConfigurationName }}
{{- end -}}

{{/* The sidecar init container image. */}}
{{- define "osm.initImage" -}}
{{ printf "%s/osm-init:%s" .Values.osm.image.registry .Values.osm.image.tag }}
{{- end -}}

{{/* The tracing collector address. */}}
{{- define "osm.tracingAddress" -}}
{{ default (printf "jaeger.%s.svc.cluster.local" (include "osm.namespace" .)) .Values.osm.tracing.address }}
{{- end -}}
"#;

fn sentinel_options() -> InstallOptions {
    let mut values = Values::default();
    let o = &mut values.osm;
    o.mesh_name = "__MESH__".into();
    o.osm_namespace = "__NS__".into();
    o.image.registry = "__REGISTRY__".into();
    o.image.tag = "__TAG__".into();
    o.image.pull_policy = "__PULL__".into();
    o.trust_domain = "__TRUST__".into();
    o.ca_bundle_secret_name = "__CASECRET__".into();
    o.webhook_config_name_prefix = "__WHPREFIX__".into();
    o.validator_webhook.webhook_configuration_name = "__VWH__".into();
    o.controller_log_level = "__CTRLLOG__".into();
    o.osm_controller.replica_count = INT_SENTINELS[0].0;
    o.injector.replica_count = INT_SENTINELS[1].0;
    o.osm_bootstrap.replica_count = INT_SENTINELS[2].0;
    o.injector.webhook_timeout_seconds = INT_SENTINELS[3].0;
    o.enforce_single_mesh = true;
    InstallOptions {
        values,
        set: Vec::new(),
    }
}

/// Replaces `sentinel` by `{{ expr }}`, or `{{ expr | quote }}` where it is a whole YAML scalar.
fn replace_sentinel(text: &str, sentinel: &str, expr: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(sentinel) {
        let (before, after) = rest.split_at(at);
        let after = &after[sentinel.len()..];
        let whole = (before.ends_with(": ") || before.ends_with("- ")) && after.starts_with('\n');
        out.push_str(before);
        if whole {
            out.push_str(&format!("{{{{ {expr} | quote }}}}"));
        } else {
            out.push_str(&format!("{{{{ {expr} }}}}"));
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The preset MeshConfig JSON as a template.
fn preset_template() -> String {
    let defaults = InstallOptions::default().mesh_config_spec();
    let mut spec = serde_json::to_value(&defaults).expect("plain JSON");
    for (i, (path, _)) in PRESET_KEYS.iter().enumerate() {
        let mut slot = &mut spec;
        for part in path.split('.') {
            let map = slot.as_object_mut().expect("a spec object");
            slot = map.entry(part.to_string()).or_insert(Value::Null);
        }
        *slot = Value::String(format!("__V{i}__"));
    }
    let mut text = serde_json::to_string_pretty(&spec).expect("plain JSON");
    for (i, (_, source)) in PRESET_KEYS.iter().enumerate() {
        let expr = match source {
            Source::Raw(key) => format!("{{{{ .Values.{key} }}}}"),
            Source::Quote(key) => format!("{{{{ .Values.{key} | quote }}}}"),
            Source::Json(key) => format!("{{{{ .Values.{key} | toJson }}}}"),
            Source::Include(name) => format!("{{{{ include \"{name}\" . | quote }}}}"),
        };
        text = text.replace(&format!("\"__V{i}__\""), &expr);
    }
    // The tracing address only when tracing is on, as `osm install` renders it.
    let enable = "\"enable\": {{ .Values.osm.tracing.enable }},";
    text.replace(
        enable,
        &format!(
            "{enable}\n{{{{- if .Values.osm.tracing.enable }}}}\n      \"address\": {{{{ include \
             \"osm.tracingAddress\" . | quote }}}},\n{{{{- end }}}}"
        ),
    )
}

/// One template per rendered object.
fn template(object: &Value) -> String {
    let mut object = object.clone();
    let is_preset = object["kind"] == "ConfigMap" && object["metadata"]["name"] == PRESET_CONFIG_MAP;
    if is_preset {
        object["data"][PRESET_KEY] = Value::String(PRESET_SENTINEL.into());
    }
    let mut text = serde_saphyr::to_string(&object).expect("plain JSON");
    // Only the controller Deployment carries the label.
    let enforce = "    enforceSingleMesh: \"true\"\n";
    text = text.replace(
        enforce,
        "    {{- if .Values.osm.enforceSingleMesh }}\n    enforceSingleMesh: \"true\"\n    {{- end }}\n",
    );
    for (sentinel, expr) in STRING_SENTINELS {
        text = replace_sentinel(&text, sentinel, expr);
    }
    for (n, expr) in INT_SENTINELS {
        text = text.replace(&format!(": {n}\n"), &format!(": {{{{ {expr} }}}}\n"));
    }
    if is_preset {
        let line_start = text
            .find(PRESET_SENTINEL)
            .map(|at| text[..at].rfind('\n').map_or(0, |n| n + 1));
        if let Some(start) = line_start {
            let indent = text[start..].len() - text[start..].trim_start().len() + 2;
            let pad = " ".repeat(indent);
            let block: String = preset_template().lines().map(|l| format!("\n{pad}{l}")).collect();
            text = text.replace(PRESET_SENTINEL, &format!("|{block}"));
        }
    }
    format!("# Generated by `cargo run -p osm-install --example write-chart`; do not edit.\n{text}")
}

fn file_name(index: usize, object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("object").to_ascii_lowercase();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("object")
        .replace("__MESH__", "mesh")
        .replace("__NS__", "namespace")
        .replace("__WHPREFIX__", "webhook")
        .replace("__VWH__", "validator");
    format!("templates/{index:02}-{kind}-{name}.yaml")
}

/// Every file of the chart: (path relative to `charts/osm`, contents).
pub fn files() -> Vec<(String, String)> {
    let mut files = vec![
        (
            "Chart.yaml".to_string(),
            format!(
                "# Generated by `cargo run -p osm-install --example write-chart`; do not edit.\n\
                 apiVersion: v2\nname: osm\ndescription: The osm-rs control plane (an Open Service Mesh \
                 successor), the same objects `osm install` applies.\ntype: application\n\
                 version: {VERSION}\nappVersion: \"{VERSION}\"\n"
            ),
        ),
        (
            "values.yaml".to_string(),
            format!(
                "# Generated by `cargo run -p osm-install --example write-chart`; do not edit.\n\
                 # The keys and defaults of `osm install --set`.\n{}",
                Values::default().to_yaml()
            ),
        ),
        ("templates/_helpers.tpl".to_string(), HELPERS.to_string()),
    ];
    for (i, object) in render(&sentinel_options()).iter().enumerate() {
        files.push((file_name(i, object), template(object)));
    }
    files
}
