//! `config.openservicemesh.io` resources: the mesh-wide [`MeshConfig`] (`v1alpha2`, storage version;
//! the older [`v1alpha1`] is also served and converts into it) and the [`MeshRootCertificate`].
//!
//! Every MeshConfig field is optional: a missing field takes the upstream default (the values
//! `kubectl describe meshconfig osm-mesh-config` shows on a fresh install), so a partial MeshConfig is
//! a complete one.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;
use crate::validate::{Errors, Validate, ValidationErrors};

mod resources;
mod root_cert;
pub mod v1alpha1;

pub use resources::{Quantity, ResourceRequirements};
pub use root_cert::{
    CertManagerProviderSpec, MeshRootCertificate, MeshRootCertificateRole, MeshRootCertificateSpec,
    MeshRootCertificateStatus, ProviderSpec, SecretKeyReferenceSpec, TresorCASpec, TresorProviderSpec,
    VaultProviderSpec, VaultTokenSpec,
};

/// Envoy log levels accepted by `spec.sidecar.logLevel`.
pub const ENVOY_LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];
/// Control-plane log levels accepted by `spec.observability.osmLogLevel`.
pub const OSM_LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled",
];
/// TLS versions accepted by `tlsMinProtocolVersion` / `tlsMaxProtocolVersion`, lowest first.
pub const TLS_VERSIONS: [&str; 5] = ["TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"];
/// Key sizes accepted by `spec.certificate.certKeyBitSize`.
pub const CERT_KEY_BIT_SIZES: [i64; 3] = [2048, 4096, 8192];

/// The mesh-wide configuration (upstream object name `osm-mesh-config`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "config.openservicemesh.io",
    version = "v1alpha2",
    kind = "MeshConfig",
    plural = "meshconfigs",
    shortname = "meshconfig",
    namespaced,
    derive = "PartialEq",
    doc = "OSM MeshConfig: mesh-wide configuration of sidecars, traffic, observability, certificates and features."
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

/// How the sidecar reaches the application container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum LocalProxyMode {
    /// Over 127.0.0.1 (upstream default).
    #[default]
    Localhost,
    /// Over the pod's IP address.
    #[serde(rename = "PodIP")]
    PodIp,
}

/// Configuration of the Envoy sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SidecarSpec {
    /// Run the init container privileged (otherwise it only has NET_ADMIN).
    pub enable_privileged_init_container: bool,
    /// Envoy log level, for newly injected pods.
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
    /// Maximum number of sidecars connected to the control plane; 0 means unlimited.
    pub max_data_plane_connections: i64,
    /// Interval of periodic full resyncs of every proxy; 0s disables them.
    pub config_resync_interval: GoDuration,
    /// Compute resources of the sidecar container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Minimum TLS version the sidecar accepts: TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2 or TLSv1_3.
    #[schemars(extend("enum" = ["TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"]))]
    pub tls_min_protocol_version: String,
    /// Maximum TLS version the sidecar accepts: TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2 or TLSv1_3.
    #[schemars(extend("enum" = ["TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"]))]
    pub tls_max_protocol_version: String,
    /// Cipher suites for TLS 1.0-1.2 (OpenSSL names); empty means Envoy's defaults.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// ECDH curves; empty means Envoy's defaults.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    /// How the sidecar reaches the application: Localhost or PodIP.
    pub local_proxy_mode: LocalProxyMode,
}

impl Default for SidecarSpec {
    fn default() -> Self {
        SidecarSpec {
            enable_privileged_init_container: false,
            log_level: "error".into(),
            envoy_image: None,
            envoy_windows_image: None,
            init_container_image: None,
            max_data_plane_connections: 0,
            config_resync_interval: GoDuration::ZERO,
            resources: None,
            tls_min_protocol_version: "TLSv1_2".into(),
            tls_max_protocol_version: "TLSv1_3".into(),
            cipher_suites: Vec::new(),
            ecdh_curves: Vec::new(),
            local_proxy_mode: LocalProxyMode::Localhost,
        }
    }
}

