//! Chart-style install values with upstream OSM's key names (`osm.meshName`, `osm.enableEgress`, ...)
//! and Helm-like `--set key=value` parsing.
//!
//! The set of accepted keys is exactly the leaves of [`Values`] as serialized, so the keys, the
//! defaults and the chart's `values.yaml` cannot drift apart. A value is parsed by the type of the
//! field it sets (`true`/`false` for booleans, integers for counts and ports, `{a,b}` for lists), and a
//! wrong type or an unknown key is an error naming the key. Keys of the managed installs (AKS add-on,
//! Arc extension), which wrap the chart as a subchart and so carry one more `osm.` prefix
//! (`osm.osm.enableEgress`), are accepted as the same key.

use osm_api::duration::GoDuration;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The crate version: default image tag and `app.kubernetes.io/version` label.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why a `--set` value or a values document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValuesError {
    /// Not of the form `key=value`.
    #[error("invalid --set {0:?}: expected key=value")]
    Syntax(String),
    /// A key no value of the chart has.
    #[error("unknown value key {key:?}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownKey {
        /// The key as given.
        key: String,
        /// The closest known key, when one is close.
        suggestion: Option<String>,
    },
    /// The value does not fit the key's type or allowed values.
    #[error("invalid value for {key}: {reason}")]
    Invalid {
        /// The key (without the managed-install prefix).
        key: String,
        /// What was wrong.
        reason: String,
    },
}

/// All install values; serialized, they are the chart's `values.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Values {
    /// Everything lives under `osm.`, as in the upstream chart.
    pub osm: OsmValues,
}

/// The `osm.` values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OsmValues {
    /// Identifier of this mesh in the cluster (a label value).
    pub mesh_name: String,
    /// Namespace of the control plane; empty means the CLI's `--osm-namespace`.
    pub osm_namespace: String,
    /// Refuse to install next to another mesh, and make other installs refuse to join this cluster.
    pub enforce_single_mesh: bool,
    /// `spec.traffic.enablePermissiveTrafficPolicyMode` of the preset MeshConfig.
    pub enable_permissive_traffic_policy: bool,
    /// `spec.traffic.enableEgress`.
    pub enable_egress: bool,
    /// `spec.sidecar.enablePrivilegedInitContainer`.
    pub enable_privileged_init_container: bool,
    /// `spec.observability.osmLogLevel` and the control plane's `--verbosity`.
    pub controller_log_level: String,
    /// `spec.sidecar.logLevel`.
    pub envoy_log_level: String,
    /// `spec.observability.enableDebugServer`.
    pub enable_debug_server: bool,
    /// Label the webhooks and CRDs for reconciliation by the control plane.
    pub enable_reconciler: bool,
    /// Trust domain of the mesh identities.
    pub trust_domain: String,
    /// Secret holding the mesh CA (in the control-plane namespace).
    pub ca_bundle_secret_name: String,
    /// Prefix of the MutatingWebhookConfiguration name (`<prefix>-<meshName>`).
    pub webhook_config_name_prefix: String,
    /// `spec.sidecar.envoyImage`.
    pub sidecar_image: String,
    /// `spec.sidecar.maxDataPlaneConnections`; 0 means no limit.
    pub max_data_plane_connections: i64,
    /// `spec.sidecar.configResyncInterval`.
    pub config_resync_interval: GoDuration,
    /// `spec.sidecar.localProxyMode`: Localhost or PodIP.
    pub local_proxy_mode: String,
    /// `spec.traffic.inboundPortExclusionList`.
    pub inbound_port_exclusion_list: Vec<u16>,
    /// `spec.traffic.outboundPortExclusionList`.
    pub outbound_port_exclusion_list: Vec<u16>,
    /// `spec.traffic.outboundIPRangeExclusionList`.
    #[serde(rename = "outboundIPRangeExclusionList")]
    pub outbound_ip_range_exclusion_list: Vec<String>,
    /// `spec.traffic.outboundIPRangeInclusionList`.
    #[serde(rename = "outboundIPRangeInclusionList")]
    pub outbound_ip_range_inclusion_list: Vec<String>,
    /// `spec.traffic.networkInterfaceExclusionList`.
    pub network_interface_exclusion_list: Vec<String>,
    /// Control-plane image.
    pub image: ImageValues,
    /// Certificates issued to the sidecars.
    pub certificate_provider: CertificateProviderValues,
    /// The osm-controller Deployment.
    pub osm_controller: ComponentValues,
    /// The osm-injector Deployment and its webhook.
    pub injector: InjectorValues,
    /// The osm-bootstrap Deployment.
    pub osm_bootstrap: ComponentValues,
    /// `spec.observability.tracing`.
    pub tracing: TracingValues,
    /// `spec.featureFlags`.
    pub feature_flags: FeatureFlagValues,
    /// The validating webhook.
    pub validator_webhook: ValidatorWebhookValues,
}

