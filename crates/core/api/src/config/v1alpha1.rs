//! `config.openservicemesh.io/v1alpha1` MeshConfig, the older version upstream still serves
//! (deprecated). It lacks the v1alpha2 TLS, local-proxy-mode, inclusion-list and interface-exclusion
//! fields; [`From`] converts it into the v1alpha2 [`super::MeshConfigSpec`], filling those with their
//! defaults.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CertificateSpec, ExternalAuthzSpec, ObservabilitySpec, ResourceRequirements};
use crate::duration::GoDuration;

/// The v1alpha1 MeshConfig spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "config.openservicemesh.io",
    version = "v1alpha1",
    kind = "MeshConfig",
    plural = "meshconfigs",
    shortname = "meshconfig",
    namespaced,
    derive = "PartialEq",
    deprecated = "config.openservicemesh.io/v1alpha1 MeshConfig is deprecated; use config.openservicemesh.io/v1alpha2 MeshConfig",
    doc = "OSM MeshConfig (v1alpha1, deprecated): mesh-wide configuration."
)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfigSpec {
    /// Configuration of the Envoy sidecar.
    pub sidecar: SidecarSpec,
    /// Traffic management configuration.
    pub traffic: TrafficSpec,
    /// Metrics, logs and tracing configuration.
    pub observability: ObservabilitySpec,
    /// Certificate management configuration.
    pub certificate: CertificateSpec,
    /// Feature flags.
    pub feature_flags: FeatureFlags,
}

/// v1alpha1 sidecar configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SidecarSpec {
    /// Run the init container privileged.
    pub enable_privileged_init_container: bool,
    /// Envoy log level.
    #[schemars(extend("enum" = ["trace", "debug", "info", "warning", "warn", "error", "critical", "off"]))]
    pub log_level: String,
    /// Envoy image for the sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_image: Option<String>,
    /// Envoy image for the sidecar on Windows nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_windows_image: Option<String>,
    /// Image of the init container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_container_image: Option<String>,
    /// Maximum number of connected sidecars; 0 means unlimited.
    pub max_data_plane_connections: i64,
    /// Interval of periodic full resyncs; 0s disables them.
    pub config_resync_interval: GoDuration,
    /// Compute resources of the sidecar container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for SidecarSpec {
    fn default() -> Self {
        let v2 = super::SidecarSpec::default();
        SidecarSpec {
            enable_privileged_init_container: v2.enable_privileged_init_container,
            log_level: v2.log_level,
            envoy_image: None,
            envoy_windows_image: None,
            init_container_image: None,
            max_data_plane_connections: v2.max_data_plane_connections,
            config_resync_interval: v2.config_resync_interval,
            resources: None,
        }
    }
}

/// v1alpha1 traffic configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TrafficSpec {
    /// Let meshed pods reach destinations outside the mesh.
    pub enable_egress: bool,
    /// Permissive traffic policy mode.
    pub enable_permissive_traffic_policy_mode: bool,
    /// Outbound destination CIDRs never intercepted.
    #[serde(rename = "outboundIPRangeExclusionList")]
    pub outbound_ip_range_exclusion_list: Vec<String>,
    /// Outbound ports never intercepted.
    #[schemars(extend("items" = {"type": "integer", "minimum": 1, "maximum": 65535}))]
    pub outbound_port_exclusion_list: Vec<u16>,
    /// Inbound ports never intercepted.
    #[schemars(extend("items" = {"type": "integer", "minimum": 1, "maximum": 65535}))]
    pub inbound_port_exclusion_list: Vec<u16>,
    /// External authorization of inbound traffic.
    pub inbound_external_authorization: ExternalAuthzSpec,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        let v2 = super::TrafficSpec::default();
        TrafficSpec {
            enable_egress: v2.enable_egress,
            enable_permissive_traffic_policy_mode: v2.enable_permissive_traffic_policy_mode,
            outbound_ip_range_exclusion_list: Vec::new(),
            outbound_port_exclusion_list: Vec::new(),
            inbound_port_exclusion_list: Vec::new(),
            inbound_external_authorization: v2.inbound_external_authorization,
        }
    }
}

/// v1alpha1 feature flags (no multicluster flag).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct FeatureFlags {
    /// Envoy WASM statistics.
    #[serde(rename = "enableWASMStats")]
    pub enable_wasm_stats: bool,
    /// The Egress policy API.
    pub enable_egress_policy: bool,
    /// Snapshot-cache xDS server.
    pub enable_snapshot_cache_mode: bool,
    /// Map proxies to services asynchronously.
    pub enable_async_proxy_service_mapping: bool,
    /// The IngressBackend policy API.
    pub enable_ingress_backend_policy: bool,
    /// Envoy active health checks.
    pub enable_envoy_active_health_checks: bool,
    /// The Retry policy API.
    pub enable_retry_policy: bool,
}

impl Default for FeatureFlags {
    fn default() -> Self {
        let v2 = super::FeatureFlags::default();
        FeatureFlags {
            enable_wasm_stats: v2.enable_wasm_stats,
            enable_egress_policy: v2.enable_egress_policy,
            enable_snapshot_cache_mode: v2.enable_snapshot_cache_mode,
            enable_async_proxy_service_mapping: v2.enable_async_proxy_service_mapping,
            enable_ingress_backend_policy: v2.enable_ingress_backend_policy,
            enable_envoy_active_health_checks: v2.enable_envoy_active_health_checks,
            enable_retry_policy: v2.enable_retry_policy,
        }
    }
}

impl From<MeshConfigSpec> for super::MeshConfigSpec {
    fn from(old: MeshConfigSpec) -> Self {
        let s = old.sidecar;
        let t = old.traffic;
        let f = old.feature_flags;
        super::MeshConfigSpec {
            sidecar: super::SidecarSpec {
                enable_privileged_init_container: s.enable_privileged_init_container,
                log_level: s.log_level,
                envoy_image: s.envoy_image,
                envoy_windows_image: s.envoy_windows_image,
                init_container_image: s.init_container_image,
                max_data_plane_connections: s.max_data_plane_connections,
                config_resync_interval: s.config_resync_interval,
                resources: s.resources,
                ..super::SidecarSpec::default()
            },
            traffic: super::TrafficSpec {
                enable_egress: t.enable_egress,
                enable_permissive_traffic_policy_mode: t.enable_permissive_traffic_policy_mode,
                outbound_ip_range_exclusion_list: t.outbound_ip_range_exclusion_list,
                outbound_port_exclusion_list: t.outbound_port_exclusion_list,
                inbound_port_exclusion_list: t.inbound_port_exclusion_list,
                inbound_external_authorization: t.inbound_external_authorization,
                ..super::TrafficSpec::default()
            },
            observability: old.observability,
            certificate: old.certificate,
            feature_flags: super::FeatureFlags {
                enable_wasm_stats: f.enable_wasm_stats,
                enable_egress_policy: f.enable_egress_policy,
                enable_snapshot_cache_mode: f.enable_snapshot_cache_mode,
                enable_async_proxy_service_mapping: f.enable_async_proxy_service_mapping,
                enable_ingress_backend_policy: f.enable_ingress_backend_policy,
                enable_envoy_active_health_checks: f.enable_envoy_active_health_checks,
                enable_retry_policy: f.enable_retry_policy,
                ..super::FeatureFlags::default()
            },
        }
    }
}

impl From<MeshConfig> for super::MeshConfig {
    /// Keeps the metadata; the spec converts field by field.
    fn from(old: MeshConfig) -> Self {
        super::MeshConfig {
            metadata: old.metadata,
            spec: old.spec.into(),
        }
    }
}