/// Traffic management configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TrafficSpec {
    /// Let meshed pods reach any destination outside the mesh. Upstream chart default: true
    /// (managed installs such as the AKS add-on set false).
    pub enable_egress: bool,
    /// Permissive mode: any meshed client may reach any meshed service without SMI policies.
    pub enable_permissive_traffic_policy_mode: bool,
    /// Outbound ports never intercepted by the sidecar.
    #[schemars(extend("items" = {"type": "integer", "minimum": 1, "maximum": 65535}))]
    pub outbound_port_exclusion_list: Vec<u16>,
    /// Inbound ports never intercepted by the sidecar.
    #[schemars(extend("items" = {"type": "integer", "minimum": 1, "maximum": 65535}))]
    pub inbound_port_exclusion_list: Vec<u16>,
    /// Outbound destination CIDRs never intercepted by the sidecar.
    #[serde(rename = "outboundIPRangeExclusionList")]
    pub outbound_ip_range_exclusion_list: Vec<String>,
    /// When non-empty, only outbound destinations in these CIDRs are intercepted.
    #[serde(rename = "outboundIPRangeInclusionList")]
    pub outbound_ip_range_inclusion_list: Vec<String>,
    /// Network interfaces whose traffic is never intercepted.
    pub network_interface_exclusion_list: Vec<String>,
    /// External authorization of inbound traffic.
    pub inbound_external_authorization: ExternalAuthzSpec,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            enable_egress: true,
            enable_permissive_traffic_policy_mode: true,
            outbound_port_exclusion_list: Vec::new(),
            inbound_port_exclusion_list: Vec::new(),
            outbound_ip_range_exclusion_list: Vec::new(),
            outbound_ip_range_inclusion_list: Vec::new(),
            network_interface_exclusion_list: Vec::new(),
            inbound_external_authorization: ExternalAuthzSpec::default(),
        }
    }
}

/// External authorization (Envoy ext_authz) of inbound traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ExternalAuthzSpec {
    /// Enable external authorization.
    pub enable: bool,
    /// Address of the authorization service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port of the authorization service.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Prefix of the ext_authz statistics.
    pub stat_prefix: String,
    /// How long to wait for the authorization service.
    pub timeout: GoDuration,
    /// Allow traffic when the authorization service does not answer.
    pub failure_mode_allow: bool,
}

impl Default for ExternalAuthzSpec {
    fn default() -> Self {
        ExternalAuthzSpec {
            enable: false,
            address: None,
            port: None,
            stat_prefix: "inboundExtAuthz".into(),
            timeout: GoDuration::from_secs(1),
            failure_mode_allow: false,
        }
    }
}

/// Metrics, logs and tracing configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservabilitySpec {
    /// Control-plane log level.
    #[schemars(extend("enum" = ["trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled"]))]
    pub osm_log_level: String,
    /// Serve the controller's debug endpoints.
    pub enable_debug_server: bool,
    /// Sidecars log each HTTP request and TCP connection as JSON on stdout (an osm-rs field; upstream
    /// OSM always logs).
    // Not written at its default, so a default MeshConfig serializes exactly as upstream's.
    #[serde(skip_serializing_if = "is_true")]
    #[schemars(extend("default" = true))]
    pub enable_access_log: bool,
    /// Distributed tracing.
    pub tracing: TracingSpec,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for ObservabilitySpec {
    fn default() -> Self {
        ObservabilitySpec {
            osm_log_level: "info".into(),
            enable_debug_server: false,
            enable_access_log: true,
            tracing: TracingSpec::default(),
        }
    }
}

/// Distributed tracing (Zipkin protocol) configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TracingSpec {
    /// Enable tracing in the sidecars.
    pub enable: bool,
    /// Host name of the trace collector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port of the trace collector.
    pub port: u16,
    /// API path of the trace collector.
    pub endpoint: String,
}