/// `osm.image.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageValues {
    /// Registry (and repository prefix) of `osm-control-plane`.
    pub registry: String,
    /// Tag of `osm-control-plane`.
    pub tag: String,
    /// Pull policy of the control-plane containers.
    pub pull_policy: String,
}

/// `osm.certificateProvider.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateProviderValues {
    /// Only the built-in `tresor` CA is supported.
    pub kind: String,
    /// `spec.certificate.serviceCertValidityDuration`.
    pub service_cert_validity_duration: GoDuration,
    /// `spec.certificate.certKeyBitSize`.
    pub cert_key_bit_size: i64,
}

/// `osm.osmController.*` / `osm.osmBootstrap.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentValues {
    /// Replicas of the Deployment.
    pub replica_count: i32,
}

/// `osm.injector.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectorValues {
    /// Replicas of the Deployment.
    pub replica_count: i32,
    /// `timeoutSeconds` of the mutating webhook (1 to 30).
    pub webhook_timeout_seconds: i32,
}

/// `osm.tracing.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingValues {
    /// Send spans from the sidecars.
    pub enable: bool,
    /// Collector address; empty means `jaeger.<osm namespace>.svc.cluster.local`.
    pub address: String,
    /// Collector port.
    pub port: u16,
    /// Collector API path.
    pub endpoint: String,
}

/// `osm.featureFlags.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeatureFlagValues {
    /// `enableWASMStats`.
    #[serde(rename = "enableWASMStats")]
    pub enable_wasm_stats: bool,
    /// `enableEgressPolicy`.
    pub enable_egress_policy: bool,
    /// `enableSnapshotCacheMode`.
    pub enable_snapshot_cache_mode: bool,
    /// `enableAsyncProxyServiceMapping`.
    pub enable_async_proxy_service_mapping: bool,
    /// `enableIngressBackendPolicy`.
    pub enable_ingress_backend_policy: bool,
    /// `enableEnvoyActiveHealthChecks`.
    pub enable_envoy_active_health_checks: bool,
    /// `enableRetryPolicy`.
    pub enable_retry_policy: bool,
}

/// `osm.validatorWebhook.*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidatorWebhookValues {
    /// Name of the ValidatingWebhookConfiguration; empty means `osm-validator-mesh-<meshName>`.
    pub webhook_configuration_name: String,
}

impl Default for OsmValues {
    fn default() -> Self {
        let mesh = osm_api::config::MeshConfigSpec::default();
        OsmValues {
            mesh_name: "osm".into(),
            osm_namespace: String::new(),
            enforce_single_mesh: true,
            enable_permissive_traffic_policy: true,
            enable_egress: true,
            enable_privileged_init_container: false,
            controller_log_level: "info".into(),
            envoy_log_level: "error".into(),
            enable_debug_server: false,
            enable_reconciler: false,
            trust_domain: "cluster.local".into(),
            ca_bundle_secret_name: "osm-ca-bundle".into(),
            webhook_config_name_prefix: "osm-webhook".into(),
            sidecar_image: "envoyproxy/envoy-distroless:v1.40.0".into(),
            max_data_plane_connections: 0,
            config_resync_interval: GoDuration::ZERO,
            local_proxy_mode: "Localhost".into(),
            inbound_port_exclusion_list: Vec::new(),
            outbound_port_exclusion_list: Vec::new(),
            outbound_ip_range_exclusion_list: Vec::new(),
            outbound_ip_range_inclusion_list: Vec::new(),
            network_interface_exclusion_list: Vec::new(),
            image: ImageValues {
                registry: "openservicemesh-rs".into(),
                tag: VERSION.into(),
                pull_policy: "IfNotPresent".into(),
            },
            certificate_provider: CertificateProviderValues {
                kind: "tresor".into(),
                service_cert_validity_duration: mesh.certificate.service_cert_validity_duration,
                cert_key_bit_size: mesh.certificate.cert_key_bit_size,
            },
            osm_controller: ComponentValues { replica_count: 1 },
            injector: InjectorValues {
                replica_count: 1,
                webhook_timeout_seconds: 20,
            },
            osm_bootstrap: ComponentValues { replica_count: 1 },
            tracing: TracingValues {
                enable: false,
                address: String::new(),
                port: mesh.observability.tracing.port,
                endpoint: mesh.observability.tracing.endpoint.clone(),
            },
            feature_flags: FeatureFlagValues {
                enable_wasm_stats: mesh.feature_flags.enable_wasm_stats,
                enable_egress_policy: mesh.feature_flags.enable_egress_policy,
                enable_snapshot_cache_mode: mesh.feature_flags.enable_snapshot_cache_mode,
                enable_async_proxy_service_mapping: mesh.feature_flags.enable_async_proxy_service_mapping,
                enable_ingress_backend_policy: mesh.feature_flags.enable_ingress_backend_policy,
                enable_envoy_active_health_checks: mesh.feature_flags.enable_envoy_active_health_checks,
                enable_retry_policy: mesh.feature_flags.enable_retry_policy,
            },
            validator_webhook: ValidatorWebhookValues::default(),
        }
    }
}