impl Default for TracingSpec {
    fn default() -> Self {
        TracingSpec {
            enable: false,
            address: None,
            port: 9411,
            endpoint: "/api/v2/spans".into(),
        }
    }
}

/// Certificate management configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CertificateSpec {
    /// Validity of service (sidecar) certificates.
    pub service_cert_validity_duration: GoDuration,
    /// Key size of data-plane certificates: 2048, 4096 or 8192.
    pub cert_key_bit_size: i64,
    /// Certificate for an ingress gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_gateway: Option<IngressGatewayCertSpec>,
}

impl Default for CertificateSpec {
    fn default() -> Self {
        CertificateSpec {
            service_cert_validity_duration: GoDuration::from_secs(24 * 3600),
            cert_key_bit_size: 2048,
            ingress_gateway: None,
        }
    }
}

/// A certificate issued for an ingress gateway and stored in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressGatewayCertSpec {
    /// Subject Alternative Names of the certificate.
    pub subject_alt_names: Vec<String>,
    /// Validity of the certificate.
    pub validity_duration: GoDuration,
    /// Secret the certificate is stored in.
    pub secret: SecretReference,
}

/// A Secret by name and namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    pub name: String,
    /// Namespace of the Secret.
    pub namespace: String,
}

/// Feature flags.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct FeatureFlags {
    /// Envoy WASM statistics.
    #[serde(rename = "enableWASMStats")]
    pub enable_wasm_stats: bool,
    /// The Egress policy API.
    pub enable_egress_policy: bool,
    /// Multicluster mode (deprecated upstream, unused).
    #[serde(alias = "enableMultiClusterMode")]
    pub enable_multicluster_mode: bool,
    /// Snapshot-cache xDS server.
    pub enable_snapshot_cache_mode: bool,
    /// Map proxies to services asynchronously.
    pub enable_async_proxy_service_mapping: bool,
    /// The IngressBackend policy API.
    pub enable_ingress_backend_policy: bool,
    /// Envoy active health checks between services.
    pub enable_envoy_active_health_checks: bool,
    /// The Retry policy API.
    pub enable_retry_policy: bool,
}

impl Default for FeatureFlags {
    fn default() -> Self {
        FeatureFlags {
            enable_wasm_stats: true,
            enable_egress_policy: true,
            enable_multicluster_mode: false,
            enable_snapshot_cache_mode: false,
            enable_async_proxy_service_mapping: false,
            enable_ingress_backend_policy: true,
            enable_envoy_active_health_checks: false,
            enable_retry_policy: false,
        }
    }
}

fn tls_rank(v: &str) -> Option<usize> {
    TLS_VERSIONS.iter().position(|t| *t == v)
}

impl SidecarSpec {
    fn validate_into(&self, errs: &mut Errors) {
        errs.one_of("spec.sidecar.logLevel", &self.log_level, &ENVOY_LOG_LEVELS);
        if self.max_data_plane_connections < 0 {
            errs.add("spec.sidecar.maxDataPlaneConnections", "must be >= 0");
        }
        errs.one_of(
            "spec.sidecar.tlsMinProtocolVersion",
            &self.tls_min_protocol_version,
            &TLS_VERSIONS,
        );
        errs.one_of(
            "spec.sidecar.tlsMaxProtocolVersion",
            &self.tls_max_protocol_version,
            &TLS_VERSIONS,
        );
        // TLS_AUTO (rank 0) lets Envoy choose, so it never conflicts.
        if let (Some(min), Some(max)) = (
            tls_rank(&self.tls_min_protocol_version),
            tls_rank(&self.tls_max_protocol_version),
        ) && min > 0
            && max > 0
            && max < min
        {
            errs.add(
                "spec.sidecar.tlsMaxProtocolVersion",
                format!(
                    "must not be lower than tlsMinProtocolVersion {:?}",
                    self.tls_min_protocol_version
                ),
            );
        }
        for (i, c) in self.cipher_suites.iter().enumerate() {
            errs.non_empty(format!("spec.sidecar.cipherSuites[{i}]"), c);
        }
        for (i, c) in self.ecdh_curves.iter().enumerate() {
            errs.non_empty(format!("spec.sidecar.ecdhCurves[{i}]"), c);
        }
    }
}