/// The prefix the managed installs (AKS add-on, Arc extension) add: their chart wraps ours as `osm`.
const MANAGED_PREFIX: &str = "osm.osm.";

impl Values {
    /// Applies one `--set` argument: `key=value`, or several separated by commas
    /// (`osm.enableEgress=false,osm.meshName=blue`); commas inside `{...}` lists do not separate.
    pub fn set(&mut self, arg: &str) -> Result<(), ValuesError> {
        for assignment in split_top_level(arg) {
            self.set_one(assignment)?;
        }
        Ok(())
    }

    /// Applies every `--set` argument in order (later ones win).
    pub fn set_all<'a>(&mut self, args: impl IntoIterator<Item = &'a str>) -> Result<(), ValuesError> {
        for arg in args {
            self.set(arg)?;
        }
        Ok(())
    }

    fn set_one(&mut self, assignment: &str) -> Result<(), ValuesError> {
        let (raw_key, raw_value) = assignment
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ValuesError::Syntax(assignment.to_string()))?;
        let raw_key = raw_key.trim();
        let key = match raw_key.strip_prefix(MANAGED_PREFIX) {
            Some(rest) => format!("osm.{rest}"),
            None => raw_key.to_string(),
        };
        let unknown = || ValuesError::UnknownKey {
            key: raw_key.to_string(),
            suggestion: closest_key(&key),
        };
        let mut tree = serde_json::to_value(&*self).expect("values serialize to plain JSON");
        let mut slot = &mut tree;
        for part in key.split('.') {
            slot = slot
                .as_object_mut()
                .and_then(|m| m.get_mut(part))
                .ok_or_else(unknown)?;
        }
        let invalid = |reason: String| ValuesError::Invalid {
            key: key.clone(),
            reason,
        };
        *slot = match &*slot {
            Value::Object(_) => return Err(unknown()),
            Value::Bool(_) => match raw_value {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => return Err(invalid(format!("expected true or false, got {other:?}"))),
            },
            Value::Number(_) => raw_value
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| invalid(format!("expected an integer, got {raw_value:?}")))?,
            Value::Array(_) => parse_list(raw_value).map_err(invalid)?,
            Value::String(_) | Value::Null => Value::String(raw_value.to_string()),
        };
        let updated: Values = serde_json::from_value(tree).map_err(|e| invalid(e.to_string()))?;
        updated.check_field(&key)?;
        *self = updated;
        Ok(())
    }

    /// Checks the values that have a closed set or range, naming the key.
    pub fn validate(&self) -> Result<(), ValuesError> {
        for key in [
            "osm.meshName",
            "osm.controllerLogLevel",
            "osm.envoyLogLevel",
            "osm.localProxyMode",
            "osm.certificateProvider.kind",
            "osm.certificateProvider.certKeyBitSize",
            "osm.injector.webhookTimeoutSeconds",
            "osm.osmController.replicaCount",
            "osm.injector.replicaCount",
            "osm.osmBootstrap.replicaCount",
        ] {
            self.check_field(key)?;
        }
        Ok(())
    }

    fn check_field(&self, key: &str) -> Result<(), ValuesError> {
        let o = &self.osm;
        let invalid = |reason: String| {
            Err(ValuesError::Invalid {
                key: key.to_string(),
                reason,
            })
        };
        let one_of = |value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(())
            } else {
                invalid(format!("{value:?} is not one of {}", allowed.join(", ")))
            }
        };
        match key {
            "osm.meshName" => {
                if !is_label_value(&o.mesh_name) || o.mesh_name.is_empty() {
                    return invalid(format!(
                        "{:?} must be a Kubernetes label value: 1-63 characters, alphanumerics, '-', '_' \
                         or '.', starting and ending with an alphanumeric",
                        o.mesh_name
                    ));
                }
                Ok(())
            }
            "osm.controllerLogLevel" => one_of(&o.controller_log_level, &osm_api::config::OSM_LOG_LEVELS),
            "osm.envoyLogLevel" => one_of(&o.envoy_log_level, &osm_api::config::ENVOY_LOG_LEVELS),
            "osm.localProxyMode" => one_of(&o.local_proxy_mode, &["Localhost", "PodIP"]),
            "osm.certificateProvider.kind" => one_of(&o.certificate_provider.kind, &["tresor"]),
            "osm.certificateProvider.certKeyBitSize" => {
                if osm_api::config::CERT_KEY_BIT_SIZES.contains(&o.certificate_provider.cert_key_bit_size) {
                    Ok(())
                } else {
                    invalid("must be 2048, 4096 or 8192".into())
                }
            }
            "osm.injector.webhookTimeoutSeconds" => {
                if (1..=30).contains(&o.injector.webhook_timeout_seconds) {
                    Ok(())
                } else {
                    invalid("must be between 1 and 30 (seconds)".into())
                }
            }
            "osm.osmController.replicaCount"
            | "osm.injector.replicaCount"
            | "osm.osmBootstrap.replicaCount" => {
                let n = match key {
                    "osm.osmController.replicaCount" => o.osm_controller.replica_count,
                    "osm.injector.replicaCount" => o.injector.replica_count,
                    _ => o.osm_bootstrap.replica_count,
                };
                if n >= 0 {
                    Ok(())
                } else {
                    invalid("must not be negative".into())
                }
            }
            _ => Ok(()),
        }
    }

    /// Every settable key with its default, flattened (`osm.image.tag`), in a stable order.
    pub fn keys() -> Vec<(String, Value)> {
        let mut out = Vec::new();
        flatten(
            "",
            &serde_json::to_value(Values::default()).expect("plain JSON"),
            &mut out,
        );
        out
    }

    /// The values as a YAML document (the chart's `values.yaml`).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("values are plain maps, lists, strings, numbers and booleans")
    }
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