impl TrafficSpec {
    fn validate_into(&self, errs: &mut Errors) {
        let p = "spec.traffic";
        for (i, port) in self.outbound_port_exclusion_list.iter().enumerate() {
            errs.port(format!("{p}.outboundPortExclusionList[{i}]"), i64::from(*port));
        }
        for (i, port) in self.inbound_port_exclusion_list.iter().enumerate() {
            errs.port(format!("{p}.inboundPortExclusionList[{i}]"), i64::from(*port));
        }
        for (i, c) in self.outbound_ip_range_exclusion_list.iter().enumerate() {
            errs.cidr(format!("{p}.outboundIPRangeExclusionList[{i}]"), c);
        }
        for (i, c) in self.outbound_ip_range_inclusion_list.iter().enumerate() {
            errs.cidr(format!("{p}.outboundIPRangeInclusionList[{i}]"), c);
        }
        for (i, n) in self.network_interface_exclusion_list.iter().enumerate() {
            errs.non_empty(format!("{p}.networkInterfaceExclusionList[{i}]"), n);
        }
        let authz = &self.inbound_external_authorization;
        let ap = format!("{p}.inboundExternalAuthorization");
        if let Some(port) = authz.port {
            errs.port(format!("{ap}.port"), i64::from(port));
        }
        if authz.enable {
            errs.non_empty(format!("{ap}.address"), authz.address.as_deref().unwrap_or(""));
            if authz.port.is_none() {
                errs.add(format!("{ap}.port"), "is required when enable is true");
            }
            errs.positive_duration(format!("{ap}.timeout"), &authz.timeout);
        }
    }
}

impl ObservabilitySpec {
    fn validate_into(&self, errs: &mut Errors) {
        errs.one_of(
            "spec.observability.osmLogLevel",
            &self.osm_log_level,
            &OSM_LOG_LEVELS,
        );
        if self.tracing.enable {
            errs.port("spec.observability.tracing.port", i64::from(self.tracing.port));
            if !self.tracing.endpoint.starts_with('/') {
                errs.add(
                    "spec.observability.tracing.endpoint",
                    format!("must be a path starting with / (got {:?})", self.tracing.endpoint),
                );
            }
        }
    }
}

impl CertificateSpec {
    fn validate_into(&self, errs: &mut Errors) {
        errs.positive_duration(
            "spec.certificate.serviceCertValidityDuration",
            &self.service_cert_validity_duration,
        );
        if !CERT_KEY_BIT_SIZES.contains(&self.cert_key_bit_size) {
            errs.add(
                "spec.certificate.certKeyBitSize",
                format!("must be one of 2048, 4096, 8192 (got {})", self.cert_key_bit_size),
            );
        }
        if let Some(gw) = &self.ingress_gateway {
            let p = "spec.certificate.ingressGateway";
            if gw.subject_alt_names.is_empty() {
                errs.add(format!("{p}.subjectAltNames"), "must list at least one name");
            }
            for (i, san) in gw.subject_alt_names.iter().enumerate() {
                errs.non_empty(format!("{p}.subjectAltNames[{i}]"), san);
            }
            errs.positive_duration(format!("{p}.validityDuration"), &gw.validity_duration);
            errs.non_empty(format!("{p}.secret.name"), &gw.secret.name);
            errs.non_empty(format!("{p}.secret.namespace"), &gw.secret.namespace);
        }
    }
}

impl Validate for MeshConfigSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        self.sidecar.validate_into(&mut errs);
        self.traffic.validate_into(&mut errs);
        self.observability.validate_into(&mut errs);
        self.certificate.validate_into(&mut errs);
        errs.finish()
    }
}

impl Validate for MeshConfig {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}