/// The known key nearest to `key` (edit distance at most 3, case-insensitive).
fn closest_key(key: &str) -> Option<String> {
    let key = key.to_ascii_lowercase();
    Values::keys()
        .into_iter()
        .map(|(k, _)| (edit_distance(&key, &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Splits `a=1,b={x,y},c=3` at the commas outside braces.
fn split_top_level(arg: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in arg.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&arg[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&arg[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// Parses Helm's list syntax `{a,b,c}` (`{}` is empty); integers become numbers.
fn parse_list(raw: &str) -> Result<Value, String> {
    let inner = raw
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("expected a list like {{a,b}}, got {raw:?}"))?;
    Ok(Value::Array(
        inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(s))
            })
            .collect(),
    ))
}

/// A Kubernetes label value (may be empty).
pub fn is_label_value(v: &str) -> bool {
    let bytes = v.as_bytes();
    v.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_none_or(u8::is_ascii_alphanumeric)
        && bytes.last().is_none_or(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_upstream_chart_defaults() {
        let v = Values::default();
        assert_eq!(v.osm.mesh_name, "osm");
        assert!(v.osm.enable_permissive_traffic_policy);
        assert!(v.osm.enable_egress);
        assert!(!v.osm.enable_privileged_init_container);
        assert_eq!(
            v.osm
                .certificate_provider
                .service_cert_validity_duration
                .to_string(),
            "24h"
        );
        assert_eq!(v.osm.image.tag, VERSION);
        assert_eq!(v.osm.osm_controller.replica_count, 1);
        v.validate().unwrap();
    }

    #[test]
    fn set_parses_by_the_key_type() {
        let mut v = Values::default();
        v.set("osm.enablePermissiveTrafficPolicy=false").unwrap();
        v.set("osm.osmController.replicaCount=3").unwrap();
        v.set("osm.image.tag=1.0").unwrap();
        v.set("osm.certificateProvider.serviceCertValidityDuration=1h30m")
            .unwrap();
        assert!(!v.osm.enable_permissive_traffic_policy);
        assert_eq!(v.osm.osm_controller.replica_count, 3);
        assert_eq!(v.osm.image.tag, "1.0", "a string key keeps the text, not a float");
        assert_eq!(
            v.osm
                .certificate_provider
                .service_cert_validity_duration
                .to_string(),
            "1h30m"
        );
    }

    #[test]
    fn set_accepts_comma_separated_assignments_and_lists() {
        let mut v = Values::default();
        v.set("osm.enableEgress=false,osm.outboundPortExclusionList={6379,8080},osm.meshName=blue")
            .unwrap();
        assert!(!v.osm.enable_egress);
        assert_eq!(v.osm.outbound_port_exclusion_list, vec![6379, 8080]);
        assert_eq!(v.osm.mesh_name, "blue");
        v.set("osm.outboundIPRangeExclusionList={10.0.0.0/8}").unwrap();
        assert_eq!(v.osm.outbound_ip_range_exclusion_list, vec!["10.0.0.0/8"]);
        v.set("osm.outboundPortExclusionList={}").unwrap();
        assert!(v.osm.outbound_port_exclusion_list.is_empty());
    }

    #[test]
    fn managed_install_keys_carry_one_more_osm_prefix() {
        let mut managed = Values::default();
        managed
            .set("osm.osm.enablePermissiveTrafficPolicy=false")
            .unwrap();
        let mut plain = Values::default();
        plain.set("osm.enablePermissiveTrafficPolicy=false").unwrap();
        assert_eq!(managed, plain);
        assert!(!managed.osm.enable_permissive_traffic_policy);
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let mut v = Values::default();
        let err = v.set("osm.enableEgres=false").unwrap_err();
        assert_eq!(
            err,
            ValuesError::UnknownKey {
                key: "osm.enableEgres".into(),
                suggestion: Some("osm.enableEgress".into()),
            }
        );
        assert!(err.to_string().contains("\"osm.enableEgres\""), "{err}");
        assert!(
            err.to_string().contains("did you mean osm.enableEgress?"),
            "{err}"
        );
        let err = v.set("osm.notAThingAtAll=1").unwrap_err();
        assert!(
            matches!(err, ValuesError::UnknownKey { suggestion: None, .. }),
            "{err}"
        );
        let err = v.set("osm.enableEgress=no").unwrap_err();
        assert!(err.to_string().contains("osm.enableEgress"), "{err}");
        assert!(err.to_string().contains("true or false"), "{err}");
        let err = v.set("osm.osmController.replicaCount=many").unwrap_err();
        assert!(
            err.to_string().contains("osm.osmController.replicaCount"),
            "{err}"
        );
        let err = v.set("osm.image=foo").unwrap_err();
        assert!(
            matches!(err, ValuesError::UnknownKey { .. }),
            "a map is not a leaf: {err}"
        );
        let err = v.set("osm.outboundPortExclusionList={http}").unwrap_err();
        assert!(err.to_string().contains("osm.outboundPortExclusionList"), "{err}");
        let err = v
            .set("osm.certificateProvider.serviceCertValidityDuration=soon")
            .unwrap_err();
        assert!(err.to_string().contains("serviceCertValidityDuration"), "{err}");
        let err = v.set("osm.envoyLogLevel=loud").unwrap_err();
        assert!(err.to_string().contains("osm.envoyLogLevel"), "{err}");
        let err = v.set("osm.meshName=-bad-").unwrap_err();
        assert!(err.to_string().contains("osm.meshName"), "{err}");
        assert!(matches!(v.set("novalue"), Err(ValuesError::Syntax(_))));
        assert_eq!(v, Values::default(), "refused sets change nothing");
    }

    #[test]
    fn keys_lists_every_leaf_with_its_default() {
        let keys = Values::keys();
        let get = |k: &str| keys.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("osm.meshName"), Some(Value::from("osm")));
        assert_eq!(get("osm.enableEgress"), Some(Value::from(true)));
        assert_eq!(get("osm.injector.replicaCount"), Some(Value::from(1)));
        assert_eq!(get("osm.featureFlags.enableWASMStats"), Some(Value::from(true)));
        for (key, _) in &keys {
            let mut v = Values::default();
            // Every listed key is settable (to its own default's text form where it has one).
            let default = get(key).unwrap();
            let text = match &default {
                Value::String(s) => s.clone(),
                Value::Array(_) => "{}".into(),
                other => other.to_string(),
            };
            v.set(&format!("{key}={text}"))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn values_yaml_round_trips() {
        let yaml = Values::default().to_yaml();
        assert!(yaml.contains("meshName: osm"), "{yaml}");
        let back: Values = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back, Values::default());
    }
}
